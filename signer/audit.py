"""The signer's audit log: append-only, hash-chained, Ed25519-signed records with checkpoints.

Public entry point; the implementation is split by concept:
`signer.auditformat` (canonical bytes, hashes, signed messages, checkpoint and key files),
`signer.auditlog` (tables, append, head, checkpoint, export) and
`signer.auditverify` (offline export verification and live-database verification).

Format summary (see `signer.auditformat` for the exact definitions):
- record bytes: canonical JSON of {"v":1,"seq","ts_ms","kind","prev","payload"}; stored verbatim;
- hash: SHA-256(record bytes), hex; the first record's prev is GENESIS_HASH (64 zeros);
- sig: Ed25519 over b"bulkhead/audit/record/v1\\x00" + the 32 raw hash bytes;
- checkpoint sig: Ed25519 over b"bulkhead/audit/checkpoint/v1\\x00" + canonical
  {"head_hash","tree_size","ts_ms"};
- tree head sig: Ed25519 over b"bulkhead/audit/tree_head/v1\\x00" + canonical
  {"head_hash","root_hash","tree_size","ts_ms"} (RFC 6962 root; `signer.auditheads`);
- export: one canonical JSON line per record {"type":"record","seq","record"(text),"hash","sig"},
  then a closing {"type":"checkpoint",...} line signed at export time.
"""

from __future__ import annotations

from signer.auditformat import (
    GENESIS_HASH,
    AuditFormatError,
    SignedCheckpoint,
    canonical_json,
    load_public_key,
    read_checkpoint_file,
    record_hash,
    record_sig_message,
    write_checkpoint_file,
    write_public_key,
)
from signer.auditlog import (
    AUDIT_TABLES,
    AppendedRecord,
    AuditCheckpointRow,
    AuditLog,
    AuditRecordRow,
    AuditTreeHeadRow,
    StoredRecord,
    iter_records,
    records_for_client_order_id,
    stored_checkpoints,
    stored_tree_heads,
)
from signer.audittreehead import SignedTreeHead, read_heads
from signer.auditverify import (
    VerifyReport,
    verify_export_bytes,
    verify_file,
    verify_jsonl,
    verify_session,
)

__all__ = [
    "AUDIT_TABLES",
    "GENESIS_HASH",
    "AppendedRecord",
    "AuditCheckpointRow",
    "AuditFormatError",
    "AuditLog",
    "AuditRecordRow",
    "AuditTreeHeadRow",
    "SignedCheckpoint",
    "SignedTreeHead",
    "StoredRecord",
    "VerifyReport",
    "canonical_json",
    "iter_records",
    "load_public_key",
    "read_checkpoint_file",
    "read_heads",
    "record_hash",
    "record_sig_message",
    "records_for_client_order_id",
    "stored_checkpoints",
    "stored_tree_heads",
    "verify_export_bytes",
    "verify_file",
    "verify_jsonl",
    "verify_session",
    "write_checkpoint_file",
    "write_public_key",
]
