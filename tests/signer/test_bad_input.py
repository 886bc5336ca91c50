"""Malformed requests: INVALID_ARGUMENT naming the field, and nothing changes.

For every bad field of SubmitOrder, CancelOrder, Read and GetPolicy the signer answers
INVALID_ARGUMENT with a message that starts with the field's name; the audit log does not grow,
nothing reaches the exchange, and the nonce is not consumed: the same nonce with the corrected
body is then accepted. Requests are built as raw protobuf and signed with the bot's real key, so
every field is under the test's control and only the field under test is wrong.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from botengine.signer_client import SignerClient, fresh_nonce
from bulkhead.contract import BOT_SIGNING_CONTEXT
from bulkhead.signer.v1 import admin_pb2 as apb
from bulkhead.signer.v1 import signer_pb2 as pb
from tests.signer.stack import KEY_ID, POLICY_TOML, Stack, build_stack

INVALID = grpc.StatusCode.INVALID_ARGUMENT
# Room for every corrected order this module places (one stack serves the whole module).
ROOMY_POLICY = POLICY_TOML.replace("max_open_orders = 50", "max_open_orders = 1000")
_coids = itertools.count()


def coid() -> str:
    return f"bad-in-{next(_coids)}"


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Bad input changes nothing, so one stack serves every case (each check is a delta)."""
    s = build_stack(tmp_path_factory.mktemp("bad-input"), None, policy=ROOMY_POLICY)
    try:
        yield s
    finally:
        s.stop()


def exchange_orders(stack: Stack) -> int:
    """Every order the simulator ever accepted (open or not), for any account."""
    return len(stack.sim.engine.orders)


def ok_price(stack: Stack) -> str:
    return str((stack.price("BTC/USDT") * Decimal("0.99")).quantize(Decimal("0.01")))


def order_intent(
    client: SignerClient, price: str, nonce: str, client_order_id: str, /, **fields: Any
) -> pb.OrderIntent:
    """A good limit buy, then `fields` overwrite whatever the case makes malformed."""
    msg = pb.OrderIntent(
        header=client.header("SubmitOrder", nonce=nonce),
        exchange="binance",
        symbol="BTC/USDT",
        side=pb.SIDE_BUY,
        type=pb.ORDER_TYPE_LIMIT,
        amount="0.001",
        limit_price=price,
        client_order_id=client_order_id,
    )
    for name, value in fields.items():
        setattr(msg, name, value)
    return msg


def header_with(
    client: SignerClient, method: str, nonce: str, /, **fields: Any
) -> pb.RequestHeader:
    h = client.header(method, nonce=nonce)
    for name, value in fields.items():
        setattr(h, name, value)
    return h


def refused(
    stack: Stack,
    client: SignerClient,
    method: str,
    request: pb.SignedRequest,
    field: str,
    code: grpc.StatusCode = INVALID,
) -> str:
    """Send a bad request; check the status, the field named first, and that nothing changed."""
    audit, orders = stack.audit_size(), exchange_orders(stack)
    with pytest.raises(grpc.RpcError) as e:
        client.call(method, request)
    details = e.value.details() or ""
    assert e.value.code() == code, details
    if code == INVALID:
        assert details.startswith(f"{field}:"), f"expected the message to name {field!r}: {details}"
    assert stack.audit_size() == audit, "a malformed request must not be audited as a decision"
    assert exchange_orders(stack) == orders
    return details


def placed(stack: Stack, client: SignerClient, request: pb.SignedRequest) -> pb.OrderReply:
    """The corrected request (same nonce) is accepted and reaches the exchange."""
    orders = exchange_orders(stack)
    reply = client.call("SubmitOrder", request)
    assert reply.decision.allowed, reply.decision.violations  # type: ignore[attr-defined]
    assert reply.order.status == "open", reply  # type: ignore[attr-defined]
    assert exchange_orders(stack) == orders + 1
    return reply  # type: ignore[return-value]


# --- SubmitOrder: one bad field at a time ------------------------------------------------------


