"""Public market data through ccxt with no key: exact market rules and the exchange's own price
and clock, from simexchange over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from botengine.marketdata import MarketData, MarketDataError
from botengine.model import MarketRules
from simexchange.server import SimExchange
from simexchange.testing import start_test_exchange


@pytest.fixture
def sim() -> Iterator[SimExchange]:
    s, _keys = start_test_exchange(speed=0)
    try:
        yield s
    finally:
        s.stop()


def test_rules_come_from_the_exchange_filters_as_decimals(sim: SimExchange) -> None:
    md = MarketData("binance", sim.base_url)
    try:
        assert md.rules("BTC/USDT") == MarketRules(
            "BTC/USDT", Decimal("0.01"), Decimal("0.00001"), Decimal("0.00001"), Decimal("5")
        )
        assert md.rules("ETH/USDT").step_size == Decimal("0.0001")
    finally:
        md.close()


def test_a_tick_is_the_exchanges_last_price_at_the_exchanges_time(sim: SimExchange) -> None:
    md = MarketData("binance", sim.base_url)
    try:
        first = md.tick("BTC/USDT")
        assert first.price == sim.price("BTCUSDT") and isinstance(first.price, Decimal)
        assert first.ts_ms == sim.now_ms  # the clock is frozen (speed 0)
        sim.advance(3600)
        later = md.tick("BTC/USDT")
        assert later.ts_ms == first.ts_ms + 3_600_000 and later.price == sim.price("BTCUSDT")
    finally:
        md.close()


def test_unknown_markets_unsupported_exchanges_and_dead_urls_are_named(sim: SimExchange) -> None:
    md = MarketData("binance", sim.base_url)
    try:
        with pytest.raises(MarketDataError, match="symbol: 'DOGE/EUR' is not a market") as e:
            md.rules("DOGE/EUR")
        assert not e.value.transient
    finally:
        md.close()
    with pytest.raises(MarketDataError, match="exchange: 'okx' is not supported"):
        MarketData("okx", None)
    dead = MarketData("binance", "http://127.0.0.1:9", timeout_s=2)
    with pytest.raises(MarketDataError) as down:
        dead.tick("BTC/USDT")
    assert down.value.transient
