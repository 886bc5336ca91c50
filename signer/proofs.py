"""Order proofs and consistency proofs an auditor or a victim checks with only the public key.

An order proof carries one order's records (every decision and outcome naming its client order
id, as exact signed bytes), the context that makes them meaningful -- the admin record that
registered the requesting bot's public key (and a later grant of more keys, if any) and the one
that set the policy version in force -- each with its RFC 6962 inclusion proof, and the signed
tree head they are proven against. Checking it shows, offline: the head is signed by the audit
key; every record is the one at its position in that tree; the bot's Ed25519 signature over
the request it sent verifies with the key registered for it, the bot was granted the key, and
the request says what the decision says; the allowing policy is the version the decision
names. A consistency proof shows a newer head extends an older one, so no
record covered by the older head was changed, removed, reordered or inserted.

What a proof cannot show is absence (that no *other* record exists); the full export and
`audit verify` / `audit report` do that.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import nacl.exceptions
import nacl.signing
from google.protobuf.message import DecodeError
from sqlalchemy.orm import Session

from bulkhead.contract import BOT_SIGNING_CONTEXT
from bulkhead.signer.v1 import signer_pb2 as pb
from signer import merkle
from signer.auditformat import (
    AuditFormatError,
    is_hex64,
    parse_record,
    record_hash,
    record_sig_message,
    signature_ok,
    verify_key_of,
)
from signer.auditlog import StoredRecord, records_for_client_order_id, records_of_kind
from signer.audittreehead import SignedTreeHead

ORDER_PROOF = "bulkhead_order_proof"
CONSISTENCY_PROOF = "bulkhead_consistency_proof"
ROLES = ("order", "bot_registration", "bot_grant", "policy")
_ROLE_ACTION = {
    "bot_registration": "register_bot",
    "bot_grant": "grant_keys",
    "policy": "set_policy",
}
_SIDES = {pb.SIDE_BUY: "buy", pb.SIDE_SELL: "sell"}
_TYPES = {pb.ORDER_TYPE_LIMIT: "limit", pb.ORDER_TYPE_MARKET: "market"}


@dataclass(frozen=True)
class ProofCheck:
    """A verdict: `reason` is one sentence; `facts` what the proof established, one per line."""

    ok: bool
    reason: str
    facts: tuple[str, ...] = ()


class _Fail(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms // 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# --- building ---------------------------------------------------------------------------------


def context_records(
    order: list[tuple[StoredRecord, dict[str, Any]]],
    admin: Iterable[tuple[StoredRecord, dict[str, Any]]],
) -> list[tuple[str, StoredRecord]]:
    """For each decision: the latest registration of its bot (and a later grant of more keys,
    if any: the keys it may use), and the policy version it names."""
    regs: dict[str, list[tuple[int, StoredRecord]]] = {}
    grants: dict[str, list[tuple[int, StoredRecord]]] = {}
    policies: dict[tuple[str, int], StoredRecord] = {}
    for rec, obj in admin:
        p = obj["payload"]
        if p.get("action") == "register_bot":
            regs.setdefault(str(p.get("bot_id")), []).append((rec.seq, rec))
        elif p.get("action") == "grant_keys":
            grants.setdefault(str(p.get("bot_id")), []).append((rec.seq, rec))
        elif p.get("action") == "set_policy":
            policies[(str(p.get("key_id")), p.get("version"))] = rec
    out: dict[int, tuple[str, StoredRecord]] = {}
    for rec, obj in order:
        p = obj["payload"]
        if obj["kind"] != "decision":
            continue
        before = [r for s, r in regs.get(str(p.get("bot_id")), []) if s < rec.seq]
        if before:
            out[before[-1].seq] = ("bot_registration", before[-1])
            later = [r for s, r in grants.get(str(p.get("bot_id")), []) if s < rec.seq]
            if later and later[-1].seq > before[-1].seq:
                out[later[-1].seq] = ("bot_grant", later[-1])
        pol = policies.get((str(p.get("key_id")), p.get("policy_version")))
        if pol is not None and pol.seq < rec.seq:
            out[pol.seq] = ("policy", pol)
    return list(out.values())


def order_records(session: Session, client_order_id: str) -> list[tuple[str, StoredRecord]]:
    """The order's records from the live log, with their context (role, record)."""
    order = [(r, _parsed(r)) for r in records_for_client_order_id(session, client_order_id)]
    admin = ((r, _parsed(r)) for r in records_of_kind(session, "admin"))
    return [("order", r) for r, _ in order] + context_records(order, admin)


