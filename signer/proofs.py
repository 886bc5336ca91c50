"""Signed tree heads and proofs an auditor or a victim checks with nothing but the public key.

A signed tree head (STH) is canonical JSON {tree_size, root_hash, ts_ms} signed by the audit key
under its own domain tag. An order proof carries the order's records (decision and outcome,
exact bytes, each with its own chain signature), their RFC 6962 inclusion proofs and the STH.
A consistency check shows a newer STH extends an older one: if any earlier record was changed,
removed, reordered or inserted, the older head is no longer a prefix and the check fails.
"""

from __future__ import annotations

import json
from typing import Any

import nacl.signing
from sqlalchemy.orm import Session

from signer import merkle
from signer.auditformat import (
    canonical_json,
    record_hash,
    record_sig_message,
    signature_ok,
    verify_key_of,
)
from signer.auditlog import AuditLog, iter_records, records_for_client_order_id

STH_DOMAIN = b"bulkhead/audit/sth/v1\x00"


def _leaves(session: Session, size: int | None = None) -> list[bytes]:
    out = []
    for rec in iter_records(session):
        if size is not None and len(out) >= size:
            break
        out.append(merkle.leaf_hash(rec.record_bytes))
    return out


def sign_sth(
    key: nacl.signing.SigningKey, size: int, root_hash: bytes, ts_ms: int
) -> dict[str, Any]:
    body = {"tree_size": size, "root_hash": root_hash.hex(), "ts_ms": ts_ms}
    sig = key.sign(STH_DOMAIN + canonical_json(body)).signature.hex()
    return {**body, "sig": sig}


def sth_ok(sth: dict[str, Any], public_key: bytes) -> bool:
    try:
        body = {
            "tree_size": int(sth["tree_size"]),
            "root_hash": str(sth["root_hash"]),
            "ts_ms": int(sth["ts_ms"]),
        }
        return signature_ok(
            verify_key_of(public_key), STH_DOMAIN + canonical_json(body), str(sth["sig"])
        )
    except (KeyError, TypeError, ValueError):
        return False


def tree_head(session: Session, audit: AuditLog, now_ms: int) -> dict[str, Any]:
    leaves = _leaves(session)
    return sign_sth(audit._key, len(leaves), merkle.root(leaves), now_ms)  # noqa: SLF001


def prove_order(
    session: Session, audit: AuditLog, client_order_id: str, now_ms: int
) -> dict[str, Any]:
    """The order's records, inclusion proofs, and the head they are proven against."""
    leaves = _leaves(session)
    sth = sign_sth(audit._key, len(leaves), merkle.root(leaves), now_ms)  # noqa: SLF001
    records = []
    for rec in records_for_client_order_id(session, client_order_id):
        proof = merkle.inclusion_proof(leaves, rec.seq - 1)
        records.append(
            {
                "seq": rec.seq,
                "record": rec.record_bytes.decode("utf-8"),
                "hash": rec.hash,
                "sig": rec.sig,
                "inclusion_proof": [p.hex() for p in proof],
            }
        )
    return {
        "type": "bulkhead_order_proof",
        "client_order_id": client_order_id,
        "tree_head": sth,
        "records": records,
    }


def check_order_proof(doc: dict[str, Any], public_key: bytes) -> tuple[bool, str]:
    """Verify a proof file offline; returns (ok, one-sentence reason)."""
    sth = doc.get("tree_head") or {}
    if not sth_ok(sth, public_key):
        return False, "the tree head's signature does not verify with this public key"
    records = doc.get("records") or []
    if not records:
        return False, "the proof holds no records for this order"
    key = verify_key_of(public_key)
    root = bytes.fromhex(sth["root_hash"])
    for r in records:
        data = str(r.get("record", "")).encode("utf-8")
        seq = int(r.get("seq", 0))
        body = json.loads(data) if data else {}
        if body.get("seq") != seq or body.get("payload", {}).get("client_order_id") != doc.get(
            "client_order_id"
        ):
            return False, f"record {seq} is not a record of order {doc.get('client_order_id')!r}"
        if record_hash(data) != r.get("hash") or not signature_ok(
            key, record_sig_message(str(r.get("hash"))), str(r.get("sig"))
        ):
            return False, f"record {seq}: hash or signature does not match its bytes"
        proof = [bytes.fromhex(p) for p in r.get("inclusion_proof", [])]
        if not merkle.verify_inclusion(
            merkle.leaf_hash(data), seq - 1, int(sth["tree_size"]), proof, root
        ):
            return (
                False,
                f"record {seq} is not included in the signed tree of size {sth['tree_size']}",
            )
    return True, f"{len(records)} records proven in the signed tree of size {sth['tree_size']}"


def check_consistency(
    session: Session, old: dict[str, Any], new: dict[str, Any], public_key: bytes
) -> tuple[bool, str]:
    """Both heads signed, and the log as stored now proves new extends old."""
    for name, sth in (("old", old), ("new", new)):
        if not sth_ok(sth, public_key):
            return False, f"the {name} tree head's signature does not verify"
    m, n = int(old["tree_size"]), int(new["tree_size"])
    if not 0 < m <= n:
        return False, f"tree sizes {m} -> {n} do not grow"
    leaves = _leaves(session, n)
    if len(leaves) < n:
        return False, f"the log holds {len(leaves)} records, fewer than the new head's {n}"
    proof = merkle.consistency_proof(leaves, m, n)
    if merkle.root(leaves) != bytes.fromhex(new["root_hash"]):
        return False, "the stored log does not hash to the new head's root"
    if not merkle.verify_consistency(
        m, n, bytes.fromhex(old["root_hash"]), bytes.fromhex(new["root_hash"]), proof
    ):
        return False, f"the first {m} records changed since the old head was signed"
    return True, f"the tree of size {n} extends the tree of size {m}"