def case(case_id: str, field: str, fields: dict[str, Any]) -> Any:
    """One malformed request: the field its message must name, and the fields that break it."""
    return pytest.param(field, fields, id=case_id)


BAD_ORDER_FIELDS = [
    case("amount-NaN", "amount", {"amount": "NaN"}),
    case("amount-nan", "amount", {"amount": "nan"}),
    case("amount-sNaN", "amount", {"amount": "sNaN"}),
    case("amount-inf", "amount", {"amount": "inf"}),
    case("amount-Infinity", "amount", {"amount": "Infinity"}),
    case("amount-negative", "amount", {"amount": "-1"}),
    case("amount-plus-sign", "amount", {"amount": "+0.001"}),
    case("amount-zero", "amount", {"amount": "0"}),
    case("amount-zero-decimals", "amount", {"amount": "0.000"}),
    case("amount-exponent", "amount", {"amount": "1e300"}),
    case("amount-small-exponent", "amount", {"amount": "1E-3"}),
    case("amount-40-int-digits", "amount", {"amount": "1" * 40}),
    case("amount-40-frac-digits", "amount", {"amount": "0." + "0" * 39 + "1"}),
    case("amount-empty", "amount", {"amount": ""}),
    case("amount-comma", "amount", {"amount": "1,5"}),
    case("amount-leading-space", "amount", {"amount": " 0.001"}),
    case("amount-hex", "amount", {"amount": "0x10"}),
    case("amount-underscore", "amount", {"amount": "0.0_01"}),
    case("amount-arabic-digits", "amount", {"amount": "\u0660.\u0660\u0660\u0661"}),
    case("amount-fullwidth-digits", "amount", {"amount": "\uff10.\uff10\uff10\uff11"}),
    case("limit-price-missing", "limit_price", {"limit_price": ""}),
    case("limit-price-NaN", "limit_price", {"limit_price": "NaN"}),
    case("limit-price-negative", "limit_price", {"limit_price": "-59000"}),
    case("limit-price-zero", "limit_price", {"limit_price": "0"}),
    case("limit-price-exponent", "limit_price", {"limit_price": "5.9e4"}),
    case("limit-price-40-digits", "limit_price", {"limit_price": "9" * 40}),
    case("market-with-limit-price", "limit_price", {"type": pb.ORDER_TYPE_MARKET}),
    case("side-7", "side", {"side": 7}),
    case("side-unspecified", "side", {"side": pb.SIDE_UNSPECIFIED}),
    case("type-7", "type", {"type": 7}),
    case("type-unspecified", "type", {"type": pb.ORDER_TYPE_UNSPECIFIED}),
    case("symbol-cyrillic-B", "symbol", {"symbol": "\u0412TC/USDT"}),
    case("symbol-cyrillic-T", "symbol", {"symbol": "BTC/USD\u0422"}),
    case("symbol-empty", "symbol", {"symbol": ""}),
    case("symbol-lowercase", "symbol", {"symbol": "btc/usdt"}),
    case("symbol-no-slash", "symbol", {"symbol": "BTCUSDT"}),
    case("symbol-nul", "symbol", {"symbol": "BTC/USDT\x00"}),
    case("symbol-60k", "symbol", {"symbol": "B" * 60_000 + "/USDT"}),
    case("symbol-1MB", "body", {"symbol": "B" * 1_000_000 + "/USDT"}),  # envelope size first
    case("coid-too-long", "client_order_id", {"client_order_id": "x" * 37}),
    case("coid-empty", "client_order_id", {"client_order_id": ""}),
    case("coid-space", "client_order_id", {"client_order_id": "a b"}),
    case("coid-semicolon", "client_order_id", {"client_order_id": "id;DROP"}),
    case("coid-non-ascii", "client_order_id", {"client_order_id": "\u00efd-1"}),
    case("coid-oversized-body", "body", {"client_order_id": "x" * 70_000}),
    case("exchange-empty", "exchange", {"exchange": ""}),
    case("exchange-uppercase", "exchange", {"exchange": "Binance"}),
    case("exchange-path", "exchange", {"exchange": "../binance"}),
    case("mode-9", "mode", {"mode": 9}),
    case("quote-amount", "quote_amount", {"quote_amount": "10"}),
]


