"""Offline and live verification of the audit log; stops at, and names, the first bad record.

An export is JSON Lines: line k holds record k, then one final checkpoint line signed at export
time. Every line must be byte-for-byte canonical JSON, so *any* single-byte change to an export
fails verification (there is no insignificant whitespace or escape to hide in). Per record, in
order: contiguous seq, hash format, SHA-256 of the record text, Ed25519 signature, canonical
well-formed record with the same seq, prev link to the previous record's hash.

Truncation: the export's own final checkpoint covers exactly the records in it. Someone who
controls the signer's database can delete the newest rows *before* an export is made; only a
checkpoint kept outside (passed in `checkpoints`) or stored in `audit_checkpoints` reveals that.
A signed tree head (`signer.audittreehead`) works as a checkpoint too, and its RFC 6962 root is
checked as well: the walk keeps the Merkle frontier (O(log n) hashes) as it goes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from signer import merkle
from signer.auditformat import (
    GENESIS_HASH,
    AuditFormatError,
    SignedCheckpoint,
    canonical_json,
    client_order_id_of,
    is_hex64,
    parse_record,
    record_hash,
    record_sig_message,
    signature_ok,
    verify_key_of,
)
from signer.auditlog import AuditRecordRow, stored_checkpoints, stored_tree_heads
from signer.audittreehead import SignedTreeHead

_PAGE = 500
_LINE_KEYS = frozenset({"type", "seq", "record", "hash", "sig"})


@dataclass(frozen=True)
class VerifyReport:
    """Outcome of a verification; on failure `reason` is one sentence naming where and why."""

    ok: bool
    records: int  # records verified good (all of them when ok)
    first_bad_seq: int | None
    first_bad_line: int | None
    reason: str

    @property
    def summary(self) -> str:
        if self.ok:
            return f"OK: {self.records} records verified. {self.reason}"
        return f"FAILED after {self.records} good records: {self.reason}"

    def __str__(self) -> str:
        return self.summary


class _Bad(Exception):
    """Internal: the first failure found; becomes a VerifyReport."""

    def __init__(self, seq: int | None, reason: str, line: int | None = None) -> None:
        super().__init__(reason)
        self.seq = seq
        self.reason = reason
        self.line = line


Head = SignedCheckpoint | SignedTreeHead


class _Chain:
    """Walks records in order, keeping only the running head and the Merkle frontier
    (O(log n) memory), and checks every given checkpoint or tree head at its size."""

    def __init__(self, public_key: bytes, checkpoints: Sequence[tuple[Head, str]]):
        self.key = verify_key_of(public_key)
        self.size = 0
        self.head = GENESIS_HASH
        self.frontier = merkle.Frontier()
        self.by_size: dict[int, list[tuple[Head, str]]] = {}
        for cp, label in checkpoints:
            if not cp.verify(public_key):
                raise _Bad(None, f"{label} is not validly signed by this public key.")
            self.by_size.setdefault(cp.tree_size, []).append((cp, label))
        self._check_checkpoints_at(0)

    def feed(
        self, claimed_seq: int, record_text: str, hash_hex: str, sig_hex: str
    ) -> dict[str, Any]:
        """Verify the next record; returns the parsed record or raises _Bad."""
        seq = self.check_seq(claimed_seq)
        if not is_hex64(hash_hex):
            raise _Bad(seq, f"record {seq}'s hash is not 64 lowercase hex characters.")
        if record_hash(record_text.encode("utf-8")) != hash_hex:
            raise _Bad(seq, f"record {seq}'s contents do not match its hash: it was modified.")
        if not signature_ok(self.key, record_sig_message(hash_hex), sig_hex):
            raise _Bad(seq, f"record {seq}'s signature does not verify under this public key.")
        try:
            record = parse_record(record_text)
        except AuditFormatError as exc:
            raise _Bad(seq, f"record {seq} is signed but malformed: {exc}.") from exc
        if record["seq"] != seq:
            raise _Bad(
                seq,
                f"position {seq} holds the signed record {record['seq']}: records "
                "were deleted, inserted or renumbered.",
            )
        if record["prev"] != self.head:
            raise _Bad(
                seq,
                f"record {seq}'s prev hash does not match record {seq - 1}'s hash: the "
                "chain is broken (a record before it was removed, replaced or reordered).",
            )
        self.size, self.head = seq, hash_hex
        self.frontier.append(merkle.leaf_hash(record_text.encode("utf-8")))
        self._check_checkpoints_at(seq)
        return record

    def check_seq(self, claimed_seq: int) -> int:
        """The next record must carry the next seq; returns it."""
        seq = self.size + 1
        if claimed_seq != seq:
            if claimed_seq > seq:
                why = f"record {seq} is missing (found record {claimed_seq} in its place)"
            else:
                why = f"record {claimed_seq} appears again or out of order (expected {seq})"
            raise _Bad(seq, f"{why}: records were deleted, inserted or reordered.")
        return seq

    def _check_checkpoints_at(self, size: int) -> None:
        for cp, label in self.by_size.get(size, ()):
            if cp.head_hash != self.head:
                where = f"record {size}'s hash" if size else "the empty log's genesis hash"
                raise _Bad(
                    size or None,
                    f"{where} differs from {label} (tree size {size}): the "
                    "log was rewritten at or before that point.",
                )
            if isinstance(cp, SignedTreeHead) and cp.root_hash != self.frontier.root().hex():
                raise _Bad(
                    size or None,
                    f"the Merkle root of records 1..{size} differs from {label}'s root hash: "
                    "the head was signed over different records.",
                )

    def check_not_truncated(self) -> None:
        beyond = [s for s in self.by_size if s > self.size]
        if beyond:
            _cp, label = self.by_size[min(beyond)][0]
            raise _Bad(
                self.size + 1,
                f"the log ends at record {self.size} but {label} covers "
                f"{min(beyond)} records: records {self.size + 1} onward were removed.",
            )


def _external(checkpoints: Sequence[Head]) -> list[tuple[Head, str]]:
    return [
        (cp, f"the given {_kind(cp)} #{i + 1} (tree size {cp.tree_size})")
        for i, cp in enumerate(checkpoints)
    ]


def _kind(cp: Head) -> str:
    return "tree head" if isinstance(cp, SignedTreeHead) else "checkpoint"


def verify_jsonl(
    lines: Iterable[str | bytes],
    public_key: bytes,
    checkpoints: Sequence[Head] = (),
) -> VerifyReport:
    """Verify an export given as lines (str or bytes, with or without their trailing newline)."""
    chain: _Chain | None = None
    try:
        chain = _Chain(public_key, _external(checkpoints))
        _walk_export(chain, lines, public_key)
    except _Bad as bad:
        size = chain.size if chain is not None else 0
        where = f"Line {bad.line}: " if bad.line else ""
        return VerifyReport(False, size, bad.seq, bad.line, where + _capitalise(bad.reason))
    extra = f" {len(checkpoints)} given checkpoint(s) or tree head(s) match." if checkpoints else ""
    return VerifyReport(
        True,
        chain.size,
        None,
        None,
        f"Chain, signatures and closing checkpoint are intact (head {chain.head[:16]}...).{extra}",
    )


def _walk_export(chain: _Chain, lines: Iterable[str | bytes], public_key: bytes) -> None:
    closing: SignedCheckpoint | None = None
    closing_line = 0
    lineno = 0
    for lineno, raw in enumerate(_decoded(lines), start=1):
        try:
            if closing is not None:
                raise _Bad(None, "the export continues after its closing checkpoint.")
            obj = _parse_line(raw, chain.size + 1)
            if obj["type"] == "record":
                _check_record_line(obj, chain.size + 1)
                chain.feed(obj["seq"], obj["record"], obj["hash"], obj["sig"])
            else:
                closing, closing_line = _parse_closing(obj), lineno
        except _Bad as bad:
            bad.line = lineno
            raise
    if closing is None:
        raise _Bad(
            chain.size + 1,
            f"the export ends after record {chain.size} without its closing signed checkpoint: "
            "it was truncated.",
            line=lineno + 1,
        )
    if not closing.verify(public_key):
        raise _Bad(None, "the closing checkpoint's signature does not verify.", line=closing_line)
    if closing.tree_size > chain.size:
        raise _Bad(
            chain.size + 1,
            f"the closing checkpoint covers {closing.tree_size} records but the export holds "
            f"{chain.size}: records {chain.size + 1} onward were removed.",
            line=closing_line,
        )
    if closing.tree_size < chain.size:
        raise _Bad(
            closing.tree_size + 1,
            f"the closing checkpoint covers only {closing.tree_size} records: record "
            f"{closing.tree_size + 1} onward were added after it was signed.",
            line=closing.tree_size + 1,
        )
    if closing.head_hash != chain.head:
        raise _Bad(
            chain.size or None,
            "the closing checkpoint's head hash does not match the last record's hash.",
            line=closing_line,
        )
    chain.check_not_truncated()


def _decoded(lines: Iterable[str | bytes]) -> Iterator[str | bytes | None]:
    """Pass lines through; a text-mode file that hits invalid UTF-8 yields None for that line."""
    it = iter(lines)
    while True:
        try:
            yield next(it)
        except StopIteration:
            return
        except UnicodeDecodeError:
            yield None  # the rest of the file cannot be read as text; reported at this line
            return


def _parse_closing(obj: dict[str, Any]) -> SignedCheckpoint:
    try:
        return SignedCheckpoint.from_json(json.dumps(obj))
    except AuditFormatError as exc:
        raise _Bad(None, f"the closing checkpoint is malformed: {exc}.") from exc


def verify_export_bytes(
    data: bytes, public_key: bytes, checkpoints: Sequence[Head] = ()
) -> VerifyReport:
    """Verify a whole export held in memory (lines split on b"\\n" only)."""
    parts = data.split(b"\n")
    if parts and parts[-1] == b"":
        parts.pop()
    return verify_jsonl(parts, public_key, checkpoints)


def verify_file(
    path: str | os.PathLike[str], public_key: bytes, checkpoints: Sequence[Head] = ()
) -> VerifyReport:
    """Verify an export file, streaming it line by line (binary, so bytes are checked exactly)."""
    with open(path, "rb") as fh:
        return verify_jsonl(fh, public_key, checkpoints)


def _parse_line(raw: str | bytes | None, expected_seq: int) -> dict[str, Any]:
    if raw is None:
        raise _Bad(
            expected_seq,
            "the text stops being valid UTF-8 at or after this line (verify_file reads bytes "
            "and names the exact line).",
        )
    if isinstance(raw, bytes):
        raw = raw[:-1] if raw.endswith(b"\n") else raw
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Bad(expected_seq, "the line is not valid UTF-8.") from exc
    else:
        line = raw[:-1] if raw.endswith("\n") else raw
    if not line:
        raise _Bad(expected_seq, "the line is empty.")
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise _Bad(expected_seq, f"the line is not valid JSON ({str(exc)[:80]}).") from exc
    if not isinstance(obj, dict) or obj.get("type") not in ("record", "checkpoint"):
        raise _Bad(expected_seq, "the line is neither a record nor a checkpoint.")
    try:
        canonical = canonical_json(obj).decode("utf-8")
    except AuditFormatError as exc:
        raise _Bad(
            expected_seq, f"the line holds a value JSON exports never contain: {exc}."
        ) from exc
    if canonical != line:
        raise _Bad(expected_seq, "the line is not in canonical form: it was edited or re-encoded.")
    return obj


def _check_record_line(obj: dict[str, Any], expected_seq: int) -> None:
    if set(obj) != _LINE_KEYS:
        raise _Bad(expected_seq, f"a record line has exactly the keys {sorted(_LINE_KEYS)}.")
    seq = obj["seq"]
    if isinstance(seq, bool) or not isinstance(seq, int):
        raise _Bad(expected_seq, "the record line's seq is not an integer.")
    if not isinstance(obj["record"], str) or not isinstance(obj["sig"], str):
        raise _Bad(expected_seq, "the record line's record and sig must be strings.")
    if not isinstance(obj["hash"], str):
        raise _Bad(expected_seq, "the record line's hash must be a string.")


def verify_session(
    session: Session, public_key: bytes, checkpoints: Sequence[Head] = ()
) -> VerifyReport:
    """Verify the live tables: every row, its query columns, all stored checkpoints and tree
    heads."""
    chain: _Chain | None = None
    stored: list[tuple[Head, str]] = [
        (cp, f"stored checkpoint #{i + 1}") for i, cp in enumerate(stored_checkpoints(session))
    ]
    stored += [
        (th, f"stored tree head #{i + 1}") for i, th in enumerate(stored_tree_heads(session))
    ]
    try:
        chain = _Chain(public_key, _external(checkpoints) + stored)
        for row in _rows(session, chain):
            record = chain.feed(int(row.seq), row.record, row.hash, row.sig)
            if (row.ts_ms, row.kind) != (record["ts_ms"], record["kind"]) or (
                row.client_order_id != client_order_id_of(record["payload"])
            ):
                raise _Bad(
                    row.seq,
                    f"record {row.seq}'s ts_ms, kind or client_order_id column "
                    "disagrees with its signed record: the row was edited.",
                )
        chain.check_not_truncated()
    except _Bad as bad:
        size = chain.size if chain is not None else 0
        return VerifyReport(False, size, bad.seq, None, _capitalise(bad.reason))
    return VerifyReport(
        True,
        chain.size,
        None,
        None,
        f"Chain, signatures and {len(stored)} stored checkpoint(s) and tree head(s) are intact.",
    )


def _rows(session: Session, chain: _Chain) -> Iterator[Row[Any]]:
    """Stream the record rows in seq order, a page at a time (keyset pagination).

    SQLite lets an insider store bytes that are not UTF-8 in a TEXT column; reading such a row
    raises. The page is then re-read row by row so the finding names the exact record.
    """
    table = AuditRecordRow.__table__
    last = 0
    while True:
        after = table.c.seq > last
        try:
            page = session.execute(
                select(table).where(after).order_by(table.c.seq).limit(_PAGE)
            ).all()
        except (UnicodeDecodeError, OperationalError) as exc:
            _reraise_unless_decode_error(exc)
            page = []
            for row in _rows_one_by_one(session, chain, after):
                yield row  # the caller verifies each row before the next one is read
                page.append(row)
            if not page:
                return
        else:
            if not page:
                return
            yield from page
        last = int(page[-1].seq)


def _rows_one_by_one(session: Session, chain: _Chain, after: Any) -> Iterator[Row[Any]]:
    table = AuditRecordRow.__table__
    seqs = session.scalars(select(table.c.seq).where(after).order_by(table.c.seq).limit(_PAGE))
    for seq in seqs.all():
        try:
            yield session.execute(select(table).where(table.c.seq == seq)).one()
        except (UnicodeDecodeError, OperationalError) as exc:
            _reraise_unless_decode_error(exc)
            chain.check_seq(seq)  # a gap before this row is the first finding
            raise _Bad(
                seq,
                f"record {seq}'s row is not valid UTF-8 text: it was corrupted or edited "
                "outside the signer.",
            ) from exc


def _reraise_unless_decode_error(exc: Exception) -> None:
    if not isinstance(exc, UnicodeDecodeError) and "decode" not in str(exc).lower():
        raise exc


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]
