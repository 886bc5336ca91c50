"""Audit log writer: record format, payload rules, head, checkpoints, export and key files.

Real SQLite files in tmp_path; keys are generated per test.
"""

from __future__ import annotations

import hashlib
import io
import json
from decimal import Decimal
from pathlib import Path

import nacl.signing
import pytest
from sqlalchemy import Engine, select

from signer.audit import (
    AUDIT_TABLES,
    GENESIS_HASH,
    AuditCheckpointRow,
    AuditFormatError,
    AuditLog,
    AuditRecordRow,
    SignedCheckpoint,
    canonical_json,
    iter_records,
    load_public_key,
    read_checkpoint_file,
    records_for_client_order_id,
    verify_file,
    verify_jsonl,
    verify_session,
    write_checkpoint_file,
    write_public_key,
)
from signer.db import Base, make_engine, read_session, sqlite_url, write_txn


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    eng = make_engine(sqlite_url(tmp_path))
    Base.metadata.create_all(eng, tables=AUDIT_TABLES)
    yield eng
    eng.dispose()


@pytest.fixture
def log() -> AuditLog:
    return AuditLog(nacl.signing.SigningKey.generate())


def _append_many(engine: Engine, log: AuditLog, n: int) -> None:
    for i in range(n):
        with write_txn(engine) as s:
            log.append(s, "decision", {"client_order_id": f"bot1-{i}", "amount": "0.01"})


def test_appended_records_round_trip_through_export_and_verify(
    engine: Engine, log: AuditLog, tmp_path: Path
) -> None:
    _append_many(engine, log, 5)
    buf = io.StringIO()
    with read_session(engine) as s:
        assert log.export_jsonl(s, buf) == 5
        assert verify_session(s, log.public_key).ok
    report = verify_jsonl(io.StringIO(buf.getvalue()), log.public_key)
    assert report.ok and report.records == 5, report.summary
    path = tmp_path / "export.jsonl"
    path.write_text(buf.getvalue(), encoding="utf-8")
    assert verify_file(path, log.public_key).ok
    assert str(report).startswith("OK: 5 records verified")


def test_record_is_stored_as_canonical_bytes_hashed_and_signed_over_the_hash(
    engine: Engine, log: AuditLog
) -> None:
    payload = {"z": 1, "a": "é€", "amount": "12.50", "nested": {"b": [True, None], "a": -3}}
    with write_txn(engine) as s:
        first = log.append(s, "decision", payload, now_ms=1_700_000_000_123)
        second = log.append(s, "outcome", {"decision_seq": first.seq}, now_ms=1_700_000_000_124)
    expected = {
        "v": 1,
        "seq": 1,
        "ts_ms": 1_700_000_000_123,
        "kind": "decision",
        "prev": GENESIS_HASH,
        "payload": payload,
    }
    expected_bytes = json.dumps(
        expected, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")
    with read_session(engine) as s:
        rows = [
            (r.record, r.hash, r.sig, r.kind, r.ts_ms)
            for r in s.scalars(select(AuditRecordRow).order_by(AuditRecordRow.seq))
        ]
    record, digest, sig, _kind, _ts = rows[0]
    assert record.encode("utf-8") == expected_bytes
    assert "é€" in record  # ensure_ascii=False: text is stored unescaped
    assert digest == hashlib.sha256(expected_bytes).hexdigest() == first.hash
    message = b"bulkhead/audit/record/v1\x00" + bytes.fromhex(first.hash)
    nacl.signing.VerifyKey(log.public_key).verify(message, bytes.fromhex(sig))
    assert json.loads(rows[1][0])["prev"] == first.hash
    assert (second.seq, rows[1][3], rows[1][4]) == (2, "outcome", 1_700_000_000_124)


def test_canonical_json_sorts_keys_without_spaces_or_ascii_escaping() -> None:
    assert canonical_json({"b": 1, "a": ["x", None, False], "é": "€"}) == (
        '{"a":["x",null,false],"b":1,"é":"€"}'.encode()
    )


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"price": 1.5}, "$.payload.price is a float"),
        ({"price": float("nan")}, "is a float"),
        ({"price": float("inf")}, "is a float"),
        ({"legs": [{"qty": 0.1}]}, "$.payload.legs[0].qty is a float"),
        ({"amount": Decimal("1.5")}, "type Decimal"),
        ({"pair": ("BTC", "USDT")}, "type tuple"),
        ({1: "x"}, "key of type int"),
        ({"raw": b"\x00"}, "type bytes"),
        ({"s": "\ud800"}, "not valid Unicode"),
    ],
)
def test_floats_and_other_non_json_values_in_payload_are_refused_and_nothing_is_written(
    engine: Engine, log: AuditLog, payload: dict, fragment: str
) -> None:
    with pytest.raises(AuditFormatError, match=fragment.replace("[", r"\[").replace("$", r"\$")):
        with write_txn(engine) as s:
            log.append(s, "decision", payload)
    with read_session(engine) as s:
        assert log.head(s) == (0, GENESIS_HASH)


@pytest.mark.parametrize("kind", ["", "Decision", "has space", "x" * 33, "1st", None])
def test_invalid_kind_is_refused(engine: Engine, log: AuditLog, kind: object) -> None:
    with pytest.raises(AuditFormatError, match="audit kind"):
        with write_txn(engine) as s:
            log.append(s, kind, {})  # type: ignore[arg-type]


