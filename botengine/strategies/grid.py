"""Grid trading for spot, long: buy low and sell one level higher, over and over, inside a range.

`grids` intervals split [lower, upper] into levels L_0 < ... < L_N (arithmetic: equal steps;
geometric: equal ratios), each rounded to the tick. Interval k always holds exactly one order of
the same base quantity: a buy at L_k, or a sell at L_k+1. At start, intervals above the price
become sells (the base they sell is bought at market, the "initial position") and those below
become buys; the level nearest the start price is left without an order. A filled buy turns
its interval into a sell one level up, a filled sell into a buy one level down; each sell fill
closes one round trip (a `Deal`).

Quantity: `quantity_per_grid`, or `investment` spread evenly as q = investment /
(sum of buy levels + number of sells x start price), rounded down to the step. Optional
`stop_loss` (below the range) and `take_profit` (above it) cancel every order and, with the
`stop_and_sell` action, sell the held base at market; the bot then stays stopped.
"""

from __future__ import annotations

import heapq
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from botengine.config import BotConfigError, GridParams
from botengine.model import Cancel, Deal, Fill, Intent, MarketRules, Place, Tick, Triggers
from botengine.model import client_order_id as cid
from botengine.strategies.common import (
    account,
    checked,
    copy_deal,
    deal_from_json,
    deal_to_json,
    sellable,
)

_FEE_MARGIN = Decimal("0.99")  # sizes must stay valid after a base-asset fee of up to 1 %


def grid_levels(params: GridParams, rules: MarketRules) -> list[Decimal]:
    """The N+1 level prices, each rounded to the nearest tick (ties to even)."""
    lo, hi, n = params.lower, params.upper, params.grids
    if params.spacing == "arithmetic":
        step = (hi - lo) / n
        raw = [lo + step * k for k in range(n + 1)]
    else:
        ratio = hi / lo
        raw = [lo * ratio ** (Decimal(k) / Decimal(n)) for k in range(n + 1)]
    raw[0], raw[-1] = lo, hi
    tick = rules.tick_size
    levels = [(p / tick).quantize(Decimal(1), ROUND_HALF_EVEN) * tick for p in raw]
    for a, b in zip(levels, levels[1:], strict=False):
        if b <= a or a <= 0:
            raise BotConfigError(
                f"grid.grids: {n} is not allowed; levels collapse at {a} with tick size {tick} "
                f"(use fewer grids or a wider range)"
            )
    return levels


