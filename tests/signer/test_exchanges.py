"""ExchangeGateway end to end over real local sockets.

Most tests talk to a *stand-in*: a real local http.server that records every request exactly
and answers with canned Binance / KuCoin / OKX JSON. It stands in for what cannot run here (the
real exchanges) and lets each test inject the exact answer it needs (refusals, echoes, stalls);
it checks signatures on the server side, independently of ccxt, the way the exchange would.
One test runs the same path against the real simexchange simulator (tests may import it;
signer code may not) with an HMAC and an Ed25519 key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import socket
import threading
import traceback
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import ccxt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from signer.errors import ConfigError, ForbiddenEndpoint, InvalidRequest
from signer.exchanges import (
    ExchangeGateway,
    ExchangeRequestError,
    ExchangeSettings,
    GatewayPool,
    SignedHttp,
)
from signer.keystore import Credentials

API_KEY = secrets.token_hex(32)  # generated per run: no secret lives in the repo
SECRET = secrets.token_hex(32)

# Raw exchange JSON in the shapes the exchanges document (trimmed to what matters here).
SYMBOL_INFO = json.loads("""{"symbol": "BTCUSDT", "status": "TRADING", "baseAsset": "BTC",
 "baseAssetPrecision": 8, "quoteAsset": "USDT", "quotePrecision": 8, "quoteAssetPrecision": 8,
 "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"], "isSpotTradingAllowed": true,
 "isMarginTradingAllowed": false, "permissions": [], "permissionSets": [["SPOT"]], "filters": [
 {"filterType": "PRICE_FILTER", "minPrice": "0.01", "maxPrice": "1000000.00",
  "tickSize": "0.01000000"},
 {"filterType": "LOT_SIZE", "minQty": "0.00001000", "maxQty": "9000.0", "stepSize": "0.00001000"},
 {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": true}]}""")
FILLS = json.loads("""[
 {"price": "64000.00", "qty": "0.0006", "commission": "0.03840000", "commissionAsset": "USDT"},
 {"price": "63990.00", "qty": "0.0004", "commission": "0.02559600", "commissionAsset": "USDT"}]""")
MY_TRADES = json.loads("""[{"symbol": "BTCUSDT", "id": 9, "orderId": 28, "price": "64000.01",
 "qty": "0.00100000", "quoteQty": "64.00001", "commission": "0.00000100", "commissionAsset": "BTC",
 "time": 1499865549590, "isBuyer": true, "isMaker": false}]""")
ACCOUNT = json.loads("""{"balances": [
 {"asset": "BTC", "free": "0.50000000", "locked": "0.00100000"},
 {"asset": "LTC", "free": "0.00000000", "locked": "0.00000000"},
 {"asset": "USDT", "free": "1000.10000000", "locked": "0.00000000"}]}""")
KUCOIN_ORDER = json.loads("""{"code": "200000", "data": {"id": "5bd6e9286d99522a52e458de",
 "clientOid": "kc1", "symbol": "BTC-USDT", "type": "limit", "side": "buy", "price": "100.5",
 "size": "0.001", "dealSize": "0.0005", "dealFunds": "0.05025", "fee": "0.00005",
 "feeCurrency": "USDT", "isActive": true, "cancelExist": false, "createdAt": 1547026471000}}""")
KUCOIN_ACCOUNTS = json.loads("""{"code": "200000", "data": [{"currency": "USDT", "type": "trade",
 "balance": "10.5", "available": "10", "holds": "0.5"}]}""")
OKX_REJECTED = json.loads("""{"code": "1", "msg": "", "data": [{"clOrdId": "ok1", "ordId": "",
 "sCode": "51008", "sMsg": "Order failed. Insufficient USDT balance"}]}""")
OKX_ORDER = json.loads("""{"code": "0", "msg": "", "data": [{"instId": "BTC-USDT",
 "ordId": "312269865356374016", "clOrdId": "ok1", "side": "buy", "ordType": "limit",
 "state": "filled", "px": "100.5", "sz": "0.001", "accFillSz": "0.001", "avgPx": "100.4",
 "fee": "-0.0000001", "feeCcy": "BTC", "cTime": "1597026383085"}]}""")
OKX_BALANCE = json.loads("""{"code": "0", "msg": "", "data": [{"details": [
 {"ccy": "BTC", "availBal": "1.5", "frozenBal": "0.25"}]}]}""")


def spot_market(market_id: str, info: dict[str, Any]) -> dict[str, Any]:
    """A minimal ccxt spot market structure (what set_markets takes) around the raw `info`."""
    return {
        **{"id": market_id, "symbol": "BTC/USDT", "base": "BTC", "quote": "USDT"},
        **{"baseId": "BTC", "quoteId": "USDT", "type": "spot", "spot": True, "active": True},
        **{"precision": {"amount": "0.00000001", "price": "0.1"}, "limits": {}, "info": info},
    }


KUCOIN_MARKET = spot_market(
    "BTC-USDT", {"priceIncrement": "0.1", "baseIncrement": "0.00000001", "baseMinSize": "0.00001"}
)
OKX_MARKET = spot_market("BTC-USDT", {"tickSz": "0.1", "lotSz": "0.00000001", "minSz": "0.00001"})


@dataclass
class Hit:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # names lower-cased: HTTP header names are case-insensitive
    body: str


App = Callable[[Hit], tuple[int, Any]]


@dataclass
class StandIn:
    """A real local HTTP server that records each request and answers through `app`."""

    app: App
    hits: list[Hit] = field(default_factory=list)
    inflight: int = 0
    max_inflight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def paths(self) -> list[str]:
        return [f"{h.method} {h.path}" for h in self.hits]


@pytest.fixture
def standin() -> Iterator[Callable[[App], StandIn]]:
    servers: list[ThreadingHTTPServer] = []

    def start(app: App) -> StandIn:
        state = StandIn(app)

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                parts = urlsplit(self.path)
                hit = Hit(
                    self.command,
                    parts.path,
                    parts.query,
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length).decode(),
                )
                with state.lock:
                    state.hits.append(hit)
                    state.inflight += 1
                    state.max_inflight = max(state.max_inflight, state.inflight)
                try:
                    status, answer = state.app(hit)
                finally:
                    with state.lock:
                        state.inflight -= 1
                data = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _serve

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        servers.append(server)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        state.url = f"http://127.0.0.1:{server.server_address[1]}"
        return state

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------- a Binance stand-in


