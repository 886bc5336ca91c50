"""Plain SQL on the signing path, through the session's own connection and transaction.

SQLAlchemy's ORM costs ~0.3-0.7 ms per statement on this path (cache keys, unit of work,
identity map), several times what SQLite itself takes. The handful of statements every decision
runs are written once here as plain SQL with `?` placeholders (rewritten to `%s` for psycopg)
and run with `exec_driver_sql`, which still goes through the session's connection (same
transaction, same write lock) and still wraps driver errors as SQLAlchemyError.

Pending ORM changes are flushed first, so plain reads see everything the session has done.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import CursorResult
from sqlalchemy.orm import Session


@lru_cache(maxsize=256)
def _format_style(sql: str) -> str:
    return sql.replace("?", "%s")


def run(session: Session, sql: str, params: Sequence[Any] = ()) -> CursorResult[Any]:
    """Execute `sql` (qmark placeholders; no literal `?` or `%` in it) in the session's txn."""
    if session.new or session.deleted or session.dirty:
        session.flush()
    conn = session.connection()
    if conn.dialect.paramstyle != "qmark":
        sql = _format_style(sql)
    return conn.exec_driver_sql(sql, tuple(params))
