"""Storage plumbing shared by every signer module: declarative Base, engines, write transactions.

Each concept module (keystore, policy store, limits, audit, auth) declares its own tables on
`Base`. Sessions are passed in, never global.

Every state-changing operation runs inside `write_txn`, which serialises writers across threads
*and* processes: SQLite takes its database write lock up front (`BEGIN IMMEDIATE`), PostgreSQL
takes a transaction-scoped advisory lock. The audit log is one serialised chain, and limit
counters are read and updated under the same lock, so two concurrent intents can never jointly
pass a cap, and several signer replicas on one PostgreSQL keep one verifiable chain.
"""

from __future__ import annotations

import os
import stat
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import TimeoutError as SATimeoutError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from signer import fastsql

# Arbitrary constant naming the signer's one write lock in PostgreSQL's advisory-lock space.
WRITE_LOCK_ID = 0x42554C4B  # "BULK"

DB_FILENAME = "signer.db"

# session.info key: the transaction (object) known to hold the global write lock. `write_txn`
# sets it right after taking the lock, so `AuditLog.append` needs no extra round trip to check.
WRITE_LOCK_TXN = "bulkhead.db.write_lock_txn"


class Base(DeclarativeBase):
    """Declarative base for every signer table."""


def sqlite_url(data_dir: str | os.PathLike[str]) -> str:
    return f"sqlite:///{Path(data_dir) / DB_FILENAME}"


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str) -> Engine:
    """Create an engine tuned for durable, serialised writes.

    SQLite: WAL journal, synchronous=FULL (a committed audit record survives power loss),
    a busy timeout so concurrent writers queue instead of failing, and pysqlite's own
    transaction handling switched off so `write_txn` can issue `BEGIN IMMEDIATE` itself.
    """
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=8,
            max_overflow=32,
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):  # type: ignore[no-untyped-def]
            mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine
    engine = create_engine(url, pool_size=8, max_overflow=32, pool_pre_ping=True)
    fastsql.install_write_queue(engine)  # one pipelined round trip for a decision's writes
    return engine


def create_schema(engine: Engine) -> None:
    """Create every table declared on `Base` (importing the modules that declare them)."""
    # Import for side effects: each module registers its tables on Base.metadata.
    from signer import audit, auth, keystore, limits, state  # noqa: F401

    Base.metadata.create_all(engine)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


LOCAL_LOCK_TIMEOUT_S = 30.0
_LOCAL_LOCKS: weakref.WeakKeyDictionary[Engine, threading.RLock] = weakref.WeakKeyDictionary()
_LOCAL_LOCKS_GUARD = threading.Lock()


def local_write_lock(engine: Engine) -> threading.RLock:
    """This process's queue in front of the database write lock of `engine`.

    Threads of one process wait here (woken at once on release) instead of in SQLite's busy
    handler, which polls with sleeps of up to 100 ms; the database lock still serialises
    against other processes and replicas.
    """
    with _LOCAL_LOCKS_GUARD:
        lock = _LOCAL_LOCKS.get(engine)
        if lock is None:
            lock = _LOCAL_LOCKS[engine] = threading.RLock()
        return lock


@contextmanager
def write_txn(engine: Engine) -> Iterator[Session]:
    """One serialised read-modify-write transaction; commits on success, rolls back on error.

    Commit happens before this context exits, so a caller may only release anything that
    depends on the transaction (a signature, an exchange request) *after* the `with` block.
    """
    lock = local_write_lock(engine)
    if not lock.acquire(timeout=LOCAL_LOCK_TIMEOUT_S):  # as long as SQLite's busy timeout
        raise SATimeoutError(f"write lock not free after {LOCAL_LOCK_TIMEOUT_S:g} s")
    try:
        with _locked_session(engine) as session:
            yield session
    finally:
        lock.release()


@contextmanager
def _locked_session(engine: Engine) -> Iterator[Session]:
    if is_sqlite(engine):
        conn = engine.connect().execution_options(sqlite_begin="IMMEDIATE")
    else:
        conn = engine.connect()
    try:
        with Session(bind=conn, expire_on_commit=False) as session:
            if is_sqlite(engine):
                session.connection()  # begins the transaction: BEGIN IMMEDIATE takes the lock
            else:
                session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": WRITE_LOCK_ID})
            session.info[WRITE_LOCK_TXN] = session.get_transaction()
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise
    finally:
        conn.close()


@contextmanager
def read_session(engine: Engine) -> Iterator[Session]:
    """A read-only session (no write lock taken)."""
    with Session(bind=engine, expire_on_commit=False) as session:
        yield session
        session.rollback()


def check_private_path(path: Path) -> None:
    """Refuse a data directory or file that group or others can read, write or enter.

    Raises `signer.errors.InsecureStorage`, which stops the signer before it serves anything.
    """
    from signer.errors import InsecureStorage

    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InsecureStorage(
            f"{path} has mode {stat.S_IMODE(mode):04o}; the signer requires no access for group "
            f"or others (chmod {'700' if path.is_dir() else '600'} {path})"
        )
