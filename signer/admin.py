"""Operator actions, shared by the CLI on the signer host and the Admin gRPC service.

Each action is one write transaction: the change and the audit record describing it (who, what,
from which version) commit together or not at all. `actor` names who acted: "operator:<id>"
for a signed Admin request, "cli:<os user>" for the local CLI.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from signer import state
from signer.audit import AuditLog, SignedCheckpoint
from signer.db import read_session, write_txn
from signer.errors import ConfigError
from signer.policy import is_loosening, parse_policy_toml, policy_from_json, policy_to_json


@dataclass(frozen=True)
class AdminResult:
    message: str
    audit_seq: int
    policy_version: int = 0


class AdminActions:
    def __init__(self, engine: Engine, audit: AuditLog) -> None:
        self.engine = engine
        self.audit = audit

    def freeze(self, actor: str, now_ms: int, key_id: str | None, reason: str = "") -> AdminResult:
        """Tightening: takes effect for every replica at the transaction's commit."""
        with write_txn(self.engine) as s:
            if key_id is None:
                state.set_global_freeze(s, True, reason, now_ms, actor)
                target = "all keys"
            else:
                state.check_id("key_id", key_id)
                state.set_key_freeze(s, key_id, True, reason, now_ms, actor)
                target = f"key {key_id}"
            rec = self.audit.append(
                s,
                "admin",
                {
                    "action": "freeze",
                    "actor": actor,
                    "key_id": key_id,
                    "all": key_id is None,
                    "reason": reason,
                },
                now_ms,
            )
        return AdminResult(f"frozen: {target}", rec.seq)

    def unfreeze(
        self, actor: str, now_ms: int, key_id: str | None, reason: str = ""
    ) -> AdminResult:
        with write_txn(self.engine) as s:
            if key_id is None:
                if not state.global_frozen(s):
                    raise ConfigError("freeze: the global freeze is not in force; nothing to lift")
                state.set_global_freeze(s, False, reason, now_ms, actor)
                target = "all keys (global freeze lifted; per-key freezes stay)"
            else:
                state.check_id("key_id", key_id)
                if not state.key_frozen(s, key_id):
                    raise ConfigError(f"key_id: {key_id!r} is not frozen; nothing to lift")
                state.set_key_freeze(s, key_id, False, reason, now_ms, actor)
                target = f"key {key_id}"
            rec = self.audit.append(
                s,
                "admin",
                {
                    "action": "unfreeze",
                    "actor": actor,
                    "key_id": key_id,
                    "all": key_id is None,
                    "reason": reason,
                },
                now_ms,
            )
        return AdminResult(f"unfrozen: {target}", rec.seq)

    def set_policy(
        self, actor: str, now_ms: int, key_id: str, policy_toml: str, expected_version: int = 0
    ) -> AdminResult:
        state.check_id("key_id", key_id)
        policy = parse_policy_toml(policy_toml)  # PolicyConfigError names field, value, range
        policy_json = policy_to_json(policy)
        with write_txn(self.engine) as s:
            cur = state.current_policy(s, key_id)
            old = policy_from_json(cur.policy_json) if cur else None
            loosening = is_loosening(old, policy)
            version = state.put_policy(s, key_id, policy_json, now_ms, actor, expected_version)
            rec = self.audit.append(
                s,
                "admin",
                {
                    "action": "set_policy",
                    "actor": actor,
                    "key_id": key_id,
                    "version": version,
                    "previous_version": cur.version if cur else 0,
                    "policy": policy_json,
                    "loosening": loosening,
                },
                now_ms,
            )
        return AdminResult(f"policy for {key_id} is now version {version}", rec.seq, version)

    def register_bot(
        self, actor: str, now_ms: int, bot_id: str, public_key: bytes, key_ids: list[str]
    ) -> AdminResult:
        if len(public_key) != 32:
            raise ConfigError(
                f"public_key: {len(public_key)} bytes; an Ed25519 public key is 32 bytes"
            )
        with write_txn(self.engine) as s:
            info = state.register_bot(s, bot_id, public_key.hex(), key_ids, now_ms)
            rec = self.audit.append(
                s,
                "admin",
                {
                    "action": "register_bot",
                    "actor": actor,
                    "bot_id": bot_id,
                    "public_key_hex": info.public_key_hex,
                    "key_ids": list(info.key_ids),
                },
                now_ms,
            )
        return AdminResult(
            f"bot {bot_id} registered for keys {', '.join(info.key_ids) or '(none)'}", rec.seq
        )

    def revoke_bot(self, actor: str, now_ms: int, bot_id: str) -> AdminResult:
        state.check_id("bot_id", bot_id)
        with write_txn(self.engine) as s:
            state.revoke_bot(s, bot_id, now_ms)
            rec = self.audit.append(
                s, "admin", {"action": "revoke_bot", "actor": actor, "bot_id": bot_id}, now_ms
            )
        return AdminResult(f"bot {bot_id} revoked", rec.seq)

    def checkpoint(self, now_ms: int) -> SignedCheckpoint:
        with write_txn(self.engine) as s:
            return self.audit.checkpoint(s, now_ms)

    def record(self, actor: str, now_ms: int, action: str, **fields: object) -> int:
        """Audit an action done elsewhere in the same process (keystore changes by the CLI)."""
        with write_txn(self.engine) as s:
            return self.audit.append(
                s, "admin", {"action": action, "actor": actor, **fields}, now_ms
            ).seq

    def status(self, now_ms: int) -> dict[str, object]:
        from signer.keystore import KeyRow  # local import: keystore tables are optional here

        with read_session(self.engine) as s:
            size, head = self.audit.head(s)
            keys = s.query(KeyRow).count()
            bots = len(state.list_bots(s))
            return {
                "global_frozen": state.global_frozen(s),
                "frozen_keys": state.frozen_keys(s),
                "audit_size": size,
                "audit_head": head,
                "keys": keys,
                "bots": bots,
            }