def _parsed(rec: StoredRecord) -> dict[str, Any]:
    obj = json.loads(rec.record_bytes)
    if not isinstance(obj, dict) or not isinstance(obj.get("payload"), dict):
        raise AuditFormatError(f"record {rec.seq} is not a well-formed audit record")
    return obj


def order_proof(
    tree: merkle.MerkleTree,
    head: SignedTreeHead,
    client_order_id: str,
    records: list[tuple[str, StoredRecord]],
) -> dict[str, Any]:
    """The proof document for `records` (role, record) against `head` (size <= tree.size)."""
    entries = []
    for role, rec in sorted(records, key=lambda r: r[1].seq):
        proof = tree.inclusion_proof(rec.seq - 1, head.tree_size)
        entries.append(
            {
                "role": role,
                "seq": rec.seq,
                "record": rec.record_bytes.decode("utf-8"),
                "hash": rec.hash,
                "sig": rec.sig,
                "inclusion_proof": [p.hex() for p in proof],
            }
        )
    return {
        "type": ORDER_PROOF,
        "v": 1,
        "client_order_id": client_order_id,
        "tree_head": head.to_obj(),
        "records": entries,
    }


def consistency_proof(
    tree: merkle.MerkleTree, old: SignedTreeHead, new: SignedTreeHead
) -> tuple[ProofCheck, dict[str, Any] | None]:
    """Prove from the log's tree that `new` extends `old`; explain which side the log betrays."""
    m, n = old.tree_size, new.tree_size
    if m > n:
        return ProofCheck(False, f"the old head (size {m}) is larger than the new one ({n})"), None
    if tree.size < n:
        return ProofCheck(
            False,
            f"the log holds {tree.size} records but the new head covers {n}: records "
            f"{tree.size + 1} onward were removed (or the export is older than the new head)",
        ), None
    doc = {
        "type": CONSISTENCY_PROOF,
        "v": 1,
        "old_head": old.to_obj(),
        "new_head": new.to_obj(),
        "proof": [p.hex() for p in tree.consistency_proof(m, n)],
    }
    verdict = _consistency(old, new, [bytes.fromhex(h) for h in doc["proof"]])
    if verdict.ok:
        return verdict, doc
    if tree.root(m).hex() != old.root_hash:
        why = (
            f"the log's first {m} records no longer hash to the old head's root: a record "
            "it covered was changed, removed, reordered or inserted"
        )
    elif tree.root(n).hex() != new.root_hash:
        why = (
            f"the log's first {n} records do not hash to the new head's root: the log "
            "changed after the new head was signed"
        )
    else:
        why = verdict.reason
    return ProofCheck(False, why), None


# --- checking --------------------------------------------------------------------------------


def check_proof(doc: object, public_key: bytes) -> ProofCheck:
    """Check an order proof or a consistency proof file's contents; never raises."""
    try:
        if not isinstance(doc, dict):
            raise _Fail("the file is not a proof (a JSON object was expected)")
        if doc.get("v") != 1 or isinstance(doc.get("v"), bool):
            raise _Fail(f"proof format version {doc.get('v')!r} is not 1")
        if doc.get("type") == ORDER_PROOF:
            return _check_order(doc, public_key)
        if doc.get("type") == CONSISTENCY_PROOF:
            old = _head(doc["old_head"], public_key, "old")
            new = _head(doc["new_head"], public_key, "new")
            return _consistency(old, new, [_hash(h) for h in _list(doc["proof"])])
        raise _Fail(f"unknown proof type {doc.get('type')!r}")
    except _Fail as f:
        return ProofCheck(False, f.reason)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return ProofCheck(False, f"the proof file is malformed ({type(exc).__name__}: {exc})"[:300])


def _consistency(old: SignedTreeHead, new: SignedTreeHead, proof: list[bytes]) -> ProofCheck:
    m, n = old.tree_size, new.tree_size
    if m == n and old.head_hash != new.head_hash:
        return ProofCheck(False, f"two heads of size {m} name different last records: a fork")
    ok = merkle.verify_consistency(
        m, n, bytes.fromhex(old.root_hash), bytes.fromhex(new.root_hash), proof
    )
    if not ok:
        return ProofCheck(
            False,
            f"the consistency proof does not show the tree of size {n} extends the tree of "
            f"size {m}: a record among the first {m} was changed, removed, reordered or inserted",
        )
    return ProofCheck(
        True,
        f"the tree of size {n} (signed {iso(new.ts_ms)}) extends the tree of size {m} "
        f"(signed {iso(old.ts_ms)}): the first {m} records are unchanged",
    )


