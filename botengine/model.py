"""The vocabulary shared by strategies, the backtester and the live/paper runtime.

A strategy is a pure state machine: it receives market data (`on_price`, one point of the price
path at a time) and its own fills (`on_fill`), and returns intents (`Place`, `Cancel`). It never
knows whether it runs in a backtest, on paper or live: the runtime decides where intents go.
Money is Decimal everywhere here; a float never touches a price or an amount.

Client order ids are deterministic (bot name, deal number, order role), so a restarted engine
re-derives the same id and can ask the exchange (through the signer) whether it was placed,
instead of placing a duplicate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any, Literal, Protocol

Side = Literal["buy", "sell"]


@dataclass(frozen=True)
class MarketRules:
    """Exchange precision for one market (tick, step, minimums), from the exchange's market info."""

    symbol: str  # unified, "BTC/USDT"
    tick_size: Decimal
    step_size: Decimal
    min_amount: Decimal = Decimal(0)
    min_notional: Decimal = Decimal(0)

    def price_down(self, price: Decimal) -> Decimal:
        return (price / self.tick_size).to_integral_value(ROUND_FLOOR) * self.tick_size

    def price_up(self, price: Decimal) -> Decimal:
        return (price / self.tick_size).to_integral_value(ROUND_CEILING) * self.tick_size

    def amount_down(self, amount: Decimal) -> Decimal:
        return (amount / self.step_size).to_integral_value(ROUND_FLOOR) * self.step_size

    def amount_up(self, amount: Decimal) -> Decimal:
        return (amount / self.step_size).to_integral_value(ROUND_CEILING) * self.step_size

    def accepts(self, amount: Decimal, price: Decimal) -> bool:
        """Would the exchange take this order as is (no rounding, minimums met)?"""
        return (
            amount > 0
            and price > 0
            and amount % self.step_size == 0
            and price % self.tick_size == 0
            and amount >= self.min_amount
            and amount * price >= self.min_notional
        )


@dataclass(frozen=True)
class Place:
    """Ask for a new order. `price` is None for a market order."""

    client_order_id: str
    side: Side
    amount: Decimal
    price: Decimal | None
    role: str = ""  # "base", "safety-3", "take-profit", "grid-buy-7"... for reports


@dataclass(frozen=True)
class Cancel:
    client_order_id: str


Intent = Place | Cancel


@dataclass(frozen=True)
class Fill:
    """An order fully filled (the exchanges here fill whole orders; partial fills come later)."""

    client_order_id: str
    side: Side
    price: Decimal  # average fill price
    amount: Decimal  # base quantity
    fee: Decimal  # in `fee_asset`
    fee_asset: str
    ts_ms: int


@dataclass(frozen=True)
class Tick:
    """One point of the price path (a trade price at a time)."""

    ts_ms: int
    price: Decimal


@dataclass(frozen=True)
class Triggers:
    """The price levels at which the strategy would next act, for jump-ahead backtesting.

    The next tick with price <= `below` or >= `above` can trigger something (a resting buy or
    stop, a resting sell or take-profit); a tick strictly between both cannot, unless `at_ms`
    (a time-based trigger such as a cooldown end or an indicator candle close) is reached first.
    None means no trigger on that side.
    """

    below: Decimal | None = None
    above: Decimal | None = None
    at_ms: int | None = None


class Strategy(Protocol):
    """What every bot strategy implements. Implementations hold no I/O, clock or randomness."""

    name: str
    symbol: str

    def on_start(self, tick: Tick) -> list[Intent]: ...

    def on_price(self, tick: Tick) -> list[Intent]: ...

    def on_fill(self, fill: Fill) -> list[Intent]: ...

    def triggers(self) -> Triggers: ...

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready state (decimals as strings) so a restarted engine resumes exactly."""
        ...

    def restore(self, state: dict[str, Any]) -> None: ...


@dataclass
class Deal:
    """One DCA deal or one grid round trip, for reports."""

    deal_id: int
    opened_ms: int
    closed_ms: int | None = None
    bought: Decimal = Decimal(0)  # base
    cost: Decimal = Decimal(0)  # quote spent incl. fees
    sold: Decimal = Decimal(0)
    proceeds: Decimal = Decimal(0)  # quote received net of fees
    fees_quote: Decimal = Decimal(0)
    safety_orders: int = 0
    orders: list[str] = field(default_factory=list)

    @property
    def realised_pnl(self) -> Decimal:
        return self.proceeds - self.cost if self.closed_ms is not None else Decimal(0)


_SAFE_ID = re.compile(r"[A-Za-z0-9_-]*")


def client_order_id(bot: str, deal: int, role: str) -> str:
    """Deterministic, exchange-safe (Binance: [A-Za-z0-9_-]{1,36}) id for one order of one deal."""
    text = f"{bot[:14]}-{deal}-{role}"
    # the common all-safe case skips the per-character rewrite (hot in backtests)
    cleaned = (
        text
        if _SAFE_ID.fullmatch(text)
        else "".join(c if c.isalnum() or c in "_-" else "_" for c in text)
    )
    if len(cleaned) > 36:
        raise ValueError(f"client order id {cleaned!r} is longer than 36 characters")
    return cleaned