def hmac_check(secret: str) -> Callable[[str, str], bool]:
    def check(payload: str, signature: str) -> bool:
        expected = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, signature)

    return check


def order_json(params: dict[str, str], status: str = "NEW") -> dict[str, Any]:
    market = params.get("type") == "MARKET"
    return {
        "symbol": params.get("symbol", "BTCUSDT"),
        "orderId": 28,
        "orderListId": -1,
        "clientOrderId": params.get("newClientOrderId") or params.get("origClientOrderId", "x"),
        "transactTime": 1507725176595,
        "price": params.get("price", "0.00000000"),
        "origQty": params.get("quantity", "0.00100000"),
        "executedQty": "0.00100000" if market else "0.00000000",
        "cummulativeQuoteQty": "63.99600000" if market else "0.00000000",
        "status": "FILLED" if market else status,
        "timeInForce": "GTC",
        "type": params.get("type", "LIMIT"),
        "side": params.get("side", "BUY"),
        "fills": FILLS if market else [],
    }


def binance_app(
    check: Callable[[str, str], bool], overrides: dict[str, tuple[int, Any]] | None = None
) -> App:
    """Binance's spot REST subset: verifies X-MBX-APIKEY and the signature like Binance does."""

    def app(hit: Hit) -> tuple[int, Any]:
        route = f"{hit.method} {hit.path}"
        if overrides and route in overrides:
            return overrides[route]
        if route == "GET /api/v3/exchangeInfo":
            return 200, {"timezone": "UTC", "serverTime": 1, "symbols": [SYMBOL_INFO]}
        if route == "GET /api/v3/ticker/price":
            return 200, {"symbol": "BTCUSDT", "price": "64123.45000000"}
        signed = hit.body if hit.method == "POST" else hit.query
        payload, _, signature = signed.rpartition("&signature=")
        if hit.headers.get("x-mbx-apikey") != API_KEY:
            return 401, {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."}
        if not signature or not check(payload, unquote(signature)):
            return 400, {"code": -1022, "msg": "Signature for this request is not valid."}
        params = dict(parse_qsl(payload))
        if route == "POST /api/v3/order":
            return 200, order_json(params)
        if route == "DELETE /api/v3/order":
            cancel = {"origClientOrderId": params["origClientOrderId"], "clientOrderId": "cancel-1"}
            return 200, {**order_json(params, "CANCELED"), **cancel}
        if route == "GET /api/v3/order":
            return 200, {**order_json(params, "PARTIALLY_FILLED"), "time": 1507725176000}
        if route == "GET /api/v3/openOrders":
            return 200, [order_json({"newClientOrderId": "o1", "price": "100.50"})]
        if route == "GET /api/v3/myTrades":
            return 200, MY_TRADES
        if route == "GET /api/v3/account":
            return 200, ACCOUNT
        return 404, {"code": -1, "msg": "no such endpoint"}

    return app


def binance_gateway(server: StandIn, secret: str = SECRET, **kw: Any) -> ExchangeGateway:
    settings = ExchangeSettings(exchange="binance", api_url=server.url, **kw)
    return ExchangeGateway(settings, Credentials(api_key=API_KEY, secret=secret, password=None))


def binance_market() -> dict[str, Any]:
    """ccxt's own parse of the raw exchangeInfo entry, for offline use."""
    parser = ccxt.binance({"options": {"crossMarginPairsData": [], "isolatedMarginPairsData": []}})
    return parser.parse_market(SYMBOL_INFO)


def assert_no_secret(text: str, *extra: str) -> None:
    for secret in (API_KEY, SECRET, *extra):
        assert secret not in text


# ---------------------------------------------------------------- binance end to end


def test_binance_limit_order_is_signed_sent_and_mapped_from_raw_strings(standin) -> None:
    server = standin(binance_app(hmac_check(SECRET)))
    gateway = binance_gateway(server)
    result = gateway.create_order(
        "BTC/USDT",
        "buy",
        "limit",
        Decimal("0.00100"),
        Decimal("100.50"),
        "bot1-0001",
        sign_only=False,
    )
    post = server.hits[-1]
    assert server.paths() == ["GET /api/v3/exchangeInfo", "POST /api/v3/order"]
    sent = dict(parse_qsl(post.body))
    assert (sent["quantity"], sent["price"], sent["newClientOrderId"]) == (
        "0.001",
        "100.5",
        "bot1-0001",
    )
    assert result == {
        "exchange_order_id": "28",
        "client_order_id": "bot1-0001",
        "symbol": "BTC/USDT",
        "side": "buy",
        "type": "limit",
        "status": "open",
        "amount": "0.001",
        "filled": "0.00000000",
        "price": "100.5",
        "timestamp_ms": "1507725176595",
    }
    assert all(isinstance(v, str) for v in result.values())


def test_binance_market_order_maps_average_and_fee_from_fills(standin) -> None:
    server = standin(binance_app(hmac_check(SECRET)))
    result = binance_gateway(server).create_order(
        "BTC/USDT", "sell", "market", Decimal("0.001"), None, "bot1-0002", sign_only=False
    )
    assert result["status"] == "closed"
    assert result["filled"] == "0.00100000"
    assert result["average"] == "63996"  # 63.996 quote / 0.001 base, in Decimal
    assert (result["fee_cost"], result["fee_currency"]) == ("0.063996", "USDT")
    assert "price" not in result  # a market order has none


def test_binance_sign_only_sends_nothing_and_the_exchange_accepts_the_request(standin) -> None:
    server = standin(binance_app(hmac_check(SECRET)))
    gateway = binance_gateway(server)
    gateway.load_markets()
    before = len(server.hits)
    signed = gateway.create_order(
        "BTC/USDT", "buy", "limit", Decimal("0.002"), Decimal("99.99"), "bot1-0003", sign_only=True
    )
    cancel = gateway.cancel_order("BTC/USDT", "bot1-0003", sign_only=True)
    assert len(server.hits) == before  # nothing reached the socket
    assert isinstance(signed, SignedHttp) and isinstance(cancel, SignedHttp)
    assert (signed.method, urlsplit(signed.url).path) == ("POST", "/api/v3/order")
    assert signed.headers["X-MBX-APIKEY"] == API_KEY
    assert (cancel.method, urlsplit(cancel.url).path, cancel.body) == (
        "DELETE",
        "/api/v3/order",
        None,
    )
    for request in (signed, cancel):  # the engine sends it itself; the exchange verifies it
        req = urllib.request.Request(
            request.url,
            data=request.body.encode() if request.body else None,
            headers=request.headers,
            method=request.method,
        )
        with urllib.request.urlopen(req, timeout=5) as answer:
            assert answer.status == 200
    assert server.paths()[-2:] == ["POST /api/v3/order", "DELETE /api/v3/order"]
    assert_no_secret(repr(signed))
    assert "signature" not in repr(signed) and "X-MBX-APIKEY'" in repr(signed)


def test_binance_ed25519_key_signs_requests_the_exchange_verifies(standin) -> None:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,  # "-----BEGIN PRIVATE KEY-----", what ccxt loads
        serialization.NoEncryption(),
    ).decode()
    assert len(pem) <= 120  # ccxt's binance: PEM <= 120 chars is Ed25519 (longer is RSA)
    public = key.public_key()

    def ed25519_check(payload: str, signature: str) -> bool:
        try:
            public.verify(base64.b64decode(signature), payload.encode())
        except Exception:
            return False
        return True

    server = standin(binance_app(ed25519_check))
    gateway = binance_gateway(server, secret=pem)
    result = gateway.create_order(
        "BTC/USDT", "buy", "limit", Decimal("0.001"), Decimal("100"), "ed-0001", sign_only=False
    )
    assert result["status"] == "open"
    assert gateway.fetch_order("BTC/USDT", "ed-0001")["status"] == "open"
    assert server.hits[-1].path == "/api/v3/order"
    wrong = standin(binance_app(hmac_check(SECRET)))  # the same request under an HMAC check fails
    with pytest.raises(ExchangeRequestError) as err:
        binance_gateway(wrong, secret=pem).fetch_balance()
    assert err.value.code == "-1022"
    assert_no_secret(str(err.value), *pem.splitlines()[1:2])


