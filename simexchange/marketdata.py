"""Public (NONE security) endpoints: time, exchange info, tickers, klines, depth."""

from __future__ import annotations

import json
from decimal import ROUND_HALF_EVEN, Decimal

from simexchange import errors
from simexchange.market import Market, fmt
from simexchange.params import Params, integer, limit, text

DAY_MS = 86_400_000
INTERVALS_MS = {
    "1s": 1_000, "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000,
    "30m": 1_800_000, "1h": 3_600_000, "2h": 7_200_000, "4h": 14_400_000,
    "6h": 21_600_000, "8h": 28_800_000, "12h": 43_200_000, "1d": DAY_MS,
    "3d": 3 * DAY_MS, "1w": 7 * DAY_MS,
}  # fmt: skip
_WEEK_OFFSET = 4 * DAY_MS  # 1970-01-05, the first Monday: Binance weeks start on Monday
RATE_LIMITS = [
    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
    {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
    {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
]


class MarketData:
    """Answers the public endpoints from the markets (caller holds the engine lock)."""

    def __init__(self, markets: dict[str, Market]) -> None:
        self.markets = markets

    def market(self, params: Params, *, required: bool = True) -> Market | None:
        symbol = text(params, "symbol", required=required)
        if symbol is None:
            return None
        found = self.markets.get(symbol)
        if found is None:
            raise errors.bad_symbol()
        return found

    def _selected(self, params: Params) -> list[Market]:
        """`symbol`, or `symbols` as a JSON array, or every market."""
        one = self.market(params, required=False)
        if one is not None:
            return [one]
        many = text(params, "symbols")
        if many is None:
            return list(self.markets.values())
        try:
            names = json.loads(many)
        except ValueError:
            raise errors.invalid_parameter("symbols") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise errors.invalid_parameter("symbols")
        if any(n not in self.markets for n in names):
            raise errors.bad_symbol()
        return [self.markets[n] for n in names]

    def _one_or_list(self, params: Params, rows: list[dict[str, object]]) -> object:
        return rows[0] if text(params, "symbol") is not None else rows

    # --- endpoints ------------------------------------------------------------------------
    def ping(self, params: Params, now: int) -> object:
        return {}

    def time(self, params: Params, now: int) -> object:
        return {"serverTime": now}

    def exchange_info(self, params: Params, now: int) -> object:
        return {
            "timezone": "UTC",
            "serverTime": now,
            "rateLimits": RATE_LIMITS,
            "exchangeFilters": [],
            "symbols": [m.spec.exchange_info() for m in self._selected(params)],
        }

    def ticker_price(self, params: Params, now: int) -> object:
        rows = [
            {"symbol": m.spec.symbol, "price": fmt(m.price(now))} for m in self._selected(params)
        ]
        return self._one_or_list(params, rows)

    def book_ticker(self, params: Params, now: int) -> object:
        rows = []
        for m in self._selected(params):
            bid, ask = m.bid_ask(now)
            rows.append(
                {
                    "symbol": m.spec.symbol,
                    "bidPrice": fmt(bid),
                    "bidQty": fmt(m.level_qty(bid)),
                    "askPrice": fmt(ask),
                    "askQty": fmt(m.level_qty(ask)),
                }
            )
        return self._one_or_list(params, rows)

    def ticker_24hr(self, params: Params, now: int) -> object:
        return self._one_or_list(params, [self._day(m, now) for m in self._selected(params)])

    def _day(self, m: Market, now: int) -> dict[str, object]:
        start = now - DAY_MS
        last = m.price(now)
        w = m.window(start, now + 1)
        open_, high, low = (w.open, w.high, w.low) if w else (last, last, last)
        volume = w.volume if w else Decimal(0)
        quote_volume = volume * (open_ + last) / 2
        change = last - open_
        pct = (change / open_ * 100).quantize(Decimal("0.001"), ROUND_HALF_EVEN)
        bid, ask = m.bid_ask(now)
        avg = (quote_volume / volume) if volume else last
        return {
            "symbol": m.spec.symbol, "priceChange": fmt(change), "priceChangePercent": f"{pct:f}",
            "weightedAvgPrice": fmt(avg), "prevClosePrice": fmt(open_), "lastPrice": fmt(last),
            "lastQty": fmt(Decimal(0)), "bidPrice": fmt(bid), "bidQty": fmt(m.level_qty(bid)),
            "askPrice": fmt(ask), "askQty": fmt(m.level_qty(ask)), "openPrice": fmt(open_),
            "highPrice": fmt(high), "lowPrice": fmt(low), "volume": fmt(volume),
            "quoteVolume": fmt(quote_volume), "openTime": start, "closeTime": now,
            "firstId": -1, "lastId": -1, "count": 0,
        }  # fmt: skip

    def klines(self, params: Params, now: int) -> object:
        m = self.market(params)
        assert m is not None
        name = text(params, "interval", required=True)
        if name not in INTERVALS_MS:
            raise errors.bad_interval()
        step = INTERVALS_MS[name]
        count = limit(params, 500, 1000)
        start = integer(params, "startTime")
        end = integer(params, "endTime")
        last_open = _align(min(end if end is not None else now, now), name, step)
        if start is not None:
            first = _align(start, name, step)
            if first < start:
                first += step
            first = max(first, _align(m.path.series.first_time, name, step))
            opens = range(first, last_open + 1, step)[:count]
        else:
            opens = range(max(last_open - (count - 1) * step, 0), last_open + 1, step)
        rows = []
        for o in opens:
            w = m.window(o, min(o + step, now + 1))
            if w is None:
                continue
            rows.append(
                [o, fmt(w.open), fmt(w.high), fmt(w.low), fmt(w.close), fmt(w.volume),
                 o + step - 1, fmt(w.volume * w.close), 0, fmt(Decimal(0)), fmt(Decimal(0)), "0"]
            )  # fmt: skip
        return rows

    def depth(self, params: Params, now: int) -> object:
        m = self.market(params)
        assert m is not None
        bids, asks = m.book(now, limit(params, 100, 5000))
        return {"lastUpdateId": now, "bids": bids, "asks": asks}


def _align(t: int, name: str, step: int) -> int:
    """Start of the kline of this interval containing t (weeks start on Monday, UTC)."""
    if name == "1w":
        return (t - _WEEK_OFFSET) // step * step + _WEEK_OFFSET
    return t // step * step
