"""Who is asking: Ed25519-signed request envelopes, timestamps and nonces.

A bot (or operator) signs SIGNING_CONTEXT || body, where body is the serialized request message
whose header names the RPC it is meant for. The signer checks, in order: the identity is known
and active, the signature verifies, the header's method matches the RPC being called, the
timestamp is within the allowed skew, and the nonce was never seen for this identity. Nonces are
stored in the same write transaction as the decision, so a replay racing its original loses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey
from sqlalchemy import BigInteger, String, delete
from sqlalchemy.orm import Mapped, Session, mapped_column

from bulkhead.contract import ADMIN_SIGNING_CONTEXT, BOT_SIGNING_CONTEXT
from signer import fastsql, state
from signer.db import Base
from signer.errors import AuthError

SIGNATURE_LEN = 64
NONCE_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
DEFAULT_SKEW_MS = 30_000
__all__ = ["ADMIN_SIGNING_CONTEXT", "BOT_SIGNING_CONTEXT", "authenticate", "prune_nonces"]


class NonceRow(Base):
    """Nonces seen per identity, kept for twice the skew window (older requests fail on time)."""

    __tablename__ = "nonces"
    principal: Mapped[str] = mapped_column(String(80), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    ts_ms: Mapped[int] = mapped_column(BigInteger, index=True)


@dataclass(frozen=True)
class Header:
    principal: str  # "bot:<id>" or "operator:<id>"
    identity: str
    method: str
    nonce: str
    timestamp_ms: int


def verify_signature(public_key_hex: str, context: bytes, body: bytes, signature: bytes) -> bool:
    if len(signature) != SIGNATURE_LEN:
        return False
    try:
        VerifyKey(bytes.fromhex(public_key_hex)).verify(context + body, signature)
        return True
    except (BadSignatureError, ValueError):
        return False


def check_header_syntax(header: Header) -> None:
    """Field-level checks that need no state; raised as INVALID_ARGUMENT by the service."""
    from signer.errors import InvalidRequest

    if not state.ID_RE.fullmatch(header.identity):
        raise InvalidRequest(
            f"header.{header.principal.split(':')[0]}_id: {header.identity[:80]!r} is not allowed; "
            "use 1-64 characters A-Z a-z 0-9 _ . -"
        )
    if not NONCE_RE.fullmatch(header.nonce):
        raise InvalidRequest("header.nonce: must be 16-64 characters A-Z a-z 0-9 _ -")
    if header.timestamp_ms <= 0:
        raise InvalidRequest(
            f"header.timestamp_ms: {header.timestamp_ms} must be a positive epoch ms"
        )


def authenticate(
    session: Session,
    header: Header,
    public_key_hex: str | None,
    active: bool,
    body: bytes,
    signature: bytes,
    context: bytes,
    expected_method: str,
    now_ms: int,
    skew_ms: int = DEFAULT_SKEW_MS,
    nonce_seen: bool | None = None,
) -> None:
    """Raise AuthError(rule_id, message) unless the request is authentic, fresh and unreplayed.

    Must run inside the decision's write transaction: the nonce insert is part of it.
    `nonce_seen`: whether the nonce is already recorded, when the caller read it in this
    transaction (saves the look-up).
    """
    if public_key_hex is None:
        raise AuthError("unknown_identity", f"{header.principal} is not registered")
    if not active:
        raise AuthError("identity_revoked", f"{header.principal} has been revoked")
    if len(signature) != SIGNATURE_LEN:
        raise AuthError(
            "bad_signature", f"signature must be {SIGNATURE_LEN} bytes, got {len(signature)}"
        )
    if not verify_signature(public_key_hex, context, body, signature):
        raise AuthError("bad_signature", f"signature does not verify for {header.principal}")
    if header.method != expected_method:
        raise AuthError(
            "wrong_method", f"request was signed for {header.method!r}, not {expected_method!r}"
        )
    if abs(now_ms - header.timestamp_ms) > skew_ms:
        raise AuthError(
            "stale_timestamp",
            f"timestamp {header.timestamp_ms} is {now_ms - header.timestamp_ms} ms "
            "from the signer's "
            f"clock; allowed skew is +/-{skew_ms} ms",
        )
    key = (header.principal, header.nonce)
    if nonce_seen is None:
        nonce_seen = fastsql.run(session, _NONCE_SEEN_SQL, key).first() is not None
    if nonce_seen:
        raise AuthError(
            "replayed_nonce", f"nonce {header.nonce} was already used by {header.principal}"
        )
    fastsql.write(session, _NONCE_INSERT_SQL, (*key, header.timestamp_ms))


_NONCE_SEEN_SQL = "SELECT 1 FROM nonces WHERE principal = ? AND nonce = ?"
_NONCE_INSERT_SQL = "INSERT INTO nonces (principal, nonce, ts_ms) VALUES (?, ?, ?)"


def prune_nonces(session: Session, now_ms: int, skew_ms: int = DEFAULT_SKEW_MS) -> int:
    """Forget nonces whose timestamps can no longer pass the skew check anyway."""
    result = session.execute(delete(NonceRow).where(NonceRow.ts_ms < now_ms - 2 * skew_ms - 1000))
    return int(result.rowcount or 0)