def test_binance_query_endpoints_return_strings_from_raw_json(standin) -> None:
    server = standin(binance_app(hmac_check(SECRET)))
    gateway = binance_gateway(server)
    canceled = gateway.cancel_order("BTC/USDT", "bot1-0004", sign_only=False)
    assert (canceled["status"], canceled["client_order_id"]) == ("canceled", "bot1-0004")
    order = gateway.fetch_order("BTC/USDT", "bot1-0004")
    assert (order["status"], order["symbol"], order["exchange_order_id"]) == (
        "open",
        "BTC/USDT",
        "28",
    )
    (open_order,) = gateway.fetch_open_orders(None)
    assert (open_order["symbol"], open_order["price"], open_order["client_order_id"]) == (
        "BTC/USDT",
        "100.50",
        "o1",
    )
    assert gateway.fetch_my_trades("BTC/USDT") == [
        {
            "trade_id": "9",
            "exchange_order_id": "28",
            "symbol": "BTC/USDT",
            "side": "buy",
            "price": "64000.01",
            "amount": "0.00100000",
            "fee_cost": "0.00000100",
            "fee_currency": "BTC",
            "timestamp_ms": "1499865549590",
        }
    ]
    assert gateway.fetch_balance() == [
        {"asset": "BTC", "free": "0.50000000", "locked": "0.00100000"},
        {"asset": "USDT", "free": "1000.10000000", "locked": "0.00000000"},
    ]
    assert server.paths()[1:] == [
        "DELETE /api/v3/order",
        "GET /api/v3/order",
        "GET /api/v3/openOrders",
        "GET /api/v3/myTrades",
        "GET /api/v3/account",
    ]