def _head(obj: object, public_key: bytes, name: str) -> SignedTreeHead:
    try:
        head = SignedTreeHead.from_obj(obj)
    except AuditFormatError as exc:
        raise _Fail(f"the {name} tree head is malformed: {exc}") from exc
    if not head.verify(public_key):
        raise _Fail(
            f"the {name} tree head's signature does not verify with this public key: "
            "it was forged or altered"
        )
    return head


def _list(value: object) -> list[Any]:
    if not isinstance(value, list):
        raise _Fail("a proof field that must be a list is not one")
    return value


def _hash(value: object) -> bytes:
    if not is_hex64(value):
        raise _Fail("a proof hash is not 64 lowercase hex characters")
    return bytes.fromhex(str(value))


def _check_order(doc: dict[str, Any], public_key: bytes) -> ProofCheck:
    head = _head(doc.get("tree_head"), public_key, "signed")
    coid = doc.get("client_order_id")
    root, key = bytes.fromhex(head.root_hash), verify_key_of(public_key)
    recs: list[tuple[str, int, dict[str, Any]]] = []
    for e in _list(doc.get("records")):
        seq, role, text = e["seq"], e["role"], e["record"]
        if isinstance(seq, bool) or not isinstance(seq, int) or not isinstance(text, str):
            raise _Fail("a record entry's seq or record has the wrong type")
        if recs and seq <= recs[-1][1]:
            raise _Fail(f"record {seq} follows record {recs[-1][1]}: records were reordered")
        if role not in ROLES:
            raise _Fail(f"record {seq} has unknown role {role!r}")
        data = text.encode("utf-8")
        if record_hash(data) != e["hash"]:
            raise _Fail(f"record {seq}'s text does not match its hash: it was altered")
        if not signature_ok(key, record_sig_message(e["hash"]), str(e["sig"])):
            raise _Fail(f"record {seq}'s signature does not verify with this public key")
        try:
            obj = parse_record(text)
        except AuditFormatError as exc:
            raise _Fail(f"record {seq} is signed but malformed: {exc}") from exc
        if obj["seq"] != seq:
            raise _Fail(f"the entry for record {seq} holds the signed record {obj['seq']}")
        if not _role_fits(role, obj):
            raise _Fail(f"record {seq} is a {_what(obj)} record, not a {role} record")
        path = [_hash(h) for h in _list(e["inclusion_proof"])]
        if not seq <= head.tree_size or not merkle.verify_inclusion(
            merkle.leaf_hash(data), seq - 1, head.tree_size, path, root
        ):
            raise _Fail(
                f"record {seq} is not included at position {seq} of the signed tree of size "
                f"{head.tree_size}: it was altered, moved, inserted or the proof was edited"
            )
        recs.append((role, seq, obj))
    orders = [(s, o) for r, s, o in recs if r == "order"]
    if not orders:
        raise _Fail("the proof holds no record of the order")
    facts = [f"tree head: size {head.tree_size}, signed {iso(head.ts_ms)}"]
    decisions = {s for s, o in orders if o["kind"] == "decision"}
    for seq, obj in orders:
        p = obj["payload"]
        if p.get("client_order_id") != coid:
            raise _Fail(f"record {seq} is not a record of order {coid!r}")
        if obj["kind"] == "decision":
            facts.append(_check_decision(seq, p, recs))
        elif obj["kind"] == "outcome":
            if p.get("decision_seq") not in decisions:
                raise _Fail(
                    f"outcome record {seq} answers decision {p.get('decision_seq')}, "
                    "which the proof does not include"
                )
            eid = p.get("exchange_order_id") or "-"
            facts.append(
                f"record {seq}: outcome of record {p['decision_seq']}: "
                f"{p.get('status')}, exchange order id {eid}"
            )
        else:
            facts.append(f"record {seq}: {obj['kind']}")
    return ProofCheck(
        True,
        f"{len(orders)} record{'s' if len(orders) != 1 else ''} of order {coid} "
        f"{'are' if len(orders) != 1 else 'is'} in the signed tree of size "
        f"{head.tree_size}; the requesting bot's signature and the policy in force are proven",
        tuple(facts),
    )


def _role_fits(role: str, obj: dict[str, Any]) -> bool:
    """The unsigned role label must say what the signed record is."""
    if role == "order":
        return obj["kind"] in ("decision", "outcome")
    action = obj["payload"].get("action") if obj["kind"] == "admin" else None
    return action == _ROLE_ACTION[role]


def _what(obj: dict[str, Any]) -> str:
    action = obj["payload"].get("action") if obj["kind"] == "admin" else None
    return f"{obj['kind']} ({action})" if action else str(obj["kind"])


