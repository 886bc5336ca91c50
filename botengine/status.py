"""What `bulkhead bot status NAME` shows: state, last denial, open deals, orders, PnL.

Built from the engine database alone (no network): open deals come from the strategy's own
snapshot, realised PnL from the closed deals, and the last denial is the signer's rule ids and
message as the runtime stored them when it paused the bot.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from botengine import store as st
from botengine.configfields import canonical
from botengine.model import Deal
from botengine.strategies.common import deal_from_json


def open_deals(snapshot: dict[str, Any] | None) -> list[Deal]:
    """Open DCA deals / grid round trips holding base, read from a strategy snapshot."""
    if not snapshot:
        return []
    if snapshot.get("kind") == "dca":
        return [deal_from_json(d["rec"]) for d in snapshot.get("deals", [])]
    if snapshot.get("kind") == "grid":
        return [deal_from_json(d) for d in snapshot.get("open", {}).values()]
    return []


def money(value: Decimal) -> str:
    """For reading: 8 decimal places at most, no trailing zeros (the database keeps all)."""
    return canonical(value.quantize(Decimal("0.00000001")))


def _deal_json(d: Deal) -> dict[str, Any]:
    avg = d.cost / d.bought if d.bought else None
    return {
        "deal_id": d.deal_id,
        "opened_ms": d.opened_ms,
        "bought": money(d.bought),
        "cost": money(d.cost),
        "average_price": None if avg is None else money(avg),
        "safety_orders": d.safety_orders,
    }


def bot_status(s: Session, name: str) -> dict[str, Any]:
    row = st.get_bot(s, name)
    orders = st.orders_of(s, name)
    deals = st.deals_of(s, name)
    fills = st.fills_of(s, name)
    counts: dict[str, int] = {}
    for o in orders:
        counts[o.state] = counts.get(o.state, 0) + 1
    pnl = sum((Decimal(d.pnl) for d in deals), Decimal(0))
    fees = sum((Decimal(d.fees_quote) for d in deals), Decimal(0))
    snapshot = st.load_snapshot(s, name)
    return {
        "name": row.name,
        "type": row.bot_type,
        "symbol": row.symbol,
        "exchange": row.exchange,
        "key_id": row.key_id,
        "status": row.status,
        "enabled": row.enabled,
        "last_denial": st.denial_of(row),
        "open_deals": [_deal_json(d) for d in open_deals(snapshot)],
        "orders": counts,
        "active_orders": [
            {
                "client_order_id": o.client_order_id,
                "role": o.role,
                "side": o.side,
                "type": o.order_type,
                "amount": o.amount,
                "price": o.price,
                "state": o.state,
                "error": o.error,
            }
            for o in orders
            if o.state not in ("filled", "cancelled")
        ],
        "fills": len(fills),
        "closed_deals": len(deals),
        "realised_pnl": money(pnl),
        "fees_in_closed_deals": money(fees),
        "quote": row.symbol.split("/")[1],
    }


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_status(info: dict[str, Any]) -> str:
    q = info["quote"]
    lines = [
        f"bot {info['name']}: {info['status']} ({info['type']} {info['symbol']} on "
        f"{info['exchange']}, signer key {info['key_id']})"
    ]
    denial = info["last_denial"]
    if denial:
        lines.append(
            f"last denial: {', '.join(denial['rules'])}: {denial['message']} "
            f"({_when(denial['at_ms'])})"
        )
    else:
        lines.append("last denial: none")
    lines.append(
        f"realised PnL: {info['realised_pnl']} {q} over {info['closed_deals']} closed deals "
        f"(fees {info['fees_in_closed_deals']} {q}); {info['fills']} fills"
    )
    if info["open_deals"]:
        for d in info["open_deals"]:
            if d["average_price"] is None:
                lines.append(f"open deal {d['deal_id']}: waiting for its first buy to fill")
                continue
            lines.append(
                f"open deal {d['deal_id']}: bought {d['bought']} for {d['cost']} {q} "
                f"(average {d['average_price']}), safety orders {d['safety_orders']}"
            )
    else:
        lines.append("open deals: none")
    counts = ", ".join(f"{k} {v}" for k, v in sorted(info["orders"].items())) or "none"
    lines.append(f"orders: {counts}")
    for o in info["active_orders"]:
        price = o["price"] or "market"
        extra = f" ({o['error']})" if o["error"] else ""
        lines.append(
            f"  {o['client_order_id']}: {o['side']} {o['amount']} @ {price} "
            f"[{o['role']}] {o['state']}{extra}"
        )
    return "\n".join(lines)