def test_ticker_price_is_public_unsigned_and_exact(standin) -> None:
    server = standin(binance_app(hmac_check(SECRET)))
    gateway = ExchangeGateway(ExchangeSettings(exchange="binance", api_url=server.url), None)
    assert gateway.ticker_price("BTC/USDT") == Decimal("64123.45000000")
    hit = server.hits[-1]
    assert (hit.path, hit.query) == ("/api/v3/ticker/price", "symbol=BTCUSDT")
    assert "x-mbx-apikey" not in hit.headers and "signature" not in hit.query
    rules = gateway.market_rules("BTC/USDT")
    assert (rules.tick_size, rules.step_size) == (Decimal("0.01"), Decimal("0.00001"))
    assert (rules.min_amount, rules.min_notional, rules.market_id) == (
        Decimal("0.00001"),
        Decimal("5"),
        "BTCUSDT",
    )
    with pytest.raises(ConfigError):
        gateway.fetch_balance()  # a keyless gateway cannot sign at all


@pytest.mark.parametrize(
    ("key_type", "options"), [("HMAC", {}), ("ED25519", {"adjustForTimeDifference": True})]
)
def test_binance_works_end_to_end_against_the_simulator(key_type: str, options: dict) -> None:
    """The real simexchange (a test may import it; signer code may not)."""
    testing = pytest.importorskip("simexchange.testing")
    sim, keys = testing.start_test_exchange(key_type=key_type)
    try:
        settings = ExchangeSettings(exchange="binance", api_url=sim.base_url, options=options)
        creds = Credentials(api_key=keys.api_key, secret=keys.secret, password=None)
        gateway = ExchangeGateway(settings, creds)
        rules = gateway.market_rules("BTC/USDT")
        low = (gateway.ticker_price("BTC/USDT") * Decimal("0.9")).quantize(rules.tick_size)
        amount = Decimal("0.01")
        placed = gateway.create_order(
            "BTC/USDT", "buy", "limit", amount, low, "e2e-1", sign_only=False
        )
        assert (placed["status"], Decimal(placed["price"])) == ("open", low)
        assert [o["client_order_id"] for o in gateway.fetch_open_orders("BTC/USDT")] == ["e2e-1"]
        assert gateway.cancel_order("BTC/USDT", "e2e-1", sign_only=False)["status"] == "canceled"
        assert gateway.fetch_order("BTC/USDT", "e2e-1")["status"] == "canceled"
        signed = gateway.create_order(
            "BTC/USDT", "sell", "market", amount, None, "e2e-2", sign_only=True
        )
        assert isinstance(signed, SignedHttp)
        assert gateway.fetch_my_trades("BTC/USDT") == []  # sign-only sent nothing
        sold = gateway.create_order(
            "BTC/USDT", "sell", "market", amount, None, "e2e-3", sign_only=False
        )
        assert (sold["status"], sold["filled"]) == ("closed", "0.01000000")
        (trade,) = gateway.fetch_my_trades("BTC/USDT")
        assert (trade["side"], Decimal(trade["amount"])) == ("sell", amount)
        btc = [b for b in gateway.fetch_balance() if b["asset"] == "BTC"]
        assert Decimal(btc[0]["free"]) == Decimal(1) - amount
    finally:
        sim.stop()