@pytest.mark.parametrize(("field", "fields"), BAD_ORDER_FIELDS)
def test_malformed_order_field_is_invalid_argument_and_keeps_the_nonce(
    shared: Stack, field: str, fields: dict[str, Any]
) -> None:
    client = shared.client()
    nonce, cid, price = fresh_nonce(), coid(), ok_price(shared)
    bad = client.sign(order_intent(client, price, nonce, cid, **fields))
    refused(shared, client, "SubmitOrder", bad, field)
    placed(shared, client, client.sign(order_intent(client, price, nonce, cid)))


TRAILING_NEWLINE = [
    ("amount", {"amount": "0.001\n"}),
    ("limit_price", {}),  # the real price + "\n", filled in below
    ("symbol", {"symbol": "BTC/USDT\n"}),
    ("client_order_id", {"client_order_id": "nl-1\n"}),
    ("exchange", {"exchange": "binance\n"}),
    ("header.bot_id", {}),  # the bot's real id + "\n"
    ("header.nonce", {}),  # a fresh nonce + "\n"
]


@pytest.mark.parametrize(
    ("field", "fields"), TRAILING_NEWLINE, ids=[f for f, _ in TRAILING_NEWLINE]
)
def test_trailing_newline_in_a_field_is_invalid_argument(
    shared: Stack, field: str, fields: dict[str, Any]
) -> None:
    client = shared.client()
    price = ok_price(shared)
    msg = order_intent(client, price, fresh_nonce(), coid(), **fields)
    if field == "limit_price":
        msg.limit_price = price + "\n"
    elif field == "header.bot_id":
        msg.header.bot_id += "\n"
    elif field == "header.nonce":
        msg.header.nonce += "\n"
    refused(shared, client, "SubmitOrder", client.sign(msg), field)


BAD_HEADERS = [
    case("bot-id-space", "header.bot_id", {"bot_id": "bot 1"}),
    case("bot-id-empty", "header.bot_id", {"bot_id": ""}),
    case("bot-id-too-long", "header.bot_id", {"bot_id": "b" * 65}),
    case("key-id-space", "header.key_id", {"key_id": "k 1"}),
    case("key-id-empty", "header.key_id", {"key_id": ""}),
    case("key-id-trailing-newline", "header.key_id", {"key_id": KEY_ID + "\n"}),
    case("nonce-short", "header.nonce", {"nonce": "abc"}),
    case("nonce-long", "header.nonce", {"nonce": "n" * 65}),
    case("nonce-bad-chars", "header.nonce", {"nonce": "nonce/with+slash=="}),
    case("timestamp-zero", "header.timestamp_ms", {"timestamp_ms": 0}),
    case("timestamp-negative", "header.timestamp_ms", {"timestamp_ms": -1_000}),
]


@pytest.mark.parametrize(("field", "fields"), BAD_HEADERS)
def test_malformed_header_field_is_invalid_argument_for_every_rpc(
    shared: Stack, field: str, fields: dict[str, Any]
) -> None:
    client = shared.client()
    price = ok_price(shared)
    bodies: dict[str, Callable[[pb.RequestHeader], Any]] = {
        "SubmitOrder": lambda h: pb.OrderIntent(
            header=h,
            exchange="binance",
            symbol="BTC/USDT",
            side=pb.SIDE_BUY,
            type=pb.ORDER_TYPE_LIMIT,
            amount="0.001",
            limit_price=price,
            client_order_id=coid(),
        ),
        "CancelOrder": lambda h: pb.CancelIntent(
            header=h, exchange="binance", symbol="BTC/USDT", client_order_id="anything"
        ),
        "Read": lambda h: pb.ReadIntent(header=h, exchange="binance", kind=pb.READ_KIND_BALANCES),
        "GetPolicy": lambda h: pb.PolicyQuery(header=h),
    }
    for method, body in bodies.items():
        header = header_with(client, method, fresh_nonce(), **fields)
        refused(shared, client, method, client.sign(body(header)), field)
    assert client.get_policy().key_id == KEY_ID  # still answering