class GridStrategy:
    """One grid bot on one market. See the module docstring for the rules."""

    def __init__(self, name: str, symbol: str, params: GridParams, rules: MarketRules) -> None:
        self.name = name
        self.symbol = symbol
        self.params = params
        self.rules = rules
        self.base_asset, self.quote_asset = symbol.split("/")
        self.levels = grid_levels(params, rules)
        n = params.grids
        if params.quantity_per_grid is not None:
            q = params.quantity_per_grid
            if rules.amount_down(q) != q:
                raise BotConfigError(
                    f"grid.quantity_per_grid: {q} is not allowed; must be a multiple of the "
                    f"step size {rules.step_size}"
                )
            field, smallest = "quantity_per_grid", q
        else:
            assert params.investment is not None
            field = "investment"
            smallest = rules.amount_down(params.investment / sum(self.levels[1:]))
        low_ok = smallest >= rules.min_amount and smallest * self.levels[0] >= rules.min_notional
        margin = rules.amount_down(smallest * _FEE_MARGIN)
        if not (smallest > 0 and low_ok and margin * self.levels[1] >= rules.min_notional):
            raise BotConfigError(
                f"grid.{field}: {getattr(params, field)} is not allowed; each of the {n} grid "
                f"orders would be {smallest} {self.base_asset}, under the minimum amount "
                f"{rules.min_amount} or notional {rules.min_notional} at the lowest level "
                f"{self.levels[0]} (with a 1 % fee margin)"
            )
        self.qty = smallest if params.quantity_per_grid is not None else Decimal(0)
        # per interval: None (no order), or [side, coid, price, amount, deal_id]
        self._slots: list[list[Any] | None] = [None] * n
        self._open: dict[int, Deal] = {}  # interval -> the round trip holding base
        self._by_coid: dict[str, int] = {}
        self._buys: list[int] = []  # lazy heaps of interval indices: -k of buys, k of sells
        self._sells: list[int] = []
        self._next_deal = 1
        self._init: tuple[str, list[int]] | None = None  # initial market buy, its intervals
        self._stop_coid: str | None = None
        self._stop_split: dict[int, Decimal] = {}  # interval -> base it holds, for the stop sale
        self.stopped: str | None = None  # why the bot stopped ("stop_loss" / "take_profit")
        self.round_trips = 0
        self.orphan_base = Decimal(0)
        self._closed: list[Deal] = []
        self._trig: Triggers | None = Triggers()

    # --- the Strategy protocol ---------------------------------------------------------------

    def on_start(self, tick: Tick) -> list[Intent]:
        price, lv = tick.price, self.levels
        if self.params.investment is not None:
            sells = [k for k in range(len(self._slots)) if self._is_sell_at_start(k, price)]
            buys_quote = sum(lv[k] for k in range(len(self._slots)) if k not in sells)
            self.qty = self.rules.amount_down(
                self.params.investment / (buys_quote + len(sells) * price)
            )
        out: list[Intent] = self._check_exit(tick)
        if self.stopped:
            return out
        sells = []
        for k in range(len(self._slots)):
            if self._is_sell_at_start(k, price):
                sells.append(k)
            else:
                out.append(self._place(k, "buy", self._new_deal(), self.qty))
        if sells:
            coid = cid(self.name, 0, "init")
            amount = self.qty * len(sells)
            self._init = (coid, sells)
            out.append(checked(self.rules, Place(coid, "buy", amount, None, "grid-init"), price))
        self._refresh()
        return out

    def on_price(self, tick: Tick) -> list[Intent]:
        sl, tp = self.params.stop_loss, self.params.take_profit
        if self.stopped or ((sl is None or tick.price > sl) and (tp is None or tick.price < tp)):
            return []
        out = self._check_exit(tick)
        self._refresh()
        return out

    def on_fill(self, fill: Fill) -> list[Intent]:
        coid = fill.client_order_id
        out: list[Intent] = []
        if self._init is not None and coid == self._init[0]:
            out = self._initial_position(fill, self._init[1])
            self._init = None
        elif coid == self._stop_coid:
            self._sell_everything(fill)
            self._stop_coid = None
        elif coid in self._by_coid:
            k = self._by_coid.pop(coid)
            slot = self._slots[k]
            assert slot is not None
            self._slots[k] = None
            if slot[0] == "buy":
                rec = Deal(deal_id=slot[4], opened_ms=fill.ts_ms)
                net = account(rec, fill, self.base_asset, self.quote_asset)
                self._open[k] = rec
                out.append(self._place(k, "sell", slot[4], self.rules.amount_down(net)))
            else:
                rec = self._open.pop(k)
                account(rec, fill, self.base_asset, self.quote_asset)
                rec.closed_ms = fill.ts_ms
                self._closed.append(rec)
                self.round_trips += 1
                out.append(self._place(k, "buy", self._new_deal(), self.qty))
        else:
            self.orphan_base += fill.amount if fill.side == "buy" else -fill.amount
        self._refresh()
        return out

    def triggers(self) -> Triggers:
        if self._trig is None:
            self._trig = self._compute_triggers()
        return self._trig

    # --- reports -----------------------------------------------------------------------------

    def take_closed_deals(self) -> list[Deal]:
        """Round trips closed since the last call (they leave the state)."""
        out, self._closed = self._closed, []
        return out

    def open_deals(self) -> list[Deal]:
        return [copy_deal(self._open[k]) for k in sorted(self._open)]

    # --- internals ---------------------------------------------------------------------------

    def _is_sell_at_start(self, k: int, price: Decimal) -> bool:
        """Interval k sells at start when its upper level is above the price and its lower
        level is not the one nearest the price (that level is left empty)."""
        lo, hi = self.levels[k], self.levels[k + 1]
        if price <= lo:
            return True
        if price >= hi:
            return False
        return price - lo < hi - price

    def _new_deal(self) -> int:
        self._next_deal += 1
        return self._next_deal - 1

    def _place(self, k: int, side: str, deal_id: int, amount: Decimal) -> Place:
        price = self.levels[k] if side == "buy" else self.levels[k + 1]
        coid = cid(self.name, deal_id, f"{side[0]}{k}")
        self._slots[k] = [side, coid, price, amount, deal_id]
        self._by_coid[coid] = k
        if side == "buy":
            heapq.heappush(self._buys, -k)
        else:
            heapq.heappush(self._sells, k)
        place = Place(coid, "buy" if side == "buy" else "sell", amount, price, f"grid-{side}-{k}")
        return checked(self.rules, place, price)

    def _initial_position(self, fill: Fill, sells: list[int]) -> list[Intent]:
        total = Deal(deal_id=0, opened_ms=fill.ts_ms)
        net = account(total, fill, self.base_asset, self.quote_asset)
        each = self.rules.amount_down(net / len(sells))
        out: list[Intent] = []
        cost_left, fees_left = total.cost, total.fees_quote
        for i, k in enumerate(sells):
            last = i == len(sells) - 1
            deal_id = self._new_deal()
            share = each / net
            cost = cost_left if last else total.cost * share
            fees = fees_left if last else total.fees_quote * share
            cost_left -= cost
            fees_left -= fees
            self._open[k] = Deal(
                deal_id=deal_id, opened_ms=fill.ts_ms, bought=each, cost=cost,
                fees_quote=fees, orders=[fill.client_order_id],
            )  # fmt: skip
            out.append(self._place(k, "sell", deal_id, each))
        self.orphan_base += net - each * len(sells)
        return out

    def _check_exit(self, tick: Tick) -> list[Intent]:
        p = self.params
        if p.stop_loss is not None and tick.price <= p.stop_loss:
            return self._stop("stop_loss", p.stop_loss_action, tick)
        if p.take_profit is not None and tick.price >= p.take_profit:
            return self._stop("take_profit", p.take_profit_action, tick)
        return []

    def _stop(self, reason: str, action: str, tick: Tick) -> list[Intent]:
        self.stopped = reason
        out: list[Intent] = [Cancel(slot[1]) for slot in self._slots if slot is not None]
        held = {k: slot[3] for k, slot in enumerate(self._slots) if slot and slot[0] == "sell"}
        self._slots = [None] * len(self._slots)
        self._by_coid.clear()
        amount = sellable(self.rules, sum(held.values(), Decimal(0)), tick.price)
        if action == "stop_and_sell" and amount:
            self._stop_coid = cid(self.name, 0, "stop")
            self._stop_split = held
            place = Place(self._stop_coid, "sell", amount, None, f"grid-{reason}")
            out.append(checked(self.rules, place, tick.price))
        return out

    def _sell_everything(self, fill: Fill) -> None:
        """Split the stop sale over the open round trips by amount and close them all."""
        total = Deal(deal_id=0, opened_ms=fill.ts_ms)
        account(total, fill, self.base_asset, self.quote_asset)
        keys = sorted(self._stop_split)
        proceeds_left, fees_left, sold_left = total.proceeds, total.fees_quote, total.sold
        for i, k in enumerate(keys):
            rec = self._open.pop(k)
            if i == len(keys) - 1:
                sold, proceeds, fees = sold_left, proceeds_left, fees_left
            else:
                sold = self._stop_split[k]
                proceeds = total.proceeds * sold / fill.amount
                fees = total.fees_quote * sold / fill.amount
            sold_left -= sold
            proceeds_left -= proceeds
            fees_left -= fees
            rec.sold += sold
            rec.proceeds += proceeds
            rec.fees_quote += fees
            rec.orders.append(fill.client_order_id)
            rec.closed_ms = fill.ts_ms
            self._closed.append(rec)
        self._stop_split = {}

    def _refresh(self) -> None:
        """Forget the triggers; `triggers()` recomputes them once, however many fills came."""
        self._trig = None

    def _compute_triggers(self) -> Triggers:
        if self.stopped:
            return Triggers()
        below, above = self.params.stop_loss, self.params.take_profit
        buy = self._top(self._buys, "buy", -1)
        sell = self._top(self._sells, "sell", 1)
        if buy is not None:
            below = buy if below is None or buy > below else below
        if sell is not None:
            above = sell if above is None or sell < above else above
        return Triggers(below, above, None)

    def _top(self, heap: list[int], side: str, sign: int) -> Decimal | None:
        """Price of the highest buy / lowest sell; entries for changed intervals are dropped."""
        if len(heap) > 4 * len(self._slots) + 64:  # compact the stale entries now and then
            heap[:] = [sign * k for k, x in enumerate(self._slots) if x and x[0] == side]
            heapq.heapify(heap)
        while heap:
            slot = self._slots[sign * heap[0]]
            if slot is not None and slot[0] == side:
                return slot[2]  # type: ignore[no-any-return]
            heapq.heappop(heap)
        return None

    # --- persistence -------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "kind": "grid",
            "version": 1,
            "name": self.name,
            "symbol": self.symbol,
            "levels": [str(x) for x in self.levels],
            "qty": str(self.qty),
            "slots": [
                None if x is None else [x[0], x[1], str(x[2]), str(x[3]), x[4]] for x in self._slots
            ],
            "open": {str(k): deal_to_json(r) for k, r in self._open.items()},
            "next_deal": self._next_deal,
            "init": None if self._init is None else [self._init[0], self._init[1]],
            "stop_coid": self._stop_coid,
            "stop_split": {str(k): str(v) for k, v in self._stop_split.items()},
            "stopped": self.stopped,
            "round_trips": self.round_trips,
            "orphan_base": str(self.orphan_base),
            "closed": [deal_to_json(r) for r in self._closed],
        }

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "grid" or state.get("version") != 1:
            raise ValueError("snapshot is not a version 1 grid state")
        if state["name"] != self.name or state["symbol"] != self.symbol:
            raise ValueError(f"snapshot belongs to {state['name']} on {state['symbol']}")
        if [Decimal(x) for x in state["levels"]] != self.levels:
            raise ValueError("snapshot levels differ from the configured grid; refusing to resume")
        self.qty = Decimal(state["qty"])
        self._slots = [
            None if x is None else [x[0], x[1], Decimal(x[2]), Decimal(x[3]), int(x[4])]
            for x in state["slots"]
        ]
        self._by_coid = {x[1]: k for k, x in enumerate(self._slots) if x is not None}
        self._buys = [-k for k, x in enumerate(self._slots) if x and x[0] == "buy"]
        self._sells = [k for k, x in enumerate(self._slots) if x and x[0] == "sell"]
        heapq.heapify(self._buys)
        heapq.heapify(self._sells)
        self._open = {int(k): deal_from_json(r) for k, r in state["open"].items()}
        self._next_deal = int(state["next_deal"])
        init = state["init"]
        self._init = None if init is None else (init[0], [int(k) for k in init[1]])
        self._stop_coid = state["stop_coid"]
        self._stop_split = {int(k): Decimal(v) for k, v in state["stop_split"].items()}
        self.stopped = state["stopped"]
        self.round_trips = int(state["round_trips"])
        self.orphan_base = Decimal(state["orphan_base"])
        self._closed = [deal_from_json(r) for r in state["closed"]]
        self._refresh()
