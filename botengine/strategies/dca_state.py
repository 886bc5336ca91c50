"""The state of one open DCA deal, and its JSON form for snapshots."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from botengine.model import Deal
from botengine.strategies.common import d, deal_from_json, deal_to_json, s


@dataclass
class RestingOrder:
    role: str
    side: str
    price: Decimal
    amount: Decimal


@dataclass
class DealState:
    rec: Deal
    base_coid: str
    entry: Decimal | None = None  # base order fill price; None while the base order is pending
    gross: Decimal = Decimal(0)  # sum of price * amount over buys (the average's numerator)
    held: Decimal = Decimal(0)  # base held, net of base-asset fees
    avg: Decimal = Decimal(0)
    safety_placed: int = 0
    resting: dict[str, RestingOrder] = field(default_factory=dict)
    tp_coid: str | None = None
    tp_price: Decimal | None = None
    peak: Decimal | None = None  # trailing take profit is armed when set
    exit_coid: str | None = None  # market sell (stop loss / trailing) pending
    # take profits whose Cancel was emitted but may not have reached the exchange yet: live, one
    # may still fill, and that fill is this deal's sale, not an orphan. No event confirms a
    # cancel, so an id stays here until it fills or the deal closes. Not in `resting`: the
    # strategy does not count on them resting.
    retired: dict[str, RestingOrder] = field(default_factory=dict)
    remainders: int = 0  # take profits placed for what a retired take profit's fill left

    def to_json(self) -> dict[str, Any]:
        return {
            "rec": deal_to_json(self.rec), "base_coid": self.base_coid, "entry": s(self.entry),
            "gross": str(self.gross), "held": str(self.held), "avg": str(self.avg),
            "safety_placed": self.safety_placed, "tp_coid": self.tp_coid,
            "tp_price": s(self.tp_price), "peak": s(self.peak), "exit_coid": self.exit_coid,
            "resting": _orders_to_json(self.resting), "retired": _orders_to_json(self.retired),
            "remainders": self.remainders,
        }  # fmt: skip

    @classmethod
    def from_json(cls, x: dict[str, Any]) -> DealState:
        return cls(
            rec=deal_from_json(x["rec"]), base_coid=x["base_coid"], entry=d(x["entry"]),
            gross=Decimal(x["gross"]), held=Decimal(x["held"]), avg=Decimal(x["avg"]),
            safety_placed=int(x["safety_placed"]), tp_coid=x["tp_coid"],
            tp_price=d(x["tp_price"]), peak=d(x["peak"]), exit_coid=x["exit_coid"],
            resting=_orders_from_json(x["resting"]),
            # absent in snapshots written before take profits were retired: nothing retired
            retired=_orders_from_json(x.get("retired", {})),
            remainders=int(x.get("remainders", 0)),
        )  # fmt: skip


def _orders_to_json(orders: dict[str, RestingOrder]) -> dict[str, list[str]]:
    return {c: [o.role, o.side, str(o.price), str(o.amount)] for c, o in orders.items()}


def _orders_from_json(data: dict[str, list[str]]) -> dict[str, RestingOrder]:
    return {c: RestingOrder(o[0], o[1], Decimal(o[2]), Decimal(o[3])) for c, o in data.items()}
