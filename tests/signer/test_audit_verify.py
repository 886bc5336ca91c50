"""Audit verification: every kind of tampering fails and names the first bad record.

Exports are built by the real writer on real SQLite files (and PostgreSQL for the live-table
tests when BULKHEAD_TEST_PG_URL is set); tampering edits the export text or the rows with raw SQL.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import nacl.signing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from signer.audit import (
    AUDIT_TABLES,
    AuditLog,
    SignedCheckpoint,
    VerifyReport,
    canonical_json,
    verify_export_bytes,
    verify_file,
    verify_jsonl,
    verify_session,
)
from signer.auditformat import record_sig_message
from signer.db import Base, make_engine, read_session, sqlite_url, write_txn

N = 8
PG_URL = os.environ.get("BULKHEAD_TEST_PG_URL")


def _sqlite_engine(directory: Path) -> Engine:
    eng = make_engine(sqlite_url(directory))
    Base.metadata.create_all(eng, tables=AUDIT_TABLES)
    return eng


@pytest.fixture(params=["sqlite", pytest.param("pg", marks=pytest.mark.pg)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A fresh, empty audit store: a SQLite file, or a private schema in the shared PG database."""
    if request.param == "sqlite":
        eng = _sqlite_engine(tmp_path)
        yield eng
        eng.dispose()
        return
    if not PG_URL:
        pytest.skip("BULKHEAD_TEST_PG_URL is not set")
    schema = f"audit_test_{secrets.token_hex(6)}"
    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    eng = make_engine(f"{PG_URL}{'&' if '?' in PG_URL else '?'}options=-csearch_path%3D{schema}")
    try:
        Base.metadata.create_all(eng, tables=AUDIT_TABLES)
        yield eng
    finally:
        eng.dispose()
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    eng = _sqlite_engine(tmp_path)
    yield eng
    eng.dispose()


@pytest.fixture
def log() -> AuditLog:
    return AuditLog(nacl.signing.SigningKey.generate())


def _fill(engine: Engine, log: AuditLog, n: int = N, bot: str = "bot1") -> None:
    for i in range(1, n + 1):
        with write_txn(engine) as s:
            log.append(s, "decision", {"client_order_id": f"{bot}-{i}", "amount": "0.01", "i": i})


def _export(engine: Engine, log: AuditLog) -> list[str]:
    buf = io.StringIO()
    with read_session(engine) as s:
        log.export_jsonl(s, buf)
    return buf.getvalue().splitlines()


@pytest.fixture
def exported(sqlite_engine: Engine, log: AuditLog) -> list[str]:
    _fill(sqlite_engine, log)
    return _export(sqlite_engine, log)


def _line(seq: int, record: dict, key: nacl.signing.SigningKey) -> str:
    """A record line correctly hashed and signed by `key` (an attacker's, or the real one)."""
    record_text = canonical_json(record).decode()
    digest = hashlib.sha256(record_text.encode()).hexdigest()
    sig = key.sign(record_sig_message(digest)).signature.hex()
    obj = {"type": "record", "seq": seq, "record": record_text, "hash": digest, "sig": sig}
    return canonical_json(obj).decode()


def _edit(line: str, **changes: object) -> str:
    obj = json.loads(line)
    obj.update(changes)
    return canonical_json(obj).decode()


def _record(line: str) -> dict:
    return json.loads(json.loads(line)["record"])


def _fails(report: VerifyReport, seq: int | None, line: int | None, words: str) -> None:
    assert not report.ok, report.summary
    assert (report.first_bad_seq, report.first_bad_line) == (seq, line), report.summary
    assert words.lower() in report.reason.lower(), report.reason
    assert report.summary.startswith("FAILED")


def test_modified_payload_is_named(exported: list[str], log: AuditLog) -> None:
    rec = _record(exported[4])
    rec["payload"]["amount"] = "1000"
    exported[4] = _edit(exported[4], record=canonical_json(rec).decode())
    _fails(verify_jsonl(exported, log.public_key), 5, 5, "do not match its hash")


def test_modified_payload_with_recomputed_hash_fails_on_the_signature(
    exported: list[str], log: AuditLog
) -> None:
    rec = _record(exported[4])
    rec["payload"]["amount"] = "1000"
    new_text = canonical_json(rec).decode()
    exported[4] = _edit(
        exported[4], record=new_text, hash=hashlib.sha256(new_text.encode()).hexdigest()
    )
    _fails(verify_jsonl(exported, log.public_key), 5, 5, "signature does not verify")


