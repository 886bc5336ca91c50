"""The signer's control state: policy versions per key, freezes, bot and operator identities.

All of it lives in the database and is read inside each decision's write transaction, so every
replica sharing one PostgreSQL sees a freeze, a revocation or a new policy version at once.
Functions take a Session and only flush; callers commit through `signer.db.write_txn`
together with the audit record that describes the change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from signer import fastsql
from signer import quorum as _quorum  # noqa: F401 - registers the quorum and proposal tables
from signer.db import Base
from signer.errors import ConfigError

ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
GLOBAL_FREEZE = "global_freeze"


def check_id(field: str, value: str) -> str:
    """Validate a bot, operator or key id; the message names the field, value and allowed form."""
    if not isinstance(value, str) or not ID_RE.fullmatch(value):
        raise ConfigError(
            f"{field}: {value[:80]!r} is not allowed; use 1-64 characters A-Z a-z 0-9 _ . -"
        )
    return value


class PolicyVersionRow(Base):
    __tablename__ = "key_policies"
    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    policy_json: Mapped[str] = mapped_column(Text)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    actor: Mapped[str] = mapped_column(String(128))
    audit_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class ControlRow(Base):
    """Named switches; today only the global freeze (kill switch)."""

    __tablename__ = "controls"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(String(500), default="")
    changed_ms: Mapped[int] = mapped_column(BigInteger)
    actor: Mapped[str] = mapped_column(String(128))


class KeyFreezeRow(Base):
    __tablename__ = "key_freezes"
    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    frozen: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(String(500), default="")
    changed_ms: Mapped[int] = mapped_column(BigInteger)
    actor: Mapped[str] = mapped_column(String(128))


class BotRow(Base):
    __tablename__ = "bots"
    bot_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    public_key_hex: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # active | revoked
    created_ms: Mapped[int] = mapped_column(BigInteger)
    revoked_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class BotGrantRow(Base):
    __tablename__ = "bot_grants"
    bot_id: Mapped[str] = mapped_column(ForeignKey("bots.bot_id"), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)


class OperatorRow(Base):
    __tablename__ = "operators"
    operator_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    public_key_hex: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # active | removed
    created_ms: Mapped[int] = mapped_column(BigInteger)


@dataclass(frozen=True)
class CurrentPolicy:
    key_id: str
    version: int
    policy_json: str


@dataclass(frozen=True)
class BotInfo:
    bot_id: str
    public_key_hex: str
    status: str
    key_ids: tuple[str, ...]
    created_ms: int


# --- policies -----------------------------------------------------------------------------


def current_policy(session: Session, key_id: str) -> CurrentPolicy | None:
    sql = (  # plain SQL, not ORM objects: this is on every decision's path
        "SELECT version, policy_json FROM key_policies WHERE key_id = ?"
        " ORDER BY version DESC LIMIT 1"
    )
    row = fastsql.run(session, sql, (key_id,)).first()
    return None if row is None else CurrentPolicy(key_id, int(row[0]), row[1])


def put_policy(
    session: Session,
    key_id: str,
    policy_json: str,
    now_ms: int,
    actor: str,
    expected_version: int = 0,
) -> int:
    """Store a new policy version; with `expected_version`, refuse if someone changed it since."""
    cur = current_policy(session, key_id)
    cur_version = cur.version if cur else 0
    if expected_version and expected_version != cur_version:
        raise ConfigError(
            f"expected_version: {expected_version} does not match the current policy version "
            f"{cur_version} of key {key_id!r}; re-read the policy and try again"
        )
    version = cur_version + 1
    session.add(
        PolicyVersionRow(
            key_id=key_id, version=version, policy_json=policy_json, created_ms=now_ms, actor=actor
        )
    )
    session.flush()
    return version


def policy_history(session: Session, key_id: str) -> list[PolicyVersionRow]:
    return list(
        session.scalars(
            select(PolicyVersionRow)
            .where(PolicyVersionRow.key_id == key_id)
            .order_by(PolicyVersionRow.version)
        )
    )


# --- freezes --------------------------------------------------------------------------------


def global_frozen(session: Session) -> bool:
    sql = "SELECT enabled FROM controls WHERE name = ?"
    return bool(fastsql.run(session, sql, (GLOBAL_FREEZE,)).scalar())


def key_frozen(session: Session, key_id: str) -> bool:
    sql = "SELECT frozen FROM key_freezes WHERE key_id = ?"
    return bool(fastsql.run(session, sql, (key_id,)).scalar())


def set_global_freeze(
    session: Session, enabled: bool, reason: str, now_ms: int, actor: str
) -> None:
    row = session.get(ControlRow, GLOBAL_FREEZE)
    if row is None:
        session.add(
            ControlRow(
                name=GLOBAL_FREEZE, enabled=enabled, reason=reason, changed_ms=now_ms, actor=actor
            )
        )
    else:
        row.enabled, row.reason, row.changed_ms, row.actor = enabled, reason, now_ms, actor
    session.flush()


def set_key_freeze(
    session: Session, key_id: str, frozen: bool, reason: str, now_ms: int, actor: str
) -> None:
    row = session.get(KeyFreezeRow, key_id)
    if row is None:
        session.add(
            KeyFreezeRow(
                key_id=key_id, frozen=frozen, reason=reason, changed_ms=now_ms, actor=actor
            )
        )
    else:
        row.frozen, row.reason, row.changed_ms, row.actor = frozen, reason, now_ms, actor
    session.flush()


def frozen_keys(session: Session) -> list[str]:
    return list(
        session.scalars(
            select(KeyFreezeRow.key_id)
            .where(KeyFreezeRow.frozen.is_(True))
            .order_by(KeyFreezeRow.key_id)
        )
    )


# --- bots -----------------------------------------------------------------------------------


def get_bot(session: Session, bot_id: str) -> BotInfo | None:
    """A bot and its grants in one round trip (outer join; Core rows, no ORM objects)."""
    sql = (
        "SELECT b.public_key_hex, b.status, b.created_ms, g.key_id FROM bots b"
        " LEFT OUTER JOIN bot_grants g ON g.bot_id = b.bot_id WHERE b.bot_id = ?"
        " ORDER BY g.key_id"
    )
    rows = fastsql.run(session, sql, (bot_id,)).all()
    if not rows:
        return None
    keys = tuple(r[3] for r in rows if r[3] is not None)
    first = rows[0]
    return BotInfo(bot_id, first[0], first[1], keys, int(first[2]))


def bot_may_use(session: Session, bot_id: str, key_id: str) -> bool:
    return session.get(BotGrantRow, (bot_id, key_id)) is not None


def register_bot(
    session: Session, bot_id: str, public_key_hex: str, key_ids: list[str], now_ms: int
) -> BotInfo:
    """Register (or re-register a revoked) bot identity with the key ids it may use."""
    check_id("bot_id", bot_id)
    for k in key_ids:
        check_id("key_id", k)
    if not re.fullmatch(r"[0-9a-f]{64}", public_key_hex):
        raise ConfigError("public_key: must be a 32-byte Ed25519 public key (64 hex characters)")
    row = session.get(BotRow, bot_id)
    if row is not None and row.status == "active":
        raise ConfigError(f"bot_id: {bot_id!r} is already registered; revoke it first")
    if row is None:
        session.add(
            BotRow(bot_id=bot_id, public_key_hex=public_key_hex, status="active", created_ms=now_ms)
        )
    else:
        row.public_key_hex, row.status, row.created_ms, row.revoked_ms = (
            public_key_hex,
            "active",
            now_ms,
            None,
        )
    session.flush()
    for grant in session.scalars(select(BotGrantRow).where(BotGrantRow.bot_id == bot_id)):
        session.delete(grant)
    session.flush()
    for k in sorted(set(key_ids)):
        session.add(BotGrantRow(bot_id=bot_id, key_id=k))
    session.flush()
    info = get_bot(session, bot_id)
    assert info is not None  # just inserted in this transaction
    return info


def revoke_bot(session: Session, bot_id: str, now_ms: int) -> BotInfo:
    row = session.get(BotRow, bot_id)
    if row is None:
        raise ConfigError(f"bot_id: {bot_id!r} is not registered")
    row.status, row.revoked_ms = "revoked", now_ms
    session.flush()
    info = get_bot(session, bot_id)
    assert info is not None
    return info


def grant_keys(session: Session, bot_id: str, key_ids: list[str]) -> BotInfo:
    """Let an active bot use more keys (a loosening: only through a proposal under a quorum)."""
    row = session.get(BotRow, bot_id)
    if row is None or row.status != "active":
        raise ConfigError(f"bot_id: {bot_id!r} is not an active bot")
    for k in sorted(set(key_ids)):
        check_id("key_id", k)
        if session.get(BotGrantRow, (bot_id, k)) is None:
            session.add(BotGrantRow(bot_id=bot_id, key_id=k))
    session.flush()
    info = get_bot(session, bot_id)
    assert info is not None
    return info


def list_bots(session: Session) -> list[BotInfo]:
    ids = session.scalars(select(BotRow.bot_id).order_by(BotRow.bot_id))
    return [b for b in (get_bot(session, i) for i in ids) if b is not None]


# --- operators ------------------------------------------------------------------------------


def add_operator(session: Session, operator_id: str, public_key_hex: str, now_ms: int) -> None:
    check_id("operator_id", operator_id)
    if not re.fullmatch(r"[0-9a-f]{64}", public_key_hex):
        raise ConfigError("operator public key: must be 64 hex characters (Ed25519)")
    if session.get(OperatorRow, operator_id) is not None:
        raise ConfigError(f"operator_id: {operator_id!r} already exists (ids are not reused)")
    if session.scalars(
        select(OperatorRow).where(OperatorRow.public_key_hex == public_key_hex)
    ).first():
        raise ConfigError(
            "operator public key: already registered for another operator; one key, one vote"
        )
    session.add(
        OperatorRow(
            operator_id=operator_id,
            public_key_hex=public_key_hex,
            status="active",
            created_ms=now_ms,
        )
    )
    session.flush()


def remove_operator(session: Session, operator_id: str) -> None:
    row = session.get(OperatorRow, operator_id)
    if row is None or row.status != "active":
        raise ConfigError(f"operator_id: {operator_id!r} is not an active operator")
    row.status = "removed"
    session.flush()


def operator_by_key(session: Session, public_key_hex: str) -> OperatorRow | None:
    """The active operator holding this Ed25519 public key, if any."""
    return session.scalars(
        select(OperatorRow).where(
            OperatorRow.public_key_hex == public_key_hex, OperatorRow.status == "active"
        )
    ).first()


def get_operator(session: Session, operator_id: str) -> OperatorRow | None:
    return session.get(OperatorRow, operator_id)


def list_operators(session: Session) -> list[OperatorRow]:
    return list(session.scalars(select(OperatorRow).order_by(OperatorRow.operator_id)))
