"""Candle series: real candles loaded from files, or a seeded synthetic path (GBM).

Prices are parsed straight into Decimal (JSON floats via `parse_float=Decimal`), so no float
ever holds a price.
"""

from __future__ import annotations

import csv
import json
import random
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import NamedTuple

_YEAR_MS = Decimal(365 * 24 * 3600 * 1000)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Candle(NamedTuple):
    """One OHLCV candle; `open_time` is the candle's open in epoch ms (UTC)."""

    open_time: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal


class CandleSeries:
    """Candles at a fixed interval, sorted by open time; gaps are allowed."""

    def __init__(self, candles: list[Candle], interval_ms: int, source: str = "") -> None:
        if not candles:
            raise ValueError(f"candle series {source!r} is empty: at least one candle is required")
        if interval_ms <= 0:
            raise ValueError(f"interval_ms={interval_ms} is out of range: allowed > 0")
        self.candles = candles
        self.times = [c.open_time for c in candles]
        self.interval_ms = interval_ms
        self.source = source

    @property
    def first_time(self) -> int:
        return self.times[0]

    def ensure(self, until_ms: int) -> None:
        """Make sure candles exist up to `until_ms` (replayed data cannot grow: no-op)."""


def _check(c: Candle, source: str, row: int) -> Candle:
    if not (c.low <= c.open <= c.high and c.low <= c.close <= c.high and c.low > 0):
        raise ValueError(f"{source} row {row}: candle breaks low <= open,close <= high, low > 0")
    if c.volume < 0:
        raise ValueError(f"{source} row {row}: volume={c.volume} is out of range: allowed >= 0")
    return c


def _infer_interval(times: list[int], source: str) -> int:
    diffs = [b - a for a, b in zip(times, times[1:], strict=False) if b > a]
    if not diffs:
        raise ValueError(f"{source}: need at least two candles to infer the interval")
    return min(diffs)


def _finish(candles: list[Candle], source: str, interval_ms: int | None) -> CandleSeries:
    by_time = {c.open_time: c for c in candles}
    ordered = [by_time[t] for t in sorted(by_time)]
    interval = interval_ms or _infer_interval([c.open_time for c in ordered], source)
    return CandleSeries(ordered, interval, source)


def load_freqtrade_json(path: Path) -> CandleSeries:
    """freqtrade JSON: an array of `[open_time_ms, open, high, low, close, volume]`."""
    rows = json.loads(path.read_text(), parse_float=Decimal, parse_int=Decimal)
    candles = []
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) < 6:
            raise ValueError(f"{path} row {i}: expected [ts_ms, o, h, l, c, v]")
        t, o, h, low, c, v = row[:6]
        candles.append(_check(Candle(int(t), o, h, low, c, v), str(path), i))
    return _finish(candles, str(path), None)


def _parse_time_ms(text: str) -> int:
    text = text.strip()
    if text.isdigit():
        return int(text)
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(milliseconds=1)


def load_csv(path: Path) -> CandleSeries:
    """CSV with open/high/low/close/volume and either an open-time or a close-time column.

    A close-time column (e.g. `close_datetime` = open + interval - 1 ms, any UTC offset) is
    converted to the UTC open time once the interval is known.
    """
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, [])
        open_col = next((c for c in ("open_time", "timestamp", "date") if c in header), None)
        close_col = next((c for c in ("close_datetime", "close_time") if c in header), None)
        time_col = open_col or close_col
        if time_col is None:
            raise ValueError(f"{path}: no time column (open_time/timestamp/date/close_datetime)")
        try:
            ti = header.index(time_col)
            o, h, lo, c, v = (header.index(k) for k in ("open", "high", "low", "close", "volume"))
        except ValueError:
            raise ValueError(f"{path}: needs columns open,high,low,close,volume") from None
        raw = [
            (_parse_time_ms(r[ti]), Decimal(r[o]), Decimal(r[h]), Decimal(r[lo]), Decimal(r[c]),
             Decimal(r[v]))
            for r in reader
        ]  # fmt: skip
    if open_col is not None:
        candles = [_check(Candle(*r), str(path), i) for i, r in enumerate(raw)]
        return _finish(candles, str(path), None)
    interval = _infer_interval(sorted(r[0] for r in raw), str(path))
    candles = [_check(Candle(r[0] + 1 - interval, *r[1:]), str(path), i) for i, r in enumerate(raw)]
    return _finish(candles, str(path), interval)


def load_candles(path: str | Path) -> CandleSeries:
    """Load a candle file by its suffix: `.json` (freqtrade) or `.csv`."""
    p = Path(path)
    if p.suffix.lower() == ".json":
        return load_freqtrade_json(p)
    if p.suffix.lower() == ".csv":
        return load_csv(p)
    raise ValueError(f"candle file {p}: unknown suffix {p.suffix!r}; allowed .json or .csv")


class SyntheticSeries(CandleSeries):
    """A seeded geometric Brownian motion, extended lazily as simulated time moves on.

    Each candle takes three GBM sub-steps (open -> a -> b -> close), so candles have real
    highs and lows. The normal draws come from `random.Random(seed)`; every price is
    computed with Decimal `exp`/`sqrt` and quantized to the tick.
    """

    def __init__(
        self,
        *,
        start_price: Decimal,
        start_ms: int,
        tick: Decimal,
        interval_ms: int = 60_000,
        volatility: Decimal = Decimal("0.6"),
        drift: Decimal = Decimal(0),
        seed: int = 0,
        history: int = 500,
    ) -> None:
        if start_price <= 0 or tick <= 0:
            raise ValueError(f"start_price={start_price}, tick={tick}: allowed > 0")
        self._rng = random.Random(seed)
        self._tick = tick
        dt = Decimal(interval_ms) / 3 / _YEAR_MS
        self._mu_dt = (drift - volatility * volatility / 2) * dt
        self._sigma_sqrt_dt = volatility * dt.sqrt()
        self._price = start_price.quantize(tick, ROUND_HALF_EVEN)
        first = (start_ms // interval_ms - history) * interval_ms
        super().__init__([self._make(first, interval_ms)], interval_ms, f"synthetic(seed={seed})")

    def _step(self, price: Decimal) -> Decimal:
        z = Decimal(f"{self._rng.gauss(0.0, 1.0):.12f}")
        nxt = (price * (self._mu_dt + self._sigma_sqrt_dt * z).exp()).quantize(
            self._tick, ROUND_HALF_EVEN
        )
        return max(nxt, self._tick)

    def _make(self, open_time: int, interval_ms: int) -> Candle:
        o = self._price
        a = self._step(o)
        b = self._step(a)
        c = self._step(b)
        self._price = c
        volume = Decimal(self._rng.randint(1_000, 100_000)) / 1000
        return Candle(open_time, o, max(o, a, b, c), min(o, a, b, c), c, volume)

    def ensure(self, until_ms: int) -> None:
        while self.times[-1] + self.interval_ms <= until_ms:
            candle = self._make(self.times[-1] + self.interval_ms, self.interval_ms)
            self.candles.append(candle)
            self.times.append(candle.open_time)
