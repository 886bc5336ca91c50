"""Plain SQL on the signing path, on the session's own DB-API connection and transaction.

SQLAlchemy's ORM costs ~0.3-0.7 ms per statement on this path (cache keys, unit of work,
identity map), and even `exec_driver_sql` adds ~40 us of result plumbing per statement, several
times what SQLite itself takes. The handful of statements every decision runs are written once
as plain SQL with `?` placeholders (rewritten to `%s` for psycopg) and run on a cursor of the
session's DB-API connection: the same transaction and write lock, with driver errors wrapped
as `SQLAlchemyError` (DBAPIError) so callers handle one exception family.

Pending ORM changes are flushed first, so plain reads see everything the session has done.
On PostgreSQL, where every statement is a network round trip, statements whose result is not
needed go through `write`, which queues them and sends them pipelined with the next read (see
`write`); SQLite runs them at once.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.exc import DBAPIError, MultipleResultsFound, NoResultFound
from sqlalchemy.orm import Session

_CURSOR = "bulkhead.fastsql.txn"  # session.info: this transaction's _Txn
_PENDING = "bulkhead.fastsql.pending"  # connection.info (PostgreSQL): the _Txn with queued writes


@lru_cache(maxsize=256)
def _format_style(sql: str) -> str:
    return sql.replace("?", "%s")


@lru_cache(maxsize=256)
def _row_type(names: tuple[str, ...]) -> type:
    return namedtuple("Row", names, rename=True)  # type: ignore[misc]


class Result:
    """The rows of one statement, fetched eagerly (the cursor is reused by the next one)."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def all(self) -> list[Any]:
        return self._rows

    def first(self) -> Any | None:
        return self._rows[0] if self._rows else None

    def one(self) -> Any:
        if len(self._rows) != 1:
            raise (NoResultFound if not self._rows else MultipleResultsFound)(
                f"expected one row, got {len(self._rows)}"
            )
        return self._rows[0]

    def scalar(self) -> Any | None:
        return self._rows[0][0] if self._rows else None

    def scalar_one(self) -> Any:
        return self.one()[0]


class _Txn:
    """This module's view of one transaction: its DB-API cursor and, on PostgreSQL, the writes
    not yet sent."""

    __slots__ = ("txn", "cursor", "qmark", "errors", "dbapi", "pending")

    def __init__(self, txn: object, dbapi: Any, qmark: bool, errors: type[Exception]) -> None:
        self.txn = txn
        self.dbapi = dbapi
        self.cursor = dbapi.cursor()
        self.qmark = qmark
        self.errors = errors
        self.pending: list[tuple[str, tuple[Any, ...]]] = []


def _txn(session: Session) -> _Txn:
    txn = session.get_transaction()
    cached: _Txn | None = session.info.get(_CURSOR)
    if cached is not None and cached.txn is txn and txn is not None:
        return cached
    conn = session.connection()  # begins the session's transaction if it has none yet
    dbapi_conn = conn.connection.dbapi_connection
    if dbapi_conn is None:
        raise DBAPIError("fastsql", None, Exception("connection closed"))
    qmark = conn.dialect.paramstyle == "qmark"
    state = _Txn(session.get_transaction(), dbapi_conn, qmark, conn.dialect.loaded_dbapi.Error)
    session.info[_CURSOR] = state
    if not qmark:
        conn.info[_PENDING] = state  # so SQLAlchemy's own statements send our writes first
    return state


def _send_pending(state: _Txn) -> None:
    """Send the queued writes in one pipelined round trip (psycopg pipeline mode)."""
    items, state.pending = state.pending, []
    try:
        with state.dbapi.pipeline():
            cur = state.dbapi.cursor()
            for sql, params in items:
                cur.execute(sql, params)
    except state.errors as e:
        sql, params = items[0]
        raise DBAPIError.instance(sql, params, e, state.errors) from e