def test_modified_hash_is_named(exported: list[str], log: AuditLog) -> None:
    exported[2] = _edit(exported[2], hash="ab" * 32)
    _fails(verify_jsonl(exported, log.public_key), 3, 3, "do not match its hash")


def test_deleted_middle_record_is_named(exported: list[str], log: AuditLog) -> None:
    del exported[3]
    _fails(verify_jsonl(exported, log.public_key), 4, 4, "record 4 is missing")


def test_deleted_record_with_renumbered_lines_breaks_the_chain(
    exported: list[str], log: AuditLog
) -> None:
    del exported[3]
    for i in range(3, N - 1):
        exported[i] = _edit(exported[i], seq=i + 1)
    _fails(verify_jsonl(exported, log.public_key), 4, 4, "holds the signed record 5")


def test_inserted_forged_record_is_named(exported: list[str], log: AuditLog) -> None:
    attacker = nacl.signing.SigningKey.generate()
    prev = json.loads(exported[2])["hash"]
    forged = {"v": 1, "seq": 4, "ts_ms": 1, "kind": "decision", "prev": prev, "payload": {}}
    exported.insert(3, _line(4, forged, attacker))
    _fails(verify_jsonl(exported, log.public_key), 4, 4, "signature does not verify")


def test_swapped_records_are_named(exported: list[str], log: AuditLog) -> None:
    exported[5], exported[6] = exported[6], exported[5]
    _fails(verify_jsonl(exported, log.public_key), 6, 6, "record 6 is missing")


def test_swapped_records_with_renumbered_lines_are_named(
    exported: list[str], log: AuditLog
) -> None:
    exported[5], exported[6] = _edit(exported[6], seq=6), _edit(exported[5], seq=7)
    _fails(verify_jsonl(exported, log.public_key), 6, 6, "holds the signed record 7")


def test_broken_prev_link_is_named_even_when_validly_signed(
    exported: list[str], log: AuditLog
) -> None:
    rec = _record(exported[4])
    rec["prev"] = json.loads(exported[2])["hash"]  # links to record 3, skipping record 4
    exported[4] = _line(5, rec, log._key)  # a signer bug: the real key signed a bad link
    _fails(verify_jsonl(exported, log.public_key), 5, 5, "prev hash does not match record 4")


def test_non_contiguous_seq_is_named(exported: list[str], log: AuditLog) -> None:
    exported[6] = _edit(exported[6], seq=9)
    _fails(verify_jsonl(exported, log.public_key), 7, 7, "record 7 is missing")


def test_truncated_tail_without_its_checkpoint_is_detected(
    exported: list[str], log: AuditLog
) -> None:
    _fails(verify_jsonl(exported[:-3], log.public_key), N - 1, N - 1, "truncated")


def test_truncated_tail_that_keeps_the_checkpoint_is_detected(
    exported: list[str], log: AuditLog
) -> None:
    cut = exported[: N - 2] + exported[-1:]
    _fails(verify_jsonl(cut, log.public_key), N - 1, N - 1, f"holds {N - 2}: records {N - 1}")


def test_records_appended_after_the_checkpoint_are_detected(
    exported: list[str], log: AuditLog
) -> None:
    extra = _record(exported[N - 1])
    extra.update(seq=N + 1, prev=json.loads(exported[N - 1])["hash"])
    _fails(
        verify_jsonl(exported + [_line(N + 1, extra, log._key)], log.public_key),
        None,
        N + 2,
        "continues after its closing checkpoint",
    )


def test_another_keys_signatures_fail_at_the_first_record(exported: list[str]) -> None:
    other = bytes(nacl.signing.SigningKey.generate().verify_key)
    _fails(verify_jsonl(exported, other), 1, 1, "signature does not verify")


def test_forged_closing_checkpoint_is_detected(exported: list[str], log: AuditLog) -> None:
    cp = SignedCheckpoint.from_json(exported[-1])
    forged = SignedCheckpoint.sign(nacl.signing.SigningKey.generate(), N, cp.head_hash, cp.ts_ms)
    exported[-1] = forged.to_json()
    _fails(verify_jsonl(exported, log.public_key), None, N + 1, "closing checkpoint's signature")


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ('{"seq":3,', "not valid JSON"),
        ("", "empty"),
        ("[1,2]", "neither a record nor a checkpoint"),
        ('{"type":"record","seq":3,"price":1.5}', "float"),
    ],
)
def test_malformed_line_is_named(exported: list[str], log: AuditLog, bad: str, words: str) -> None:
    exported[2] = bad
    _fails(verify_jsonl(exported, log.public_key), 3, 3, words)