# ---------------------------------------------------------------- only order endpoints


def test_withdraw_and_transfer_are_refused_before_reaching_the_socket(standin) -> None:
    server = standin(binance_app(hmac_check(SECRET)))
    gateway = binance_gateway(server)
    gateway.load_markets()
    before = len(server.hits)
    client = (
        gateway._private.ex
    )  # the gateway's own ccxt instance, as a stray code path would use it
    attempts = [
        lambda: client.withdraw("BTC", 1, "bc1qxy2kgdygjrsqtzq2n0yrf2493p83kkfjhx0wlh"),
        lambda: client.transfer("USDT", 10, "spot", "funding"),
        lambda: client.sapi_post_capital_withdraw_apply(
            {"coin": "BTC", "address": "x", "amount": "1"}
        ),
        lambda: client.sapi_post_sub_account_transfer_subtosub({"asset": "BTC", "amount": "1"}),
        lambda: client.create_order("BTC/USDT", "limit", "buy", "0.001", "100"),  # outside an op
        lambda: gateway._public.ex.fetch_ticker("BTC/USDT"),  # public, but not on the list
    ]
    refused = []
    for attempt in attempts:
        with pytest.raises(ForbiddenEndpoint) as err:
            attempt()
        refused.append(str(err.value))
    assert len(server.hits) == before
    assert refused[0] == (
        "binance: POST /sapi/v1/capital/withdraw/apply is not an allowed endpoint for "
        "operation none; nothing was sent"
    )
    assert "POST /sapi/v1/asset/transfer" in refused[1]
    assert all("signature" not in text and API_KEY not in text for text in refused)
    # Control: the same ccxt call without the guard does reach this socket.
    raw = ccxt.binance({"apiKey": API_KEY, "secret": SECRET})
    raw.urls["api"] = dict(client.urls["api"])
    raw.set_markets_from_exchange(client)
    with pytest.raises(ccxt.BaseError):
        raw.withdraw("BTC", 1, "bc1qxy2kgdygjrsqtzq2n0yrf2493p83kkfjhx0wlh")
    assert server.hits[-1].path == "/sapi/v1/capital/withdraw/apply"


def test_an_operation_may_only_reach_its_own_endpoint(standin) -> None:
    server = standin(binance_app(hmac_check(SECRET)))
    gateway = binance_gateway(server)
    gateway.load_markets()
    private = gateway._private
    before = len(server.hits)
    private.begin("fetch_balance", capture=False)  # arm the guard for one op, call another
    try:
        with pytest.raises(ForbiddenEndpoint, match="POST /api/v3/order"):
            private.ex.create_order("BTC/USDT", "limit", "buy", "0.001", "100")
    finally:
        private.begin(None, capture=False)
    assert len(server.hits) == before


def test_api_url_points_every_ccxt_url_at_the_override(standin) -> None:
    server = standin(binance_app(hmac_check(SECRET)))
    gateway = binance_gateway(server)
    urls = gateway._private.ex.urls["api"]
    assert urls["public"] == urls["private"] == server.url + "/api/v3"  # simexchange's contract
    assert all(u.startswith(server.url + "/") for u in urls.values())
    options = gateway._private.ex.options
    assert options["fetchMarkets"]["types"] == ["spot"] and options["fetchCurrencies"] is False