# --- the envelope: body bytes, signature, sizes -------------------------------------------------


def test_body_that_is_not_a_protobuf_is_invalid_argument(shared: Stack) -> None:
    client = shared.client()
    rnd = random.Random(20240601)
    for method in ("SubmitOrder", "CancelOrder", "Read", "GetPolicy"):
        for _ in range(5):
            body = rnd.randbytes(rnd.randrange(1, 300))
            sig = client.identity.signing_key.sign(BOT_SIGNING_CONTEXT + body).signature
            details = refused(
                shared, client, method, pb.SignedRequest(body=body, signature=sig), "body"
            )
            assert "not a valid serialized" in details


def test_body_without_header_and_truncated_body_keep_the_nonce(shared: Stack) -> None:
    client = shared.client()
    nonce, cid, price = fresh_nonce(), coid(), ok_price(shared)
    good = client.sign(order_intent(client, price, nonce, cid))
    no_header = order_intent(client, price, nonce, cid)
    no_header.ClearField("header")
    refused(shared, client, "SubmitOrder", client.sign(no_header), "header")
    refused(shared, client, "SubmitOrder", pb.SignedRequest(signature=good.signature), "header")
    truncated = pb.SignedRequest(body=good.body[:-1], signature=good.signature)  # inside a string
    refused(shared, client, "SubmitOrder", truncated, "body")
    # Invalid UTF-8 inside a string field (symbol): not a valid proto3 message.
    bad_utf8 = good.body.replace(b"BTC/USDT", b"BTC/USD\xff")
    bad_request = pb.SignedRequest(body=bad_utf8, signature=b"s" * 64)
    refused(shared, client, "SubmitOrder", bad_request, "body")
    placed(shared, client, good)


@pytest.mark.parametrize("length", [0, 1, 63, 65, 128])
def test_signature_of_wrong_length_is_invalid_argument_and_keeps_the_nonce(
    shared: Stack, length: int
) -> None:
    client = shared.client()
    good = client.sign(order_intent(client, ok_price(shared), fresh_nonce(), coid()))
    sig = (good.signature * 3)[:length]
    bad = pb.SignedRequest(body=good.body, signature=sig)
    details = refused(shared, client, "SubmitOrder", bad, "signature")
    assert f"{length} bytes" in details
    placed(shared, client, good)


