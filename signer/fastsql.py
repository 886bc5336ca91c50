"""Plain SQL on the signing path, on the session's own DB-API connection and transaction.

SQLAlchemy's ORM costs ~0.3-0.7 ms per statement on this path (cache keys, unit of work,
identity map), and even `exec_driver_sql` adds ~40 us of result plumbing per statement, several
times what SQLite itself takes. The handful of statements every decision runs are written once
as plain SQL with `?` placeholders (rewritten to `%s` for psycopg) and run on a cursor of the
session's DB-API connection: the same transaction and write lock, with driver errors wrapped
as `SQLAlchemyError` (DBAPIError) so callers handle one exception family.

Pending ORM changes are flushed first, so plain reads see everything the session has done.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy.exc import DBAPIError, MultipleResultsFound, NoResultFound
from sqlalchemy.orm import Session

_CURSOR = "bulkhead.fastsql.cursor"  # session.info: (transaction, dbapi cursor, qmark?, errors)


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


def _cursor(session: Session) -> tuple[Any, bool, type[Exception]]:
    txn = session.get_transaction()
    cached = session.info.get(_CURSOR)
    if cached is not None and cached[0] is txn and txn is not None:
        return cached[1], cached[2], cached[3]
    conn = session.connection()  # begins the session's transaction if it has none yet
    dbapi_conn = conn.connection.dbapi_connection
    if dbapi_conn is None:
        raise DBAPIError("fastsql", None, Exception("connection closed"))
    cur = dbapi_conn.cursor()
    qmark = conn.dialect.paramstyle == "qmark"
    errors = conn.dialect.loaded_dbapi.Error
    session.info[_CURSOR] = (session.get_transaction(), cur, qmark, errors)
    return cur, qmark, errors


def run(session: Session, sql: str, params: Sequence[Any] = ()) -> Result:
    """Execute `sql` (qmark placeholders; no literal `?` or `%` in it) in the session's txn."""
    if session.new or session.deleted or session.dirty:
        session.flush()
    cur, qmark, errors = _cursor(session)
    if not qmark:
        sql = _format_style(sql)
    try:
        cur.execute(sql, tuple(params))
        desc = cur.description
        if desc is None:
            return Result([], cur.rowcount)
        rows = cur.fetchall()
    except errors as e:
        raise DBAPIError.instance(sql, tuple(params), e, errors) from e
    if rows:
        row_type = _row_type(tuple(d[0] for d in desc))
        rows = [row_type(*r) for r in rows]
    return Result(rows, cur.rowcount)