def _check_decision(
    seq: int, p: dict[str, Any], recs: list[tuple[str, int, dict[str, Any]]]
) -> str:
    bot, key_id = p.get("bot_id"), p.get("key_id")
    regs = [
        (s, o["payload"])
        for r, s, o in recs
        if r == "bot_registration"
        and s < seq
        and o["kind"] == "admin"
        and o["payload"].get("action") == "register_bot"
        and o["payload"].get("bot_id") == bot
    ]
    if not regs:
        raise _Fail(
            f"decision record {seq} names bot {bot!r}, but the proof lacks its registration"
        )
    reg_seq, reg = regs[-1]
    grants = [
        (s, o["payload"])
        for r, s, o in recs
        if r == "bot_grant" and reg_seq < s < seq and o["payload"].get("bot_id") == bot
    ]
    keys_seq, keys = (grants or [(reg_seq, reg)])[-1]  # each holds the bot's full key list
    if not isinstance(keys.get("key_ids"), list) or key_id not in keys["key_ids"]:
        raise _Fail(
            f"decision record {seq} is for key {key_id!r}, but bot {bot!r} was not granted "
            f"that key (its keys as of record {keys_seq}: {keys.get('key_ids')!r})"
        )
    try:
        body = base64.b64decode(str(p["body_b64"]), validate=True)
        sig = base64.b64decode(str(p["signature_b64"]), validate=True)
        nacl.signing.VerifyKey(bytes.fromhex(str(reg["public_key_hex"]))).verify(
            BOT_SIGNING_CONTEXT + body, sig
        )
    except (KeyError, ValueError, binascii.Error, nacl.exceptions.BadSignatureError) as exc:
        raise _Fail(
            f"decision record {seq}: the request's signature does not verify with the key "
            f"registered for bot {bot!r} at record {reg_seq}"
        ) from exc
    _same_request(seq, p, body)
    allowed = p.get("allowed") is True
    version = p.get("policy_version")
    pols = [
        s
        for r, s, o in recs
        if r == "policy"
        and s < seq
        and o["kind"] == "admin"
        and o["payload"].get("action") == "set_policy"
        and o["payload"].get("key_id") == key_id
        and o["payload"].get("version") == version
    ]
    if allowed and p.get("action") == "create" and not pols:
        raise _Fail(
            f"decision record {seq} was allowed under policy version {version} of key "
            f"{key_id!r}, but the proof lacks the record that set it"
        )
    what = " ".join(str(p.get(f)) for f in ("side", "amount", "symbol", "type") if p.get(f))
    price = f" @ {p['limit_price']}" if p.get("limit_price") else ""
    verdict = (
        "ALLOWED"
        if allowed
        else "DENIED (" + ", ".join(str(r.get("rule_id")) for r in p.get("reasons") or []) + ")"
    )
    policy = f"policy v{version} of key {key_id}" + (f" (record {pols[-1]})" if pols else "")
    return (
        f"record {seq}: {p.get('action')} {what}{price} {verdict}; requested by bot {bot} "
        f"(signature verified with the key registered at record {reg_seq}; key {key_id} "
        f"granted at record {keys_seq}); {policy}"
    )


def _same_request(seq: int, p: dict[str, Any], body: bytes) -> None:
    """The decision must describe the request the bot signed, field by field."""
    try:
        if p.get("action") == "cancel":
            msg: Any = pb.CancelIntent.FromString(body)
            fields = {"symbol": msg.symbol, "exchange": msg.exchange}
        else:
            msg = pb.OrderIntent.FromString(body)
            fields = {
                "symbol": msg.symbol,
                "exchange": msg.exchange,
                "side": _SIDES.get(msg.side),
                "type": _TYPES.get(msg.type),
            }
            if Decimal(msg.amount) != Decimal(str(p.get("amount"))):
                raise _Fail(f"decision record {seq}: the bot asked for amount {msg.amount}")
            asked, said = msg.limit_price or None, p.get("limit_price")
            if (asked is None) != (said is None) or (
                asked is not None and Decimal(asked) != Decimal(str(said))
            ):
                raise _Fail(f"decision record {seq}: the bot asked for price {msg.limit_price}")
    except (ValueError, InvalidOperation, TypeError, DecodeError) as exc:
        raise _Fail(f"decision record {seq}: the signed request cannot be read") from exc
    fields |= {
        "bot_id": msg.header.bot_id,
        "key_id": msg.header.key_id,
        "client_order_id": msg.client_order_id,
    }
    for name, value in fields.items():
        if p.get(name) != value:
            raise _Fail(
                f"decision record {seq} says {name} {p.get(name)!r} but the bot's signed "
                f"request says {value!r}"
            )


def load_proof(text: str) -> object:
    """Parse a proof file's text; a non-JSON file becomes a failing check, not a traceback."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None