def install_write_queue(engine: Engine) -> None:
    """PostgreSQL: flush queued writes before any statement SQLAlchemy itself sends on the
    connection and before COMMIT; drop them on ROLLBACK (they would be undone anyway)."""

    @event.listens_for(engine, "before_cursor_execute")
    def _before_execute(conn, *_a):  # type: ignore[no-untyped-def]
        state = conn.info.get(_PENDING)
        if state is not None and state.pending:
            _send_pending(state)

    @event.listens_for(engine, "commit")
    def _before_commit(conn):  # type: ignore[no-untyped-def]
        state = conn.info.pop(_PENDING, None)
        if state is not None and state.pending:
            _send_pending(state)

    @event.listens_for(engine, "rollback")
    def _on_rollback(conn):  # type: ignore[no-untyped-def]
        state = conn.info.pop(_PENDING, None)
        if state is not None:
            state.pending.clear()

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn, record):  # type: ignore[no-untyped-def]
        state = record.info.pop(_PENDING, None)  # a transaction that ended any other way
        if state is not None:
            state.pending.clear()


def read_once(engine: Engine, sql: str, params: Sequence[Any] = ()) -> Any | None:
    """The first row of one read on a pooled connection, outside any write transaction (no
    Session, no lock): for look-ups made before taking the write lock."""
    conn = engine.raw_connection()
    try:
        cur = conn.cursor()
        if engine.dialect.paramstyle != "qmark":
            sql = _format_style(sql)
        errors = engine.dialect.loaded_dbapi.Error
        try:
            cur.execute(sql, tuple(params))
            row = cur.fetchone()
        except errors as e:
            raise DBAPIError.instance(sql, tuple(params), e, errors) from e
        cur.close()
        return row
    finally:
        conn.close()  # back to the pool, which rolls the read transaction back


def write(session: Session, sql: str, params: Sequence[Any] = ()) -> None:
    """A statement whose result is not needed (INSERT, UPDATE, DELETE, SAVEPOINT ...).

    SQLite runs it now. PostgreSQL queues it and sends the queue, pipelined, in one round trip
    before the next read, before any statement SQLAlchemy sends, and before COMMIT; a failure
    then fails that read or the commit, and so the whole transaction, before anything it
    covered was released.
    """
    session.flush()  # a no-op (one cheap check) unless ORM changes are pending
    state = _txn(session)
    if state.qmark:
        _execute(state, sql, tuple(params))
    else:
        state.pending.append((_format_style(sql), tuple(params)))


def run(session: Session, sql: str, params: Sequence[Any] = ()) -> Result:
    """Execute `sql` (qmark placeholders; no literal `?` or `%` in it) in the session's txn,
    after any queued writes (sent in the same round trip), and return its rows."""
    session.flush()  # a no-op (one cheap check) unless ORM changes are pending
    state = _txn(session)
    if state.qmark:
        return _execute(state, sql, tuple(params))
    sql = _format_style(sql)
    if not state.pending:
        return _execute(state, sql, tuple(params))
    items, state.pending = state.pending, []
    try:
        with state.dbapi.pipeline() as pipeline:
            wcur = state.dbapi.cursor()
            for wsql, wparams in items:
                wcur.execute(wsql, wparams)
            state.cursor.execute(sql, tuple(params))
            pipeline.sync()  # one round trip for the writes and the read
            return _rows(state.cursor)
    except state.errors as e:
        raise DBAPIError.instance(sql, tuple(params), e, state.errors) from e


def _execute(state: _Txn, sql: str, params: tuple[Any, ...]) -> Result:
    try:
        state.cursor.execute(sql, params)
        return _rows(state.cursor)
    except state.errors as e:
        raise DBAPIError.instance(sql, params, e, state.errors) from e


def _rows(cur: Any) -> Result:
    desc = cur.description
    if desc is None:
        return Result([], cur.rowcount)
    rows = cur.fetchall()
    if rows:
        row_type = _row_type(tuple(d[0] for d in desc))
        rows = [row_type(*r) for r in rows]
    return Result(rows, cur.rowcount)
