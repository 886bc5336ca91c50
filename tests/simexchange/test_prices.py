"""Candle loading (the real files in /work/shared/data) and the price path through them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path

import pytest

from simexchange.candles import Candle, CandleSeries, SyntheticSeries, load_candles
from simexchange.market import Market, SymbolSpec
from simexchange.prices import PricePath, first_cross

DATA = Path("/work/shared/data")
HOUR = 3_600_000
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared candle data not present")


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


@needs_data
def test_freqtrade_json_loads_as_decimal_with_gaps_kept() -> None:
    eth = load_candles(DATA / "ETH_USDT-1h.json")
    assert eth.interval_ms == HOUR and len(eth.candles) == 4090
    first = eth.candles[0]
    assert first.open_time == ms("2021-01-01T00:00:00") and isinstance(first.open, D)
    raw = json.loads((DATA / "ETH_USDT-1h.json").read_text(), parse_float=D)
    assert first.close == raw[0][4]  # exactly the file's digits, never a float
    assert ms("2021-02-11T04:00:00") not in eth.times  # a known maintenance gap


@needs_data
def test_csv_close_time_in_utc_plus_one_becomes_utc_open_time() -> None:
    btc = load_candles(DATA / "BTCUSDT_1m.csv")
    assert btc.interval_ms == 60_000 and len(btc.candles) == 41_761
    # first row closes 2024-12-01 00:00:59.999+01:00, so it opened 2024-11-30 23:00 UTC
    assert btc.candles[0].open_time == ms("2024-11-30T23:00:00")
    assert btc.candles[0].open == D("96466.11") and btc.candles[-1].close == D("93226.88")


@needs_data
def test_one_minute_file_matches_the_hourly_file_through_the_path() -> None:
    """SOURCES.md: the 1m CSV grouped into hours equals BTC_USDT-1h.json exactly."""
    minute = PricePath(load_candles(DATA / "BTCUSDT_1m.csv"), D("0.01"))
    hourly = {c.open_time: c for c in load_candles(DATA / "BTC_USDT-1h.json").candles}
    spec = SymbolSpec(
        "BTCUSDT", "BTC", "USDT", D("0.01"), D("0.00001"), D("0.00001"), D(9000), D(5)
    )
    market = Market(spec, minute, depth_quote_per_pct=D(1))
    for start in (ms("2024-12-01T00:00:00"), ms("2024-12-15T13:00:00")):
        w = market.window(start, start + HOUR)
        h = hourly[start]
        assert w is not None and (w.open, w.high, w.low, w.close) == (
            h.open,
            h.high,
            h.low,
            h.close,
        )


def path_of(*candles: Candle, interval: int = 60_000) -> PricePath:
    return PricePath(CandleSeries(list(candles), interval), D("0.01"))


def test_path_visits_open_then_nearer_extreme_then_other_then_close() -> None:
    near_high = path_of(Candle(0, D(100), D(101), D(90), D(95), D(1)))
    assert [near_high.price_at(t) for t in (0, 20_000, 40_000, 59_999)] == [
        D(100), D(101), D(90), D(95)
    ]  # fmt: skip
    near_low = path_of(Candle(0, D(100), D(110), D(99), D(105), D(1)))
    assert [near_low.price_at(t) for t in (20_000, 40_000)] == [D(99), D(110)]
    assert near_high.price_at(10_000) == D("100.5")  # linear between vertices


def test_gap_holds_the_last_close_until_the_next_candle() -> None:
    path = path_of(
        Candle(0, D(10), D(11), D(9), D(10), D(1)),
        Candle(180_000, D(20), D(21), D(19), D(20), D(1)),
    )
    assert path.price_at(60_000) == path.price_at(179_999) == D(10)
    assert path.price_at(180_000) == D(20)
    assert path.price_at(-5) == D(10) and path.price_at(10**13) == D(20)
    inside = [t for t, _ in path.points(0, 240_000)]
    assert 179_999 in inside and inside == sorted(inside)


def test_first_cross_is_strict_and_interpolated() -> None:
    pts = [(0, D(100)), (100, D(90))]
    assert first_cross(pts, D(90), below=True) is None
    assert first_cross(pts, D(95), below=True) == 51
    assert first_cross([(0, D(80)), (10, D(85))], D(90), below=True) == 0
    assert first_cross([(0, D(100)), (100, D(110))], D(105), below=False) == 51


def test_synthetic_path_is_seeded_decimal_and_extends_lazily() -> None:
    def make(seed: int) -> SyntheticSeries:
        return SyntheticSeries(start_price=D(100), start_ms=0, tick=D("0.01"), seed=seed, history=5)

    a, b, other = make(3), make(3), make(4)
    for series in (a, b, other):
        series.ensure(3_600_000)
    assert a.candles == b.candles and len(a.candles) == 66
    assert [c.close for c in a.candles] != [c.close for c in other.candles]
    for c in a.candles:
        assert isinstance(c.close, D) and c.close == c.close.quantize(D("0.01"))
        assert c.low <= min(c.open, c.close) and c.high >= max(c.open, c.close)
    assert [c.open for c in a.candles[1:]] == [c.close for c in a.candles[:-1]]