def test_oversized_body_is_invalid_argument_on_every_rpc(shared: Stack) -> None:
    client = shared.client()
    limit = shared.opened.config.max_request_bytes
    padding = "x" * (limit + 1)
    bodies = {
        "SubmitOrder": order_intent(client, ok_price(shared), fresh_nonce(), coid()),
        "CancelOrder": pb.CancelIntent(
            header=client.header("CancelOrder"),
            exchange="binance",
            symbol="BTC/USDT",
            client_order_id="c-1",
        ),
        "Read": pb.ReadIntent(
            header=client.header("Read"), exchange="binance", kind=pb.READ_KIND_BALANCES
        ),
        "GetPolicy": pb.PolicyQuery(header=client.header("GetPolicy")),
    }
    for method, msg in bodies.items():
        # An unknown field carries the padding, so nothing but the size is wrong.
        body = msg.SerializeToString() + b"\xfa\x3e" + _varint(len(padding)) + padding.encode()
        sig = client.identity.signing_key.sign(BOT_SIGNING_CONTEXT + body).signature
        details = refused(
            shared, client, method, pb.SignedRequest(body=body, signature=sig), "body"
        )
        assert f"at most {limit}" in details or "too large" in details


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def test_message_above_the_grpc_limit_is_resource_exhausted(shared: Stack) -> None:
    client = shared.client()
    nonce, cid, price = fresh_nonce(), coid(), ok_price(shared)
    huge = client.sign(order_intent(client, price, nonce, cid, symbol="B" * (5 * 1024 * 1024)))
    details = refused(
        shared, client, "SubmitOrder", huge, "", code=grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    assert "larger than max" in details
    placed(shared, client, client.sign(order_intent(client, price, nonce, cid)))


# --- CancelOrder ---------------------------------------------------------------------------------

BAD_CANCEL_FIELDS = [
    case("symbol-cyrillic", "symbol", {"symbol": "\u0412TC/USDT"}),
    case("symbol-empty", "symbol", {"symbol": ""}),
    case("coid-empty", "client_order_id", {"client_order_id": ""}),
    case("coid-too-long", "client_order_id", {"client_order_id": "c" * 37}),
    case("coid-bad-chars", "client_order_id", {"client_order_id": "c*1"}),
    case("exchange-empty", "exchange", {"exchange": ""}),
    case("mode-9", "mode", {"mode": 9}),
]


@pytest.mark.parametrize(("field", "fields"), BAD_CANCEL_FIELDS)
def test_malformed_cancel_leaves_the_order_open_and_keeps_the_nonce(
    shared: Stack, field: str, fields: dict[str, Any]
) -> None:
    client = shared.client()
    cid = coid()
    placed(shared, client, client.sign(order_intent(client, ok_price(shared), fresh_nonce(), cid)))
    nonce = fresh_nonce()

    def cancel(**over: Any) -> pb.SignedRequest:
        msg = pb.CancelIntent(
            header=client.header("CancelOrder", nonce=nonce),
            exchange="binance",
            symbol="BTC/USDT",
            client_order_id=cid,
        )
        for name, value in over.items():
            setattr(msg, name, value)
        return client.sign(msg)

    refused(shared, client, "CancelOrder", cancel(**fields), field)
    assert cid in {o.client_order_id for o in client.read("open_orders", "BTC/USDT").orders}
    reply = client.call("CancelOrder", cancel())
    assert reply.decision.allowed and reply.order.status == "canceled"  # type: ignore[attr-defined]


# --- Read ---------------------------------------------------------------------------------------

BAD_READS = [
    case("kind-unknown-9", "kind", {"kind": 9}),
    case("kind-unspecified", "kind", {"kind": pb.READ_KIND_UNSPECIFIED}),
    case("order-without-symbol", "symbol", {"kind": pb.READ_KIND_ORDER, "client_order_id": "c-1"}),
    case(
        "order-bad-coid",
        "client_order_id",
        {"kind": pb.READ_KIND_ORDER, "symbol": "BTC/USDT", "client_order_id": "c 1"},
    ),
    case("trades-without-symbol", "symbol", {"kind": pb.READ_KIND_MY_TRADES}),
    case("symbol-cyrillic", "symbol", {"symbol": "\u0412TC/USDT"}),
    case("exchange-bad", "exchange", {"exchange": "BINANCE"}),
]


@pytest.mark.parametrize(("field", "fields"), BAD_READS)
def test_malformed_read_is_invalid_argument_and_keeps_the_nonce(
    shared: Stack, field: str, fields: dict[str, Any]
) -> None:
    client = shared.client()
    nonce = fresh_nonce()

    def read(**over: Any) -> pb.SignedRequest:
        msg = pb.ReadIntent(
            header=client.header("Read", nonce=nonce),
            exchange="binance",
            kind=pb.READ_KIND_BALANCES,
        )
        for name, value in over.items():
            setattr(msg, name, value)
        return client.sign(msg)

    refused(shared, client, "Read", read(**fields), field)
    reply = client.call("Read", read())
    assert "USDT" in {b.asset for b in reply.balances}  # type: ignore[attr-defined]


def test_malformed_get_policy_keeps_the_nonce(shared: Stack) -> None:
    client = shared.client()
    nonce = fresh_nonce()
    bad = pb.PolicyQuery(header=header_with(client, "GetPolicy", nonce, key_id="k1;--"))
    refused(shared, client, "GetPolicy", client.sign(bad), "header.key_id")
    good = client.sign(pb.PolicyQuery(header=client.header("GetPolicy", nonce=nonce)))
    short = pb.SignedRequest(body=good.body, signature=good.signature[:63])
    refused(shared, client, "GetPolicy", short, "signature")
    view = client.call("GetPolicy", good)
    assert view.key_id == KEY_ID and view.policy_version == 1  # type: ignore[attr-defined]


# --- Admin service header ----------------------------------------------------------------------


def test_malformed_operator_id_names_the_operator_field(shared: Stack) -> None:
    admin = shared.admin()
    header = admin.header("Status")
    header.operator_id = "op 1"
    before = shared.audit_size()
    with pytest.raises(grpc.RpcError) as e:
        admin.stub.Status(admin.sign(apb.StatusCommand(header=header)), timeout=10)
    assert e.value.code() == INVALID
    assert shared.audit_size() == before
    assert (e.value.details() or "").startswith("header.operator_id:"), e.value.details()


# --- property: random text never yields anything but INVALID_ARGUMENT or a decision --------------

NEAR_MISSES = [
    "0.001", "1", "0", "00", "-0", "0.0010", "1.", ".5", "NaN", "Infinity", "-inf", "1e3", "1_000",
    "BTC/USDT", "ETH/USDT", "DATA/USDT", "BTC/", "/USDT", "BTC//USDT", "BTC/USDT/ETH", " BTC/USDT",
    "\u0412TC/USDT", "\u0660", "\uff11", "1" * 20, "1" * 21, "0." + "1" * 18, "0." + "1" * 19,
]  # fmt: skip
texts = st.one_of(
    st.text(max_size=48),
    st.sampled_from(NEAR_MISSES),
    st.from_regex(r"\A[-+]?[0-9]{0,24}(\.[0-9]{0,20})?([eE][-+]?[0-9]{1,3})?\Z"),
    st.from_regex(r"\A[A-Za-z0-9]{0,6}/?[A-Z0-9]{0,6}\Z"),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(field=st.sampled_from(["amount", "limit_price", "symbol"]), value=texts)
def test_random_text_in_money_or_symbol_is_refused_or_decided(
    shared: Stack, field: str, value: str
) -> None:
    client = shared.client()
    audit, orders = shared.audit_size(), exchange_orders(shared)
    request = client.sign(
        order_intent(client, ok_price(shared), fresh_nonce(), coid(), **{field: value})
    )
    try:
        reply = client.call("SubmitOrder", request)
    except grpc.RpcError as e:
        assert e.code() == INVALID, (e.code(), e.details())  # type: ignore[attr-defined]
        event("INVALID_ARGUMENT")
        assert (e.details() or "").startswith(f"{field}:"), e.details()  # type: ignore[attr-defined]
        assert shared.audit_size() == audit
        assert exchange_orders(shared) == orders
    else:
        decision = reply.decision  # type: ignore[attr-defined]
        assert decision.audit_seq > 0
        event("allowed" if decision.allowed else "denied")
        if decision.allowed:  # decision + outcome records
            assert shared.audit_size() == audit + 2
        else:
            assert decision.violations and shared.audit_size() == audit + 1
            assert exchange_orders(shared) == orders
    # The signer still answers a good request.
    assert client.get_policy().key_id == KEY_ID


# --- the same on PostgreSQL: nothing changes, the nonce stays usable ------------------------------


def test_malformed_amounts_change_no_state_on_either_database(stack: Stack) -> None:
    client = stack.client()
    nonce, cid, price = fresh_nonce(), coid(), ok_price(stack)
    for amount in ("NaN", "inf", "-1", "0", "1e300", "1" * 40, "", "1,5"):
        bad = client.sign(order_intent(client, price, nonce, cid, amount=amount))
        refused(stack, client, "SubmitOrder", bad, "amount")
    view = client.get_policy()
    assert view.open_orders == 0 and Decimal(view.used_24h_notional) == 0
    placed(stack, client, client.sign(order_intent(client, price, nonce, cid)))
    assert stack.verify().ok
