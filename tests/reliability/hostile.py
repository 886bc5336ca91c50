"""Hostile values and request builders for fuzzing every RPC over real gRPC.

Each strategy draws a *plan* (which fields to break and with what), and the request is built at
send time, so a replayed example still gets a fresh nonce and timestamp unless the plan breaks
them on purpose. Bot plans always break at least one field with a value the contract forbids,
so a bot request may never be answered OK. Admin plans break the envelope, the header or a field
of the command; some admin fields are free text (a freeze reason), so there OK is possible and
the oracle checks only that nothing but that command changed.
"""

from __future__ import annotations

import time
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from hypothesis import strategies as st

from botengine.signer_client import Identity, fresh_nonce
from bulkhead.contract import ADMIN_SIGNING_CONTEXT, BOT_SIGNING_CONTEXT
from bulkhead.signer.v1 import admin_pb2 as apb
from bulkhead.signer.v1 import signer_pb2 as pb

MB = 1_000_000
TEN_MINUTES_MS = 600_000

# fmt: off
# Not one of these is a valid amount or price (README: plain decimal > 0, <= 20+18 digits).
BAD_DECIMALS = [
    "NaN", "nan", "sNaN", "-NaN", "Infinity", "inf", "-inf", "+inf", "-1", "-0.001", "0", "0.0",
    "-0", "1e300", "1E-300", "1e3", "9" * 40, "0." + "0" * 39 + "1", "", " ", "1,5", "0x10",
    "\u0661", "\uff11", "1" * MB, "\uff11.5", "1.5\n", "\u0660.\u0661",
]
# Unicode look-alikes and other near misses of "BTC/USDT".
BAD_SYMBOLS = [
    "\u0412TC/USDT", "BTC/USD\u0422", "B\u0422C/USDT", "BTC\u2215USDT", "\uff22\uff34\uff23/USDT",
    "btc/usdt", "BTCUSDT", "BTC/", "/USDT", "", "BTC/USDT\x00", "BTC/USDT\n", " BTC/USDT",
    "B" * MB + "/USDT",
]
BAD_IDS = [
    "", " ", "a b", "x" * 65, "bot;--", "b\u043et-0", "k1\u0301", "../k1", "k1\n", "\x00",
    "x" * MB, "\U0001f600",
]
BAD_COIDS = ["", "x" * 37, "a b", "id;DROP", "\u00efd", "x" * MB, "c\n"]
BAD_EXCHANGES = ["", "Binance", "BINANCE", "../binance", "b", "bin ance", "x" * MB, "\u0432inance"]
BAD_NONCES = ["", "abc", "n" * 65, "nonce/with+slash==", "n" * 15, "n" * MB, "\u00f1" * 20]
BAD_ENUMS = [-1, 3, 7, 99, 2**31 - 1, -(2**31)]  # Side, OrderType, Mode end at 2
BAD_KINDS = [-1, 0, 5, 99, 2**31 - 1, -(2**31)]  # ReadKind ends at 4
SIG_LENGTHS = [0, 1, 32, 63, 65, 128, MB]
BOT_METHODS = ("SubmitOrder", "CancelOrder", "Read", "GetPolicy")

BOT_FIELDS: dict[str, dict[str, list[Any]]] = {
    "SubmitOrder": {
        "amount": BAD_DECIMALS, "limit_price": BAD_DECIMALS, "symbol": BAD_SYMBOLS,
        "side": [*BAD_ENUMS, 0], "type": [*BAD_ENUMS, 0], "mode": BAD_ENUMS,
        "client_order_id": BAD_COIDS, "exchange": BAD_EXCHANGES, "quote_amount": ["10", "1e300"],
    },
    "CancelOrder": {
        "symbol": BAD_SYMBOLS, "client_order_id": BAD_COIDS, "exchange": BAD_EXCHANGES,
        "mode": BAD_ENUMS,
    },
    "Read": {
        "kind": BAD_KINDS, "symbol": [s for s in BAD_SYMBOLS if s],
        "client_order_id": BAD_COIDS, "exchange": BAD_EXCHANGES,
    },
    "GetPolicy": {},
}
HEADER_FIELDS: dict[str, list[Any]] = {
    "bot_id": BAD_IDS,
    "key_id": BAD_IDS,
    "nonce": BAD_NONCES,
    "timestamp_ms": [0, -1, -(2**63), 2**63 - 1, "skew-", "skew+"],
    "method": ["", "Withdraw", "submitorder", "x" * MB, "other"],
}
# fmt: on


