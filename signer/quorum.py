"""How many operators a loosening needs: M-of-N per action class, time locks, state versions.

Tightening never waits. A loosening action may run directly only while its class needs at most
one operator and has no time lock (a single-operator install); otherwise it must go through a
proposal signed by M distinct active operators (signer.proposals).

Rules live in the database (`quorum_rules`); a class without a row needs min(2, N) operators,
so an install with several operators is insider-proof by default. With no operator at all
(administered from the signer host only) nothing can be signed and the host CLI acts alone.

`subject_versions` counts changes to things a proposal can target (a freeze, a bot, the
operator set), so a proposal applies only to the exact state its signers saw. Policies use
their own version numbers; exchange keys their generation and fingerprint.

This module imports no other signer state module: `signer.state` imports it to register tables.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import BigInteger, ForeignKey, Integer, String, Text, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from signer.db import Base
from signer.errors import ConfigError, SignerError

ACTION_CLASSES = ("policy", "unfreeze", "bots", "keys", "operators")
MAX_TIME_LOCK_S = 30 * 86_400


class ProposalRefused(SignerError):
    """A step the quorum rules or the proposal's state do not allow; nothing changed.

    `code` names the gRPC status: FAILED_PRECONDITION, ALREADY_EXISTS, NOT_FOUND or
    PERMISSION_DENIED.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class QuorumRuleRow(Base):
    __tablename__ = "quorum_rules"
    action_class: Mapped[str] = mapped_column(String(16), primary_key=True)
    m: Mapped[int] = mapped_column(Integer)
    time_lock_s: Mapped[int] = mapped_column(Integer, default=0)
    changed_ms: Mapped[int] = mapped_column(BigInteger)
    actor: Mapped[str] = mapped_column(String(200))


class SubjectVersionRow(Base):
    __tablename__ = "subject_versions"
    subject: Mapped[str] = mapped_column(String(80), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)


class KeyHoldRow(Base):
    """An exchange key added, generated or rotated while its class needs a quorum: kept
    pending (unusable) until a proposal approving exactly this material applies."""

    __tablename__ = "key_holds"
    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    generation: Mapped[int] = mapped_column(Integer)
    fingerprint: Mapped[str] = mapped_column(String(64))
    held_ms: Mapped[int] = mapped_column(BigInteger)


@dataclass(frozen=True)
class Rule:
    action_class: str
    m: int  # signatures needed; 0 when there is no operator to sign
    n: int  # active operators
    time_lock_s: int
    configured: bool

    @property
    def direct_ok(self) -> bool:
        """May one caller do it directly (no proposal)?"""
        return self.m <= 1 and (self.time_lock_s == 0 or self.n == 0)

    def needs(self) -> str:
        lock = f" and a {self.time_lock_s} s time lock" if self.time_lock_s else ""
        return f"needs a proposal with {self.m} of {self.n} operator signatures{lock}"


def check_class(value: str) -> str:
    if value not in ACTION_CLASSES:
        raise ConfigError(f"action_class: {value[:40]!r} is not one of {', '.join(ACTION_CLASSES)}")
    return value


def active_operators(session: Session) -> int:
    from signer.state import OperatorRow  # state imports this module at load time

    q = select(func.count()).select_from(OperatorRow).where(OperatorRow.status == "active")
    return int(session.scalar(q) or 0)


def rule(session: Session, action_class: str) -> Rule:
    check_class(action_class)
    n = active_operators(session)
    row = session.get(QuorumRuleRow, action_class)
    if row is None:
        return Rule(action_class, min(2, n), n, 0, False)
    return Rule(action_class, min(row.m, n), n, row.time_lock_s, True)


def rules(session: Session) -> list[Rule]:
    return [rule(session, c) for c in ACTION_CLASSES]


def require_direct(session: Session, action_class: str, what: str) -> None:
    """Refuse a direct loosening that this class's quorum reserves for proposals."""
    r = rule(session, action_class)
    if not r.direct_ok:
        raise ProposalRefused("FAILED_PRECONDITION", f"{what}: {r.needs()}")