# ---------------------------------------------------------------- errors carry no secret


def _all_text(err: BaseException) -> str:
    return str(err) + repr(err) + "".join(traceback.format_exception(err))


def test_exchange_refusal_has_its_code_and_no_key_or_signature(standin) -> None:
    server = standin(
        binance_app(
            hmac_check(SECRET),
            {
                "POST /api/v3/order": (
                    400,
                    {
                        "code": -2010,
                        "msg": "Account has insufficient balance for requested action.",
                    },
                )
            },
        )
    )
    with pytest.raises(ExchangeRequestError) as err:
        binance_gateway(server).create_order(
            "BTC/USDT", "buy", "limit", Decimal("1"), Decimal("100"), "bot1-0005", sign_only=False
        )
    e = err.value
    assert (e.code, e.http_status, e.kind) == ("-2010", 400, "InsufficientFunds")
    assert (e.retriable, e.request_sent, e.operation) == (False, True, "create_order")
    assert "insufficient balance" in str(e)
    signature = dict(parse_qsl(server.hits[-1].body))["signature"]
    assert_no_secret(_all_text(e), signature)
    assert e.__cause__ is None and e.__context__ is None


def test_an_exchange_echoing_the_signature_and_key_is_scrubbed(standin) -> None:
    def echo(hit: Hit) -> tuple[int, Any]:
        if hit.path == "/api/v3/exchangeInfo":
            return binance_app(hmac_check(SECRET))(hit)
        sig = hit.query.rpartition("signature=")[2]
        return 400, {
            "code": -1022,
            "msg": f"Signature {sig} invalid for {hit.headers['x-mbx-apikey']}",
        }

    server = standin(echo)
    with pytest.raises(ExchangeRequestError) as err:
        binance_gateway(server).fetch_order("BTC/USDT", "bot1-0006")
    signature = server.hits[-1].query.rpartition("signature=")[2]
    assert_no_secret(_all_text(err.value), signature)
    assert "Signature *** invalid for ***" in str(err.value)


def test_network_failures_are_retriable_and_name_no_secret(standin) -> None:
    release = threading.Event()

    def slow(hit: Hit) -> tuple[int, Any]:
        if hit.path == "/api/v3/order":
            release.wait(5)  # longer than the client's timeout: the answer comes too late
        return binance_app(hmac_check(SECRET))(hit)

    server = standin(slow)
    try:
        with pytest.raises(ExchangeRequestError) as err:
            binance_gateway(server, timeout_ms=300).create_order(
                "BTC/USDT", "buy", "limit", Decimal("1"), Decimal("1"), "bot1-0007", sign_only=False
            )
    finally:
        release.set()
    assert (err.value.retriable, err.value.request_sent, err.value.kind) == (
        True,
        True,
        "RequestTimeout",
    )
    assert_no_secret(_all_text(err.value), dict(parse_qsl(server.hits[-1].body))["signature"])

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    gateway = binance_gateway(StandIn(app=slow, url=f"http://127.0.0.1:{closed}"))
    gateway.use_markets([binance_market()])
    with pytest.raises(ExchangeRequestError) as err:
        gateway.fetch_order("BTC/USDT", "bot1-0007")
    assert (err.value.retriable, err.value.http_status) == (True, None)
    assert_no_secret(_all_text(err.value))
    assert "signature" not in str(err.value) and "127.0.0.1" not in str(err.value)


def test_debug_logging_shows_no_key_or_signature(standin, caplog) -> None:
    server = standin(binance_app(hmac_check(SECRET)))
    gateway = binance_gateway(server)
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="urllib3")  # another component may have quietened it
    gateway.fetch_order("BTC/USDT", "bot1-0008")
    gateway.create_order(
        "BTC/USDT", "buy", "limit", Decimal("1"), Decimal("1"), "bot1-0009", sign_only=False
    )
    signatures = [
        h.query.rpartition("signature=")[2] for h in server.hits if "signature" in h.query
    ]
    assert signatures and "signature=***" in caplog.text  # urllib3 logged the line, redacted
    assert_no_secret(caplog.text, *signatures, dict(parse_qsl(server.hits[-1].body))["signature"])


# ---------------------------------------------------------------- concurrency and the pool


def test_concurrent_calls_on_one_gateway_are_serialised_and_all_valid(standin) -> None:
    server = standin(binance_app(hmac_check(SECRET)))
    gateway = binance_gateway(server)
    results: list[str] = []
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(3):
                results.append(gateway.fetch_order("BTC/USDT", f"c{n}-{i}")["status"])
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == ["open"] * 18
    assert server.max_inflight == 1


