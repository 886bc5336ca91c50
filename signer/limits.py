"""Per-key limit counters: rolling 24 h notional (per key and per symbol), open orders, order rate.

Called inside `signer.db.write_txn`, which holds the signer's one write lock, so a plain
read-then-update is exact even with many threads, processes or replicas: two intents can never
jointly pass a cap.

Exactness: notionals are stored as plain decimal text and summed in Python with an exact
Decimal context (no SQL Numeric, which goes through float on SQLite). The token bucket is kept
in integer units (1 token = 60 000 units; each millisecond refills `orders_per_minute` units).

Cost per intent stays small however many orders sit in the window: notional is kept in hour and
minute buckets per (key, symbol). The rolling window is exact to the millisecond: whole hours
from hour buckets, the rest of the oldest hour from minute buckets, and the oldest minute from
the order rows themselves, i.e. at most ~25 + 59 bucket rows per symbol plus one minute of orders.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import Context, Decimal, Inexact, InvalidOperation, localcontext
from typing import Any

from sqlalchemy import BigInteger, Boolean, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, Session, mapped_column

from signer import fastsql
from signer.db import Base
from signer.errors import InvalidRequest
from signer.policy import Policy, Usage, canonical

WINDOW_MS = 86_400_000
HOUR_MS = 3_600_000
MINUTE_MS = 60_000
TOKEN_UNITS = 60_000  # one token; a bucket refills `orders_per_minute` units per millisecond
OUTCOMES = ("open", "closed", "canceled", "rejected")
_TERMINAL = ("closed", "canceled", "rejected")


class DuplicateClientOrderId(InvalidRequest):
    """The key already has an order with this client_order_id; nothing was recorded."""


class LimitOrder(Base):
    """One allowed order: its notional as counted, and whether it still holds an open slot."""

    __tablename__ = "limit_orders"

    key_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    client_order_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    symbol: Mapped[str] = mapped_column(String(64))
    side: Mapped[str] = mapped_column(String(8))
    notional: Mapped[str] = mapped_column(Text)  # exact decimal text
    counted: Mapped[bool] = mapped_column(Boolean)  # False once refunded (rejected unplaced)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))  # pending | open | closed | canceled | rejected
    is_open: Mapped[bool] = mapped_column(Boolean)

    __table_args__ = (
        Index("ix_limit_orders_key_created", "key_id", "created_ms"),
        Index("ix_limit_orders_key_open", "key_id", "is_open"),
    )


class NotionalBucket(Base):
    """Sum of counted notional of one (key, symbol) in one hour or one minute."""

    __tablename__ = "limit_notional_buckets"

    key_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    symbol: Mapped[str] = mapped_column(String(64), primary_key=True)
    width_ms: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # HOUR_MS or MINUTE_MS
    start_ms: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    notional: Mapped[str] = mapped_column(Text)  # exact decimal text


class TokenBucket(Base):
    """A key's order-rate bucket, with the rate/capacity it was last updated under."""

    __tablename__ = "limit_token_buckets"

    key_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    units: Mapped[int] = mapped_column(BigInteger)
    updated_ms: Mapped[int] = mapped_column(BigInteger)
    rate_per_minute: Mapped[int] = mapped_column(Integer)
    capacity: Mapped[int] = mapped_column(Integer)  # in tokens


TABLES = [LimitOrder.__table__, NotionalBucket.__table__, TokenBucket.__table__]

