"""Who may do what: identities, revocation, key grants, method binding, time, admin separation,
per-key freezes and policy changes -- each refusal with its status, rule id and audit record.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import grpc
import pytest

from botengine.signer_client import AdminClient, Identity, SignerClient, fresh_nonce, now_ms
from bulkhead.signer.v1 import signer_pb2 as pb
from signer.core import now_ms as signer_now_ms
from signer.db import write_txn
from tests.signer.stack import BOT_ID, KEY_ID, OPERATOR_ID, POLICY_TOML, Stack

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
TEN_MINUTES_MS = 10 * 60 * 1000


def ok_price(stack: Stack) -> str:
    return str((stack.price("BTC/USDT") * Decimal("0.99")).quantize(Decimal("0.01")))


def refusal(call: Callable[[], object], code: grpc.StatusCode, rule_id: str) -> str:
    """Run `call`, expect an RpcError with `code` whose message starts with the rule id."""
    with pytest.raises(grpc.RpcError) as e:
        call()
    details = e.value.details() or ""
    assert e.value.code() == code, details
    assert details.startswith(f"{rule_id}:"), details
    return details


def payloads(stack: Stack, kind: str) -> list[dict[str, Any]]:
    return [r["payload"] for r in stack.audit_records(kind)]


def who_what(payload: dict[str, Any]) -> tuple[str, str, str]:
    return payload["rule_id"], payload["claimed_identity"], payload["method"]


def add_second_key(stack: Stack, key_id: str = "k2", bot_id: str = "bot-2") -> SignerClient:
    """A second exchange key id (same simulator account) with the standard policy, and a bot
    registered through the Admin service for that key only."""
    with write_txn(stack.opened.engine) as s:
        stack.opened.keystore.add_hmac(
            s, key_id, "binance", stack.account.api_key, stack.account.secret
        )
        stack.opened.audit.append(
            s, "admin", {"action": "keys_add", "actor": "test", "key_id": key_id}, signer_now_ms()
        )
    admin = stack.admin()
    assert admin.set_policy(key_id, POLICY_TOML).policy_version == 1
    bot = Identity.generate(bot_id)
    assert admin.register_bot(bot_id, bot.public_key, [key_id]).ok
    return stack.client(bot, key_id)


# --- identities -------------------------------------------------------------------------------


def test_unknown_and_revoked_identities_are_unauthenticated_and_audited(stack: Stack) -> None:
    price = ok_price(stack)
    ghost = stack.client(Identity.generate("ghost-bot"))
    refusal(ghost.get_policy, UNAUTHENTICATED, "unknown_identity")
    # The operator's key used on the bot service under the operator's id: not a bot.
    as_bot = stack.client(Identity(OPERATOR_ID, stack.operator.signing_key))
    refusal(
        lambda: as_bot.submit_order("BTC/USDT", "buy", "limit", "0.001", price, "op-as-bot"),
        UNAUTHENTICATED,
        "unknown_identity",
    )

    bot = stack.client()
    assert bot.get_policy().key_id == KEY_ID
    reply = stack.admin().revoke_bot(BOT_ID)
    assert reply.ok and reply.audit_seq > 0
    decisions = len(stack.audit_records("decision"))
    refusal(
        lambda: bot.submit_order("BTC/USDT", "buy", "limit", "0.001", price, "after-revoke"),
        UNAUTHENTICATED,
        "identity_revoked",
    )
    refusal(bot.get_policy, UNAUTHENTICATED, "identity_revoked")
    refusal(lambda: bot.read("balances"), UNAUTHENTICATED, "identity_revoked")
    refusal(lambda: bot.cancel_order("BTC/USDT", "anything"), UNAUTHENTICATED, "identity_revoked")
    assert len(stack.audit_records("decision")) == decisions  # never reached policy
    assert stack.sim.engine.orders == {}

    denied = [who_what(p) for p in payloads(stack, "auth_denied")]
    assert denied == [
        ("unknown_identity", "ghost-bot", "GetPolicy"),
        ("unknown_identity", OPERATOR_ID, "SubmitOrder"),
        ("identity_revoked", BOT_ID, "SubmitOrder"),
        ("identity_revoked", BOT_ID, "GetPolicy"),
        ("identity_revoked", BOT_ID, "Read"),
        ("identity_revoked", BOT_ID, "CancelOrder"),
    ]
    revokes = [p for p in payloads(stack, "admin") if p["action"] == "revoke_bot"]
    assert revokes == [
        {"action": "revoke_bot", "actor": f"operator:{OPERATOR_ID}", "bot_id": BOT_ID}
    ]
    assert stack.verify().ok


def test_a_bot_using_a_key_it_was_not_granted_is_permission_denied(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    price = ok_price(stack)
    bot2 = add_second_key(stack)
    assert bot2.get_policy().key_id == "k2"  # its own key works

    bot2_on_k1 = stack.client(bot2.identity, KEY_ID)
    bot1_on_k2 = stack.client(stack.bot, "k2")
    decisions = len(stack.audit_records("decision"))
    refusal(
        lambda: bot2_on_k1.submit_order("BTC/USDT", "buy", "limit", "0.001", price, "steal-1"),
        PERMISSION_DENIED,
        "key_not_granted",
    )
    refusal(bot1_on_k2.get_policy, PERMISSION_DENIED, "key_not_granted")
    refusal(lambda: bot2_on_k1.read("balances"), PERMISSION_DENIED, "key_not_granted")
    refusal(lambda: bot2_on_k1.cancel_order("BTC/USDT", "x"), PERMISSION_DENIED, "key_not_granted")
    assert len(stack.audit_records("decision")) == decisions
    assert stack.sim.engine.orders == {}

    denied = [(*who_what(p), p["key_id"]) for p in payloads(stack, "permission_denied")]
    assert denied == [
        ("key_not_granted", "bot-2", "SubmitOrder", KEY_ID),
        ("key_not_granted", BOT_ID, "GetPolicy", "k2"),
        ("key_not_granted", "bot-2", "Read", KEY_ID),
        ("key_not_granted", "bot-2", "CancelOrder", KEY_ID),
    ]
    # The refusals touched nobody else: the key's own bot still works.
    assert stack.client().get_policy().key_id == KEY_ID
    assert stack.verify().ok


def test_a_read_refused_for_the_key_itself_is_audited(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    bot = stack.client()
    nonce = fresh_nonce()

    def read(exchange: str) -> pb.SignedRequest:
        header = bot.header("Read", nonce=nonce)
        return bot.sign(pb.ReadIntent(header=header, exchange=exchange, kind=3))

    # The key belongs to binance: reading it as "kraken" is refused, audited, and changes nothing.
    refusal(lambda: bot.call("Read", read("kraken")), PERMISSION_DENIED, "exchange_mismatch")
    assert [p["rule_id"] for p in payloads(stack, "permission_denied")] == ["exchange_mismatch"]
    assert bot.call("Read", read("binance")).balances  # type: ignore[attr-defined]


# --- what the signature binds: method and time ------------------------------------------------


def test_a_body_signed_for_another_method_is_refused(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    bot = stack.client()
    price = ok_price(stack)
    # An order intent whose signed header says "Read", sent to SubmitOrder.
    intent = pb.OrderIntent(
        header=bot.header("Read"),
        exchange="binance",
        symbol="BTC/USDT",
        side=pb.SIDE_BUY,
        type=pb.ORDER_TYPE_LIMIT,
        amount="0.001",
        limit_price=price,
        client_order_id="wrong-method-1",
    )
    refusal(lambda: bot.call("SubmitOrder", bot.sign(intent)), UNAUTHENTICATED, "wrong_method")
    # A captured Read request replayed against GetPolicy (the body parses as a PolicyQuery).
    read = bot.sign(
        pb.ReadIntent(header=bot.header("Read"), exchange="binance", kind=pb.READ_KIND_BALANCES)
    )
    refusal(lambda: bot.call("GetPolicy", read), UNAUTHENTICATED, "wrong_method")
    # The same Read bytes against SubmitOrder do not even parse as an order: refused earlier.
    with pytest.raises(grpc.RpcError) as e:
        bot.call("SubmitOrder", read)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # The refusals did not consume the captured Read's nonce: its own RPC still accepts it once.
    assert bot.call("Read", read).balances  # type: ignore[attr-defined]
    refusal(lambda: bot.call("Read", read), UNAUTHENTICATED, "replayed_nonce")

    assert stack.sim.engine.orders == {}
    rules = [(p["rule_id"], p["method"]) for p in payloads(stack, "auth_denied")]
    assert rules == [("wrong_method", "Read"), ("wrong_method", "Read"), ("replayed_nonce", "Read")]


@pytest.mark.parametrize("offset_ms", [-TEN_MINUTES_MS, TEN_MINUTES_MS], ids=["old", "future"])
def test_a_timestamp_outside_the_allowed_skew_is_stale(sqlite_stack: Stack, offset_ms: int) -> None:
    stack = sqlite_stack
    bot = stack.client()
    price = ok_price(stack)
    ts = now_ms() + offset_ms
    order = bot.order_request(
        "BTC/USDT", "buy", "limit", "0.001", price, "stale-1", timestamp_ms=ts
    )
    refusal(lambda: bot.call("SubmitOrder", order), UNAUTHENTICATED, "stale_timestamp")
    query = bot.sign(pb.PolicyQuery(header=bot.header("GetPolicy", timestamp_ms=ts)))
    refusal(lambda: bot.call("GetPolicy", query), UNAUTHENTICATED, "stale_timestamp")
    assert stack.sim.engine.orders == {}
    assert [p["rule_id"] for p in payloads(stack, "auth_denied")] == ["stale_timestamp"] * 2
    assert payloads(stack, "decision") == []
    # Within the skew the same order is fine.
    fresh = bot.order_request("BTC/USDT", "buy", "limit", "0.001", price, "stale-1")
    assert bot.call("SubmitOrder", fresh).decision.allowed  # type: ignore[attr-defined]


# --- the Admin service is for operators only ----------------------------------------------------


def test_a_bot_identity_cannot_use_the_admin_service(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    as_operator = AdminClient(
        stack.addresses["admin_unix"], Identity(BOT_ID, stack.bot.signing_key)
    )
    stack.clients.append(as_operator)
    calls = {
        "Freeze": lambda: as_operator.freeze(all_keys=True, reason="bot says so"),
        "SetPolicy": lambda: as_operator.set_policy(KEY_ID, POLICY_TOML.replace('"5000"', '"1e6"')),
        "RegisterBot": lambda: as_operator.register_bot(
            "bot-evil", Identity.generate("bot-evil").public_key, [KEY_ID]
        ),
        "Status": as_operator.status,
    }
    for call in calls.values():
        refusal(call, UNAUTHENTICATED, "unknown_identity")
    # The bot's key under the operator's id does not verify.
    forger = stack.admin(Identity(OPERATOR_ID, stack.bot.signing_key))
    refusal(lambda: forger.freeze(all_keys=True), UNAUTHENTICATED, "bad_signature")

    status = stack.admin().status()
    assert not status.global_frozen and status.bots == 1
    assert stack.client().get_policy().policy_version == 1
    denied = [who_what(p) for p in payloads(stack, "auth_denied")]
    assert denied == [("unknown_identity", f"operator:{BOT_ID}", m) for m in calls] + [
        ("bad_signature", f"operator:{OPERATOR_ID}", "Freeze")
    ]
    assert stack.verify().ok


# --- per-key freeze -----------------------------------------------------------------------------


def test_freezing_one_key_denies_its_orders_until_unfrozen(stack: Stack) -> None:
    price = ok_price(stack)
    bot = stack.client()
    bot2 = add_second_key(stack)
    admin = stack.admin()

    frozen = admin.freeze(KEY_ID, reason="incident")
    assert frozen.ok and frozen.audit_seq > 0
    assert list(admin.status().frozen_keys) == [KEY_ID]
    view = bot.get_policy()
    assert view.frozen and view.policy_version == 1
    assert not bot2.get_policy().frozen
    r = bot.submit_order("BTC/USDT", "buy", "limit", "0.001", price, "frozen-1")
    assert not r.decision.allowed
    assert "key_frozen" in {v.rule_id for v in r.decision.violations}
    r2 = bot2.submit_order("BTC/USDT", "buy", "limit", "0.001", price, "other-key-1")
    assert r2.decision.allowed, r2.decision.violations  # only the frozen key stops
    assert [o.client_order_id for o in stack.sim.engine.orders.values()] == ["other-key-1"]

    assert admin.unfreeze(KEY_ID, reason="resolved").ok
    assert not bot.get_policy().frozen
    assert list(admin.status().frozen_keys) == []
    r = bot.submit_order("BTC/USDT", "buy", "limit", "0.001", price, "thawed-1")
    assert r.decision.allowed, r.decision.violations

    decision = next(p for p in payloads(stack, "decision") if p["client_order_id"] == "frozen-1")
    assert decision["allowed"] is False
    assert "key_frozen" in {x["rule_id"] for x in decision["reasons"]}
    admin_payloads = payloads(stack, "admin")
    actions = [
        (p["action"], p.get("key_id"), p["actor"])
        for p in admin_payloads
        if p["action"] in ("freeze", "unfreeze")
    ]
    actor = f"operator:{OPERATOR_ID}"
    assert actions == [("freeze", KEY_ID, actor), ("unfreeze", KEY_ID, actor)]
    assert stack.verify().ok


# --- policy changes -------------------------------------------------------------------------------

CAP = 'max_order_notional = "5000"'
BAD_POLICIES = [
    ("max_order_notional", POLICY_TOML.replace(CAP, 'max_order_notional = "abc"')),
    ("max_order_notional", POLICY_TOML.replace(CAP, "max_order_notional = 5000.0")),
    ("max_order_notional", POLICY_TOML.replace(CAP, 'max_order_notional = "-1"')),
    ("symbols", POLICY_TOML.replace('"BTC/USDT", "ETH/USDT"', '"\u0412TC/USDT"')),
    ("withdrawals", POLICY_TOML + "withdrawals = true\n"),
    ("max_open_orders", POLICY_TOML.replace("max_open_orders = 50\n", "")),
]


def test_set_policy_with_a_bad_field_is_invalid_and_keeps_the_version(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    admin = stack.admin()
    bot = stack.client()
    before = bot.get_policy()
    audit = stack.audit_size()
    for field, text in BAD_POLICIES:
        details = refusal(
            lambda text=text: admin.set_policy(KEY_ID, text),  # type: ignore[misc]
            grpc.StatusCode.INVALID_ARGUMENT,
            field,
        )
        assert "Traceback" not in details
    after = bot.get_policy()
    assert after.policy_version == before.policy_version == 1
    assert after.policy_json == before.policy_json
    assert stack.audit_size() == audit

    # Optimistic concurrency: the first writer with expected_version=1 wins, the second is refused.
    tighter = POLICY_TOML.replace('max_order_notional = "5000"', 'max_order_notional = "4000"')
    assert admin.set_policy(KEY_ID, tighter, expected_version=1).policy_version == 2
    audit = stack.audit_size()
    with pytest.raises(grpc.RpcError) as e:
        admin.set_policy(KEY_ID, POLICY_TOML, expected_version=1)
    assert e.value.code() in (
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ABORTED,
    )
    assert (e.value.details() or "").startswith("expected_version:"), e.value.details()
    assert stack.audit_size() == audit
    view = bot.get_policy()
    assert view.policy_version == 2 and '"max_order_notional":"4000"' in view.policy_json
    sets = [
        (p["version"], p["previous_version"], p["actor"])
        for p in payloads(stack, "admin")
        if p["action"] == "set_policy"
    ]
    assert sets == [(1, 0, "test"), (2, 1, f"operator:{OPERATOR_ID}")]
    assert stack.verify().ok
