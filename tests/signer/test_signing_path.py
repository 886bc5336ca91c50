"""The signing path end to end: bot -> gRPC (Unix socket) -> signer -> ccxt -> simexchange."""

from __future__ import annotations

from decimal import Decimal

import ccxt

from simexchange.testing import ccxt_config
from tests.signer.stack import KEY_ID, Stack


def limit_below_market(stack: Stack, pct: str = "1") -> Decimal:
    price = stack.price("BTC/USDT")
    return (price * (1 - Decimal(pct) / 100)).quantize(Decimal("0.01"))


def test_allowed_limit_order_reaches_the_exchange_and_is_audited_twice(stack: Stack) -> None:
    client = stack.client()
    price = limit_below_market(stack)
    reply = client.submit_order("BTC/USDT", "buy", "limit", "0.01", price, "e2e-1")

    assert reply.decision.allowed, reply.decision.violations
    assert reply.order.client_order_id == "e2e-1"
    assert reply.order.status == "open"
    assert Decimal(reply.order.price) == price

    # The exchange really has it, seen by an independent ccxt client with the account's key.
    ex = ccxt.binance(ccxt_config(stack.sim.base_url, stack.account.api_key, stack.account.secret))
    open_ids = [o["clientOrderId"] for o in ex.fetch_open_orders("BTC/USDT")]
    assert "e2e-1" in open_ids

    decisions = [
        r for r in stack.audit_records("decision") if r["payload"]["client_order_id"] == "e2e-1"
    ]
    outcomes = [
        r for r in stack.audit_records("outcome") if r["payload"]["client_order_id"] == "e2e-1"
    ]
    assert len(decisions) == 1 and decisions[0]["payload"]["allowed"] is True
    assert len(outcomes) == 1
    assert outcomes[0]["payload"]["decision_seq"] == decisions[0]["seq"]
    assert outcomes[0]["payload"]["exchange_order_id"] == reply.order.exchange_order_id
    assert stack.verify().ok


def test_cancel_and_reads_work_through_the_signer(stack: Stack) -> None:
    client = stack.client()
    price = limit_below_market(stack, "2")
    assert client.submit_order("BTC/USDT", "buy", "limit", "0.01", price, "e2e-c").decision.allowed
    view = client.read("order", "BTC/USDT", "e2e-c")
    assert view.orders[0].status == "open"
    open_orders = client.read("open_orders", "BTC/USDT")
    assert [o.client_order_id for o in open_orders.orders] == ["e2e-c"]

    cancel = client.cancel_order("BTC/USDT", "e2e-c")
    assert cancel.decision.allowed
    assert cancel.order.status == "canceled"
    balances = {b.asset: b for b in client.read("balances").balances}
    assert Decimal(balances["USDT"].locked) == 0
    assert client.read("open_orders", "BTC/USDT").orders == []
    pol = client.get_policy()
    assert pol.key_id == KEY_ID and pol.open_orders == 0
    assert Decimal(pol.used_24h_notional) > 0


def test_orders_the_exchange_would_round_are_refused_before_signing(stack: Stack) -> None:
    """Amount off the step size, price off the tick, below min notional: refused with rule ids."""
    client = stack.client()
    price = limit_below_market(stack)
    before = stack.audit_size()
    r = client.submit_order("BTC/USDT", "buy", "limit", "0.0100001", price, "prec-1")
    assert not r.decision.allowed
    assert "amount_precision" in {v.rule_id for v in r.decision.violations}
    r = client.submit_order("BTC/USDT", "buy", "limit", "0.01", price + Decimal("0.001"), "prec-2")
    assert "price_precision" in {v.rule_id for v in r.decision.violations}
    r = client.submit_order("BTC/USDT", "buy", "limit", "0.00001", price, "prec-3")
    assert "min_notional" in {v.rule_id for v in r.decision.violations}
    assert stack.audit_size() == before + 3  # each denial audited, nothing sent
    assert client.read("open_orders", "BTC/USDT").orders == []
