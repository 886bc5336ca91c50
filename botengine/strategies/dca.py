"""DCA (dollar-cost averaging) for spot, long: buy, average down with safety orders, sell higher.

A deal opens with a market base order once the start condition holds (and a deal slot is
free and the cooldown has passed). When the base order fills, the first
`active_safety_orders` limit buys are placed below the entry; each safety fill places the next
one and moves the take profit to `take_profit_pct` above the new average entry. The take profit
is a resting limit sell, or, with trailing, a market sell once the price has risen to the target
and then fallen `trailing_deviation_pct` from its peak. An optional stop loss sells at market
`stop_loss_pct` below the average entry. Every amount and price is rounded to the market's
step and tick and checked against its minimums before it is emitted.

Deals: at most `max_active_deals` at once, at most one opened per tick, none while a base order
is unfilled, and none within `cooldown_s` of the last deal opening or closing. The RSI start
condition samples the first price at or after each timeframe boundary (UTC-aligned) -- in a
backtest the next candle's open, live the first tick -- and opens while the last reading is
below `rsi_below`. Prices and sizes: safety orders round down to the tick, the take profit up;
amounts round down to the step, raised to the exchange minimum if rounding fell below it.
A take profit that is replaced (or cancelled for a stop loss / trailing exit) stays mapped to
its deal as "retired" until its deal closes, because live the cancel may reach the exchange
after the order filled. A retired take profit's fill is the deal's sale of what it covered: the
deal's live take profit and safety orders are cancelled as on any exit, and what is left (the
later safety buys) gets a take profit at the deal's current target, or the deal closes if
nothing sellable is left. In a backtest cancels are instant and this never happens.
Fills of orders the strategy no longer tracks (e.g. a safety buy racing its cancel, or a
retired take profit filling after its deal closed) are counted in `orphan_base`; base left after
a deal's sale (below the step) in `dust_base`.

The class is a pure state machine (no clock, I/O or randomness): the same object runs in the
backtester, on paper and live. `on_price` is a strict no-op for prices strictly inside
`triggers()` before `triggers().at_ms`, which is what lets the backtester skip those candles.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from botengine.config import TIMEFRAMES_MS, BotConfigError, DcaParams
from botengine.model import Cancel, Deal, Fill, Intent, MarketRules, Place, Tick, Triggers
from botengine.model import client_order_id as cid
from botengine.strategies import common
from botengine.strategies.common import account, checked, sellable, size_for_quote
from botengine.strategies.dca_state import DealState, RestingOrder
from botengine.strategies.indicators import Rsi

_HUNDRED = Decimal(100)


class DcaStrategy:
    """One DCA bot on one market. See the module docstring for the rules."""

    def __init__(self, name: str, symbol: str, params: DcaParams, rules: MarketRules) -> None:
        self.name = name
        self.symbol = symbol
        self.params = params
        self.rules = rules
        self.base_asset, self.quote_asset = symbol.split("/")
        self.deviations = params.safety_deviations()
        self.sizes = params.safety_sizes()
        floor = rules.min_notional
        for name in ("base_order", "safety_order"):
            if getattr(params, name) < floor and (name == "base_order" or self.sizes):
                raise BotConfigError(
                    f"dca.{name}: {getattr(params, name)} is not allowed; every order must "
                    f"be >= the minimum notional {floor} of {symbol}"
                )
        for n, size in enumerate(self.sizes, start=1):
            if size < floor:
                raise BotConfigError(
                    f"dca.safety_volume_scale: {params.safety_volume_scale} is not allowed here; "
                    f"safety order {n} would spend {size}, under the minimum notional {floor} "
                    f"of {symbol}"
                )
        p = params
        self._sl = None if p.stop_loss_pct is None else 1 - p.stop_loss_pct / _HUNDRED
        self._keep = (
            None if p.trailing_deviation_pct is None else 1 - p.trailing_deviation_pct / _HUNDRED
        )
        self._tp = 1 + p.take_profit_pct / _HUNDRED
        self._tf = TIMEFRAMES_MS[p.rsi_timeframe]
        self._cooldown_ms = p.cooldown_s * 1000
        self._now = 0
        self._next_deal = 1
        self._last_event: int | None = None
        self._next_sample: int | None = None
        self._rsi = Rsi(p.rsi_period)
        self._deals: list[DealState] = []
        self._closed: list[Deal] = []
        self._by_coid: dict[str, DealState] = {}
        self.orphan_base = Decimal(0)  # fills of orders this strategy no longer tracks
        self.dust_base = Decimal(0)  # base left in closed deals (below the step or minimum)
        self._trig = Triggers()

    # --- the Strategy protocol ---------------------------------------------------------------

    def on_start(self, tick: Tick) -> list[Intent]:
        if self.params.start_condition == "rsi":
            self._next_sample = tick.ts_ms
        return self._evaluate(tick)

    def on_price(self, tick: Tick) -> list[Intent]:
        t = self._trig
        if (
            (t.at_ms is None or tick.ts_ms < t.at_ms)
            and (t.below is None or tick.price > t.below)
            and (t.above is None or tick.price < t.above)
        ):
            return []
        return self._evaluate(tick)

    def on_fill(self, fill: Fill) -> list[Intent]:
        self._now = max(self._now, fill.ts_ms)
        coid = fill.client_order_id
        deal = self._by_coid.pop(coid, None)
        if deal is None:
            self.orphan_base += fill.amount if fill.side == "buy" else -fill.amount
            return []
        deal.held += account(deal.rec, fill, self.base_asset, self.quote_asset)
        out: list[Intent] = []
        if coid == deal.base_coid:
            deal.entry = fill.price
            self._bought(deal, fill)
            first = min(self.params.active_safety_orders, self.params.max_safety_orders)
            out += [self._safety(deal, n) for n in range(1, first + 1)]
            out += self._take_profit(deal)
        elif coid in deal.retired:
            out += self._retired_filled(deal, coid, fill.ts_ms)
        elif coid == deal.exit_coid or coid == deal.tp_coid:
            deal.resting.pop(coid, None)
            deal.tp_coid = None
            out += self._cancel_all(deal)
            self._close(deal, fill.ts_ms)
        else:
            deal.resting.pop(coid)
            deal.rec.safety_orders += 1
            self._bought(deal, fill)
            if deal.safety_placed < self.params.max_safety_orders:
                out.append(self._safety(deal, deal.safety_placed + 1))
            out += self._take_profit(deal)
        self._refresh()
        return out

    def triggers(self) -> Triggers:
        return self._trig

    # --- reports -----------------------------------------------------------------------------

    def take_closed_deals(self) -> list[Deal]:
        """Deals closed since the last call (the caller stores them; they leave the state)."""
        out, self._closed = self._closed, []
        return out

    def open_deals(self) -> list[Deal]:
        return [common.copy_deal(x.rec) for x in self._deals]

    # --- internals ---------------------------------------------------------------------------

    def _evaluate(self, tick: Tick) -> list[Intent]:
        self._now = tick.ts_ms
        price = tick.price
        out: list[Intent] = []
        for deal in list(self._deals):
            if deal.entry is None or deal.exit_coid is not None:
                continue
            if self._sl is not None and price <= deal.avg * self._sl:
                out += self._exit(deal, price, "sl")
                continue
            if self._keep is not None and deal.tp_price is not None:
                if (
                    deal.peak is None
                    and price >= deal.tp_price
                    or (deal.peak is not None and price > deal.peak)
                ):
                    deal.peak = price
                if deal.peak is not None and price <= deal.peak * self._keep:
                    out += self._exit(deal, price, "trail")
        if self._next_sample is not None and self._now >= self._next_sample:
            self._rsi.add(price)
            self._next_sample = (self._now // self._tf + 1) * self._tf
        if self._slot_free() and self._cooled() and self._start_ok(price):
            out += self._open(tick)
        self._refresh()
        return out

    def _slot_free(self) -> bool:
        return len(self._deals) < self.params.max_active_deals and all(
            x.entry is not None for x in self._deals
        )

    def _cooldown_end(self) -> int | None:
        if self._last_event is None or not self._cooldown_ms:
            return None
        return self._last_event + self._cooldown_ms

    def _cooled(self) -> bool:
        end = self._cooldown_end()
        return end is None or self._now >= end

    def _start_ok(self, price: Decimal) -> bool:
        p = self.params
        if p.start_condition == "immediately":
            return True
        if p.start_condition == "price":
            return (p.start_price_below is not None and price <= p.start_price_below) or (
                p.start_price_above is not None and price >= p.start_price_above
            )
        return self._rsi_signal()

    def _rsi_signal(self) -> bool:
        """The last RSI reading is below the threshold (it changes only at timeframe samples)."""
        rsi = self._rsi.value()
        return rsi is not None and rsi < self.params.rsi_below

    def _open(self, tick: Tick) -> list[Intent]:
        deal_id = self._next_deal
        self._next_deal += 1
        coid = cid(self.name, deal_id, "base")
        amount = size_for_quote(self.rules, self.params.base_order, tick.price)
        place = checked(self.rules, Place(coid, "buy", amount, None, "base"), tick.price)
        deal = DealState(rec=Deal(deal_id=deal_id, opened_ms=tick.ts_ms), base_coid=coid)
        self._deals.append(deal)
        self._by_coid[coid] = deal
        self._last_event = tick.ts_ms
        return [place]

    def _bought(self, deal: DealState, fill: Fill) -> None:
        deal.gross += fill.price * fill.amount
        deal.avg = deal.gross / deal.rec.bought

    def _safety(self, deal: DealState, n: int) -> Place:
        assert deal.entry is not None
        price = self.rules.price_down(deal.entry * (1 - self.deviations[n - 1] / _HUNDRED))
        amount = size_for_quote(self.rules, self.sizes[n - 1], price)
        coid = cid(self.name, deal.rec.deal_id, f"so{n}")
        deal.resting[coid] = RestingOrder(f"safety-{n}", "buy", price, amount)
        deal.safety_placed = n
        self._by_coid[coid] = deal
        return checked(self.rules, Place(coid, "buy", amount, price, f"safety-{n}"), price)

    def _take_profit(self, deal: DealState) -> list[Intent]:
        out: list[Intent] = []
        if deal.tp_coid is not None:
            out.append(Cancel(deal.tp_coid))
            deal.retired[deal.tp_coid] = deal.resting.pop(deal.tp_coid)  # stays in _by_coid
            deal.tp_coid = None
        deal.tp_price = self.rules.price_up(deal.avg * self._tp)
        deal.peak = None
        if self._keep is not None:
            return out  # trailing: the strategy sells at market, nothing rests
        return out + self._place_take_profit(deal, f"tp{deal.rec.safety_orders}")

    def _place_take_profit(self, deal: DealState, role: str) -> list[Intent]:
        """A resting sell of all that is sellable at `deal.tp_price`, if anything is."""
        assert deal.tp_price is not None
        amount = sellable(self.rules, deal.held, deal.tp_price)
        if not amount:
            return []
        coid = cid(self.name, deal.rec.deal_id, role)
        deal.resting[coid] = RestingOrder("take-profit", "sell", deal.tp_price, amount)
        deal.tp_coid = coid
        self._by_coid[coid] = deal
        place = Place(coid, "sell", amount, deal.tp_price, "take-profit")
        return [checked(self.rules, place, deal.avg)]

    def _retired_filled(self, deal: DealState, coid: str, ts_ms: int) -> list[Intent]:
        """A take profit whose Cancel lost the race filled: the deal sold what it covered.

        The fill is already booked. Its replacement (if any) would sell base that is gone, so
        it is cancelled with the safety orders, as on any exit; base the old order did not
        cover (safety buys after it was placed) gets a take profit at the deal's current
        target. With a stop-loss / trailing sell already sent, there is nothing to re-place.
        """
        deal.retired.pop(coid)
        if deal.exit_coid is not None:
            return []
        out = self._cancel_all(deal)
        deal.remainders += 1
        out += self._place_take_profit(deal, f"tp{deal.rec.safety_orders}r{deal.remainders}")
        if deal.tp_coid is None:  # nothing sellable left
            self._close(deal, ts_ms)
        return out

    def _cancel_all(self, deal: DealState) -> list[Intent]:
        """Cancel every resting order; the take profit is retired (it may still fill)."""
        out: list[Intent] = [Cancel(coid) for coid in deal.resting]
        for coid, order in deal.resting.items():
            if coid == deal.tp_coid:
                deal.retired[coid] = order
            else:
                self._by_coid.pop(coid, None)
        deal.resting.clear()
        deal.tp_coid = None
        return out

    def _exit(self, deal: DealState, price: Decimal, role: str) -> list[Intent]:
        out = self._cancel_all(deal)
        amount = sellable(self.rules, deal.held, price)
        if not amount:
            self._close(deal, self._now)
            return out
        coid = cid(self.name, deal.rec.deal_id, role)
        deal.exit_coid = coid
        self._by_coid[coid] = deal
        label = "stop-loss" if role == "sl" else "trailing-take-profit"
        out.append(checked(self.rules, Place(coid, "sell", amount, None, label), price))
        return out

    def _close(self, deal: DealState, ts_ms: int) -> None:
        deal.rec.closed_ms = ts_ms
        self._deals.remove(deal)
        self._closed.append(deal.rec)
        self.dust_base += deal.held
        self._last_event = ts_ms
        for coid in [c for c, x in self._by_coid.items() if x is deal]:
            del self._by_coid[coid]

    def _refresh(self) -> None:
        """Recompute the cached triggers after any state change."""
        below: Decimal | None = None
        above: Decimal | None = None
        at: int | None = self._next_sample

        def lo(x: Decimal) -> None:
            nonlocal below
            below = x if below is None or x > below else below

        def hi(x: Decimal) -> None:
            nonlocal above
            above = x if above is None or x < above else above

        for deal in self._deals:
            for o in deal.resting.values():
                (lo if o.side == "buy" else hi)(o.price)
            if deal.entry is None or deal.exit_coid is not None:
                continue
            if self._sl is not None:
                lo(deal.avg * self._sl)
            if self._keep is not None and deal.tp_price is not None:
                if deal.peak is None:
                    hi(deal.tp_price)
                else:
                    hi(deal.peak)
                    lo(deal.peak * self._keep)
        if self._slot_free():
            end = self._cooldown_end()
            p = self.params
            if end is not None and self._now < end:
                at = end if at is None else min(at, end)
            elif p.start_condition == "price":
                if p.start_price_below is not None:
                    lo(p.start_price_below)
                if p.start_price_above is not None:
                    hi(p.start_price_above)
            elif p.start_condition == "immediately" or self._rsi_signal():
                at = self._now if at is None else min(at, self._now)  # open on the next tick
        self._trig = Triggers(below, above, at)

    # --- persistence -------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "kind": "dca",
            "version": 1,
            "name": self.name,
            "symbol": self.symbol,
            "now": self._now,
            "next_deal": self._next_deal,
            "last_event": self._last_event,
            "next_sample": self._next_sample,
            "rsi": self._rsi.snapshot(),
            "deals": [x.to_json() for x in self._deals],
            "closed": [common.deal_to_json(r) for r in self._closed],
            "orphan_base": str(self.orphan_base),
            "dust_base": str(self.dust_base),
        }

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "dca" or state.get("version") != 1:
            raise ValueError("snapshot is not a version 1 DCA state")
        if state["name"] != self.name or state["symbol"] != self.symbol:
            raise ValueError(f"snapshot belongs to {state['name']} on {state['symbol']}")
        self._now = int(state["now"])
        self._next_deal = int(state["next_deal"])
        self._last_event = state["last_event"]
        self._next_sample = state["next_sample"]
        self._rsi.restore(state["rsi"])
        self._deals, self._by_coid = [], {}
        for x in state["deals"]:
            deal = DealState.from_json(x)
            self._deals.append(deal)
            for coid in [*deal.resting, *deal.retired]:
                self._by_coid[coid] = deal
            if deal.entry is None:
                self._by_coid[deal.base_coid] = deal
            if deal.exit_coid is not None:
                self._by_coid[deal.exit_coid] = deal
        self._closed = [common.deal_from_json(r) for r in state["closed"]]
        self.orphan_base = Decimal(state["orphan_base"])
        self.dust_base = Decimal(state["dust_base"])
        self._refresh()
