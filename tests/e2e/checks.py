"""What must hold after a paper session: the exchange, the engine's records and the signer's
audit log agree."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

from botengine import store as st
from tests.e2e.paper import PaperSession


def audit_records(export: Path) -> list[dict[str, Any]]:
    out = []
    for line in export.read_text().splitlines():
        obj = json.loads(line)
        rec = obj.get("record")
        if isinstance(rec, str):
            out.append(json.loads(rec))
    return out


def strategy_resting(snapshot: dict[str, Any]) -> set[str]:
    """Client order ids the strategy believes rest on the book, from its saved snapshot."""
    if snapshot["kind"] == "dca":
        return {c for d in snapshot["deals"] for c in d["resting"]}
    return {slot[1] for slot in snapshot["slots"] if slot is not None}


def assert_engine_matches_exchange(s: PaperSession) -> dict[str, int]:
    """The exchange's orders, trades and balances against the engine's records; returns counts.

    - no client order id was placed twice, and the exchange holds no order no bot asked for;
    - every recorded order has the exchange's status, id, amount and price;
    - every trade on the exchange belongs to an order the engine recorded as filled, with the
      same amount, price, fee and fee asset (no lost fill), and vice versa;
    - the account's balances are exactly what the engine's fills imply;
    - what each strategy believes rests on the book is what rests there.
    """
    orders, trades = s.exchange_orders(), s.exchange_trades()
    engine = {o.client_order_id: o for o in s.engine_orders()}
    fills = {f.client_order_id: f for f in s.engine_fills()}
    twice = [c for c, n in Counter(o["clientOrderId"] for o in orders).items() if n > 1]
    assert not twice, f"client order ids placed twice on the exchange: {twice}"
    by_coid = {o["clientOrderId"]: o for o in orders}
    assert set(by_coid) <= set(engine), f"orders no bot asked for: {set(by_coid) - set(engine)}"
    states = {"FILLED": "filled", "NEW": "open", "CANCELED": "cancelled"}
    for coid, row in engine.items():
        ex = by_coid.get(coid)
        if ex is None:  # recorded, then cancelled by the strategy before it was ever sent
            assert (row.state, row.exchange_order_id) == ("cancelled", None), (coid, row.state)
            continue
        assert states[ex["status"]] == row.state, (coid, ex["status"], row.state)
        assert row.exchange_order_id == str(ex["orderId"]), coid
        assert Decimal(ex["origQty"]) == Decimal(row.amount), coid
        if row.price is not None:
            assert Decimal(ex["price"]) == Decimal(row.price), coid
    by_order: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in trades:
        by_order[str(t["orderId"])].append(t)
    filled_ids = {engine[c].exchange_order_id for c in fills}
    assert set(by_order) == filled_ids, "trades and recorded fills differ"
    base, quote = Decimal(0), Decimal(0)
    for coid, f in fills.items():
        ts = by_order[engine[coid].exchange_order_id or ""]
        qty = sum((Decimal(t["qty"]) for t in ts), Decimal(0))
        cost = sum((Decimal(t["quoteQty"]) for t in ts), Decimal(0))
        assert qty == Decimal(f.amount), coid
        assert cost / qty == Decimal(f.price), coid
        assert sum((Decimal(t["commission"]) for t in ts), Decimal(0)) == Decimal(f.fee), coid
        assert {t["commissionAsset"] for t in ts} == {f.fee_asset}, coid
        fee, amount, price = Decimal(f.fee), Decimal(f.amount), Decimal(f.price)
        sign = 1 if f.side == "buy" else -1
        base += sign * amount - (fee if f.fee_asset == "BTC" else 0)
        quote -= sign * amount * price + (fee if f.fee_asset == "USDT" else 0)
    balances = s.exchange_balances()
    assert balances.get("BTC", Decimal(0)) == base
    assert balances["USDT"] == Decimal(s.balances["USDT"]) + quote
    on_book = {c for c, o in by_coid.items() if o["status"] == "NEW"}
    store = s.engine_store()
    try:
        with store.read() as session:
            believed = set()
            for bot in st.list_bots(session):
                snap = st.load_snapshot(session, bot.name)
                believed |= strategy_resting(snap) if snap else set()
    finally:
        store.close()
    assert believed == on_book, f"strategies vs book: {believed ^ on_book}"
    return {"orders": len(orders), "trades": len(trades), "fills": len(fills)}