def check_rule(action_class: str, m: int, time_lock_s: int, n: int) -> None:
    """A rule the current operator set can satisfy; the message names field, value and range."""
    check_class(action_class)
    if n == 0:
        raise ConfigError("quorum: no active operator; register operators before a quorum")
    if not 1 <= m <= n:
        raise ConfigError(
            f"quorum.{action_class}: M={m} is not allowed; 1 <= M <= {n} (active operators)"
        )
    if not 0 <= time_lock_s <= MAX_TIME_LOCK_S:
        raise ConfigError(
            f"time_lock.{action_class}: {time_lock_s} s is not allowed; 0..{MAX_TIME_LOCK_S}"
        )


def set_rule(
    session: Session, action_class: str, m: int, time_lock_s: int, now_ms: int, actor: str
) -> None:
    check_rule(action_class, m, time_lock_s, active_operators(session))
    row = session.get(QuorumRuleRow, action_class)
    if row is None:
        session.add(
            QuorumRuleRow(
                action_class=action_class,
                m=m,
                time_lock_s=time_lock_s,
                changed_ms=now_ms,
                actor=actor,
            )
        )
    else:
        row.m, row.time_lock_s, row.changed_ms, row.actor = m, time_lock_s, now_ms, actor
    session.flush()


def max_configured_m(session: Session) -> int:
    """The largest M any class needs: the operator set may not shrink below it."""
    ms = [r.m for r in session.scalars(select(QuorumRuleRow))]
    return max(ms, default=1)


# --- subject versions -------------------------------------------------------------------------


def version(session: Session, subject: str) -> int:
    row = session.get(SubjectVersionRow, subject)
    return row.version if row else 0


def bump(session: Session, subject: str) -> int:
    """Mark a change to `subject`: proposals based on the previous version become stale."""
    row = session.get(SubjectVersionRow, subject)
    if row is None:
        row = SubjectVersionRow(subject=subject, version=1)
        session.add(row)
    else:
        row.version += 1
    session.flush()
    return row.version


# --- exchange keys held for approval ---------------------------------------------------------


def hold_key(session: Session, key_id: str, generation: int, fingerprint: str, now_ms: int) -> None:
    from signer.keystore import ExchangeKey

    row = session.get(ExchangeKey, key_id)
    if row is None or row.status == "removed":
        raise ConfigError(f"key_id: {key_id!r} is not a live key")
    row.status = "pending"  # the keystore refuses credentials of a pending key
    hold = session.get(KeyHoldRow, key_id)
    if hold is None:
        session.add(
            KeyHoldRow(
                key_id=key_id, generation=generation, fingerprint=fingerprint, held_ms=now_ms
            )
        )
    else:
        hold.generation, hold.fingerprint, hold.held_ms = generation, fingerprint, now_ms
    session.flush()


def held(session: Session, key_id: str) -> KeyHoldRow | None:
    return session.get(KeyHoldRow, key_id)


def release_key(session: Session, key_id: str) -> None:
    from signer.keystore import ExchangeKey

    row = session.get(ExchangeKey, key_id)
    hold = session.get(KeyHoldRow, key_id)
    if row is None or hold is None:
        raise ConfigError(f"key_id: {key_id!r} is not held for approval")
    row.status = "active"
    session.delete(hold)
    session.flush()


# --- proposals and their approvals -----------------------------------------------------------


class ProposalRow(Base):
    """One proposal: its exact signed document and where it stands.

    status: open (collecting signatures), approved (quorum reached, time lock running),
    applied, vetoed, expired, stale (its base version changed). Only open/approved can move.
    """

    __tablename__ = "proposals"
    proposal_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    document: Mapped[str] = mapped_column(Text)
    action_class: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), index=True)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    expires_ms: Mapped[int] = mapped_column(BigInteger)
    proposer: Mapped[str] = mapped_column(String(128))
    approved_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    apply_after_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    closed_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    closed_by: Mapped[str] = mapped_column(String(200), default="")
    note: Mapped[str] = mapped_column(String(500), default="")


class ProposalSignatureRow(Base):
    __tablename__ = "proposal_signatures"
    proposal_id: Mapped[str] = mapped_column(ForeignKey("proposals.proposal_id"), primary_key=True)
    public_key_hex: Mapped[str] = mapped_column(String(64), primary_key=True)
    operator_id: Mapped[str] = mapped_column(String(64))
    signature_hex: Mapped[str] = mapped_column(String(128))
    signed_ms: Mapped[int] = mapped_column(BigInteger)