def test_pool_caches_per_key_generation_and_loads_markets_once(standin) -> None:
    server = standin(binance_app(hmac_check(SECRET)))
    settings = ExchangeSettings(exchange="binance", api_url=server.url)
    pool = GatewayPool()
    loads: list[str] = []

    def loader(name: str) -> Callable[[], Credentials]:
        def load() -> Credentials:
            loads.append(name)
            return Credentials(api_key=API_KEY, secret=SECRET, password=None)

        return load

    first = pool.for_key(settings, "k1", 1, loader("k1"))
    assert pool.for_key(settings, "k1", 1, loader("k1")) is first
    other = pool.for_key(settings, "k2", 1, loader("k2"))
    first.fetch_balance()
    other.fetch_balance()
    assert pool.public(settings).ticker_price("BTC/USDT") == Decimal("64123.45")
    assert first.ticker_price("BTC/USDT") == Decimal("64123.45")
    assert server.paths().count("GET /api/v3/exchangeInfo") == 1
    rotated = pool.for_key(settings, "k1", 2, loader("k1"))
    assert rotated is not first and loads == ["k1", "k2", "k1"]
    pool.forget("k1")
    assert pool.for_key(settings, "k1", 2, loader("k1")) is not rotated
    assert loads == ["k1", "k2", "k1", "k1"]
    assert SECRET not in repr(first) and API_KEY not in repr(first)
    pool.close()


# ---------------------------------------------------------------- kucoin and okx, submit mode


def signed_by_secret(hit: Hit, stamp_header: str, sign_header: str) -> bool:
    """KuCoin and OKX: base64(HMAC-SHA256(secret, timestamp + method + path?query + body))."""
    prehash = hit.headers[stamp_header] + hit.method + hit.path
    prehash += ("?" + hit.query if hit.query else "") + hit.body
    good = hmac.new(SECRET.encode(), prehash.encode(), hashlib.sha256).digest()
    return hit.headers.get(sign_header) == base64.b64encode(good).decode()


def test_kucoin_submit_maps_best_effort_from_raw_json(standin) -> None:
    def app(hit: Hit) -> tuple[int, Any]:
        if not signed_by_secret(hit, "kc-api-timestamp", "kc-api-sign"):
            return 401, {"code": "400005", "msg": "Invalid KC-API-SIGN"}
        if hit.path == "/api/v1/orders":
            return 200, {"code": "200000", "data": {"orderId": "5bd6e9286d99522a52e458de"}}
        if hit.path == "/api/v1/order/client-order/kc1":
            return 200, KUCOIN_ORDER
        return 200, KUCOIN_ACCOUNTS

    server = standin(app)
    settings = ExchangeSettings(exchange="kucoin", api_url=server.url)
    gateway = ExchangeGateway(
        settings, Credentials(api_key=API_KEY, secret=SECRET, password="pass-phrase")
    )
    gateway.use_markets([KUCOIN_MARKET])
    created = gateway.create_order(
        "BTC/USDT", "buy", "limit", Decimal("0.001"), Decimal("100.5"), "kc1", sign_only=False
    )
    assert created["exchange_order_id"] == "5bd6e9286d99522a52e458de"
    assert (created["client_order_id"], created["amount"], created["price"]) == (
        "kc1",
        "0.001",
        "100.5",
    )
    order = gateway.fetch_order("BTC/USDT", "kc1")
    assert (order["status"], order["filled"], order["average"], order["fee_cost"]) == (
        "open",
        "0.0005",
        "100.5",
        "0.00005",
    )
    assert gateway.fetch_balance() == [{"asset": "USDT", "free": "10", "locked": "0.5"}]


def test_okx_submit_maps_best_effort_from_raw_json(standin) -> None:
    def app(hit: Hit) -> tuple[int, Any]:
        if not signed_by_secret(hit, "ok-access-timestamp", "ok-access-sign"):
            return 401, {"code": "50113", "msg": "Invalid Sign", "data": []}
        if hit.path == "/api/v5/trade/order":
            return 200, OKX_REJECTED if hit.method == "POST" else OKX_ORDER
        return 200, OKX_BALANCE

    server = standin(app)
    settings = ExchangeSettings(exchange="okx", api_url=server.url)
    gateway = ExchangeGateway(
        settings, Credentials(api_key=API_KEY, secret=SECRET, password="pass")
    )
    gateway.use_markets([OKX_MARKET])
    with pytest.raises(ExchangeRequestError) as err:
        gateway.create_order(
            "BTC/USDT", "buy", "limit", Decimal("0.001"), Decimal("100.5"), "ok1", sign_only=False
        )
    assert err.value.code == "51008" and "Insufficient USDT" in str(err.value)
    order = gateway.fetch_order("BTC/USDT", "ok1")
    assert (order["status"], order["average"], order["fee_cost"], order["fee_currency"]) == (
        "closed",
        "100.4",
        "0.0000001",
        "BTC",
    )
    assert gateway.fetch_balance() == [{"asset": "BTC", "free": "1.5", "locked": "0.25"}]


