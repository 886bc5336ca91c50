"""Close the gap a crash can leave: an allowed order whose outcome was never recorded.

The decision is committed before anything is sent, so after a crash (or a lost exchange answer)
an order can be "pending": allowed and counted, with no outcome record. The reconciler asks the
exchange about each pending order older than a grace period (longer than any request in flight
on any replica) and records what it finds as an `outcome` record linked to the decision:
the order's real status, or `rejected` ("never reached the exchange"), which gives its notional
back. Orders the exchange cannot answer about stay pending and are retried on the next pass.
"""

from __future__ import annotations

import logging

from sqlalchemy import select

from signer import limits
from signer.core import SignerCore
from signer.db import read_session
from signer.errors import ExchangeError, SignerError
from signer.reads import allowed_decision_seq

log = logging.getLogger("bulkhead.signer.reconcile")
STATUS_MAP = {
    "open": "open",
    "closed": "closed",
    "canceled": "canceled",
    "expired": "canceled",
    "rejected": "rejected",
}


def _decision_seq(core: SignerCore, key_id: str, client_order_id: str) -> int:
    with read_session(core.engine) as s:
        return allowed_decision_seq(s, key_id, client_order_id)


def reconcile_pending(core: SignerCore, grace_ms: int, limit: int = 500) -> int:
    """One pass; returns how many pending orders got an outcome."""
    now = core.clock()
    with read_session(core.engine) as s:
        rows = s.execute(
            select(
                limits.LimitOrder.key_id,
                limits.LimitOrder.client_order_id,
                limits.LimitOrder.symbol,
            )
            .where(
                limits.LimitOrder.status == "pending", limits.LimitOrder.created_ms < now - grace_ms
            )
            .order_by(limits.LimitOrder.created_ms)
            .limit(limit)
        ).all()
        exchanges = {}
        for key_id in {r.key_id for r in rows}:
            info = core.gateways.key_info(s, key_id)
            if info is not None and info.status == "active":
                exchanges[key_id] = info.exchange
    done = 0
    for key_id, coid, symbol in rows:
        exchange = exchanges.get(key_id)
        if exchange is None:
            continue
        try:
            order = core.gateways.fetch_order(key_id, exchange, symbol, coid)
            status = STATUS_MAP.get(order.get("status", ""), "")
            extra = {
                "exchange_order_id": order.get("exchange_order_id", ""),
                "filled": order.get("filled", ""),
            }
        except ExchangeError as e:
            if getattr(e, "kind", "") != "OrderNotFound":
                log.warning("reconcile %s/%s: exchange unavailable, will retry", key_id, coid)
                continue
            status, extra = "rejected", {"error": "not found on the exchange: never placed"}
        except SignerError as e:
            log.warning("reconcile %s/%s: %s", key_id, coid, type(e).__name__)
            continue
        if not status:
            continue
        seq = _decision_seq(core, key_id, coid)
        if core._record_late_outcome(seq, key_id, coid, status, reconciled="true", **extra):
            done += 1
    return done