# The per-decision statements, as plain SQL (see `signer.fastsql`).
_WINDOW_SQL = (
    "SELECT symbol, notional FROM limit_notional_buckets"
    " WHERE key_id = ? AND width_ms = ? AND start_ms >= ?"
    " UNION ALL SELECT symbol, notional FROM limit_notional_buckets"
    " WHERE key_id = ? AND width_ms = ? AND start_ms >= ? AND start_ms < ?"
    " UNION ALL SELECT symbol, notional FROM limit_orders"
    " WHERE key_id = ? AND created_ms > ? AND created_ms < ? AND counted = ?"
)
_OPEN_AND_TOKENS_SQL = (  # open-order count and the token bucket (if any) in one round trip
    "SELECT (SELECT count(*) FROM limit_orders WHERE key_id = ? AND is_open = ?),"
    " b.units, b.updated_ms, b.rate_per_minute, b.capacity"
    " FROM (SELECT 1 AS one) AS x LEFT OUTER JOIN limit_token_buckets b ON b.key_id = ?"
)
_BUCKET_PK = "key_id = ? AND symbol = ? AND width_ms = ? AND start_ms = ?"
_BUCKET_GET_SQL = f"SELECT notional FROM limit_notional_buckets WHERE {_BUCKET_PK}"
_BUCKET_PAIR_SQL = (  # the current minute and hour buckets of one (key, symbol), one round trip
    "SELECT width_ms, notional FROM limit_notional_buckets WHERE key_id = ? AND symbol = ?"
    " AND ((width_ms = ? AND start_ms = ?) OR (width_ms = ? AND start_ms = ?))"
)
_BUCKET_UPDATE_SQL = f"UPDATE limit_notional_buckets SET notional = ? WHERE {_BUCKET_PK}"
_BUCKET_INSERT_SQL = (
    "INSERT INTO limit_notional_buckets (key_id, symbol, width_ms, start_ms, notional)"
    " VALUES (?, ?, ?, ?, ?)"
)
_ORDER_INSERT_SQL = (
    "INSERT INTO limit_orders (key_id, client_order_id, symbol, side, notional, counted,"
    " created_ms, status, is_open) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_TOKENS_INSERT_SQL = (
    "INSERT INTO limit_token_buckets (key_id, units, updated_ms, rate_per_minute, capacity)"
    " VALUES (?, ?, ?, ?, ?)"
)
_TOKENS_UPDATE_SQL = (
    "UPDATE limit_token_buckets SET units = ?, updated_ms = ?, rate_per_minute = ?,"
    " capacity = ? WHERE key_id = ?"
)


def _exact() -> Context:
    return Context(prec=1000, traps=[Inexact, InvalidOperation])


def _sum(values: list[str]) -> Decimal:
    with localcontext(_exact()):
        return sum((Decimal(v) for v in values), Decimal(0))


