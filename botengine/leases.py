"""Bot leases: each bot is run by exactly one engine worker at a time.

A worker claims a running bot whose lease is free, its own, or expired, and renews it while it
runs the bot. On PostgreSQL the claim reads candidates with `SELECT ... FOR UPDATE SKIP
LOCKED`, so several workers claim disjoint bots without waiting on each other; the UPDATE that
follows repeats the conditions, so a claim is also exact on SQLite (where the write
transaction is serialised by BEGIN IMMEDIATE). A dead worker's bots are taken over once its
leases expire; a worker restarted with the same id takes its own back at once.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from botengine.store_models import BotRow


def _claimable(worker: str, now: int):  # type: ignore[no-untyped-def]
    return or_(
        BotRow.lease_owner.is_(None),
        BotRow.lease_owner == worker,
        BotRow.lease_expires_at.is_(None),
        BotRow.lease_expires_at < now,
    )


def acquire(s: Session, worker: str, now: int, ttl_ms: int, limit: int = 100) -> list[str]:
    """Claim up to `limit` running bots for `worker`; returns every bot it now holds."""
    names = list(
        s.scalars(
            select(BotRow.name)
            .where(BotRow.enabled.is_(True), BotRow.status == "running", _claimable(worker, now))
            .order_by(BotRow.name)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    held: list[str] = []
    for name in names:
        done = s.execute(
            update(BotRow)
            .where(BotRow.name == name, _claimable(worker, now))
            .values(lease_owner=worker, lease_expires_at=now + ttl_ms)
            .execution_options(synchronize_session=False)
        )
        if done.rowcount == 1:  # type: ignore[attr-defined]
            held.append(name)
    return held


def renew(s: Session, worker: str, names: Sequence[str], now: int, ttl_ms: int) -> list[str]:
    """Extend the worker's leases; returns the names it still holds (others were taken)."""
    kept: list[str] = []
    for name in names:
        done = s.execute(
            update(BotRow)
            .where(BotRow.name == name, BotRow.lease_owner == worker)
            .values(lease_expires_at=now + ttl_ms)
            .execution_options(synchronize_session=False)
        )
        if done.rowcount == 1:  # type: ignore[attr-defined]
            kept.append(name)
    return kept


def release(s: Session, worker: str, names: Sequence[str]) -> None:
    for name in names:
        s.execute(
            update(BotRow)
            .where(BotRow.name == name, BotRow.lease_owner == worker)
            .values(lease_owner=None, lease_expires_at=None)
            .execution_options(synchronize_session=False)
        )


def holder(s: Session, name: str, now: int) -> str | None:
    row = s.get(BotRow, name)
    if row is None or row.lease_owner is None or (row.lease_expires_at or 0) < now:
        return None
    return row.lease_owner
