"""Loosening by proposal: propose, collect M operator signatures, wait out a time lock, apply.

A proposal's exact bytes are stored when it is made (signer.proposal_doc); approvals are Ed25519
signatures over PROPOSAL_SIGNING_CONTEXT || those bytes by distinct *active* operators, matched
by public key, so signatures made offline count the same as ones sent over gRPC. A proposal
applies in the transaction that brings its quorum (or, with a time lock, in the first submit
after the lock ends), only before it expires and only while its base version is still current;
then the change's own audit record names every approver with the signature.

Each step is an audit record (kind "admin"): proposal_created (with the document text),
proposal_signed, proposal_approved (time lock running), proposal_vetoed, proposal_expired,
proposal_stale, proposal_failed, proposal_refused (a bad, foreign or repeated signature), and
the applied change itself (set_policy, unfreeze, register_bot, ... with proposal_id, approvers).
"""

from __future__ import annotations

import functools
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from signer import quorum, state
from signer.admin import AdminActions, AdminResult
from signer.audit import AuditLog
from signer.db import write_txn
from signer.errors import ConfigError, SignerError
from signer.proposal_changes import (
    check_feasible,
    current_version,
    key_material_moved,
    run_change,
)
from signer.proposal_doc import (
    MAX_TTL_S,
    AnyChange,
    ApproveKeyChange,
    BaseVersion,
    ProposalDoc,
    canonical,
    describe,
    parse_document,
    proposal_id,
    signature_valid,
)
from signer.quorum import ProposalRefused, ProposalRow, ProposalSignatureRow

OPEN, APPROVED = "open", "approved"
LIVE = (OPEN, APPROVED)
MAX_SIGNATURES = 64
HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Approval:
    operator_id: str
    public_key_hex: str
    signature_hex: str


@dataclass(frozen=True)
class ProposalView:
    proposal_id: str
    document: bytes
    status: str
    action_class: str
    kind: str
    required: int
    operators: int
    approvers: tuple[Approval, ...]
    expires_ms: int
    apply_after_ms: int
    summary: str
    message: str = ""
    audit_seq: int = 0


def check_proposal_id(value: str) -> str:
    if not isinstance(value, str) or not HEX64.fullmatch(value):
        raise ConfigError(f"proposal_id: {str(value)[:80]!r} must be 64 hex characters")
    return value


def check_signatures(sigs: list[tuple[str, bytes]]) -> None:
    if len(sigs) > MAX_SIGNATURES:
        raise ConfigError(f"signatures: {len(sigs)} given; at most {MAX_SIGNATURES}")
    seen: set[str] = set()
    for i, (pub, sig) in enumerate(sigs):
        if not HEX64.fullmatch(pub):
            raise ConfigError(f"signatures[{i}].public_key: must be 32 bytes (Ed25519)")
        if len(sig) != 64:
            raise ConfigError(f"signatures[{i}].signature: {len(sig)} bytes; must be 64 (Ed25519)")
        if pub in seen:
            raise ConfigError(f"signatures[{i}]: the same key appears twice in one submission")
        seen.add(pub)


