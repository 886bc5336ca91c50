"""Outcomes of allowed orders: audited, applied to the order ledger, mapped to the reply.

Mixed into `SignerCore`. An outcome record links to its decision record by sequence number; an
outcome learned late (reconciler, a bot's read) is recorded at most once, under the write lock.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from bulkhead.signer.v1 import signer_pb2 as pb
from signer import limits
from signer.audit import AppendedRecord
from signer.exchanges import SignedHttp
from signer.policy import Decision
from signer.reads import order_state

if TYPE_CHECKING:
    from signer.core import SignerCore

# Exchange status of an outcome -> order-ledger status, per action (others leave it pending).
_LEDGER_STATUS = {
    "create": {
        "open": "open",
        "closed": "closed",
        "canceled": "canceled",
        "rejected": "rejected",
        "expired": "canceled",
    },
    "cancel": {"canceled": "canceled", "closed": "closed"},
}


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    audit_seq: int
    policy_version: int
    audit_hash: str = ""  # of the decision record, when appended in the caller's transaction


class OutcomeOps:
    """The outcome side of SubmitOrder and CancelOrder (and of late outcomes)."""

    def _fill_reply(
        self: SignerCore,
        reply: pb.OrderReply,
        verdict: Verdict,
        key_id: str,
        coid: str,
        action: str,
        result: SignedHttp | dict[str, str],
    ) -> None:
        if isinstance(result, SignedHttp):
            self._record_outcome(
                verdict.audit_seq, key_id, coid, action, "signed", **self._signed_fields(result)
            )
            reply.signed_request.CopyFrom(self._signed_pb(result))
            return
        status = result.get("status", "")
        self._record_outcome(
            verdict.audit_seq,
            key_id,
            coid,
            action,
            status or "unknown",
            exchange_order_id=result.get("exchange_order_id", ""),
            filled=result.get("filled", ""),
        )
        reply.order.CopyFrom(order_state(result))

    @staticmethod
    def _signed_fields(result: SignedHttp) -> dict[str, str]:
        """What the outcome record keeps of a signed request: a digest, never the signature."""
        digest = hashlib.sha256(
            f"{result.method} {result.url}\n{result.body or ''}".encode()
        ).hexdigest()
        return {
            "request_sha256": digest,
            "url": result.url.split("?")[0],
            "http_method": result.method,
        }

    @staticmethod
    def _signed_pb(result: SignedHttp) -> pb.SignedHttpRequest:
        return pb.SignedHttpRequest(
            method=result.method, url=result.url, headers=result.headers, body=result.body or ""
        )

    def _record_outcome(
        self: SignerCore,
        decision_seq: int,
        key_id: str,
        coid: str,
        action: str,
        status: str,
        **extra: str,
    ) -> None:
        with self.txn() as s:
            self._append_outcome(s, decision_seq, key_id, coid, action, status, **extra)

    def _record_late_outcome(
        self: SignerCore, decision_seq: int, key_id: str, coid: str, status: str, **extra: str
    ) -> bool:
        """An outcome learned after the fact (reconciler, a bot's read), audited once: only
        while the order is still pending, checked under the write lock, so two replicas (or a
        read and the reconciler) never both record it. Returns whether it was recorded."""
        with self.txn() as s:
            if limits.order_status(s, key_id, coid) != "pending":
                return False
            self._append_outcome(s, decision_seq, key_id, coid, "create", status, **extra)
        return True

    def _append_outcome(
        self: SignerCore,
        s: Session,
        decision_seq: int,
        key_id: str,
        coid: str,
        action: str,
        status: str,
        *,
        after: AppendedRecord | None = None,
        **extra: str,
    ) -> None:
        """Audit an outcome and apply it to the order ledger, in the caller's transaction
        (`after`: the decision record, when appended in this same transaction)."""
        self.audit.append(
            s,
            "outcome",
            {
                "decision_seq": decision_seq,
                "action": action,
                "key_id": key_id,
                "client_order_id": coid,
                "status": status,
                **extra,
            },
            self.clock(),
            after=after,
        )
        ledger_status = _LEDGER_STATUS[action]
        if status in ledger_status:
            limits.record_outcome(s, key_id, coid, ledger_status[status])

    @staticmethod
    def _decision_pb(v: Verdict) -> pb.Decision:
        return pb.Decision(
            allowed=v.decision.allowed,
            audit_seq=v.audit_seq,
            policy_version=v.policy_version,
            violations=[
                pb.RuleViolation(rule_id=r.rule_id, message=r.message) for r in v.decision.reasons
            ],
        )