def test_re_encoded_line_is_not_canonical(exported: list[str], log: AuditLog) -> None:
    exported[1] = json.dumps(json.loads(exported[1]), indent=1).replace("\n", "")
    _fails(verify_jsonl(exported, log.public_key), 2, 2, "not in canonical form")


def test_invalid_utf8_is_named_whether_read_as_bytes_or_text(
    exported: list[str], log: AuditLog, tmp_path: Path
) -> None:
    data = "\n".join(exported).encode() + b"\n"
    at = data.index(b"0.01", data.index(b"\n", data.index(b"\n") + 1))  # inside line 3
    bad = data[:at] + b"\xff" + data[at + 1 :]
    _fails(verify_export_bytes(bad, log.public_key), 3, 3, "not valid UTF-8")
    path = tmp_path / "bad.jsonl"
    path.write_bytes(bad)
    assert verify_file(path, log.public_key).first_bad_line == 3
    with open(path, encoding="utf-8") as fh:  # text mode raises mid-iteration; still a report
        report = verify_jsonl(fh, log.public_key)
    assert not report.ok and "valid UTF-8" in report.reason, report.summary


def test_empty_export_is_truncated(log: AuditLog) -> None:
    _fails(verify_jsonl([], log.public_key), 1, 1, "truncated")


def test_db_tail_deletion_passes_alone_but_fails_against_a_published_checkpoint(
    sqlite_engine: Engine, log: AuditLog
) -> None:
    _fill(sqlite_engine, log)
    with write_txn(sqlite_engine) as s:
        published = log.checkpoint(s)
        third = s.execute(text("SELECT hash FROM audit_records WHERE seq = 3")).scalar_one()
    mid = SignedCheckpoint.sign(log._key, 3, third, 1)  # an earlier checkpoint, at size 3
    with sqlite_engine.begin() as conn:  # an insider with the database but not the key
        conn.execute(text("DELETE FROM audit_records WHERE seq > 6"))
        conn.execute(text("DELETE FROM audit_checkpoints"))
    lines = _export(sqlite_engine, log)
    # The limitation, stated as a test: a fresh export of a truncated database is self-consistent.
    assert verify_jsonl(lines, log.public_key).ok
    assert verify_jsonl(lines, log.public_key, [mid]).ok
    _fails(verify_jsonl(lines, log.public_key, [mid, published]), 7, None, "records 7 onward")
    with read_session(sqlite_engine) as s:
        _fails(verify_session(s, log.public_key, [published]), 7, None, "records 7 onward")


def test_checkpoint_from_a_rewritten_history_is_named(
    sqlite_engine: Engine, log: AuditLog, tmp_path: Path
) -> None:
    (tmp_path / "original").mkdir()
    original = _sqlite_engine(tmp_path / "original")
    _fill(original, log, 3, bot="bot9")
    with write_txn(original) as s:
        published = log.checkpoint(s)
    original.dispose()
    # The same key re-signed a different history (a stolen key, or a signer rebuilt from scratch).
    _fill(sqlite_engine, log)
    report = verify_jsonl(_export(sqlite_engine, log), log.public_key, [published])
    _fails(report, 3, 3, "record 3's hash differs from the given checkpoint #1")


def test_checkpoint_signed_by_another_key_is_refused(exported: list[str], log: AuditLog) -> None:
    cp = SignedCheckpoint.from_json(exported[-1])
    alien = SignedCheckpoint.sign(nacl.signing.SigningKey.generate(), 2, cp.head_hash, 5)
    _fails(verify_jsonl(exported, log.public_key, [alien]), None, None, "not validly signed")


# ---- the live database ---------------------------------------------------------------------


def test_one_byte_changed_in_a_stored_record_is_named(engine: Engine, log: AuditLog) -> None:
    _fill(engine, log)
    with engine.begin() as conn:
        record = conn.execute(text("SELECT record FROM audit_records WHERE seq = 5")).scalar_one()
        at = record.index('"0.01"') + 3  # the "0" after the decimal point
        changed = record[:at] + "9" + record[at + 1 :]
        conn.execute(text("UPDATE audit_records SET record = :r WHERE seq = 5"), {"r": changed})
    with read_session(engine) as s:
        _fails(verify_session(s, log.public_key), 5, None, "record 5's contents do not match")


def test_row_deleted_from_the_middle_is_named(engine: Engine, log: AuditLog) -> None:
    _fill(engine, log)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_records WHERE seq = 4"))
    with read_session(engine) as s:
        _fails(verify_session(s, log.public_key), 4, None, "record 4 is missing")


