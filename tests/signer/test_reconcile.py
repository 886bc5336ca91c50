"""After a crash or a lost answer, pending allowed orders get an outcome from the exchange."""

from __future__ import annotations

import json
import urllib.request
from decimal import Decimal

from signer.reconcile import reconcile_pending
from tests.signer.stack import Stack


def outcomes(stack: Stack, coid: str) -> list[dict]:  # type: ignore[type-arg]
    return [
        r["payload"]
        for r in stack.audit_records("outcome")
        if r["payload"]["client_order_id"] == coid
    ]


def test_pending_orders_are_reconciled_against_the_exchange(stack: Stack) -> None:
    client = stack.client()
    price = (stack.price() * Decimal("0.98")).quantize(Decimal("0.01"))
    # Two allowed orders whose fate the signer does not know (sign-only: the bot may send them).
    sent = client.submit_order(
        "BTC/USDT", "buy", "limit", "0.01", price, "rc-sent", mode="sign-only"
    ).signed_request
    client.submit_order("BTC/USDT", "buy", "limit", "0.02", price, "rc-lost", mode="sign-only")
    req = urllib.request.Request(
        sent.url,
        data=sent.body.encode() if sent.body else None,
        method=sent.method,
        headers=dict(sent.headers),
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert json.loads(resp.read())["clientOrderId"] == "rc-sent"
    used_before = Decimal(client.get_policy().used_24h_notional)
    assert used_before == price * Decimal("0.03")

    assert reconcile_pending(stack.server.core, grace_ms=0) == 2

    sent_out = outcomes(stack, "rc-sent")[-1]
    lost_out = outcomes(stack, "rc-lost")[-1]
    assert sent_out["status"] == "open" and sent_out["reconciled"] == "true"
    assert lost_out["status"] == "rejected" and "never placed" in lost_out["error"]
    decision_seqs = {
        r["payload"]["client_order_id"]: r["seq"] for r in stack.audit_records("decision")
    }
    assert sent_out["decision_seq"] == decision_seqs["rc-sent"]
    # The order that never reached the exchange no longer counts against the 24 h cap.
    pol = client.get_policy()
    assert Decimal(pol.used_24h_notional) == price * Decimal("0.01")
    assert pol.open_orders == 1
    # A second pass finds nothing left to do.
    assert reconcile_pending(stack.server.core, grace_ms=0) == 0
    assert stack.verify().ok