class Proposals:
    def __init__(self, engine: Engine, audit: AuditLog, actions: AdminActions) -> None:
        self.engine = engine
        self.audit = audit
        self.actions = actions

    # --- propose --------------------------------------------------------------------------

    def propose(self, actor: str, now_ms: int, change: AnyChange, ttl_s: int) -> ProposalView:
        with write_txn(self.engine) as s:
            rule = quorum.rule(s, change.action_class)
            if rule.n == 0:
                raise ProposalRefused(
                    "FAILED_PRECONDITION", "proposal: no active operator could sign it"
                )
            if not rule.time_lock_s < ttl_s <= MAX_TTL_S:
                raise ConfigError(
                    f"expires_in_s: {ttl_s} is not allowed; {rule.time_lock_s + 1}..{MAX_TTL_S} "
                    f"(longer than the {change.action_class} time lock of {rule.time_lock_s} s)"
                )
            check_feasible(s, change)
            doc = ProposalDoc(
                action_class=change.action_class,  # type: ignore[arg-type]
                change=change,
                base=BaseVersion(subject=change.subject, version=current_version(s, change)),
                created_ms=now_ms,
                expires_ms=now_ms + ttl_s * 1000,
                nonce=secrets.token_hex(16),
                proposer=actor,
            )
            document = canonical(doc)
            pid = proposal_id(document)
            s.add(
                ProposalRow(
                    proposal_id=pid,
                    document=document.decode("ascii"),
                    action_class=doc.action_class,
                    kind=change.kind,
                    status=OPEN,
                    created_ms=now_ms,
                    expires_ms=doc.expires_ms,
                    proposer=actor,
                )
            )
            s.flush()
            rec = self._audit(
                s,
                now_ms,
                "proposal_created",
                actor,
                pid,
                required=rule.m,
                action_class=doc.action_class,
                document=document.decode("ascii"),
            )
            return self._view(s, pid, f"proposal {pid[:12]} created; {rule.needs()}", rec)

    # --- sign / submit ---------------------------------------------------------------------

    def submit(
        self, actor: str, now_ms: int, pid: str, signatures: list[tuple[str, bytes]]
    ) -> ProposalView:
        """Record new approvals; apply when the quorum is there and any time lock has passed.

        A refusal is audited (and an expiry or staleness it found is recorded) before it is
        raised; it never records any of the submitted signatures.
        """
        check_proposal_id(pid)
        check_signatures(signatures)
        with write_txn(self.engine) as s:
            outcome = self._submit(s, actor, now_ms, pid, signatures)
        if isinstance(outcome, SignerError):
            raise outcome
        return outcome

    def _submit(
        self, s: Session, actor: str, now: int, pid: str, sigs: list[tuple[str, bytes]]
    ) -> ProposalView | SignerError:
        row = self._row(s, pid)
        doc = parse_document(row.document.encode("ascii"))
        closed = self._settle(s, row, doc, now)
        if closed is not None:
            return closed
        document = row.document.encode("ascii")
        recorded = self._signers(s, pid)
        deny = functools.partial(self._refuse, s, now, actor, pid)
        fresh: list[tuple[state.OperatorRow, str, bytes]] = []
        for i, (pub, sig) in enumerate(sigs):
            op = state.operator_by_key(s, pub)
            if op is None:
                why = f"signatures[{i}]: key {pub[:16]}... is not an active operator's"
                return deny("PERMISSION_DENIED", why)
            if not signature_valid(pub, document, sig):
                why = f"signatures[{i}]: {op.operator_id}'s signature is not over this proposal"
                return deny("PERMISSION_DENIED", why)
            if pub not in recorded:
                fresh.append((op, pub, sig))
        if sigs and not fresh:
            names = ", ".join(sorted(recorded[p] for p, _ in sigs))
            why = f"signatures: {names} already signed proposal {pid[:12]}; a signer counts once"
            return deny("ALREADY_EXISTS", why)
        rec = 0
        for op, pub, sig in fresh:
            s.add(
                ProposalSignatureRow(
                    proposal_id=pid,
                    public_key_hex=pub,
                    operator_id=op.operator_id,
                    signature_hex=sig.hex(),
                    signed_ms=now,
                )
            )
            s.flush()
            rec = self._audit(
                s,
                now,
                "proposal_signed",
                actor,
                pid,
                operator_id=op.operator_id,
                public_key_hex=pub,
                signature_hex=sig.hex(),
            )
        return self._advance(s, row, doc, now, actor, rec)

    def _advance(
        self, s: Session, row: ProposalRow, doc: ProposalDoc, now: int, actor: str, rec: int
    ) -> ProposalView:
        rule = quorum.rule(s, row.action_class)
        approvers = self._approvers(s, row.proposal_id)
        pid = row.proposal_id
        if len(approvers) < rule.m or rule.m == 0:
            msg = f"{len(approvers)} of {rule.m} signatures; {rule.needs()}"
            return self._view(s, pid, msg, rec)
        if row.status == OPEN:
            row.status, row.approved_ms = APPROVED, now
            row.apply_after_ms = now + rule.time_lock_s * 1000
            s.flush()
            if rule.time_lock_s:
                rec = self._audit(
                    s,
                    now,
                    "proposal_approved",
                    actor,
                    pid,
                    approvers=[a.operator_id for a in approvers],
                    apply_after_ms=row.apply_after_ms,
                )
        assert row.apply_after_ms is not None
        if now < row.apply_after_ms:
            msg = (
                f"quorum reached; time lock until {row.apply_after_ms} (epoch ms): "
                "any operator may veto until then, then submit it again to apply"
            )
            return self._view(s, pid, msg, rec)
        result = self._apply(s, row, doc, approvers, now)
        if isinstance(result, str):
            return self._view(s, pid, result, rec)
        row.status, row.closed_ms = "applied", now
        row.closed_by = "+".join(a.operator_id for a in approvers)
        s.flush()
        return self._view(s, pid, f"applied: {result.message}", result.audit_seq)

    def _apply(
        self, s: Session, row: ProposalRow, doc: ProposalDoc, approvers: list[Approval], now: int
    ) -> AdminResult | str:
        """Run the change in a savepoint: if today's state refuses it, the proposal fails."""
        c = doc.change
        actor = "quorum:" + "+".join(x.operator_id for x in approvers)
        extra: dict[str, object] = {
            "proposal_id": row.proposal_id,
            "approvers": [x.__dict__ for x in approvers],
        }
        try:
            with s.begin_nested():
                return run_change(self.actions, s, c, actor, now, extra)
        except ConfigError as e:
            row.status, row.closed_ms, row.note = "failed", now, str(e)[:500]
            s.flush()
            self._audit(s, now, "proposal_failed", actor, row.proposal_id, reason=str(e))
            return f"failed: {e}"

    # --- veto, list, show ------------------------------------------------------------------

    def veto(self, actor: str, now_ms: int, pid: str, reason: str = "") -> ProposalView:
        """Any single operator stops a proposal that has not applied yet (tightening)."""
        check_proposal_id(pid)
        if len(reason) > 500:
            raise ConfigError(f"reason: {len(reason)} characters; at most 500")
        with write_txn(self.engine) as s:
            row = self._row(s, pid)
            closed = self._settle(s, row, parse_document(row.document.encode("ascii")), now_ms)
            if closed is None:
                row.status, row.closed_ms, row.closed_by = "vetoed", now_ms, actor
                row.note = reason
                s.flush()
                rec = self._audit(s, now_ms, "proposal_vetoed", actor, pid, reason=reason)
                return self._view(s, pid, f"proposal {pid[:12]} vetoed by {actor}", rec)
        raise closed

    def list(self, now_ms: int, status: str = "", pid: str = "") -> list[ProposalView]:
        """Proposals (newest first); expiry and staleness found on the way are recorded."""
        if status and status not in (*LIVE, "applied", "vetoed", "expired", "stale", "failed"):
            raise ConfigError(
                f"status: {status[:20]!r} is not one of open, approved, applied, vetoed, "
                "expired, stale, failed"
            )
        if pid:
            check_proposal_id(pid)
        with write_txn(self.engine) as s:
            q = select(ProposalRow).order_by(ProposalRow.created_ms.desc())
            if pid:
                q = q.where(ProposalRow.proposal_id == pid)
            rows = list(s.scalars(q))
            if pid and not rows:
                raise ProposalRefused("NOT_FOUND", f"proposal_id: {pid[:12]}... is not known")
            for row in rows:
                self._settle(s, row, parse_document(row.document.encode("ascii")), now_ms)
            return [
                self._view(s, r.proposal_id, r.note)
                for r in rows
                if not status or r.status == status
            ]

    # --- helpers ---------------------------------------------------------------------------

    def _row(self, s: Session, pid: str) -> ProposalRow:
        row = s.get(ProposalRow, pid)
        if row is None:
            raise ProposalRefused("NOT_FOUND", f"proposal_id: {pid[:12]}... is not known")
        return row

    def _settle(
        self, s: Session, row: ProposalRow, doc: ProposalDoc, now: int
    ) -> ProposalRefused | None:
        """Close a live proposal that expired or whose base moved; None if it is still live."""
        pid = row.proposal_id
        if row.status in LIVE:
            cur = current_version(s, doc.change)
            c = doc.change
            hold_moved = isinstance(c, ApproveKeyChange) and key_material_moved(s, c)
            if now >= row.expires_ms:
                row.status, row.closed_ms = "expired", now
                self._audit(s, now, "proposal_expired", "signer", pid, expires_ms=row.expires_ms)
            elif cur != doc.base.version or hold_moved:
                row.status, row.closed_ms = "stale", now
                row.note = f"{doc.base.subject} is at version {cur}, not {doc.base.version}"
                if cur == doc.base.version:
                    row.note = f"{doc.base.subject}: the held key material or API key id changed"
                self._audit(s, now, "proposal_stale", "signer", pid, reason=row.note)
            s.flush()
        if row.status in LIVE:
            return None
        why = {
            "expired": f"expired at {row.expires_ms} (epoch ms)",
            "stale": f"stale: its base changed ({row.note})",
        }.get(row.status, row.status + (f" ({row.note})" if row.note else ""))
        return ProposalRefused("FAILED_PRECONDITION", f"proposal {pid[:12]} is {why}")

    def _refuse(
        self, s: Session, now: int, actor: str, pid: str, code: str, reason: str
    ) -> ProposalRefused:
        self._audit(s, now, "proposal_refused", actor, pid, reason=reason)
        return ProposalRefused(code, reason)

    def _signers(self, s: Session, pid: str) -> dict[str, str]:
        rows = s.scalars(
            select(ProposalSignatureRow).where(ProposalSignatureRow.proposal_id == pid)
        )
        return {r.public_key_hex: r.operator_id for r in rows}

    def _approvers(self, s: Session, pid: str) -> list[Approval]:
        """Signatures by operators that are active now, in signing order."""
        rows = s.scalars(
            select(ProposalSignatureRow)
            .where(ProposalSignatureRow.proposal_id == pid)
            .order_by(ProposalSignatureRow.signed_ms, ProposalSignatureRow.operator_id)
        )
        out = []
        for r in rows:
            op = state.operator_by_key(s, r.public_key_hex)
            if op is not None:
                out.append(Approval(op.operator_id, r.public_key_hex, r.signature_hex))
        return out

    def _audit(self, s: Session, now: int, action: str, actor: str, pid: str, **f: object) -> int:
        payload = {"action": action, "actor": actor, "proposal_id": pid, **f}
        return self.audit.append(s, "admin", payload, now).seq

    def _view(self, s: Session, pid: str, message: str = "", audit_seq: int = 0) -> ProposalView:
        row = self._row(s, pid)
        doc = parse_document(row.document.encode("ascii"))
        rule = quorum.rule(s, row.action_class)
        return ProposalView(
            proposal_id=pid,
            document=row.document.encode("ascii"),
            status=row.status,
            action_class=row.action_class,
            kind=row.kind,
            required=rule.m,
            operators=rule.n,
            approvers=tuple(self._approvers(s, pid)),
            expires_ms=row.expires_ms,
            apply_after_ms=row.apply_after_ms or 0,
            summary=describe(doc),
            message=message,
            audit_seq=audit_seq,
        )
