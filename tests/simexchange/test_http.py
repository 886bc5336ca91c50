"""HTTP details, public market data, the admin surface, and what is (never) logged."""

from __future__ import annotations

import http.client
import json
import logging
from collections.abc import Callable
from decimal import Decimal as D
from urllib.parse import urlsplit

import pytest

from simexchange import SimExchange
from simexchange.testing import RawClient, sign


def test_keep_alive_connection_serves_many_json_requests(sim: SimExchange) -> None:
    url = urlsplit(sim.base_url)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=5)
    try:
        for _ in range(3):  # one socket, HTTP/1.1 keep-alive
            conn.request("GET", "/api/v3/ping")
            resp = conn.getresponse()
            assert resp.version == 11 and resp.status == 200
            assert resp.getheader("Content-Type") == "application/json;charset=UTF-8"
            assert resp.getheader("Content-Length") == "2" and resp.read() == b"{}"
    finally:
        conn.close()


def test_exchange_info_carries_what_ccxt_needs(sim: SimExchange) -> None:
    info = RawClient(sim.base_url).get("/api/v3/exchangeInfo", symbol="BTCUSDT").body
    assert info["timezone"] == "UTC" and info["serverTime"] == sim.now_ms
    (btc,) = info["symbols"]
    assert btc["status"] == "TRADING" and btc["isSpotTradingAllowed"] is True
    assert (btc["baseAsset"], btc["quoteAsset"], btc["permissionSets"]) == (
        "BTC",
        "USDT",
        [["SPOT"]],
    )
    filters = {f["filterType"]: f for f in btc["filters"]}
    assert filters["PRICE_FILTER"]["tickSize"] == "0.01000000"
    assert filters["LOT_SIZE"]["stepSize"] == "0.00001000"
    assert filters["NOTIONAL"]["minNotional"] == "5.00000000"
    data = RawClient(sim.base_url).get("/api/v3/exchangeInfo", symbols='["DATAUSDT"]').body
    assert {f["filterType"] for f in data["symbols"][0]["filters"]} >= {"MIN_NOTIONAL", "LOT_SIZE"}


def test_klines_never_show_the_future(sim: SimExchange) -> None:
    client = RawClient(sim.base_url)
    now = sim.now_ms
    rows = client.get("/api/v3/klines", symbol="BTCUSDT", interval="1h", limit=3).body
    assert rows[-1][0] <= now < rows[-1][6] + 1
    assert [r[0] for r in rows] == sorted(r[0] for r in rows)
    series = sim.engine.markets["BTCUSDT"].path.series
    assert series.times[-1] <= now  # nothing was generated past the present
    last = rows[-1]
    assert D(last[4]) == D(client.get("/api/v3/ticker/price", symbol="BTCUSDT").body["price"])


def test_ticker_24hr_is_consistent(sim: SimExchange) -> None:
    t = RawClient(sim.base_url).get("/api/v3/ticker/24hr", symbol="ETHUSDT").body
    low, high, last, open_ = (D(t[k]) for k in ("lowPrice", "highPrice", "lastPrice", "openPrice"))
    assert low <= min(last, open_) and high >= max(last, open_)
    assert D(t["priceChange"]) == last - open_
    assert t["closeTime"] - t["openTime"] == 86_400_000
    all_tickers = RawClient(sim.base_url).get("/api/v3/ticker/24hr").body
    assert {x["symbol"] for x in all_tickers} == {"BTCUSDT", "ETHUSDT", "DATAUSDT"}


def _admin(client: RawClient, path: str, doc: dict[str, object]) -> tuple[int, dict]:
    reply = client.send(
        "POST", path, body=json.dumps(doc).encode(), headers={"Content-Type": "application/json"}
    )
    return reply.status, reply.body


def test_admin_adds_accounts_steps_time_and_deposits(sim: SimExchange) -> None:
    client = RawClient(sim.base_url)
    status, created = _admin(client, "/_sim/accounts", {"name": "eve", "balances": {"USDT": "7"}})
    assert status == 200 and len(created["secret"]) == 64
    before = sim.now_ms
    assert _admin(client, "/_sim/advance", {"seconds": "1.5"})[1] == {"serverTime": before + 1500}
    assert _admin(client, "/_sim/deposit", {"account_id": created["accountId"], "asset": "USDT",
                                            "amount": "3"})[0] == 200  # fmt: skip
    from simexchange.server import AccountKeys

    keys = AccountKeys(created["accountId"], "eve", created["apiKey"], "HMAC", created["secret"])
    account = client.signed("GET", "/api/v3/account", keys, {}, timestamp=sim.now_ms).body
    assert {"asset": "USDT", "free": "10.00000000", "locked": "0.00000000"} in account["balances"]
    status, body = _admin(client, "/_sim/speed", {"speed": "-3"})
    assert status == 400 and body["code"] == -1130
    assert client.get("/_sim/status").body["speed"] == "0"


def test_admin_is_off_unless_enabled(make_sim: Callable[..., SimExchange]) -> None:
    closed = make_sim(admin=False)
    reply = _admin(RawClient(closed.base_url), "/_sim/accounts", {"name": "mallory"})
    assert reply[0] == 404 and closed.engine.accounts == {}


def test_signatures_and_secrets_never_reach_the_logs(
    sim: SimExchange, caplog: pytest.LogCaptureFixture
) -> None:
    keys = sim.add_account({"USDT": "1"})
    caplog.set_level(logging.DEBUG)
    payload = f"timestamp={sim.now_ms}"
    signature = sign(keys, payload)
    reply = RawClient(sim.base_url).signed("GET", "/api/v3/account", keys, {}, timestamp=sim.now_ms)
    assert reply.status == 200
    assert "GET /api/v3/account" in caplog.text
    assert signature not in caplog.text and keys.secret not in caplog.text
    assert "timestamp=" not in caplog.text
    assert keys.secret not in repr(keys) and keys.secret not in repr(sim.keys.get(keys.api_key))


def test_stop_closes_idle_keep_alive_connections(make_sim: Callable[..., SimExchange]) -> None:
    server = make_sim()
    url = urlsplit(server.base_url)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=5)
    conn.request("GET", "/api/v3/ping")
    conn.getresponse().read()
    server.stop()
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        conn.request("GET", "/api/v3/ping")
        conn.getresponse().read()
    conn.close()
