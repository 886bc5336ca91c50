"""sign-only mode: the signer returns the signed HTTP request and the bot sends it itself."""

from __future__ import annotations

import json
import urllib.request
from decimal import Decimal

from tests.signer.stack import Stack


def test_sign_only_returns_a_request_the_exchange_accepts(sqlite_stack: Stack) -> None:
    stack = sqlite_stack
    client = stack.client()
    price = (stack.price() * Decimal("0.98")).quantize(Decimal("0.01"))
    reply = client.submit_order(
        "BTC/USDT", "buy", "limit", "0.002", price, "so-1", mode="sign-only"
    )
    assert reply.decision.allowed
    req = reply.signed_request
    assert req.method == "POST" and req.url.startswith(stack.sim.base_url)
    assert not reply.HasField("order")  # nothing was sent by the signer
    assert client.read("open_orders", "BTC/USDT").orders == []

    # The bot (not the signer) sends exactly what was signed.
    http = urllib.request.Request(
        req.url,
        data=req.body.encode() if req.body else None,
        method=req.method,
        headers=dict(req.headers),
    )
    with urllib.request.urlopen(http, timeout=10) as resp:
        answer = json.loads(resp.read())
    assert answer["clientOrderId"] == "so-1"
    assert [o.client_order_id for o in client.read("open_orders", "BTC/USDT").orders] == ["so-1"]

    outcome = [
        r["payload"]
        for r in stack.audit_records("outcome")
        if r["payload"]["client_order_id"] == "so-1"
    ]
    assert outcome and outcome[0]["status"] == "signed"
    assert "X-MBX-APIKEY" not in json.dumps(outcome)  # the audit keeps a digest, not headers


def test_a_signed_request_cannot_be_altered_by_the_bot(sqlite_stack: Stack) -> None:
    """Changing the signed quantity invalidates the exchange signature: the cap cannot be dodged."""
    stack = sqlite_stack
    client = stack.client()
    price = (stack.price() * Decimal("0.98")).quantize(Decimal("0.01"))
    req = client.submit_order(
        "BTC/USDT", "buy", "limit", "0.002", price, "so-2", mode="sign-only"
    ).signed_request
    url = req.url.replace("quantity=0.002", "quantity=0.2")
    body = req.body.replace("quantity=0.002", "quantity=0.2") if req.body else None
    assert url != req.url or body != req.body
    http = urllib.request.Request(
        url, data=body.encode() if body else None, method=req.method, headers=dict(req.headers)
    )
    try:
        urllib.request.urlopen(http, timeout=10)
        raise AssertionError("the exchange accepted an altered request")
    except urllib.error.HTTPError as e:
        assert json.loads(e.read())["code"] == -1022  # Binance: signature not valid
    assert client.read("open_orders", "BTC/USDT").orders == []
