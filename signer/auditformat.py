"""The audit log's byte formats: canonical JSON, hashes, signed messages, checkpoints, key files.

Everything here is pure (no database) so the writer (`signer.auditlog`), the offline verifier
(`signer.auditverify`) and later tools (Merkle tree heads, auditor CLI) agree on one definition.

Record bytes are the canonical JSON (sorted keys, separators "," and ":", UTF-8, no ASCII
escaping) of ``{"v":1,"seq":..,"ts_ms":..,"kind":..,"prev":..,"payload":..}``; the record hash
is SHA-256 of those bytes, hex. Signatures are Ed25519 over a domain tag followed by the
*32 raw hash bytes* (records) or by the canonical checkpoint or tree head body; the tags keep a
signature of one kind from ever being replayed as another.

Signed tree heads (RFC 6962 roots over the same records) are defined in
`signer.audittreehead`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nacl.exceptions
import nacl.signing

if TYPE_CHECKING:
    from signer.audittreehead import SignedTreeHead

GENESIS_HASH = "0" * 64
RECORD_VERSION = 1
RECORD_SIG_DOMAIN = b"bulkhead/audit/record/v1\x00"
CHECKPOINT_SIG_DOMAIN = b"bulkhead/audit/checkpoint/v1\x00"
RECORD_KEYS = frozenset({"v", "seq", "ts_ms", "kind", "prev", "payload"})
CHECKPOINT_KEYS = frozenset({"type", "tree_size", "head_hash", "ts_ms", "sig"})
MAX_DEPTH = 32
MAX_INT = 2**63 - 1  # seq and ts_ms must fit a BIGINT column
CLIENT_ORDER_ID_MAX = 128

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX128 = re.compile(r"[0-9a-f]{128}")
_KIND = re.compile(r"[a-z][a-z0-9_]{0,31}")


class AuditFormatError(ValueError):
    """A payload, record, checkpoint or key file is not in the audit format. Nothing was written."""


def canonical_json(obj: object) -> bytes:
    """The one byte encoding every hash and signature is computed over.

    Only str, int, bool, None, list and dict (str keys) are allowed: a float (money must be a
    decimal string), NaN, a tuple or a non-str key is refused with the offending path, because
    any of them would make the bytes ambiguous or lossy on a round trip.
    """
    _check_json_value(obj, "$", 0)
    try:
        text = json.dumps(
            obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except ValueError as exc:  # e.g. an int beyond Python's int-to-str digit limit
        raise AuditFormatError(f"value cannot be encoded as JSON ({_short(exc)})") from exc
    return text.encode("utf-8")


def _check_json_value(value: object, path: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise AuditFormatError(f"{path} nests deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, str):
        _check_str(value, path)
        return
    if isinstance(value, float):
        raise AuditFormatError(
            f"{path} is a float; audit payloads take money and quantities as decimal strings "
            "and counts as ints (floats, NaN and infinities are refused)"
        )
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise AuditFormatError(
                    f"{path} has a key of type {type(key).__name__}; only str keys are allowed"
                )
            _check_str(key, f"{path} key")
            _check_json_value(item, f"{path}.{key}", depth + 1)
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_json_value(item, f"{path}[{index}]", depth + 1)
        return
    raise AuditFormatError(
        f"{path} has type {type(value).__name__}; allowed are str, int, bool, None, list "
        "and dict (convert Decimal to str, tuple to list, bytes to hex or base64)"
    )


def _check_str(value: str, path: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise AuditFormatError(f"{path} is not valid Unicode (lone surrogate)") from exc


def check_kind(kind: object) -> str:
    """Kinds are short lowercase identifiers ("decision", "outcome", "admin", ...)."""
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise AuditFormatError(
            f"audit kind {kind!r} is invalid; use 1-32 chars of a-z, 0-9 and _, starting a-z"
        )
    return kind


def _check_uint(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= MAX_INT:
        raise AuditFormatError(f"{name} must be an int in [{minimum}, {MAX_INT}], got {value!r}")
    return value


def is_hex64(value: object) -> bool:
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


def is_hex128(value: object) -> bool:
    return isinstance(value, str) and _HEX128.fullmatch(value) is not None


def now_ms() -> int:
    """Wall-clock milliseconds as an int (no float on the way)."""
    return time.time_ns() // 1_000_000


def build_record(seq: int, ts_ms: int, kind: str, prev: str, payload: dict[str, Any]) -> bytes:
    """Validate the fields and return the record's canonical bytes."""
    _check_uint("seq", seq, 1)
    _check_uint("ts_ms", ts_ms, 0)
    check_kind(kind)
    if not is_hex64(prev):
        raise AuditFormatError("prev must be 64 lowercase hex characters")
    if not isinstance(payload, dict):
        raise AuditFormatError(f"payload must be a dict, got {type(payload).__name__}")
    record = {
        "v": RECORD_VERSION,
        "seq": seq,
        "ts_ms": ts_ms,
        "kind": kind,
        "prev": prev,
        "payload": payload,
    }
    return canonical_json(record)