def window_by_symbol(session: Session, key_id: str, now_ms: int) -> dict[str, Decimal]:
    """Counted notional per symbol of orders created in (now - 24 h, +inf)."""
    cutoff = now_ms - WINDOW_MS
    first_full_hour = (cutoff // HOUR_MS + 1) * HOUR_MS
    first_full_minute = (cutoff // MINUTE_MS + 1) * MINUTE_MS
    parts: dict[str, list[str]] = defaultdict(list)
    rows = fastsql.run(
        session,
        _WINDOW_SQL,
        (key_id, HOUR_MS, first_full_hour)
        + (key_id, MINUTE_MS, first_full_minute, first_full_hour)
        + (key_id, cutoff, first_full_minute, True),
    ).all()
    for symbol, notional in rows:
        parts[symbol].append(notional)
    return {symbol: _sum(values) for symbol, values in parts.items()}


def _open_orders(session: Session, key_id: str) -> int:
    sql = "SELECT count(*) FROM limit_orders WHERE key_id = ? AND is_open = ?"
    return int(fastsql.run(session, sql, (key_id, True)).scalar_one())


@dataclass(frozen=True)
class KeyCounters:
    """A key's open-order count and token bucket, as read under the write lock (for callers
    that read them together with other facts in one statement; see `signer.decisionfacts`)."""

    open_orders: int
    bucket: _Bucket | None


@dataclass(frozen=True)
class _Bucket:
    units: int
    updated_ms: int
    rate_per_minute: int
    capacity: int


def _token_bucket(session: Session, key_id: str) -> _Bucket | None:
    sql = (
        "SELECT units, updated_ms, rate_per_minute, capacity FROM limit_token_buckets "
        "WHERE key_id = ?"
    )
    row = fastsql.run(session, sql, (key_id,)).first()
    return None if row is None else _Bucket(*(int(v) for v in row))


def _tokens_now(row: _Bucket | None, now_ms: int, rate: int, capacity: int) -> int:
    """Units in the bucket at `now_ms` (full when never used; no refill if the clock went back)."""
    if row is None:
        return capacity * TOKEN_UNITS
    elapsed = max(0, now_ms - row.updated_ms)
    return min(capacity * TOKEN_UNITS, row.units + elapsed * rate)


def _as_tokens(units: int) -> Decimal:
    """Units as tokens, rounded down to 9 places (>= 1 exactly when a whole token is there)."""
    return Decimal(units * 10**9 // TOKEN_UNITS).scaleb(-9)


def bucket_of(units: Any, updated_ms: Any, rate: Any, capacity: Any) -> _Bucket | None:
    """A token bucket from its four columns (all None when the key has none yet)."""
    if units is None:
        return None
    return _Bucket(int(units), int(updated_ms), int(rate), int(capacity))


def usage(
    session: Session,
    key_id: str,
    symbol: str,
    now_ms: int,
    policy: Policy | None,
    *,
    counters: KeyCounters | None = None,
) -> Usage:
    """The counters an intent on `symbol` is checked against (read under the write lock;
    `counters` when the caller already read them in this transaction)."""
    by_symbol = window_by_symbol(session, key_id, now_ms)
    if counters is None:
        row = fastsql.run(session, _OPEN_AND_TOKENS_SQL, (key_id, True, key_id)).one()
        counters = KeyCounters(int(row[0]), bucket_of(*row[1:]))
    open_orders, bucket = counters.open_orders, counters.bucket
    if policy is not None:
        units = _tokens_now(bucket, now_ms, policy.orders_per_minute, policy.burst)
    elif bucket is not None:
        units = _tokens_now(bucket, now_ms, bucket.rate_per_minute, bucket.capacity)
    else:
        units = 0
    return Usage(
        notional_24h_key=_sum([canonical(v) for v in by_symbol.values()]),
        notional_24h_symbol=by_symbol.get(symbol, Decimal(0)),
        open_orders=open_orders,
        tokens=_as_tokens(units),
    )


def order_exists(session: Session, key_id: str, client_order_id: str) -> bool:
    sql = "SELECT 1 FROM limit_orders WHERE key_id = ? AND client_order_id = ?"
    return fastsql.run(session, sql, (key_id, client_order_id)).first() is not None


def order_status(session: Session, key_id: str, client_order_id: str) -> str | None:
    """The ledger status of one order ("pending" = allowed, outcome not yet recorded)."""
    sql = "SELECT status FROM limit_orders WHERE key_id = ? AND client_order_id = ?"
    row = fastsql.run(session, sql, (key_id, client_order_id)).first()
    return None if row is None else str(row[0])


def _add_to_bucket(
    session: Session,
    key_id: str,
    symbol: str,
    width: int,
    t_ms: int,
    delta: Decimal,
    known: str | None | object = ...,
) -> bool:
    """Add `delta` to the bucket holding `t_ms`; returns True when the bucket was created.
    `known`: the bucket's notional (None: no such bucket) when the caller just read it."""
    start = t_ms // width * width
    pk = (key_id, symbol, width, start)
    if known is ...:
        row = fastsql.run(session, _BUCKET_GET_SQL, pk).first()
    else:
        row = None if known is None else (known,)
    if row is None:
        if delta.is_signed():
            return False  # bucket already pruned: that notional no longer counts anyway
        fastsql.write(session, _BUCKET_INSERT_SQL, (*pk, canonical(delta)))
        return True
    with localcontext(_exact()):
        total = canonical(Decimal(row[0]) + delta)
    fastsql.write(session, _BUCKET_UPDATE_SQL, (total, *pk))
    return False


def record_allowed(
    session: Session,
    key_id: str,
    symbol: str,
    client_order_id: str,
    side: str,
    notional: Decimal,
    now_ms: int,
    policy: Policy,
    *,
    checked_new: bool = False,
    counters: KeyCounters | None = None,
) -> None:
    """Count an allowed order: notional into the windows, one token, one open-order slot.

    Raises DuplicateClientOrderId if the key already used `client_order_id` (nothing changes).
    `checked_new` skips that look-up when the caller made it in this same transaction (the
    primary key still refuses a duplicate insert); `counters`, the key's counters as read in
    this transaction since its last change, saves re-reading the token bucket.
    """
    if not isinstance(notional, Decimal) or not notional.is_finite() or notional.is_signed():
        raise ValueError(f"notional: {notional!r} is not a finite decimal >= 0")
    if not checked_new and order_exists(session, key_id, client_order_id):
        raise DuplicateClientOrderId(
            f"client_order_id: {client_order_id!r} was already used on key {key_id!r}"
        )
    fastsql.write(
        session,
        _ORDER_INSERT_SQL,
        (key_id, client_order_id, symbol, side, canonical(notional), True, now_ms, "pending", True),
    )
    minute, hour = now_ms // MINUTE_MS * MINUTE_MS, now_ms // HOUR_MS * HOUR_MS
    rows = fastsql.run(
        session, _BUCKET_PAIR_SQL, (key_id, symbol, MINUTE_MS, minute, HOUR_MS, hour)
    ).all()
    current = {int(width): value for width, value in rows}
    _add_to_bucket(session, key_id, symbol, MINUTE_MS, now_ms, notional, current.get(MINUTE_MS))
    if _add_to_bucket(session, key_id, symbol, HOUR_MS, now_ms, notional, current.get(HOUR_MS)):
        # Once an hour per (key, symbol): drop buckets that left the window (one hour margin).
        horizon = ((now_ms - WINDOW_MS) // HOUR_MS - 1) * HOUR_MS
        sql = "DELETE FROM limit_notional_buckets WHERE key_id = ? AND symbol = ? AND start_ms < ?"
        fastsql.write(session, sql, (key_id, symbol, horizon))
    bucket = _token_bucket(session, key_id) if counters is None else counters.bucket
    units = _tokens_now(bucket, now_ms, policy.orders_per_minute, policy.burst) - TOKEN_UNITS
    rate, cap = policy.orders_per_minute, policy.burst
    if bucket is None:
        fastsql.write(session, _TOKENS_INSERT_SQL, (key_id, units, now_ms, rate, cap))
    else:
        updated = max(bucket.updated_ms, now_ms)
        fastsql.write(session, _TOKENS_UPDATE_SQL, (units, updated, rate, cap, key_id))


def record_outcome(session: Session, key_id: str, client_order_id: str, status: str) -> None:
    """Apply an order's outcome. Idempotent: the first terminal status wins.

    closed / canceled / rejected free the open-order slot. Only an order rejected before it
    was ever seen open (it never reached the book) gives its notional back; an open order
    reported "rejected" later is treated as closed, since part of it may have filled.
    An unknown order is ignored (there is nothing to release).
    """
    if status not in OUTCOMES:
        raise ValueError(f"status: {status!r} is not allowed; must be one of {', '.join(OUTCOMES)}")
    order = session.get(LimitOrder, (key_id, client_order_id))
    if order is None or order.status in _TERMINAL:
        return
    if status == "open":
        order.status = "open"
        return
    if status == "rejected" and order.status == "pending" and order.counted:
        refund = -Decimal(order.notional)
        _add_to_bucket(session, key_id, order.symbol, MINUTE_MS, order.created_ms, refund)
        _add_to_bucket(session, key_id, order.symbol, HOUR_MS, order.created_ms, refund)
        order.counted = False
    elif status == "rejected":
        status = "closed"
    order.status = status
    order.is_open = False


def counters_snapshot(session: Session, key_id: str, now_ms: int) -> dict[str, object]:
    """JSON-ready counters for GetPolicy and checks (tokens under the last-used rate/capacity)."""
    by_symbol = window_by_symbol(session, key_id, now_ms)
    bucket = _token_bucket(session, key_id)
    units = (
        None
        if bucket is None
        else _tokens_now(bucket, now_ms, bucket.rate_per_minute, bucket.capacity)
    )
    return {
        "key_id": key_id,
        "used_24h_notional": canonical(_sum([canonical(v) for v in by_symbol.values()])),
        "used_24h_notional_by_symbol": {s: canonical(v) for s, v in sorted(by_symbol.items())},
        "open_orders": _open_orders(session, key_id),
        "tokens": None if units is None else canonical(_as_tokens(units)),
        "window_ms": WINDOW_MS,
    }