# ---------------------------------------------------------------- bad input is refused


def test_bad_orders_are_refused_before_anything_is_signed(standin) -> None:
    server = standin(binance_app(hmac_check(SECRET)))
    gateway = binance_gateway(server)
    gateway.load_markets()
    before = len(server.hits)
    bad = [
        ("BTC/USDT", "buy", "limit", Decimal("0.000015"), Decimal("100"), "c1"),  # step 0.00001
        ("BTC/USDT", "buy", "limit", Decimal("0.001"), Decimal("100.005"), "c1"),  # tick 0.01
        ("BTC/USDT", "buy", "limit", Decimal("NaN"), Decimal("100"), "c1"),
        ("BTC/USDT", "buy", "limit", Decimal("-1"), Decimal("100"), "c1"),
        ("BTC/USDT", "buy", "limit", Decimal("1"), None, "c1"),
        ("BTC/USDT", "buy", "market", Decimal("1"), Decimal("100"), "c1"),
        ("BTC/USDT", "hold", "limit", Decimal("1"), Decimal("100"), "c1"),
        ("BTC/USDT", "buy", "stop", Decimal("1"), Decimal("100"), "c1"),
        ("ETH/USDT", "buy", "limit", Decimal("1"), Decimal("100"), "c1"),
        ("BTC/USDT", "buy", "limit", Decimal("1"), Decimal("100"), "../../sapi"),
        ("BTC/USDT", "buy", "limit", Decimal("1"), Decimal("100"), "x" * 37),
    ]
    for args in bad:
        for sign_only in (True, False):
            with pytest.raises(InvalidRequest):
                gateway.create_order(*args, sign_only=sign_only)
    assert len(server.hits) == before


def test_settings_validation_names_field_value_and_allowed_range() -> None:
    from pydantic import ValidationError

    cases = [
        ({"exchange": "kraken"}, "allowed: binance, kucoin, okx"),
        ({"exchange": "binance", "api_url": "ftp://x"}, "http(s)://"),
        ({"exchange": "binance", "api_url": "http://u:p@x"}, "user info"),
        ({"exchange": "binance", "timeout_ms": 50}, "100"),
        ({"exchange": "binance", "options": {"fetchCurrencies": True}}, "fixed by the signer"),
        ({"exchange": "binance", "secret": "x"}, "Extra inputs"),
    ]
    for raw, expected in cases:
        with pytest.raises(ValidationError, match=None) as err:
            ExchangeSettings(**raw)
        assert expected in str(err.value)
    with pytest.raises(ConfigError, match="passphrase"):
        ExchangeGateway(
            ExchangeSettings(exchange="okx"),
            Credentials(api_key=API_KEY, secret=SECRET, password=None),
        )


def test_an_exchange_clock_that_moved_is_measured_again_and_the_order_goes_through() -> None:
    """A -1021 (timestamp outside recvWindow) means nothing was placed: the gateway measures the
    exchange's clock again and retries once, so a simulator at high speed (or a drifting host
    clock) does not stop trading. Exactly one order is placed."""
    testing = pytest.importorskip("simexchange.testing")
    sim, keys = testing.start_test_exchange()
    try:
        settings = ExchangeSettings(exchange="binance", api_url=sim.base_url)
        creds = Credentials(api_key=keys.api_key, secret=keys.secret, password=None)
        gateway = ExchangeGateway(settings, creds)
        rules = gateway.market_rules("BTC/USDT")
        low = (gateway.ticker_price("BTC/USDT") * Decimal("0.5")).quantize(rules.tick_size)
        gateway.create_order(
            "BTC/USDT", "buy", "limit", Decimal("0.01"), low, "c-1", sign_only=False
        )
        sim.advance(6 * 3600)  # the exchange's clock is now six hours ahead of this host's
        placed = gateway.create_order(
            "BTC/USDT", "buy", "limit", Decimal("0.01"), low, "c-2", sign_only=False
        )
        assert placed["status"] == "open"
        ids = sorted(o["client_order_id"] for o in gateway.fetch_open_orders("BTC/USDT"))
        assert ids == ["c-1", "c-2"]
    finally:
        sim.stop()
