"""The audit log writer: tables, append, head, checkpoints and JSON Lines export.

Signed tree heads (RFC 6962 roots over the same records) are issued by `signer.auditheads`;
their table lives here with the others.

One chain for the whole deployment. `append` must run inside `signer.db.write_txn`, which holds
the global write lock (SQLite ``BEGIN IMMEDIATE`` / PostgreSQL advisory lock), and it reads the
head *inside* that transaction by primary key. No head is cached in memory: with several signer
replicas on one PostgreSQL a cached head would go stale and fork the chain. The primary key on
``seq`` is the last line of defence: a second writer that somehow raced would fail on insert.

Nothing here commits. The caller's `write_txn` commit makes the record durable, and only after
that may a signature or exchange request leave the process.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

import nacl.signing
from sqlalchemy import BigInteger, Integer, String, Text, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapped, Session, mapped_column

from signer import fastsql
from signer.auditformat import (
    GENESIS_HASH,
    AuditFormatError,
    SignedCheckpoint,
    build_record,
    check_kind,
    client_order_id_of,
    export_record_line,
    now_ms,
    record_hash,
    record_sig_message,
)
from signer.audittreehead import SignedTreeHead
from signer.db import WRITE_LOCK_ID, WRITE_LOCK_TXN, Base
from signer.errors import AuditUnavailable

_SEQ_TYPE = BigInteger().with_variant(Integer, "sqlite")  # SQLite: the seq is the rowid
_LOCK_CHECKED = WRITE_LOCK_TXN  # set by write_txn itself, or here after one check
_EXPORT_BATCH = 1000
# The two statements of every append, as plain SQL (see `signer.fastsql`).
# session.info: ((transaction, savepoint), seq, hash) of the last record this transaction
# appended, so the next append in it needs no head read. A different savepoint (or none, after
# an ORM savepoint ended) re-reads it; a raw SAVEPOINT rollback calls `forget_cached_head`.
_HEAD_KEY = "bulkhead.audit.head"

_HEAD_SQL = "SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1"
_INSERT_SQL = (
    "INSERT INTO audit_records (seq, ts_ms, kind, record, hash, sig, client_order_id)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)


class AuditRecordRow(Base):
    """One audit record. `record` is the exact canonical text that `hash` and `sig` cover;
    `ts_ms`, `kind` and `client_order_id` are unsigned copies for querying (verify_session
    checks they agree with the record)."""

    __tablename__ = "audit_records"

    seq: Mapped[int] = mapped_column(_SEQ_TYPE, primary_key=True, autoincrement=False)
    ts_ms: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(32))
    record: Mapped[str] = mapped_column(Text)
    hash: Mapped[str] = mapped_column(String(64))
    sig: Mapped[str] = mapped_column(String(128))
    client_order_id: Mapped[str | None] = mapped_column(String(128), index=True)


class AuditCheckpointRow(Base):
    """A signed checkpoint the signer issued; kept so verify_session can detect tail deletion."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tree_size: Mapped[int] = mapped_column(BigInteger)
    head_hash: Mapped[str] = mapped_column(String(64))
    ts_ms: Mapped[int] = mapped_column(BigInteger)
    sig: Mapped[str] = mapped_column(String(128))

    def to_checkpoint(self) -> SignedCheckpoint:
        return SignedCheckpoint(self.tree_size, self.head_hash, self.ts_ms, self.sig)


class AuditTreeHeadRow(Base):
    """A signed tree head the signer issued, with the frontier (compact range) it was computed
    from, so the next head hashes only the records appended since (`signer.auditheads`)."""

    __tablename__ = "audit_tree_heads"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tree_size: Mapped[int] = mapped_column(BigInteger, index=True)
    root_hash: Mapped[str] = mapped_column(String(64))
    head_hash: Mapped[str] = mapped_column(String(64))
    ts_ms: Mapped[int] = mapped_column(BigInteger)
    sig: Mapped[str] = mapped_column(String(128))
    frontier: Mapped[str] = mapped_column(Text)  # hex of the frontier hashes, largest first

    def to_tree_head(self) -> SignedTreeHead:
        return SignedTreeHead(self.tree_size, self.root_hash, self.head_hash, self.ts_ms, self.sig)


AUDIT_TABLES = [AuditRecordRow.__table__, AuditCheckpointRow.__table__, AuditTreeHeadRow.__table__]


