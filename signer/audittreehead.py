"""Signed tree heads: the RFC 6962 root of the first tree_size records, signed by the audit key.

Ed25519 over b"bulkhead/audit/tree_head/v1\x00" + canonical {"head_hash","root_hash","tree_size",
"ts_ms"}: root_hash is the Merkle root (`signer.merkle`) of the first tree_size record byte
strings, head_hash the hash of the last of them (so a head is also a chain checkpoint). Pure.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.signing

from signer.auditformat import (
    AuditFormatError,
    SignedCheckpoint,
    _check_uint,
    _short,
    canonical_json,
    is_hex64,
    is_hex128,
    signature_ok,
    verify_key_of,
)

TREE_HEAD_SIG_DOMAIN = b"bulkhead/audit/tree_head/v1\x00"
TREE_HEAD_KEYS = frozenset({"type", "tree_size", "root_hash", "head_hash", "ts_ms", "sig"})


@dataclass(frozen=True)
class SignedTreeHead:
    """ "The log's first `tree_size` records have RFC 6962 root `root_hash` and the last of
    them has hash `head_hash`", signed at `ts_ms` under its own domain tag.

    It is a checkpoint (head_hash: truncation and rewrites of the chain show) and a Merkle tree
    head (root_hash: inclusion proofs for single orders, consistency proofs between heads).
    """

    tree_size: int
    root_hash: str
    head_hash: str
    ts_ms: int
    sig: str

    @staticmethod
    def signed_message(tree_size: int, root_hash: str, head_hash: str, ts_ms: int) -> bytes:
        body = {
            "tree_size": tree_size,
            "root_hash": root_hash,
            "head_hash": head_hash,
            "ts_ms": ts_ms,
        }
        return TREE_HEAD_SIG_DOMAIN + canonical_json(body)

    @classmethod
    def sign(
        cls,
        key: nacl.signing.SigningKey,
        tree_size: int,
        root_hash: str,
        head_hash: str,
        ts_ms: int,
    ) -> SignedTreeHead:
        _check_uint("tree_size", tree_size, 0)
        _check_uint("ts_ms", ts_ms, 0)
        for name, value in (("root_hash", root_hash), ("head_hash", head_hash)):
            if not is_hex64(value):
                raise AuditFormatError(f"{name} must be 64 lowercase hex characters")
        message = cls.signed_message(tree_size, root_hash, head_hash, ts_ms)
        return cls(tree_size, root_hash, head_hash, ts_ms, key.sign(message).signature.hex())

    def verify(self, public_key: bytes) -> bool:
        message = self.signed_message(self.tree_size, self.root_hash, self.head_hash, self.ts_ms)
        return signature_ok(verify_key_of(public_key), message, self.sig)

    def to_obj(self) -> dict[str, Any]:
        return {
            "type": "tree_head",
            "tree_size": self.tree_size,
            "root_hash": self.root_hash,
            "head_hash": self.head_hash,
            "ts_ms": self.ts_ms,
            "sig": self.sig,
        }

    def to_json(self) -> str:
        """Canonical one-line form (an anchor file holds one per line)."""
        return canonical_json(self.to_obj()).decode("utf-8")

    @classmethod
    def from_obj(cls, obj: object) -> SignedTreeHead:
        """Parse (not verify); every field is type- and format-checked."""
        if not isinstance(obj, dict) or set(obj) != TREE_HEAD_KEYS:
            raise AuditFormatError(f"a tree head has exactly the keys {sorted(TREE_HEAD_KEYS)}")
        if obj["type"] != "tree_head":
            raise AuditFormatError(f"type must be 'tree_head', got {obj['type']!r}")
        tree_size = _check_uint("tree_size", obj["tree_size"], 0)
        ts_ms = _check_uint("ts_ms", obj["ts_ms"], 0)
        for name in ("root_hash", "head_hash"):
            if not is_hex64(obj[name]):
                raise AuditFormatError(f"{name} must be 64 lowercase hex characters")
        if not is_hex128(obj["sig"]):
            raise AuditFormatError("sig must be 128 lowercase hex characters")
        return cls(tree_size, obj["root_hash"], obj["head_hash"], ts_ms, obj["sig"])

    @classmethod
    def from_json(cls, text: str) -> SignedTreeHead:
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise AuditFormatError(f"tree head is not valid JSON ({_short(exc)})") from exc
        return cls.from_obj(obj)


def read_heads(path: str | os.PathLike[str]) -> list[SignedCheckpoint | SignedTreeHead]:
    """Every checkpoint or tree head in a file (one object, or one per line) or a directory
    of such files (an anchor directory; files read in name order). Parsed, not verified."""
    p = Path(path)
    if p.is_dir():
        out: list[SignedCheckpoint | SignedTreeHead] = []
        for child in sorted(p.glob("*.json")):
            out.extend(read_heads(child))
        return out
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AuditFormatError(f"cannot read checkpoint file {path}: {_short(exc)}") from exc
    try:
        try:
            whole = json.loads(text)
        except (ValueError, RecursionError):
            whole = None
        if isinstance(whole, dict):
            return [parse_head(whole)]
        lines = [line for line in text.splitlines() if line.strip()]
        if len(lines) <= 1:
            return [parse_head_text(text.strip())]
        return [parse_head_text(line) for line in lines]
    except AuditFormatError as exc:
        raise AuditFormatError(f"checkpoint file {path}: {exc}") from exc


def parse_head_text(text: str) -> SignedCheckpoint | SignedTreeHead:
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise AuditFormatError(f"checkpoint is not valid JSON ({_short(exc)})") from exc
    return parse_head(obj)


def parse_head(obj: object) -> SignedCheckpoint | SignedTreeHead:
    """A chain checkpoint or a signed tree head, by its "type" field."""
    if isinstance(obj, dict) and obj.get("type") == "tree_head":
        return SignedTreeHead.from_obj(obj)
    return SignedCheckpoint.from_json(json.dumps(obj))
