"""One serialised chain under concurrent writers: threads, and separate OS processes sharing
one SQLite file or one PostgreSQL database (BULKHEAD_TEST_PG_URL; a private schema per test).

If `append` read a stale head or ran without the write lock, two writers would pick the same
seq: the insert would fail (primary key) or the chain would fork, and these tests would fail.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import nacl.signing
import pytest
from sqlalchemy import Engine, text

from signer.audit import AUDIT_TABLES, AuditLog, iter_records, verify_session
from signer.db import Base, make_engine, read_session, sqlite_url, write_txn

PG_URL = os.environ.get("BULKHEAD_TEST_PG_URL")
THREADS = 8
PER_THREAD = 25
PER_PROCESS = 60


@pytest.fixture(params=["sqlite", pytest.param("pg", marks=pytest.mark.pg)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a fresh audit store that several processes can open: a SQLite file or a PG schema."""
    if request.param == "sqlite":
        url = sqlite_url(tmp_path)
        _create_tables(url)
        yield url
        return
    if not PG_URL:
        pytest.skip("BULKHEAD_TEST_PG_URL is not set")
    schema = f"audit_test_{secrets.token_hex(6)}"
    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        url = f"{PG_URL}{'&' if '?' in PG_URL else '?'}options=-csearch_path%3D{schema}"
        _create_tables(url)
        yield url
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def _create_tables(url: str) -> None:
    eng = make_engine(url)
    Base.metadata.create_all(eng, tables=AUDIT_TABLES)
    eng.dispose()


def _append_as(engine: Engine, log: AuditLog, writer: str, count: int) -> None:
    for i in range(count):
        with write_txn(engine) as s:
            log.append(s, "decision", {"writer": writer, "i": i})


def _process_worker(url: str, seed: bytes, writer: str, count: int, start: object) -> None:
    """Runs in a spawned child: its own interpreter, engine and connections."""
    engine = make_engine(url)
    log = AuditLog(nacl.signing.SigningKey(seed))
    start.wait()  # type: ignore[attr-defined]
    _append_as(engine, log, writer, count)
    engine.dispose()


def _check_chain(url: str, public_key: bytes, writers: list[str], per_writer: int) -> int:
    """Assert one contiguous, verifiable chain with every writer's records in its own order.

    Returns how many times consecutive records came from different writers (for information).
    """
    engine = make_engine(url)
    try:
        with read_session(engine) as s:
            report = verify_session(s, public_key)
            assert report.ok, report.summary
            assert report.records == len(writers) * per_writer
            seen: dict[str, list[int]] = {w: [] for w in writers}
            order = []
            for rec in iter_records(s):
                payload = json.loads(rec.record_bytes)["payload"]
                seen[payload["writer"]].append(payload["i"])
                order.append(payload["writer"])
    finally:
        engine.dispose()
    assert all(seq == list(range(per_writer)) for seq in seen.values()), seen
    return sum(1 for a, b in zip(order, order[1:], strict=False) if a != b)


def test_eight_threads_appending_build_one_contiguous_verifiable_chain(store_url: str) -> None:
    engine = make_engine(store_url)
    log = AuditLog(nacl.signing.SigningKey.generate())
    start = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def run(writer: str) -> None:
        try:
            start.wait()
            _append_as(engine, log, writer, PER_THREAD)
        except BaseException as exc:  # surfaced below; a thread cannot fail the test itself
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(f"t{i}",)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engine.dispose()
    assert not errors, errors
    _check_chain(store_url, log.public_key, [f"t{i}" for i in range(THREADS)], PER_THREAD)


def test_two_processes_appending_build_one_contiguous_verifiable_chain(store_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    key = nacl.signing.SigningKey.generate()
    start = ctx.Barrier(2)
    procs = [
        ctx.Process(target=_process_worker, args=(store_url, bytes(key), w, PER_PROCESS, start))
        for w in ("p0", "p1")
    ]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join(timeout=120)
    finally:
        for p in procs:
            if p.is_alive():  # only on a hang; never leave our own children behind
                p.kill()
                p.join()
    assert [p.exitcode for p in procs] == [0, 0]
    _check_chain(store_url, bytes(key.verify_key), ["p0", "p1"], PER_PROCESS)
