"""Sign-only requests, rebuilt independently from each exchange's published signing scheme.

Offline: markets are installed with `use_markets` (ccxt's set_markets) and sign-only stops ccxt
at the transport, so these tests build requests for the real exchange URLs and send nothing.
KuCoin: KC-API-SIGN = base64(HMAC-SHA256(secret, timestamp + method + endpoint + body)),
KC-API-PASSPHRASE = base64(HMAC-SHA256(secret, passphrase)) for key version 2.
OKX: OK-ACCESS-SIGN = base64(HMAC-SHA256(secret, timestamp + method + requestPath + body)),
OK-ACCESS-PASSPHRASE = the passphrase. Binance: hex HMAC-SHA256(secret, query string).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import ccxt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signer.errors import ForbiddenEndpoint, InvalidRequest
from signer.exchanges import ExchangeGateway, ExchangeSettings, SignedHttp
from signer.keystore import Credentials
from signer.venues import BINANCE, KUCOIN, OKX, Base

API_KEY = secrets.token_hex(16)
SECRET = secrets.token_hex(32)
PASSPHRASE = "pass-" + secrets.token_hex(4)


def market(market_id: str, tick: str, step: str, info: dict[str, Any]) -> dict[str, Any]:
    """A minimal ccxt spot market structure (what set_markets takes) around the raw `info`."""
    base, quote = "BTC", "USDT"
    return {
        "id": market_id,
        "symbol": f"{base}/{quote}",
        "base": base,
        "quote": quote,
        "baseId": base,
        "quoteId": quote,
        "type": "spot",
        "spot": True,
        "active": True,
        "precision": {"amount": step, "price": tick},
        "limits": {},
        "info": info,
    }


MARKETS = {
    "binance": ccxt.binance(
        {"options": {"crossMarginPairsData": [], "isolatedMarginPairsData": []}}
    ).parse_market(  # ccxt's own parse of a raw exchangeInfo entry
        {
            "symbol": "BTCUSDT",
            "status": "TRADING",
            "baseAsset": "BTC",
            "quoteAsset": "USDT",
            "orderTypes": ["LIMIT", "MARKET"],
            "isSpotTradingAllowed": True,
            "filters": [
                {"filterType": "PRICE_FILTER", "tickSize": "0.01000000"},
                {"filterType": "LOT_SIZE", "stepSize": "0.00001000", "minQty": "0.00001000"},
            ],
        }
    ),
    "kucoin": market(
        "BTC-USDT",
        "0.1",
        "0.00000001",
        {"priceIncrement": "0.1", "baseIncrement": "0.00000001", "baseMinSize": "0.00001"},
    ),
    "okx": market(
        "BTC-USDT",
        "0.1",
        "0.00000001",
        {"tickSz": "0.1", "lotSz": "0.00000001", "minSz": "0.00001"},
    ),
}


def gateway(exchange: str, **options: str | int | bool) -> ExchangeGateway:
    password = None if exchange == "binance" else PASSPHRASE
    gw = ExchangeGateway(
        ExchangeSettings(exchange=exchange, options=options),
        Credentials(api_key=API_KEY, secret=SECRET, password=password),
    )
    gw.use_markets([MARKETS[exchange]])
    return gw


def b64_hmac(message: str, secret: str = SECRET) -> str:
    digest = hmac.new(secret.encode(), message.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def request_path(request: SignedHttp) -> str:
    parts = urlsplit(request.url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def create(gw: ExchangeGateway, amount: str, price: str, coid: str = "abc123") -> SignedHttp:
    signed = gw.create_order(
        "BTC/USDT", "buy", "limit", Decimal(amount), Decimal(price), coid, sign_only=True
    )
    assert isinstance(signed, SignedHttp)
    return signed


# ---------------------------------------------------------------- kucoin


def assert_kucoin_signed(request: SignedHttp) -> None:
    h = request.headers
    assert (h["KC-API-KEY"], h["KC-API-KEY-VERSION"]) == (API_KEY, "2")
    assert abs(int(h["KC-API-TIMESTAMP"]) - time.time() * 1000) < 60_000
    prehash = h["KC-API-TIMESTAMP"] + request.method + request_path(request) + (request.body or "")
    assert h["KC-API-SIGN"] == b64_hmac(prehash)
    assert h["KC-API-PASSPHRASE"] == b64_hmac(PASSPHRASE)


def test_kucoin_sign_only_order_matches_kucoins_published_scheme() -> None:
    signed = create(gateway("kucoin"), "0.00123", "100.5", "bot7-0001")
    assert (signed.method, signed.url) == ("POST", "https://api.kucoin.com/api/v1/orders")
    assert json.loads(signed.body or "") == {
        "clientOid": "bot7-0001",
        "side": "buy",
        "symbol": "BTC-USDT",
        "type": "limit",
        "size": "0.00123",
        "price": "100.5",
    }
    assert_kucoin_signed(signed)
    tampered = SignedHttp(
        signed.method, signed.url, signed.headers, signed.body.replace("0.00123", "1")
    )
    with pytest.raises(AssertionError):
        assert_kucoin_signed(tampered)  # the check itself can fail


def test_kucoin_sign_only_cancel_signs_the_path_with_the_client_order_id() -> None:
    cancel = gateway("kucoin").cancel_order("BTC/USDT", "bot7-0001", sign_only=True)
    assert isinstance(cancel, SignedHttp)
    assert (cancel.method, request_path(cancel), cancel.body) == (
        "DELETE",
        "/api/v1/order/client-order/bot7-0001",
        None,
    )
    assert_kucoin_signed(cancel)
    hf = gateway("kucoin", hf=True)
    hf_cancel = hf.cancel_order("BTC/USDT", "bot7-0001", sign_only=True)
    assert isinstance(hf_cancel, SignedHttp)
    assert request_path(hf_cancel) == "/api/v1/hf/orders/client-order/bot7-0001?symbol=BTC-USDT"
    assert_kucoin_signed(hf_cancel)
    assert urlsplit(create(hf, "0.001", "100").url).path == "/api/v1/hf/orders"
    with pytest.raises(InvalidRequest):
        hf.cancel_order("BTC/USDT", "a/../../withdrawals", sign_only=True)


# ---------------------------------------------------------------- okx


def assert_okx_signed(request: SignedHttp) -> None:
    h = request.headers
    assert (h["OK-ACCESS-KEY"], h["OK-ACCESS-PASSPHRASE"]) == (API_KEY, PASSPHRASE)
    stamp = datetime.strptime(h["OK-ACCESS-TIMESTAMP"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert abs(stamp.timestamp() - time.time()) < 60
    prehash = (
        h["OK-ACCESS-TIMESTAMP"] + request.method + request_path(request) + (request.body or "")
    )
    assert h["OK-ACCESS-SIGN"] == b64_hmac(prehash)


def test_okx_sign_only_order_matches_okxs_published_scheme() -> None:
    signed = create(gateway("okx"), "0.0005", "64000.1", "bot7x0002")
    assert (signed.method, signed.url) == ("POST", "https://www.okx.com/api/v5/trade/order")
    body = json.loads(signed.body or "")
    assert body["instId"] == "BTC-USDT" and body["clOrdId"] == "bot7x0002"
    assert (body["side"], body["ordType"], body["tdMode"]) == ("buy", "limit", "cash")
    assert (body["sz"], body["px"]) == ("0.0005", "64000.1")
    assert_okx_signed(signed)
    cancel = gateway("okx").cancel_order("BTC/USDT", "bot7x0002", sign_only=True)
    assert isinstance(cancel, SignedHttp)
    assert (cancel.method, request_path(cancel)) == ("POST", "/api/v5/trade/cancel-order")
    assert json.loads(cancel.body or "") == {"instId": "BTC-USDT", "clOrdId": "bot7x0002"}
    assert_okx_signed(cancel)
    with pytest.raises(InvalidRequest):  # okx client order ids are alphanumeric only
        create(gateway("okx"), "0.0005", "64000.1", "bot7-0002")


# ---------------------------------------------------------------- money travels exactly


def sent_amount_and_price(exchange: str, request: SignedHttp) -> tuple[Decimal, Decimal]:
    if exchange == "binance":
        form = dict(parse_qsl(request.body or ""))
        return Decimal(form["quantity"]), Decimal(form["price"])
    body = json.loads(request.body or "")
    if exchange == "kucoin":
        return Decimal(body["size"]), Decimal(body["price"])
    return Decimal(body["sz"]), Decimal(body["px"])


GATEWAYS = {name: gateway(name) for name in ("binance", "kucoin", "okx")}


@pytest.mark.parametrize("exchange", ["binance", "kucoin", "okx"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.integers(1, 10**9), ticks=st.integers(1, 10**8))
def test_any_aligned_amount_and_price_travel_as_exact_decimals(
    exchange: str, steps: int, ticks: int
) -> None:
    gw = GATEWAYS[exchange]
    rules = gw.market_rules("BTC/USDT")
    amount, price = rules.step_size * steps, rules.tick_size * ticks
    request = create(gw, str(amount), str(price))
    assert sent_amount_and_price(exchange, request) == (amount, price)
    if exchange == "binance":
        payload, _, signature = (request.body or "").rpartition("&signature=")
        assert signature == hmac.new(SECRET.encode(), payload.encode(), hashlib.sha256).hexdigest()
    with pytest.raises(InvalidRequest):  # half a step off is refused, never rounded by ccxt
        create(gw, str(amount + rules.step_size / 2), str(price))


# ---------------------------------------------------------------- the allow-lists


def test_allow_lists_hold_only_order_endpoints() -> None:
    """A tripwire: adding an endpoint to any allow-list must be a deliberate change here too."""
    listed = {
        v.exchange: {(e.op, e.method, e.path) for e in v.endpoints} for v in (BINANCE, KUCOIN, OKX)
    }
    assert listed["binance"] == {
        ("create_order", "POST", "/api/v3/order"),
        ("cancel_order", "DELETE", "/api/v3/order"),
        ("fetch_order", "GET", "/api/v3/order"),
        ("fetch_open_orders", "GET", "/api/v3/openOrders"),
        ("fetch_my_trades", "GET", "/api/v3/myTrades"),
        ("fetch_balance", "GET", "/api/v3/account"),
        ("load_markets", "GET", "/api/v3/exchangeInfo"),
        ("load_markets", "GET", "/api/v3/time"),  # only with options adjustForTimeDifference
        ("ticker_price", "GET", "/api/v3/ticker/price"),
    }
    for name in ("kucoin", "okx"):
        paths = " ".join(p for _, _, p in listed[name])
        for word in ("withdraw", "transfer", "sub", "deposit", "apikey", "api-key", "asset"):
            assert word not in paths.lower(), (name, word)
    assert {op for op, _, _ in listed["okx"]} == {op for op, _, _ in listed["kucoin"]}


def test_templates_and_origins_refuse_smuggled_urls() -> None:
    cancel = "/api/v1/order/client-order/"
    assert KUCOIN.endpoint_for("DELETE", cancel + "bot7-0001").op == "cancel_order"
    for smuggled in ("a%2F..%2Fx", "a/b", "..", "a.b", ""):
        assert KUCOIN.endpoint_for("DELETE", cancel + smuggled) is None
    assert KUCOIN.endpoint_for("GET", "/api/v1/accounts/transferable") is None
    assert BINANCE.endpoint_for("PUT", "/api/v3/order") is None
    real = Base.for_venue(BINANCE, None)
    assert real.exchange_path("https://api.binance.com/api/v3/order?x=1") == "/api/v3/order"
    assert real.exchange_path("https://api.binance.com.evil.example/api/v3/order") is None
    assert real.exchange_path("http://api.binance.com/api/v3/order") is None
    assert real.exchange_path("https://user@api.binance.com/api/v3/order") is None
    sim = Base.for_venue(BINANCE, "http://127.0.0.1:8080/sim")
    assert sim.exchange_path("http://127.0.0.1:8080/sim/api/v3/order") == "/api/v3/order"
    assert sim.exchange_path("http://127.0.0.1:8080/api/v3/order") is None
    assert sim.exchange_path("http://127.0.0.1:8081/sim/api/v3/order") is None


def test_sign_only_never_builds_a_withdrawal_either() -> None:
    gw = gateway("binance")
    client = gw._private
    client.begin("create_order", capture=True)  # even armed for signing, a withdrawal is refused
    try:
        with pytest.raises(ForbiddenEndpoint, match="/sapi/v1/capital/withdraw/apply"):
            client.ex.withdraw("BTC", 1, "bc1qxy2kgdygjrsqtzq2n0yrf2493p83kkfjhx0wlh")
        with pytest.raises(ForbiddenEndpoint, match="/sapi/v1/asset/transfer"):
            client.ex.transfer("USDT", 10, "spot", "funding")
    finally:
        client.begin(None, capture=False)