def _timestamp(value: Any) -> int:
    now = time.time_ns() // 1_000_000
    return {"skew-": now - TEN_MINUTES_MS, "skew+": now + TEN_MINUTES_MS}.get(value, value)


def _valid_body(method: str, price: str) -> Any:
    if method == "SubmitOrder":
        return pb.OrderIntent(
            exchange="binance",
            symbol="BTC/USDT",
            side=pb.SIDE_BUY,
            type=pb.ORDER_TYPE_LIMIT,
            amount="0.001",
            limit_price=price,
            client_order_id=f"fz-{fresh_nonce()[:20]}",
        )
    if method == "CancelOrder":
        return pb.CancelIntent(exchange="binance", symbol="BTC/USDT", client_order_id="fz-none")
    if method == "Read":
        return pb.ReadIntent(
            exchange="binance", kind=pb.READ_KIND_ORDER, symbol="BTC/USDT", client_order_id="fz-1"
        )
    return pb.PolicyQuery()


@st.composite
def bot_plans(draw: st.DrawFn) -> dict[str, Any]:
    """A bot request with 1-3 forbidden values (body fields and/or header fields)."""
    method = draw(st.sampled_from(BOT_METHODS))
    choices = [("body", f) for f in BOT_FIELDS[method]] + [("header", f) for f in HEADER_FIELDS]
    broken = draw(st.lists(st.sampled_from(choices), min_size=1, max_size=3, unique=True))
    values = {}
    for where, name in broken:
        pool = BOT_FIELDS[method][name] if where == "body" else HEADER_FIELDS[name]
        values[(where, name)] = draw(st.sampled_from(pool))
    return {"method": method, "values": values}


def build_bot_request(
    plan: dict[str, Any], bot: Identity, key_id: str, price: str
) -> pb.SignedRequest:
    method = plan["method"]
    msg = _valid_body(method, price)
    msg.header.CopyFrom(
        pb.RequestHeader(
            bot_id=bot.name,
            key_id=key_id,
            method=method,
            nonce=fresh_nonce(),
            timestamp_ms=time.time_ns() // 1_000_000,
        )
    )
    for (where, name), value in plan["values"].items():
        target = msg if where == "body" else msg.header
        if name == "timestamp_ms":
            value = _timestamp(value)
        elif name == "method" and value == "other":
            value = next(m for m in BOT_METHODS if m != method)
        setattr(target, name, value)
    body = msg.SerializeToString()
    return pb.SignedRequest(
        body=body, signature=bot.signing_key.sign(BOT_SIGNING_CONTEXT + body).signature
    )


# --- signatures --------------------------------------------------------------------------------


