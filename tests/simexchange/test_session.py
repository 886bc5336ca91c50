"""Real candles from /work/shared/data drive a one-hour simulated session, fast."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from decimal import Decimal as D
from pathlib import Path

import pytest

from simexchange import FileSource, SimExchange, symbol_config
from simexchange.candles import Candle
from simexchange.testing import RawClient

CSV = Path("/work/shared/data/BTCUSDT_1m.csv")
HOUR = 3_600_000
pytestmark = pytest.mark.skipif(not CSV.exists(), reason="shared candle data not present")


def _replay(make_sim: Callable[..., SimExchange], **overrides: object) -> SimExchange:
    btc = symbol_config("BTCUSDT", FileSource(path=CSV))
    return make_sim(symbols=(btc,), start_ms=None, **overrides)


def _place(sim: SimExchange, client: RawClient, side: str, price: D) -> int:
    keys = sim.add_account({"USDT": "100000", "BTC": "1"})
    reply = client.signed(
        "POST", "/api/v3/order", keys,
        {"symbol": "BTCUSDT", "side": side, "type": "LIMIT", "timeInForce": "GTC",
         "quantity": "0.01", "price": f"{price:f}"},
        timestamp=sim.now_ms,
    )  # fmt: skip
    assert reply.status == 200, reply.body
    return int(reply.body["orderId"])


def _first_hour(sim: SimExchange) -> list[Candle]:
    series = sim.engine.markets["BTCUSDT"].path.series
    start = sim.now_ms
    assert start == series.first_time  # the clock starts at the first replayed candle
    return [c for c in series.candles if start <= c.open_time < start + HOUR]


def test_stepping_an_hour_of_minute_candles_fills_what_the_prices_cross(
    make_sim: Callable[..., SimExchange],
) -> None:
    sim = _replay(make_sim)
    client = RawClient(sim.base_url)
    hour = _first_hour(sim)
    assert len(hour) == 60
    low, high = min(c.low for c in hour), max(c.high for c in hour)
    tick = D("0.01")
    crossed_buy, touched_buy = (
        _place(sim, client, "BUY", low + tick),
        _place(sim, client, "BUY", low),
    )
    crossed_sell = _place(sim, client, "SELL", high - tick)
    start = sim.now_ms

    began = time.perf_counter()
    for candle in hour[1:]:
        reply = client.send(
            "POST", "/_sim/advance", body=json.dumps({"seconds": 60}).encode(),
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        assert reply.body["serverTime"] == candle.open_time
        price = client.get("/api/v3/ticker/price", symbol="BTCUSDT").body["price"]
        assert D(price) == candle.open  # the path sits on each candle's open at its start
    sim.advance(60)
    elapsed = time.perf_counter() - began
    assert elapsed < 60  # completes; the wall-time figure is in the report, not asserted

    orders = sim.engine.orders
    assert orders[crossed_buy].status == orders[crossed_sell].status == "FILLED"
    assert orders[touched_buy].status == "NEW"  # touching the low is not trading through it
    fill_times = [
        sim.engine.trades[orders[i].trade_ids[0]].time for i in (crossed_buy, crossed_sell)
    ]
    assert all(start < t <= start + HOUR for t in fill_times)

    klines = client.get(
        "/api/v3/klines", symbol="BTCUSDT", interval="1m", startTime=start, limit=60
    ).body
    assert [(k[0], D(k[1]), D(k[2]), D(k[3]), D(k[4]), D(k[5])) for k in klines] == [
        (c.open_time, c.open, c.high, c.low, c.close, c.volume) for c in hour
    ]
    hourly = client.get("/api/v3/klines", symbol="BTCUSDT", interval="1h", startTime=start).body
    assert (D(hourly[0][2]), D(hourly[0][3])) == (high, low)


def test_an_hour_at_high_speed_completes_in_seconds(make_sim: Callable[..., SimExchange]) -> None:
    """At 7200x the recvWindow tolerance stretches with the speed, so signing still works."""
    sim = _replay(make_sim, speed=7200)  # one simulated hour per half second of wall time
    client = RawClient(sim.base_url)
    start = sim.engine.markets["BTCUSDT"].path.series.first_time
    hour = [c for c in sim.engine.markets["BTCUSDT"].path.series.candles[:60]]
    buy = _place(sim, client, "BUY", min(c.low for c in hour) + D("0.01"))
    deadline = time.monotonic() + 30
    server_time = start
    while server_time < start + HOUR and time.monotonic() < deadline:
        server_time = client.get("/api/v3/time").body["serverTime"]
        client.get("/api/v3/ticker/24hr", symbol="BTCUSDT")
    assert server_time >= start + HOUR
    with sim.engine.session():
        pass
    assert sim.engine.orders[buy].status == "FILLED"
