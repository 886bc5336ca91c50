"""The backtester: one strategy against a candle series, with simulated fills and fees.

Intra-candle path (the same as simexchange's): each candle is four ticks, open at t0, the
extreme nearer the open at t0 + I/3 (ties: the high first), the farther extreme at t0 + 2I/3,
the close at t0 + I - 1 ms; between ticks the price moves monotonically, and across a gap it
jumps from the last close to the next open. Fill rules (conservative, never better than the
path allows):

- a resting limit buy fills when the path reaches <= its price, at its price, with the maker
  fee; a resting limit sell likewise at >= its price. Orders crossed by one move fill in the
  order the path meets them (buys from the highest down, sells from the lowest up), and the
  strategy sees each fill before the next, so an order it places in reaction can fill later
  in the same move;
- a market order fills at once at the path's current point (the tick's price, or the price of
  the fill the strategy reacted to) with the taker fee; a limit order placed already crossed
  fills at once at its own limit price with the taker fee;
- strategy-side price conditions (stop loss, trailing take profit, start thresholds) see only
  the four ticks, so a stop set between two ticks sells at the later, worse tick;
- fees are charged in the quote asset, rounded half-even to 10^-8;
- a fill is stamped with the time of the tick that ends the move it happened in.

Two drivers share every line of that logic and the same strategy object: `reference` visits
every candle; `fast` asks `Strategy.triggers()` (plus the resting orders) for the price levels
and time that could make anything happen and jumps, with a vectorised numpy search over the
scaled int64 lows/highs, to the first candle that reaches one. Candles strictly between the
triggers and before `at_ms` are skipped; both give identical fills and deals.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Literal

import numpy as np

from botengine.candles import Candles
from botengine.model import Cancel, Deal, Fill, Intent, MarketRules, Place, Strategy, Tick

_FEE_Q = Decimal("1e-8")
_NEVER_ABOVE = int(np.iinfo(np.int64).max)
_SCAN = 24  # candles checked one by one before the vectorised search
Mode = Literal["fast", "reference"]


class BacktestError(RuntimeError):
    """The strategy broke a rule of the simulated exchange (a bug in the strategy)."""


@dataclass(frozen=True)
class Fees:
    """Fee rates as fractions of the notional ("0.001" is 0.1 %)."""

    maker: Decimal = Decimal("0.001")
    taker: Decimal = Decimal("0.001")


@dataclass(frozen=True)
class FillRecord:
    ts_ms: int
    client_order_id: str
    role: str
    side: str
    price: Decimal
    amount: Decimal
    fee: Decimal  # quote
    liquidity: str  # "maker" or "taker"
    candle: int


@dataclass
class BacktestResult:
    """Everything a report needs; balances start at zero (quote may go negative)."""

    bot: str
    symbol: str
    mode: str
    candles: Candles
    fills: list[FillRecord]
    deals: list[Deal]  # closed, in closing order
    open_deals: list[Deal]
    base_balance: Decimal
    quote_balance: Decimal
    fees_paid: Decimal
    max_capital: Decimal  # max of (cost basis of base held + quote reserved by resting buys)
    candles_visited: int
    elapsed_s: float
    orders_placed: int
    orders_cancelled: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def last_price(self) -> Decimal:
        return self.candles.price(self.candles.close[-1])


class Backtest:
    """A simulated exchange account driven through one strategy over `candles`."""

    def __init__(
        self,
        strategy: Strategy,
        candles: Candles,
        rules: MarketRules,
        *,
        fees: Fees | None = None,
        quote_asset: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.strategy = strategy
        self.c = candles
        self.rules = rules
        self.fees = fees or Fees()
        self.quote_asset = quote_asset or rules.symbol.split("/")[1]
        self.progress = progress
        self.buys: dict[str, Place] = {}
        self.sells: dict[str, Place] = {}
        # lazy heaps over the resting orders: (-price, coid) for buys, (price, coid) for sells;
        # entries whose order is gone are dropped when they reach the top
        self._buy_heap: list[tuple[Decimal, str]] = []
        self._sell_heap: list[tuple[Decimal, str]] = []
        self.base = Decimal(0)
        self.quote = Decimal(0)
        self.basis = Decimal(0)
        self.reserved = Decimal(0)
        self.max_capital = Decimal(0)
        self.fees_paid = Decimal(0)
        self.fills: list[FillRecord] = []
        self.deals: list[Deal] = []
        self.placed = 0
        self.cancelled = 0
        self.visited = 0
        self.elapsed = 0.0
        self.next_index = 0  # the next candle to process
        self.pos = Decimal(0)  # the path's current price
        self._candle = 0
        self._ts = 0
        # fast path: (b, a, at_ms) from `_bounds()`, valid until the next fill or intent
        self._quiet: tuple[int, int, int | None] | None = None
        self._floors: dict[Decimal, int] = {}  # trigger price -> scaled int (grids reuse levels)
        self._ceils: dict[Decimal, int] = {}

    # --- drivers -----------------------------------------------------------------------------

    def run(self, mode: Mode = "fast", until: int | None = None) -> BacktestResult:
        """Advance to candle `until` (exclusive; default the end) and return the result."""
        if mode not in ("fast", "reference"):
            raise ValueError(f"mode {mode!r} is not allowed; must be fast or reference")
        n = len(self.c)
        stop = n if until is None else min(until, n)
        started = time.perf_counter()
        self._quiet = None
        if self.next_index == 0 and stop > 0:
            self._first_candle()
        fast = mode == "fast"
        report_every = max(1, n // 200)
        next_report = self.next_index
        i = self.next_index
        while i < stop:
            if fast:
                i = self._next_stop(i, stop)
                if i >= stop:
                    break
            self._process(i, fast=fast)
            i += 1
            if self.progress is not None and i >= next_report:
                self.progress(i, n)
                next_report = i + report_every
        self.next_index = max(self.next_index, stop)
        self.elapsed += time.perf_counter() - started
        if self.progress is not None:
            self.progress(self.next_index, n)
        return self.result(mode)

    def result(self, mode: str) -> BacktestResult:
        self._collect_deals()
        open_deals = getattr(self.strategy, "open_deals", lambda: [])()
        extra = {
            k: getattr(self.strategy, k)
            for k in ("round_trips", "stopped", "orphan_base", "dust_base")
            if hasattr(self.strategy, k)
        }
        return BacktestResult(
            bot=self.strategy.name, symbol=self.strategy.symbol, mode=mode, candles=self.c,
            fills=list(self.fills), deals=list(self.deals), open_deals=open_deals,
            base_balance=self.base, quote_balance=self.quote, fees_paid=self.fees_paid,
            max_capital=self.max_capital, candles_visited=self.visited, elapsed_s=self.elapsed,
            orders_placed=self.placed, orders_cancelled=self.cancelled, extra=extra,
        )  # fmt: skip

    def _first_candle(self) -> None:
        c = self.c
        self.pos = c.price(c.open[0])
        self._candle = 0
        self._ts = int(c.open_ms[0])
        self._apply(self.strategy.on_start(Tick(self._ts, self.pos)), self.pos)
        self._after_event()
        self._process(0, skip_open=True)
        self.next_index = 1

    def _bounds(self) -> tuple[int, int, int | None]:
        """Scaled (b, a, at_ms): a tick at v with b < v < a before at_ms triggers nothing.

        Cached until the next event (a fill or an intent), which is what can change them."""
        q = self._quiet
        if q is not None:
            return q
        t = self.strategy.triggers()
        below, above = t.below, t.above
        buy, sell = self._top(self._buy_heap, self.buys), self._top(self._sell_heap, self.sells)
        if buy is not None and (below is None or buy.price > below):  # type: ignore[operator]
            below = buy.price
        if sell is not None and (above is None or sell.price < above):  # type: ignore[operator]
            above = sell.price
        c = self.c
        if below is None:
            b = -1
        elif (b := self._floors.get(below, -2)) == -2:
            b = self._floors[below] = c.floor_scaled(below)
        if above is None:
            a = _NEVER_ABOVE
        elif (a := self._ceils.get(above, -2)) == -2:
            a = self._ceils[above] = c.ceil_scaled(above)
        if len(self._floors) + len(self._ceils) > 100_000:  # a drifting trailing stop
            self._floors.clear()
            self._ceils.clear()
        self._quiet = q = (b, a, t.at_ms)
        return q

    def _next_stop(self, i: int, stop: int) -> int:
        """The first candle in [i, stop) that could trigger anything, else `stop`."""
        b, a, at_ms = self._bounds()
        c = self.c
        limit = stop
        if at_ms is not None:
            limit = min(limit, int(np.searchsorted(c.end_ms, at_ms, side="left")))
            if limit <= i:
                return i
        if b < 0 and a == _NEVER_ABOVE:
            return limit
        # most jumps are short: scan a few candles in Python before paying numpy's call costs
        low, high = c.low, c.high
        j = min(limit, i + _SCAN)
        for n, (lo, hi) in enumerate(zip(low[i:j].tolist(), high[i:j].tolist(), strict=True)):
            if lo <= b or hi >= a:  # b = -1 / a = int64 max never hit
                return i + n
        width = 64
        while j < limit:
            k = min(limit, j + width)
            if b < 0:
                hit = high[j:k] >= a
            elif a == _NEVER_ABOVE:
                hit = low[j:k] <= b
            else:
                hit = (low[j:k] <= b) | (high[j:k] >= a)
            first = int(hit.argmax())
            if hit[first]:
                return j + first
            j, width = k, width * 4
        return limit

    # --- one candle --------------------------------------------------------------------------

    def _process(self, i: int, skip_open: bool = False, fast: bool = False) -> None:
        c = self.c
        self.visited += 1
        self._candle = i
        t0 = int(c.open_ms[i])
        o, h, lo, cl = int(c.open[i]), int(c.high[i]), int(c.low[i]), int(c.close[i])
        first, second = (h, lo) if h - o <= o - lo else (lo, h)
        step = c.interval_ms // 3
        points = ((t0 + step, first), (t0 + 2 * step, second), (t0 + c.interval_ms - 1, cl))
        if not skip_open:
            points = ((t0, o), *points)
        quiet = self._bounds() if fast else None
        moved = None  # the scaled price the path moved to through skipped ticks
        for ts, v in points:
            if quiet is not None:
                # a tick strictly inside the quiet band crosses no resting order and, by the
                # Triggers contract, makes the strategy do nothing: only the path moves
                b, a, at_ms = quiet
                if b < v < a and (at_ms is None or ts < at_ms):
                    self._ts = ts
                    moved = v
                    continue
            if moved is not None:
                self.pos, moved = c.price(moved), None
            self._tick(ts, c.price(v))
            if fast:
                quiet = self._bounds()
        if moved is not None:
            self.pos = c.price(moved)

    def _tick(self, ts: int, price: Decimal) -> None:
        self._ts = ts
        active = self._settle(price)
        self.pos = price
        intents = self.strategy.on_price(Tick(ts, price))
        if intents:
            self._apply(intents, price)
            active = True
        self._quiet = None  # on_price may have moved a trigger (a trailing peak) silently
        if active:
            self._after_event()

    def _settle(self, cur: Decimal) -> bool:
        """Fill every resting order the move from `self.pos` to `cur` crosses, in path order."""
        any_fill = False
        down = cur < self.pos
        heap, book = (self._buy_heap, self.buys) if down else (self._sell_heap, self.sells)
        for _ in range(1_000_000):
            place = self._top(heap, book)
            if place is None or (place.price < cur if down else place.price > cur):  # type: ignore[operator]
                return any_fill
            heapq.heappop(heap)
            del book[place.client_order_id]
            price = place.price
            assert price is not None
            if down:
                self.reserved -= price * place.amount
            self._fill(place, price, "maker")
            any_fill = True
        raise BacktestError("more than a million fills in one move: the strategy loops")

    def _apply(self, intents: list[Intent], at: Decimal) -> None:
        """Carry out intents with the path at price `at`."""
        for intent in intents:
            if isinstance(intent, Cancel):
                place = self.buys.pop(intent.client_order_id, None)
                if place is not None:
                    self.reserved -= place.price * place.amount  # type: ignore[operator]
                else:
                    place = self.sells.pop(intent.client_order_id, None)
                if place is None:
                    raise BacktestError(f"cancel of unknown order {intent.client_order_id}")
                self.cancelled += 1
                continue
            self._check(intent, at)
            self.placed += 1
            if intent.price is None:
                self._fill(intent, at, "taker")
            elif (intent.side == "buy" and intent.price >= at) or (
                intent.side == "sell" and intent.price <= at
            ):
                self._fill(intent, intent.price, "taker")
            else:
                coid = intent.client_order_id
                if intent.side == "buy":
                    self.buys[coid] = intent
                    heapq.heappush(self._buy_heap, (-intent.price, coid))
                    self.reserved += intent.price * intent.amount
                else:
                    self.sells[coid] = intent
                    heapq.heappush(self._sell_heap, (intent.price, coid))

    def _check(self, place: Place, at: Decimal) -> None:
        coid = place.client_order_id
        if coid in self.buys or coid in self.sells:
            raise BacktestError(f"{coid}: client order id already in use by a resting order")
        price = place.price if place.price is not None else self.rules.price_up(at)
        if not self.rules.accepts(place.amount, price):
            raise BacktestError(f"{coid}: {place.side} {place.amount} at {price} breaks the rules")

    def _fill(self, place: Place, price: Decimal, liquidity: str) -> None:
        rate = self.fees.maker if liquidity == "maker" else self.fees.taker
        notional = price * place.amount
        fee = (notional * rate).quantize(_FEE_Q, ROUND_HALF_EVEN)
        if place.side == "buy":
            self.quote -= notional + fee
            self.basis += notional + fee
            self.base += place.amount
        else:
            if place.amount > self.base:
                raise BacktestError(
                    f"{place.client_order_id}: sells {place.amount} but holds {self.base}"
                )
            self.basis -= self.basis * place.amount / self.base
            self.base -= place.amount
            self.quote += notional - fee
        self.fees_paid += fee
        self.fills.append(
            FillRecord(
                self._ts, place.client_order_id, place.role, place.side, price, place.amount,
                fee, liquidity, self._candle,
            )
        )  # fmt: skip
        fill = Fill(place.client_order_id, place.side, price, place.amount, fee,
                    self.quote_asset, self._ts)  # fmt: skip
        self._apply(self.strategy.on_fill(fill), price)

    def _after_event(self) -> None:
        capital = self.basis + self.reserved
        if capital > self.max_capital:
            self.max_capital = capital
        self._collect_deals()

    def _collect_deals(self) -> None:
        take = getattr(self.strategy, "take_closed_deals", None)
        if take is not None:
            self.deals.extend(take())

    @staticmethod
    def _top(heap: list[tuple[Decimal, str]], book: dict[str, Place]) -> Place | None:
        """The best resting order of one side (highest buy / lowest sell; ties: lowest id)."""
        while heap:
            key, coid = heap[0]
            place = book.get(coid)
            if place is not None and place.price == abs(key):
                return place
            heapq.heappop(heap)
        return None


def run_backtest(
    strategy: Strategy,
    candles: Candles,
    rules: MarketRules,
    *,
    mode: Mode = "fast",
    fees: Fees | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> BacktestResult:
    """Run one strategy over the whole series; `mode` picks the driver."""
    return Backtest(strategy, candles, rules, fees=fees, progress=progress).run(mode)
