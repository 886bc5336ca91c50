"""Signed tree heads: issue them (incrementally), store them, and anchor them outside the signer.

A head is computed from a read snapshot (never inside the write lock, so signing is not
stalled by hashing), resuming from the frontier stored with the previous head: a periodic head
costs only the records appended since. Before signing, the new records must continue the chain
the previous head covered (contiguous seq, each prev = the previous hash); otherwise the signer
refuses to sign a head over a log that was edited.

The external anchor is a file (one head per line, appended and fsynced) or a directory (one
file per head) that the operator keeps outside the data directory -- ideally on another host or
an append-only mount -- so whoever controls the signer's database cannot rewrite history and
the heads already published.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from signer import merkle
from signer.auditformat import GENESIS_HASH, AuditFormatError
from signer.auditlog import AuditLog, AuditTreeHeadRow, StoredRecord, iter_records
from signer.audittreehead import SignedTreeHead, read_heads
from signer.db import read_session, write_txn
from signer.errors import ConfigError, SignerError


class AuditIntegrityError(SignerError):
    """The stored log does not continue the chain (or match the head) it should: nothing signed."""


class AnchorError(SignerError):
    """The head was signed and stored, but writing it to the external anchor failed."""


def check_anchor(anchor: Path | None, data_dir: Path, name: str = "anchor_path") -> Path | None:
    """Refuse an anchor inside the data directory: it must survive whoever controls that.
    `name` is the setting or flag the path came from, for the error message."""
    if anchor is None:
        return None
    resolved, data = anchor.resolve(), data_dir.resolve()
    if resolved == data or data in resolved.parents:
        raise ConfigError(
            f"{name}: {anchor} is inside the data directory {data_dir}; put the anchor "
            "outside it (another disk, host or append-only mount)"
        )
    if not anchor.exists() and not anchor.parent.is_dir():
        raise ConfigError(
            f"{name}: {anchor} does not exist and neither does its directory "
            f"{anchor.parent}; create the directory (or the file) first"
        )
    return anchor


def write_anchor(anchor: Path, head: SignedTreeHead) -> Path:
    """Append the head to the anchor file, or add one file to the anchor directory; fsynced."""
    line = head.to_json() + "\n"
    if anchor.is_dir():
        path = anchor / f"sth-{head.tree_size:012d}-{head.ts_ms}.json"
        tmp = anchor / f".{path.name}.{secrets.token_hex(4)}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return path
    with open(anchor, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())
    return anchor


def latest_tree_head(session: Session) -> SignedTreeHead | None:
    row = _latest_row(session)
    return row.to_tree_head() if row is not None else None


def _latest_row(session: Session) -> AuditTreeHeadRow | None:
    return session.scalars(
        select(AuditTreeHeadRow)
        .order_by(AuditTreeHeadRow.tree_size.desc(), AuditTreeHeadRow.id.desc())
        .limit(1)
    ).first()


def _resume(session: Session, audit: AuditLog) -> tuple[merkle.Frontier, str]:
    """The latest stored head's frontier and head hash, when it is intact; else the start."""
    row = _latest_row(session)
    if row is not None and row.to_tree_head().verify(audit.public_key):
        try:
            raw = bytes.fromhex(row.frontier)
            hashes = [raw[i : i + 32] for i in range(0, len(raw), 32)]
            frontier = merkle.Frontier(row.tree_size, hashes)
        except ValueError:
            frontier = None
        if frontier is not None and frontier.root().hex() == row.root_hash:
            return frontier, row.head_hash
    return merkle.Frontier(), GENESIS_HASH


def extend_chain(frontier: merkle.Frontier, head_hash: str, records: Iterator[StoredRecord]) -> str:
    """Add each record to the frontier, checking it continues the chain; returns the new head."""
    for rec in records:
        expected = frontier.size + 1
        if rec.seq != expected:
            raise AuditIntegrityError(
                f"audit record {expected} is missing (found {rec.seq}); no tree head was signed"
            )
        try:
            prev = json.loads(rec.record_bytes)["prev"]
        except (ValueError, KeyError, TypeError):
            prev = None
        if prev != head_hash:
            raise AuditIntegrityError(
                f"audit record {rec.seq} does not link to record {rec.seq - 1}; "
                "no tree head was signed (run `bulkhead-signer audit verify`)"
            )
        frontier.append(merkle.leaf_hash(rec.record_bytes))
        head_hash = rec.hash
    return head_hash


def issue_tree_head(
    engine: Engine, audit: AuditLog, now_ms: int, anchor: Path | None = None
) -> SignedTreeHead:
    """Sign a head over every record committed now, store it, and write it to the anchor."""
    with read_session(engine) as s:
        frontier, head_hash = _resume(s, audit)
        head_hash = extend_chain(frontier, head_hash, iter_records(s, frontier.size + 1))
    head = audit.sign_tree_head(frontier.size, frontier.root().hex(), head_hash, now_ms)
    with write_txn(engine) as s:
        s.add(
            AuditTreeHeadRow(
                tree_size=head.tree_size,
                root_hash=head.root_hash,
                head_hash=head.head_hash,
                ts_ms=head.ts_ms,
                sig=head.sig,
                frontier=b"".join(frontier.hashes).hex(),
            )
        )
    if anchor is not None:
        try:
            write_anchor(anchor, head)
        except OSError as exc:
            raise AnchorError(
                f"tree head {head.tree_size} was signed and stored, but the anchor {anchor} "
                f"could not be written: {exc.strerror or type(exc).__name__}"
            ) from exc
    return head


def log_tree(session: Session, size: int | None = None) -> merkle.MerkleTree:
    """The Merkle tree of the stored records (the first `size` of them), one streaming pass."""
    leaves = []
    for rec in iter_records(session):
        if size is not None and len(leaves) >= size:
            break
        leaves.append(merkle.leaf_hash(rec.record_bytes))
    return merkle.MerkleTree(leaves)


def read_tree_head(path: Path) -> SignedTreeHead:
    """The newest signed tree head in a head file, anchor file or anchor directory."""
    heads = [h for h in read_heads(path) if isinstance(h, SignedTreeHead)]
    if not heads:
        raise AuditFormatError(f"{path} holds no signed tree head (type tree_head)")
    return max(heads, key=lambda h: (h.tree_size, h.ts_ms))