def test_edited_query_column_is_named(engine: Engine, log: AuditLog) -> None:
    _fill(engine, log)
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_records SET kind = 'admin' WHERE seq = 2"))
    with read_session(engine) as s:
        _fails(verify_session(s, log.public_key), 2, None, "column disagrees")


def test_row_that_is_not_valid_utf8_is_named_not_crashed_on(
    sqlite_engine: Engine, log: AuditLog
) -> None:
    _fill(sqlite_engine, log)
    with sqlite_engine.begin() as conn:  # only SQLite lets raw bytes into a TEXT column
        conn.execute(
            text("UPDATE audit_records SET record = CAST(X'7bff7d' AS TEXT) WHERE seq = 6")
        )
    with read_session(sqlite_engine) as s:
        _fails(verify_session(s, log.public_key), 6, None, "not valid UTF-8")


def test_gap_before_an_unreadable_row_is_named_first(sqlite_engine: Engine, log: AuditLog) -> None:
    _fill(sqlite_engine, log)
    with sqlite_engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_records WHERE seq = 3"))
        conn.execute(text("UPDATE audit_records SET record = CAST(X'ff' AS TEXT) WHERE seq = 6"))
    with read_session(sqlite_engine) as s:
        _fails(verify_session(s, log.public_key), 3, None, "record 3 is missing")


def test_tail_deleted_below_a_stored_checkpoint_is_named(engine: Engine, log: AuditLog) -> None:
    _fill(engine, log)
    with write_txn(engine) as s:
        log.checkpoint(s)
    with engine.begin() as conn:
        conn.execute(text(f"DELETE FROM audit_records WHERE seq > {N - 2}"))
    with read_session(engine) as s:
        _fails(verify_session(s, log.public_key), N - 1, None, "stored checkpoint #1")


# ---- properties: any single-byte change anywhere in an export fails, at its own line ----------

_json_leaf = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=12)
_json = st.recursive(
    _json_leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
_payloads = st.lists(st.dictionaries(st.text(max_size=8), _json, max_size=4), max_size=5)


@pytest.fixture(scope="module")
def scratch() -> Iterator[tuple[Engine, AuditLog]]:
    with tempfile.TemporaryDirectory() as d:
        eng = _sqlite_engine(Path(d))
        yield eng, AuditLog(nacl.signing.SigningKey.generate())
        eng.dispose()


def _export_bytes(engine: Engine, log: AuditLog, payloads: list[dict]) -> bytes:
    with write_txn(engine) as s:
        s.execute(text("DELETE FROM audit_records"))
        for i, payload in enumerate(payloads):
            log.append(s, "decision" if i % 2 else "outcome", payload, now_ms=1_700_000_000_000 + i)
    buf = io.StringIO()
    with read_session(engine) as s:
        log.export_jsonl(s, buf)
    return buf.getvalue().encode("utf-8")


def _assert_mutation_caught(data: bytes, pos: int, new: int, public_key: bytes, n: int) -> None:
    mutated = data[:pos] + bytes([new]) + data[pos + 1 :]
    report = verify_export_bytes(mutated, public_key)
    line = data[:pos].count(b"\n") + 1
    assert not report.ok, f"byte {pos} ({data[pos]:#x}->{new:#x}) was not detected"
    assert report.first_bad_line == line, (pos, report.summary)
    if line <= n:
        assert report.first_bad_seq == line, (pos, report.summary)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads=_payloads, where=st.floats(0, 1, exclude_max=True), new=st.integers(0, 255))
def test_any_single_byte_change_fails_at_the_changed_line(
    scratch: tuple[Engine, AuditLog], payloads: list[dict], where: float, new: int
) -> None:
    engine, log = scratch
    data = _export_bytes(engine, log, payloads)
    assert verify_export_bytes(data, log.public_key).ok
    pos = int(where * len(data))
    if data[pos] == new:
        new ^= 0x01
    _assert_mutation_caught(data, pos, new, log.public_key, len(payloads))


def test_every_byte_of_a_small_export_is_protected(scratch: tuple[Engine, AuditLog]) -> None:
    engine, log = scratch
    payloads = [{"amount": "0.5", "note": 'é\u0001"\\'}, {"n": -1, "ok": [True, None]}, {}]
    data = _export_bytes(engine, log, payloads)
    for pos in range(len(data)):
        for flip in (0x01, 0x20):
            _assert_mutation_caught(data, pos, data[pos] ^ flip, log.public_key, len(payloads))
        _assert_mutation_caught(data, pos, ord("\n") if data[pos] != 10 else 32, log.public_key, 3)