def parse_record(record_text: str) -> dict[str, Any]:
    """Parse stored record text and check it is a canonical, well-formed version-1 record."""
    try:
        obj = json.loads(record_text)
    except (ValueError, RecursionError) as exc:
        raise AuditFormatError(f"record text is not valid JSON ({_short(exc)})") from exc
    if not isinstance(obj, dict) or set(obj) != RECORD_KEYS:
        found = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise AuditFormatError(f"record must have exactly the keys {sorted(RECORD_KEYS)}: {found}")
    if obj["v"] != RECORD_VERSION or isinstance(obj["v"], bool):
        raise AuditFormatError(f"record version {obj['v']!r} is not {RECORD_VERSION}")
    build_record(obj["seq"], obj["ts_ms"], obj["kind"], obj["prev"], obj["payload"])
    if canonical_json(obj).decode("utf-8") != record_text:
        raise AuditFormatError("record text is not in canonical form")
    return obj


def record_hash(record_bytes: bytes) -> str:
    return hashlib.sha256(record_bytes).hexdigest()


def record_sig_message(hash_hex: str) -> bytes:
    """What a record signature covers: the domain tag, then the 32 raw bytes of the record hash."""
    return RECORD_SIG_DOMAIN + bytes.fromhex(hash_hex)


def client_order_id_of(payload: dict[str, Any]) -> str | None:
    """The indexed lookup key: a top-level str ``client_order_id`` of at most 128 chars.

    Anything else stays only in the signed record (never refused here, so a denial for a
    malformed request is still audited).
    """
    value = payload.get("client_order_id")
    if isinstance(value, str) and 0 < len(value) <= CLIENT_ORDER_ID_MAX:
        return value
    return None


def export_record_line(seq: int, record_text: str, hash_hex: str, sig_hex: str) -> str:
    """One export line (no newline). The record travels as its exact canonical text."""
    obj = {"type": "record", "seq": seq, "record": record_text, "hash": hash_hex, "sig": sig_hex}
    return canonical_json(obj).decode("utf-8")


def verify_key_of(public_key: bytes) -> nacl.signing.VerifyKey:
    if not isinstance(public_key, bytes) or len(public_key) != 32:
        raise AuditFormatError("an Ed25519 public key is exactly 32 bytes")
    return nacl.signing.VerifyKey(public_key)


def signature_ok(key: nacl.signing.VerifyKey, message: bytes, sig_hex: str) -> bool:
    if not is_hex128(sig_hex):
        return False
    try:
        key.verify(message, bytes.fromhex(sig_hex))
    except nacl.exceptions.BadSignatureError:
        return False
    return True