@st.composite
def signature_plans(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed request whose signature is wrong: its length, its key, or its context."""
    return {
        "method": draw(st.sampled_from(BOT_METHODS)),
        "how": draw(
            st.sampled_from(["length", "random64", "other_key", "no_context", "admin_ctx"])
        ),
        "length": draw(st.sampled_from(SIG_LENGTHS)),
    }


def build_badly_signed(
    plan: dict[str, Any], bot: Identity, key_id: str, price: str, stranger: Identity
) -> pb.SignedRequest:
    good = build_bot_request({"method": plan["method"], "values": {}}, bot, key_id, price)
    how, body = plan["how"], good.body
    if how == "length":
        sig = (good.signature * (plan["length"] // 64 + 1))[: plan["length"]]
    elif how == "random64":
        sig = bytes(reversed(good.signature))
    elif how == "other_key":
        sig = stranger.signing_key.sign(BOT_SIGNING_CONTEXT + body).signature
    elif how == "no_context":
        sig = bot.signing_key.sign(body).signature
    else:
        sig = bot.signing_key.sign(ADMIN_SIGNING_CONTEXT + body).signature
    return pb.SignedRequest(body=body, signature=sig)


# --- admin -------------------------------------------------------------------------------------

VALID_POLICY = """
symbols = ["BTC/USDT", "ETH/USDT"]
sides = ["buy", "sell"]
order_types = ["limit"]
max_order_notional = "5000"
max_notional_24h = "20000"
max_open_orders = 50
orders_per_minute = 600
price_band_pct = "5"
reference_max_age_s = 30
"""
_CAP = 'max_order_notional = "5000"'
# fmt: off
BAD_POLICY_DOCS = [
    *(VALID_POLICY.replace(_CAP, f"max_order_notional = {v}") for v in (
        '"NaN"', '"inf"', '"-inf"', '"-1"', '"0"', '"1e300"', f'"{"9" * 40}"', "5000.0", "nan",
        "inf", '"0.0000000000000000001"', f'"{"1" * MB}"', "true", "[]",
    )),
    VALID_POLICY.replace('"BTC/USDT", "ETH/USDT"', '"\u0412TC/USDT"'),
    VALID_POLICY.replace("max_open_orders = 50", "max_open_orders = -1"),
    VALID_POLICY.replace("max_open_orders = 50", "max_open_orders = 1e300"),
    VALID_POLICY + "withdrawals = true\n",
    VALID_POLICY.replace('price_band_pct = "5"', 'price_band_pct = "inf"'),
    "", "not toml at all [", "\x00" * 100,
]
# fmt: on
# Each command starts valid where a valid one would be harmless to refuse-test, so that the
# broken field (not something else) is what the signer must refuse.
BASE_COMMANDS: dict[str, dict[str, Any]] = {
    "SetPolicy": {"key_id": "k1", "policy_toml": VALID_POLICY, "expected_version": 1},
    "RegisterBot": {"bot_id": "fz-bot", "public_key": b"\x07" * 32, "key_ids": ["k1"]},
    "RevokeBot": {"bot_id": "fz-ghost"},
}
FIELD_POOLS: dict[tuple[str, tuple[str, ...]], list[Any]] = {
    ("SetPolicy", ("policy_toml",)): BAD_POLICY_DOCS,
    ("Propose", ("set_policy", "policy_toml")): BAD_POLICY_DOCS,
}
READ_ONLY_ADMIN = frozenset({"Status", "ListProposals", "Checkpoint"})


def admin_methods() -> list[str]:
    return [m.name for m in apb.DESCRIPTOR.services_by_name["Admin"].methods]


def command_class(method: str) -> type | None:
    """The *Command message an Admin method takes (Unfreeze shares FreezeCommand)."""
    name = "FreezeCommand" if method == "Unfreeze" else f"{method}Command"
    return getattr(apb, name, None)


def _bad_for(field: FieldDescriptor) -> list[Any]:
    t = field.type
    if t == FieldDescriptor.TYPE_STRING:
        return BAD_IDS
    if t == FieldDescriptor.TYPE_BYTES:
        return [b"", b"\x00", b"k" * 31, b"k" * 33, b"k" * 65, b"k" * MB]
    if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_UINT64):
        return [0, 2**32 - 1]
    if t in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_ENUM):
        return [-1, 2**31 - 1]
    return []


def command_fields(cls: type) -> list[tuple[str, ...]]:
    """Paths of the breakable scalar fields of a command (one level into sub-messages)."""
    paths: list[tuple[str, ...]] = []
    for f in cls.DESCRIPTOR.fields:  # type: ignore[attr-defined]
        if f.name == "header":
            continue
        if f.type == FieldDescriptor.TYPE_MESSAGE:
            paths += [(f.name, sub.name) for sub in f.message_type.fields if _bad_for(sub)]
        elif _bad_for(f):
            paths.append((f.name,))
    return paths


def _field_at(cls: type, path: tuple[str, ...]) -> FieldDescriptor:
    desc = cls.DESCRIPTOR  # type: ignore[attr-defined]
    for name in path[:-1]:
        desc = desc.fields_by_name[name].message_type
    return desc.fields_by_name[path[-1]]


@st.composite
def admin_plans(draw: st.DrawFn) -> dict[str, Any]:
    """An Admin command by the real operator with a broken header, command field or signature,
    or sent by a bot identity, or by someone using the operator's name with another key."""
    methods = [m for m in admin_methods() if command_class(m) is not None]
    method = draw(st.sampled_from(methods))
    cls = command_class(method)
    assert cls is not None
    hows = ["header", "not_operator", "forged_operator", "signature"]
    hows += ["field"] if command_fields(cls) else []
    how = draw(st.sampled_from(hows))
    plan: dict[str, Any] = {"method": method, "how": how}
    if how == "header":
        name = draw(st.sampled_from(["operator_id", "nonce", "timestamp_ms", "method"]))
        pool = BAD_IDS if name == "operator_id" else HEADER_FIELDS[name]
        plan["header"] = (name, draw(st.sampled_from(pool)))
    elif how == "field":
        path = draw(st.sampled_from(command_fields(cls)))
        pool = FIELD_POOLS.get((method, path)) or _bad_for(_field_at(cls, path))
        plan["field"] = (path, draw(st.sampled_from(pool)))
    elif how == "signature":
        plan["length"] = draw(st.sampled_from(SIG_LENGTHS))
    return plan


def build_admin_request(
    plan: dict[str, Any], operator: Identity, stranger: Identity
) -> apb.SignedAdminRequest:
    method = plan["method"]
    cls = command_class(method)
    assert cls is not None
    signer = {
        "not_operator": stranger,  # a bot's identity calling Admin
        "forged_operator": Identity(operator.name, stranger.signing_key),  # the name, not the key
    }.get(plan["how"], operator)
    cmd = cls(
        header=apb.AdminHeader(
            operator_id=signer.name,
            method=method,
            nonce=fresh_nonce(),
            timestamp_ms=time.time_ns() // 1_000_000,
        ),
        **BASE_COMMANDS.get(method, {}),
    )
    if "header" in plan:
        name, value = plan["header"]
        if name == "timestamp_ms":
            value = _timestamp(value)
        elif name == "method" and value == "other":
            value = "Status" if method != "Status" else "Freeze"
        setattr(cmd.header, name, value)
    if "field" in plan:
        path, value = plan["field"]
        target = cmd
        for name in path[:-1]:
            child = getattr(target, name)
            target = child.add() if _repeated(target.DESCRIPTOR.fields_by_name[name]) else child
        _set(target, path[-1], value)
    body = cmd.SerializeToString()
    sig = signer.signing_key.sign(ADMIN_SIGNING_CONTEXT + body).signature
    if plan["how"] == "signature":
        sig = (sig * (plan["length"] // 64 + 1))[: plan["length"]]
    return apb.SignedAdminRequest(body=body, signature=sig)


def _repeated(field: FieldDescriptor) -> bool:
    flag = getattr(field, "is_repeated", None)  # newer protobuf; `label` is deprecated there
    return bool(flag) if flag is not None else field.label == FieldDescriptor.LABEL_REPEATED


def _set(target: Any, name: str, value: Any) -> None:
    if _repeated(target.DESCRIPTOR.fields_by_name[name]):
        getattr(target, name).append(value)
    else:
        setattr(target, name, value)
