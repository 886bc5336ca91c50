"""Helpers shared by the strategies: exchange-valid sizing, fill accounting, state encoding."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from botengine.model import Deal, Fill, MarketRules, Place


class IntentRejected(RuntimeError):
    """A strategy tried to emit an order the exchange would reject: a bug, never ignored."""


def size_for_quote(rules: MarketRules, quote: Decimal, price: Decimal) -> Decimal:
    """Base amount for `quote` at `price`: rounded down to the step, raised to the minimums.

    Rounding down keeps the spend at or under the configured size; when that would fall below
    the exchange's minimum notional or amount, the smallest valid amount is used instead.
    """
    amount = rules.amount_down(quote / price)
    floor = rules.amount_up(max(rules.min_amount, rules.min_notional / price, rules.step_size))
    return amount if amount >= floor else floor


def checked(rules: MarketRules, place: Place, reference: Decimal) -> Place:
    """Return `place` if the exchange would accept it (market orders at `reference` price)."""
    # a market order carries no price: its notional is judged at the reference price
    price = place.price if place.price is not None else rules.price_up(reference)
    if not rules.accepts(place.amount, price):
        raise IntentRejected(
            f"{place.client_order_id}: {place.side} {place.amount} at {price} breaks "
            f"{rules.symbol} rules (tick {rules.tick_size}, step {rules.step_size}, "
            f"min amount {rules.min_amount}, min notional {rules.min_notional})"
        )
    return place


def sellable(rules: MarketRules, amount: Decimal, price: Decimal) -> Decimal:
    """The largest on-step amount <= `amount`, or 0 when it could not be sold at `price`."""
    amt = rules.amount_down(amount)
    return amt if rules.accepts(amt, rules.price_up(price)) else Decimal(0)


def account(rec: Deal, fill: Fill, base: str, quote: str) -> Decimal:
    """Book a fill into a deal record; return the change in base held (net of base fees).

    Fees in the quote asset add to cost / come out of proceeds; fees in the base asset shrink
    the base received; fees in a third asset (BNB) are counted in no total here.
    """
    notional = fill.price * fill.amount
    fee_quote = fill.fee if fill.fee_asset == quote else Decimal(0)
    fee_base = fill.fee if fill.fee_asset == base else Decimal(0)
    rec.fees_quote += fee_quote + fee_base * fill.price
    rec.orders.append(fill.client_order_id)
    if fill.side == "buy":
        rec.bought += fill.amount
        rec.cost += notional + fee_quote
        return fill.amount - fee_base
    rec.sold += fill.amount
    rec.proceeds += notional - fee_quote
    return -(fill.amount + fee_base)


def d(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def s(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def deal_to_json(rec: Deal) -> dict[str, Any]:
    return {
        "deal_id": rec.deal_id,
        "opened_ms": rec.opened_ms,
        "closed_ms": rec.closed_ms,
        "bought": str(rec.bought),
        "cost": str(rec.cost),
        "sold": str(rec.sold),
        "proceeds": str(rec.proceeds),
        "fees_quote": str(rec.fees_quote),
        "safety_orders": rec.safety_orders,
        "orders": list(rec.orders),
    }


def deal_from_json(data: dict[str, Any]) -> Deal:
    return Deal(
        deal_id=int(data["deal_id"]),
        opened_ms=int(data["opened_ms"]),
        closed_ms=None if data["closed_ms"] is None else int(data["closed_ms"]),
        bought=Decimal(data["bought"]),
        cost=Decimal(data["cost"]),
        sold=Decimal(data["sold"]),
        proceeds=Decimal(data["proceeds"]),
        fees_quote=Decimal(data["fees_quote"]),
        safety_orders=int(data["safety_orders"]),
        orders=list(data["orders"]),
    )


def copy_deal(rec: Deal) -> Deal:
    return deal_from_json(deal_to_json(rec))