@dataclass(frozen=True)
class AppendedRecord:
    seq: int
    hash: str


@dataclass(frozen=True)
class StoredRecord:
    """A record as stored: `record_bytes` are exactly what `hash` (and a Merkle leaf) covers."""

    seq: int
    record_bytes: bytes
    hash: str
    sig: str


class AuditLog:
    """Appends signed, hash-chained records with the signer's audit key."""

    def __init__(self, signing_key: nacl.signing.SigningKey) -> None:
        if not isinstance(signing_key, nacl.signing.SigningKey):
            raise TypeError("AuditLog needs a nacl.signing.SigningKey")
        self._key = signing_key
        self._public_key_hex = bytes(signing_key.verify_key).hex()

    def __repr__(self) -> str:
        return f"AuditLog(public_key={self._public_key_hex})"

    @property
    def public_key_hex(self) -> str:
        return self._public_key_hex

    @property
    def public_key(self) -> bytes:
        return bytes.fromhex(self._public_key_hex)

    def append(
        self,
        session: Session,
        kind: str,
        payload: dict[str, Any],
        now_ms: int | None = None,
        *,
        after: AppendedRecord | None = None,
    ) -> AppendedRecord:
        """Add one record in the caller's write transaction (executed, never committed here).

        `after`: the record the caller appended last *in this same transaction* (no savepoint
        in between), which is then the head: it saves re-reading the head under the lock.

        Raises AuditFormatError for a bad kind or payload (nothing written), RuntimeError when
        called outside `write_txn`, AuditUnavailable when the database refuses the insert.
        """
        check_kind(kind)
        if not isinstance(payload, dict):
            raise AuditFormatError(f"payload must be a dict, got {type(payload).__name__}")
        ts = _now() if now_ms is None else now_ms
        _require_write_lock(session)
        txn = (session.get_transaction(), session.get_nested_transaction())
        cached = session.info.get(_HEAD_KEY)
        if after is not None:
            size, prev = after.seq, after.hash
        elif cached is not None and cached[0][0] is txn[0] and cached[0][1] is txn[1]:
            size, prev = cached[1], cached[2]
        else:
            size, prev = self.head(session)
        seq = size + 1
        record_bytes = build_record(seq, ts, kind, prev, payload)
        digest = record_hash(record_bytes)
        sig = self._key.sign(record_sig_message(digest)).signature.hex()
        row = {
            "seq": seq,
            "ts_ms": ts,
            "kind": kind,
            "record": record_bytes.decode("utf-8"),
            "hash": digest,
            "sig": sig,
            "client_order_id": client_order_id_of(payload),
        }
        try:  # runs now on SQLite; on PostgreSQL with the next round trip (fastsql.write)
            fastsql.write(session, _INSERT_SQL, tuple(row.values()))
        except SQLAlchemyError as exc:
            raise AuditUnavailable(f"audit record {seq} could not be written") from exc
        session.info[_HEAD_KEY] = (txn, seq, digest)
        return AppendedRecord(seq=seq, hash=digest)

    def head(self, session: Session) -> tuple[int, str]:
        """(number of records, hash of the last one); (0, GENESIS_HASH) for an empty log."""
        last = fastsql.run(session, _HEAD_SQL).first()
        if last is None:
            return 0, GENESIS_HASH
        return int(last.seq), str(last.hash)

    def checkpoint(self, session: Session, now_ms: int | None = None) -> SignedCheckpoint:
        """Sign the current head and store it (the caller commits); publish the result elsewhere."""
        size, head_hash = self.head(session)
        cp = SignedCheckpoint.sign(self._key, size, head_hash, _now() if now_ms is None else now_ms)
        session.add(
            AuditCheckpointRow(
                tree_size=cp.tree_size, head_hash=cp.head_hash, ts_ms=cp.ts_ms, sig=cp.sig
            )
        )
        session.flush()
        return cp

    def sign_tree_head(
        self, tree_size: int, root_hash: str, head_hash: str, ts_ms: int
    ) -> SignedTreeHead:
        """Sign an RFC 6962 tree head (computed by `signer.auditheads`, which stores it)."""
        return SignedTreeHead.sign(self._key, tree_size, root_hash, head_hash, ts_ms)

    def export_jsonl(self, session: Session, out: TextIO, now_ms: int | None = None) -> int:
        """Write every record as one JSON line, then a fresh checkpoint over exactly those records.

        The checkpoint is computed from the rows written, not from a second head read, so a
        record appended by another replica mid-export cannot make a good export look truncated.
        Records are written as stored, even if tampered, so the verifier can name the bad one.
        """
        count, last_hash = 0, GENESIS_HASH
        for rec in iter_records(session):
            out.write(
                export_record_line(rec.seq, rec.record_bytes.decode("utf-8"), rec.hash, rec.sig)
            )
            out.write("\n")
            count, last_hash = count + 1, rec.hash
        ts = _now() if now_ms is None else now_ms
        out.write(SignedCheckpoint.sign(self._key, count, last_hash, ts).to_json() + "\n")
        return count