@dataclass(frozen=True)
class SignedCheckpoint:
    """ "The log had `tree_size` records and its last hash was `head_hash`", signed at `ts_ms`.

    Published outside the signer (another host, a ticket, an email) it makes later truncation
    of the log detectable even by someone who controls the signer's database.
    """

    tree_size: int
    head_hash: str
    ts_ms: int
    sig: str

    @staticmethod
    def signed_message(tree_size: int, head_hash: str, ts_ms: int) -> bytes:
        body = {"tree_size": tree_size, "head_hash": head_hash, "ts_ms": ts_ms}
        return CHECKPOINT_SIG_DOMAIN + canonical_json(body)

    @classmethod
    def sign(
        cls, key: nacl.signing.SigningKey, tree_size: int, head_hash: str, ts_ms: int
    ) -> SignedCheckpoint:
        _check_uint("tree_size", tree_size, 0)
        _check_uint("ts_ms", ts_ms, 0)
        if not is_hex64(head_hash):
            raise AuditFormatError("head_hash must be 64 lowercase hex characters")
        sig = key.sign(cls.signed_message(tree_size, head_hash, ts_ms)).signature.hex()
        return cls(tree_size=tree_size, head_hash=head_hash, ts_ms=ts_ms, sig=sig)

    def verify(self, public_key: bytes) -> bool:
        """True when the signature is by `public_key` over exactly these fields."""
        message = self.signed_message(self.tree_size, self.head_hash, self.ts_ms)
        return signature_ok(verify_key_of(public_key), message, self.sig)

    def to_json(self) -> str:
        """Canonical one-line form; also the final line of every export."""
        obj = {
            "type": "checkpoint",
            "tree_size": self.tree_size,
            "head_hash": self.head_hash,
            "ts_ms": self.ts_ms,
            "sig": self.sig,
        }
        return canonical_json(obj).decode("utf-8")

    @classmethod
    def from_json(cls, text: str) -> SignedCheckpoint:
        """Parse (not verify) a checkpoint; every field is type- and format-checked."""
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise AuditFormatError(f"checkpoint is not valid JSON ({_short(exc)})") from exc
        if not isinstance(obj, dict) or set(obj) != CHECKPOINT_KEYS:
            raise AuditFormatError(f"a checkpoint has exactly the keys {sorted(CHECKPOINT_KEYS)}")
        if obj["type"] != "checkpoint":
            raise AuditFormatError(f"type must be 'checkpoint', got {obj['type']!r}")
        tree_size = _check_uint("tree_size", obj["tree_size"], 0)
        ts_ms = _check_uint("ts_ms", obj["ts_ms"], 0)
        if not is_hex64(obj["head_hash"]):
            raise AuditFormatError("head_hash must be 64 lowercase hex characters")
        if not is_hex128(obj["sig"]):
            raise AuditFormatError("sig must be 128 lowercase hex characters")
        return cls(tree_size=tree_size, head_hash=obj["head_hash"], ts_ms=ts_ms, sig=obj["sig"])


def read_checkpoint_file(path: str | os.PathLike[str]) -> SignedCheckpoint | SignedTreeHead:
    """Read a checkpoint or signed tree head saved outside the signer.

    The file holds one JSON object (a `write_checkpoint_file` file, the last line of an export,
    an `audit sth --out` file), or one per line (an anchor file or directory): then the largest
    (newest) is returned. Its head hash covers every earlier record, so it is the one that
    matters.
    """
    from signer.audittreehead import read_heads  # tree heads build on this module

    heads = read_heads(path)
    if not heads:
        raise AuditFormatError(f"checkpoint file {path} holds no checkpoint")
    return max(heads, key=lambda h: (h.tree_size, h.ts_ms))


def write_checkpoint_file(
    path: str | os.PathLike[str], checkpoint: SignedCheckpoint | SignedTreeHead
) -> None:
    Path(path).write_text(checkpoint.to_json() + "\n", encoding="utf-8")


def load_public_key(path: str | os.PathLike[str]) -> bytes:
    """Read an audit public key file: 64 hex characters (surrounding whitespace ignored)."""
    try:
        text = Path(path).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise AuditFormatError(f"cannot read public key file {path}: {_short(exc)}") from exc
    if not is_hex64(text.lower()):
        raise AuditFormatError(
            f"public key file {path} must hold exactly 64 hex characters (an Ed25519 public key)"
        )
    return bytes.fromhex(text)


def write_public_key(path: str | os.PathLike[str], public_key_hex: str) -> None:
    """Write the audit public key (hex) for auditors; it is public, so mode 0644 is fine."""
    if not is_hex64(public_key_hex):
        raise AuditFormatError("public key must be 64 lowercase hex characters")
    Path(path).write_text(public_key_hex + "\n", encoding="ascii")


def _short(exc: BaseException) -> str:
    return str(exc)[:200] or type(exc).__name__
