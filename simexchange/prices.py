"""The price path through a candle series, as a piecewise-linear function of time.

Within a candle of interval I opening at t0 the path visits: open at t0, the extreme nearer
to the open at t0 + I/3, the other extreme at t0 + 2I/3, and the close at t0 + I - 1 ms
(ties go to the high first). Between those vertices the price moves linearly and is
rounded to the tick. In a gap (missing candles) the price holds the last close until 1 ms
before the next candle opens. Before the first candle the price is the first open; after
the last, the last close.

So the path over a whole candle reproduces the candle's OHLC exactly, and any window can
be summarised (klines at any interval) without ever looking past "now" (see
`Market.window`).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from simexchange.candles import CandleSeries

Point = tuple[int, Decimal]


@dataclass(frozen=True, slots=True)
class Window:
    """Open/high/low/close/volume of the path over a time window."""

    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal


class PricePath:
    """Prices at any simulated time, derived from a candle series."""

    def __init__(self, series: CandleSeries, tick: Decimal) -> None:
        self.series = series
        self.tick = tick

    def _q(self, price: Decimal) -> Decimal:
        return price.quantize(self.tick, ROUND_HALF_EVEN)

    def _vertices(self, i: int) -> list[Point]:
        """Candle i's vertices, plus a hold point at the end of a following gap."""
        s = self.series
        c = s.candles[i]
        step = s.interval_ms // 3
        t0 = c.open_time
        if c.high - c.open <= c.open - c.low:
            first, second = c.high, c.low
        else:
            first, second = c.low, c.high
        pts = [
            (t0, c.open),
            (t0 + step, first),
            (t0 + 2 * step, second),
            (t0 + s.interval_ms - 1, c.close),
        ]
        if i + 1 < len(s.times) and s.times[i + 1] > t0 + s.interval_ms:
            pts.append((s.times[i + 1] - 1, c.close))
        return pts

    def _index(self, t: int) -> int:
        """Index of the candle open at or before t (-1 before the first)."""
        return bisect_right(self.series.times, t) - 1

    def price_at(self, t: int) -> Decimal:
        """The path's price at time t, rounded to the tick."""
        self.series.ensure(t)
        i = self._index(t)
        if i < 0:
            return self._q(self.series.candles[0].open)
        pts = self._vertices(i)
        if i + 1 < len(self.series.times):
            nxt = self.series.candles[i + 1]
            pts.append((nxt.open_time, nxt.open))
        return self._q(_interpolate(pts, t))

    def points(self, start: int, end: int) -> list[Point]:
        """The path from start to end inclusive: both ends plus every vertex in between."""
        self.series.ensure(end)
        out: list[Point] = [(start, self.price_at(start))]
        i = max(self._index(start), 0)
        times = self.series.times
        while i < len(times) and times[i] <= end:
            for t, p in self._vertices(i):
                if start < t < end:
                    out.append((t, self._q(p)))
            i += 1
        if end > start:
            out.append((end, self.price_at(end)))
        return out

    def volume(self, start: int, end: int) -> Decimal:
        """Volume pro rata by time overlap with each candle (exact for whole candles)."""
        s = self.series
        total = Decimal(0)
        i = max(self._index(start), 0)
        while i < len(s.times) and s.times[i] < end:
            c = s.candles[i]
            lo, hi = max(start, c.open_time), min(end, c.open_time + s.interval_ms)
            if hi > lo:
                total += c.volume * (hi - lo) / s.interval_ms
            i += 1
        return total.quantize(Decimal("0.00000001"), ROUND_HALF_EVEN)


def _interpolate(pts: list[Point], t: int) -> Decimal:
    if t <= pts[0][0]:
        return pts[0][1]
    for (ta, pa), (tb, pb) in zip(pts, pts[1:], strict=False):
        if ta <= t <= tb:
            if tb == ta:
                return pb
            return pa + (pb - pa) * (t - ta) / (tb - ta)
    return pts[-1][1]


def first_cross(pts: list[Point], price: Decimal, below: bool) -> int | None:
    """First time the piecewise-linear path trades strictly through `price`.

    `below=True` looks for the path going under `price` (a resting buy fills), otherwise
    over it (a resting sell fills). Returns None when the path never crosses.
    """

    def beyond(p: Decimal) -> bool:
        return p < price if below else p > price

    if beyond(pts[0][1]):
        return pts[0][0]
    for (ta, pa), (tb, pb) in zip(pts, pts[1:], strict=False):
        if beyond(pb):
            if pb == pa or tb == ta:
                return tb
            at_level = ta + (pa - price) * (tb - ta) / (pa - pb)
            return min(tb, int(at_level) + 1)
    return None