def iter_records(session: Session, start_seq: int = 1) -> Iterator[StoredRecord]:
    """Stored records in seq order, streamed in batches (for export, verification, Merkle trees)."""
    stmt = (
        select(AuditRecordRow.seq, AuditRecordRow.record, AuditRecordRow.hash, AuditRecordRow.sig)
        .where(AuditRecordRow.seq >= start_seq)
        .order_by(AuditRecordRow.seq)
        .execution_options(yield_per=_EXPORT_BATCH)
    )
    for row in session.execute(stmt):
        yield StoredRecord(int(row.seq), row.record.encode("utf-8"), row.hash, row.sig)


def records_for_client_order_id(session: Session, client_order_id: str) -> list[StoredRecord]:
    """Every record whose payload carried this top-level client_order_id, in seq order."""
    rows = session.execute(
        select(AuditRecordRow.seq, AuditRecordRow.record, AuditRecordRow.hash, AuditRecordRow.sig)
        .where(AuditRecordRow.client_order_id == client_order_id)
        .order_by(AuditRecordRow.seq)
    )
    return [StoredRecord(int(r.seq), r.record.encode("utf-8"), r.hash, r.sig) for r in rows]


def records_of_kind(session: Session, kind: str) -> list[StoredRecord]:
    """Every record whose (unsigned, query-only) kind column says `kind`, in seq order."""
    rows = session.execute(
        select(AuditRecordRow.seq, AuditRecordRow.record, AuditRecordRow.hash, AuditRecordRow.sig)
        .where(AuditRecordRow.kind == kind)
        .order_by(AuditRecordRow.seq)
    )
    return [StoredRecord(int(r.seq), r.record.encode("utf-8"), r.hash, r.sig) for r in rows]


def stored_checkpoints(session: Session) -> list[SignedCheckpoint]:
    rows = session.scalars(select(AuditCheckpointRow).order_by(AuditCheckpointRow.id))
    return [row.to_checkpoint() for row in rows]


def stored_tree_heads(session: Session) -> list[SignedTreeHead]:
    rows = session.scalars(select(AuditTreeHeadRow).order_by(AuditTreeHeadRow.id))
    return [row.to_tree_head() for row in rows]


def _now() -> int:
    return now_ms()


def forget_cached_head(session: Session) -> None:
    """After a rollback to a savepoint: the next append re-reads the head from the database."""
    session.info.pop(_HEAD_KEY, None)


def _require_write_lock(session: Session) -> None:
    """Refuse to append unless this transaction holds the signer's global write lock.

    A record appended without the lock could read a head another replica is about to extend.
    Checked once per transaction (the result is remembered on the session's transaction);
    `write_txn` records the transaction it locked, so its sessions pass without a round trip.
    """
    txn = session.get_transaction()
    if txn is not None and session.info.get(_LOCK_CHECKED) is txn:
        return
    conn = session.connection()
    dialect = conn.dialect.name
    if dialect == "sqlite":
        held = conn.get_execution_options().get("sqlite_begin") == "IMMEDIATE"
    elif dialect == "postgresql":
        held = bool(
            session.execute(
                text(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
                    "AND pid = pg_backend_pid() AND granted AND classid::bigint = :hi "
                    "AND objid::bigint = :lo AND objsubid = 1)"
                ),
                {"hi": WRITE_LOCK_ID >> 32, "lo": WRITE_LOCK_ID & 0xFFFFFFFF},
            ).scalar()
        )
    else:
        held = False
    if not held:
        raise RuntimeError(
            "AuditLog.append must run inside signer.db.write_txn (the global write lock), "
            f"so replicas keep one chain; this {dialect} session does not hold it"
        )
    session.info[_LOCK_CHECKED] = session.get_transaction()