def test_append_outside_write_txn_is_refused(engine: Engine, log: AuditLog) -> None:
    with read_session(engine) as s:
        with pytest.raises(RuntimeError, match="write_txn"):
            log.append(s, "decision", {})
        assert log.head(s) == (0, GENESIS_HASH)


def test_append_leaves_the_commit_to_the_callers_transaction(engine: Engine, log: AuditLog) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with write_txn(engine) as s:
            assert log.append(s, "decision", {}).seq == 1
            assert log.head(s)[0] == 1  # flushed, visible inside the transaction
            raise Boom
    with read_session(engine) as s:
        assert log.head(s) == (0, GENESIS_HASH)  # rolled back with the caller's transaction
    with write_txn(engine) as s:
        assert log.append(s, "decision", {}).seq == 1


def test_head_of_an_empty_log_is_genesis_and_then_tracks_the_last_record(
    engine: Engine, log: AuditLog
) -> None:
    with read_session(engine) as s:
        assert log.head(s) == (0, "0" * 64)
    with write_txn(engine) as s:
        log.append(s, "admin", {"action": "freeze"})
        last = log.append(s, "admin", {"action": "unfreeze"})
    with read_session(engine) as s:
        assert log.head(s) == (2, last.hash)


def test_checkpoint_is_stored_signed_and_survives_a_file_round_trip(
    engine: Engine, log: AuditLog, tmp_path: Path
) -> None:
    _append_many(engine, log, 3)
    with write_txn(engine) as s:
        cp = log.checkpoint(s, now_ms=1234)
        size, head_hash = log.head(s)
    assert (cp.tree_size, cp.head_hash, cp.ts_ms) == (size, head_hash, 1234) == (3, head_hash, 1234)
    assert cp.verify(log.public_key)
    assert not cp.verify(bytes(nacl.signing.SigningKey.generate().verify_key))
    assert not SignedCheckpoint(4, cp.head_hash, cp.ts_ms, cp.sig).verify(log.public_key)
    with read_session(engine) as s:
        assert s.scalars(select(AuditCheckpointRow)).one().to_checkpoint() == cp
    assert SignedCheckpoint.from_json(cp.to_json()) == cp
    path = tmp_path / "cp.json"
    write_checkpoint_file(path, cp)
    assert read_checkpoint_file(path) == cp


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        '{"type":"checkpoint","tree_size":1,"head_hash":"00","ts_ms":1,"sig":"00"}',
        '{"type":"checkpoint","tree_size":-1,"head_hash":"'
        + "0" * 64
        + '","ts_ms":1,"sig":"'
        + "0" * 128
        + '"}',
        '{"tree_size":1}',
    ],
)
def test_malformed_checkpoint_file_is_refused_with_its_path(tmp_path: Path, text: str) -> None:
    path = tmp_path / "cp.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(AuditFormatError, match="cp.json"):
        read_checkpoint_file(path)


def test_public_key_file_round_trips_and_garbage_is_refused(log: AuditLog, tmp_path: Path) -> None:
    path = tmp_path / "audit.pub"
    write_public_key(path, log.public_key_hex)
    assert load_public_key(path) == log.public_key
    assert path.read_text() == log.public_key_hex + "\n"
    path.write_text("abc\n")
    with pytest.raises(AuditFormatError, match="64 hex"):
        load_public_key(path)
    seed_hex = bytes(log._key).hex()  # the test reaches in only to prove repr never shows it
    assert log.public_key_hex in repr(log) and seed_hex not in repr(log)


def test_export_ends_with_a_checkpoint_over_exactly_the_exported_records(
    engine: Engine, log: AuditLog
) -> None:
    _append_many(engine, log, 4)
    buf = io.StringIO()
    with read_session(engine) as s:
        log.export_jsonl(s, buf, now_ms=99)
        head = log.head(s)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 5 and buf.getvalue().endswith("\n")
    assert [json.loads(line)["seq"] for line in lines[:4]] == [1, 2, 3, 4]
    cp = SignedCheckpoint.from_json(lines[-1])
    assert (cp.tree_size, cp.head_hash, cp.ts_ms) == (4, head[1], 99)
    assert cp.verify(log.public_key)


def test_empty_log_exports_a_lone_checkpoint_that_verifies(engine: Engine, log: AuditLog) -> None:
    buf = io.StringIO()
    with read_session(engine) as s:
        assert log.export_jsonl(s, buf) == 0
    report = verify_jsonl(buf.getvalue().splitlines(), log.public_key)
    assert report.ok and report.records == 0


def test_one_orders_history_is_found_by_client_order_id(engine: Engine, log: AuditLog) -> None:
    with write_txn(engine) as s:
        log.append(s, "decision", {"client_order_id": "bot7-42", "allow": True})
        log.append(s, "decision", {"client_order_id": "bot7-43", "allow": False})
        log.append(s, "outcome", {"client_order_id": "bot7-42", "status": "FILLED"})
        log.append(s, "decision", {"client_order_id": "x" * 129})  # too long to index
    with read_session(engine) as s:
        history = records_for_client_order_id(s, "bot7-42")
        assert [r.seq for r in history] == [1, 3]
        all_records = list(iter_records(s))
        assert history[1] == all_records[2]
        assert hashlib.sha256(history[1].record_bytes).hexdigest() == history[1].hash
        assert (
            s.scalar(select(AuditRecordRow.client_order_id).where(AuditRecordRow.seq == 4)) is None
        )


def test_audit_log_requires_a_signing_key() -> None:
    with pytest.raises(TypeError):
        AuditLog(b"\x00" * 32)  # type: ignore[arg-type]
