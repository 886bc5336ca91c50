"""What the audit log says must be true, derived independently of the signer's own tables.

`Ledger.replay` rebuilds each allowed order's fate from the exported records alone (decision,
then outcomes in sequence order, with the documented semantics: the first terminal status wins,
and only an order rejected before it was ever open gives its notional back). The checks compare
that with the exchange's own order list and with the counters the signer reports over gRPC.
Each check returns violations as sentences; an empty list means the invariant held.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

# How an outcome record's (action, status) moves the ledger (README: "What the signer guarantees").
LEDGER_STATUS = {
    "create": {
        "open": "open",
        "closed": "closed",
        "canceled": "canceled",
        "rejected": "rejected",
        "expired": "canceled",
    },
    "cancel": {"canceled": "canceled", "closed": "closed"},
}
TERMINAL = ("closed", "canceled", "rejected")


@dataclass
class Order:
    """One allowed create, as the audit log tells it."""

    key_id: str
    client_order_id: str
    payload: dict[str, Any]
    notional: Decimal
    status: str = "pending"
    counted: bool = True
    outcomes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.status not in TERMINAL

    def apply(self, status: str) -> None:
        if self.status in TERMINAL:
            return
        if status == "open":
            self.status = "open"
        elif status == "rejected" and self.status == "pending":
            self.status, self.counted = "rejected", False
        else:
            self.status = "closed" if status == "rejected" else status


@dataclass
class Ledger:
    orders: dict[tuple[str, str], Order]
    decisions: list[dict[str, Any]]
    duplicate_allows: list[str]

    @classmethod
    def replay(cls, records: list[dict[str, Any]]) -> Ledger:
        orders: dict[tuple[str, str], Order] = {}
        decisions, duplicates = [], []
        by_seq = {}
        for rec in sorted(records, key=lambda r: r["seq"]):
            kind, p = rec["kind"], rec["payload"]
            if kind == "decision":
                decisions.append(p)
                by_seq[rec["seq"]] = p
                if p["action"] == "create" and p["allowed"]:
                    k = (p["key_id"], p["client_order_id"])
                    if k in orders:
                        duplicates.append(f"{k}: two allow records for one client order id")
                    orders[k] = Order(k[0], k[1], p, Decimal(p["notional"]))
            elif kind == "outcome":
                k = (p["key_id"], p["client_order_id"])
                order = orders.get(k)
                if order is None:
                    continue  # an outcome of a cancel whose order is unknown: no ledger effect
                order.outcomes.append(p)
                status = LEDGER_STATUS.get(p["action"], {}).get(p["status"])
                if status is not None:
                    order.apply(status)
        return cls(orders, decisions, duplicates)

    def used_notional(self, key_id: str) -> Decimal:
        return sum(
            (o.notional for o in self.orders.values() if o.key_id == key_id and o.counted),
            Decimal(0),
        )

    def open_orders(self, key_id: str) -> int:
        return sum(1 for o in self.orders.values() if o.key_id == key_id and o.is_open)

    def allowed(self) -> int:
        return len(self.orders)


def exchange_matches_audit(ledger: Ledger, exchange_orders: list[dict[str, Any]]) -> list[str]:
    """Every order at the exchange was allowed (and is what was allowed); every allowed order
    the exchange never got says so in an outcome record."""
    bad: list[str] = list(ledger.duplicate_allows)
    by_coid = Counter(o["clientOrderId"] for o in exchange_orders)
    bad += [
        f"{c}: {n} orders at the exchange for one client order id"
        for c, n in by_coid.items()
        if n > 1
    ]
    allowed = {coid: o for (_, coid), o in ledger.orders.items()}
    for eo in exchange_orders:
        coid = eo["clientOrderId"]
        order = allowed.get(coid)
        if order is None:
            bad.append(f"{coid}: at the exchange ({eo['status']}) with no audit allow record")
            continue
        p = order.payload
        want = (p["symbol"], p["side"], Decimal(p["amount"]), Decimal(p["limit_price"] or 0))
        raw = eo["info"]  # the exchange's own decimal strings, not ccxt's floats
        got = (eo["symbol"], eo["side"], Decimal(raw["origQty"]), Decimal(raw["price"]))
        if want != got:
            bad.append(f"{coid}: the exchange holds {got}, the allow record says {want}")
        if not order.counted:
            bad.append(f"{coid}: at the exchange, but an outcome gave its notional back")
    for (_, coid), order in ledger.orders.items():
        if not order.outcomes:
            bad.append(f"{coid}: allowed, and no outcome record after reconciliation")
        elif coid not in by_coid and order.status != "rejected":
            bad.append(
                f"{coid}: allowed, never reached the exchange, yet no outcome says so "
                f"(ledger status {order.status!r})"
            )
    return bad


def counters_match_audit(
    ledger: Ledger, key_id: str, used_24h_notional: str, open_orders: int
) -> list[str]:
    """The signer's counters (as GetPolicy reports them) equal what its audit log allowed."""
    want_used, want_open = ledger.used_notional(key_id), ledger.open_orders(key_id)
    bad = []
    if Decimal(used_24h_notional) != want_used:
        bad.append(f"{key_id}: used_24h_notional {used_24h_notional}, audit says {want_used}")
    if open_orders != want_open:
        bad.append(f"{key_id}: open_orders {open_orders}, audit says {want_open}")
    return bad


def pending(ledger: Ledger) -> int:
    """Allowed creates with no outcome yet (what the reconciler still has to resolve)."""
    return sum(1 for o in ledger.orders.values() if not o.outcomes)
