"""Operator actions, shared by the CLI on the signer host and the Admin gRPC service.

Each action is one write transaction: the change and the audit record describing it (who, what,
from which version) commit together or not at all. `actor` names who acted: "operator:<id>"
for a signed Admin request, "cli:<os user>" for the local CLI, "quorum:<op>+<op>..." for a
proposal that M operators approved.

Tightening applies at once. A loosening runs directly only while its class's quorum allows one
caller (signer.quorum); otherwise it is refused with "needs a proposal with M of N operator
signatures" and must come through signer.proposals, which calls the `do_*` methods below inside
its own transaction so the change, the proposal's state and the audit record commit together.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from signer import quorum, state
from signer.audit import AuditLog, SignedCheckpoint
from signer.db import read_session, write_txn
from signer.errors import ConfigError
from signer.policy import (
    Policy,
    is_loosening,
    parse_policy_toml,
    policy_from_json,
    policy_to_json,
)


@dataclass(frozen=True)
class AdminResult:
    message: str
    audit_seq: int
    policy_version: int = 0


Extra = dict[str, object] | None


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
            quorum.bump(s, f"freeze:{key_id or '*'}")  # a pending unfreeze no longer applies
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
            quorum.require_direct(s, "unfreeze", "unfreeze")
            return self.do_unfreeze(s, actor, now_ms, key_id, reason)

    def do_unfreeze(
        self,
        s: Session,
        actor: str,
        now_ms: int,
        key_id: str | None,
        reason: str = "",
        extra: Extra = None,
    ) -> AdminResult:
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
        quorum.bump(s, f"freeze:{key_id or '*'}")
        rec = self.audit.append(
            s,
            "admin",
            {
                "action": "unfreeze",
                "actor": actor,
                "key_id": key_id,
                "all": key_id is None,
                "reason": reason,
                **(extra or {}),
            },
            now_ms,
        )
        return AdminResult(f"unfrozen: {target}", rec.seq)

    def set_policy(
        self, actor: str, now_ms: int, key_id: str, policy_toml: str, expected_version: int = 0
    ) -> AdminResult:
        state.check_id("key_id", key_id)
        policy = parse_policy_toml(policy_toml)  # PolicyConfigError names field, value, range
        with write_txn(self.engine) as s:
            cur = state.current_policy(s, key_id)
            loosening = is_loosening(policy_from_json(cur.policy_json) if cur else None, policy)
            if loosening:
                quorum.require_direct(
                    s, "policy", f"set_policy {key_id} loosens ({'; '.join(loosening)})"
                )
            return self.do_set_policy(s, actor, now_ms, key_id, policy, expected_version)

    def do_set_policy(
        self,
        s: Session,
        actor: str,
        now_ms: int,
        key_id: str,
        policy: Policy,
        expected_version: int = 0,
        extra: Extra = None,
    ) -> AdminResult:
        policy_json = policy_to_json(policy)
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
                **(extra or {}),
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
            quorum.require_direct(s, "bots", f"register_bot {bot_id}")
            return self.do_register_bot(s, actor, now_ms, bot_id, public_key.hex(), key_ids)

    def do_register_bot(
        self,
        s: Session,
        actor: str,
        now_ms: int,
        bot_id: str,
        public_key_hex: str,
        key_ids: list[str],
        extra: Extra = None,
    ) -> AdminResult:
        info = state.register_bot(s, bot_id, public_key_hex, key_ids, now_ms)
        quorum.bump(s, f"bot:{bot_id}")
        rec = self.audit.append(
            s,
            "admin",
            {
                "action": "register_bot",
                "actor": actor,
                "bot_id": bot_id,
                "public_key_hex": info.public_key_hex,
                "key_ids": list(info.key_ids),
                **(extra or {}),
            },
            now_ms,
        )
        return AdminResult(
            f"bot {bot_id} registered for keys {', '.join(info.key_ids) or '(none)'}", rec.seq
        )

    def do_grant_keys(
        self, s: Session, actor: str, now_ms: int, bot_id: str, key_ids: list[str], extra: Extra
    ) -> AdminResult:
        info = state.grant_keys(s, bot_id, key_ids)
        quorum.bump(s, f"bot:{bot_id}")
        payload = {"action": "grant_keys", "actor": actor, "bot_id": bot_id}
        payload |= {"granted": sorted(set(key_ids)), "key_ids": list(info.key_ids)}
        rec = self.audit.append(s, "admin", {**payload, **(extra or {})}, now_ms)
        return AdminResult(f"bot {bot_id} may now use keys {', '.join(info.key_ids)}", rec.seq)

    # --- operators, quorum rules, held exchange keys ---------------------------------------

    def add_operator(self, actor: str, now_ms: int, operator_id: str, pub_hex: str) -> AdminResult:
        """Directly only while there is no operator yet (bootstrap); afterwards a proposal."""
        with write_txn(self.engine) as s:
            n = quorum.active_operators(s)
            if n:
                m = quorum.rule(s, "operators").m
                raise quorum.ProposalRefused(
                    "FAILED_PRECONDITION",
                    f"operators add: needs a proposal with {m} of {n} operator signatures",
                )
            return self.do_add_operator(s, actor, now_ms, operator_id, pub_hex, None)

    def do_add_operator(
        self, s: Session, actor: str, now_ms: int, operator_id: str, pub_hex: str, extra: Extra
    ) -> AdminResult:
        state.add_operator(s, operator_id, pub_hex, now_ms)
        quorum.bump(s, "operators")
        payload = {"action": "operator_added", "actor": actor, "operator_id": operator_id}
        payload |= {"public_key_hex": pub_hex, **(extra or {})}
        rec = self.audit.append(s, "admin", payload, now_ms)
        return AdminResult(f"operator {operator_id} added", rec.seq)

    def do_remove_operator(
        self, s: Session, actor: str, now_ms: int, operator_id: str, extra: Extra
    ) -> AdminResult:
        check_operator_removable(s, operator_id)
        state.remove_operator(s, operator_id)
        quorum.bump(s, "operators")
        payload = {"action": "operator_removed", "actor": actor, "operator_id": operator_id}
        rec = self.audit.append(s, "admin", {**payload, **(extra or {})}, now_ms)
        return AdminResult(f"operator {operator_id} removed", rec.seq)

    def configure_quorum(
        self, actor: str, now_ms: int, rules: dict[str, tuple[int, int]]
    ) -> AdminResult:
        """Quorum rules at `init` (nothing but the init record in the log); later: a proposal."""
        with write_txn(self.engine) as s:
            if self.audit.head(s)[0] > 1:
                raise quorum.ProposalRefused(
                    "FAILED_PRECONDITION",
                    "quorum: set at init; a later change needs a proposal (class operators)",
                )
            seq = 0
            for cls, (m, lock) in sorted(rules.items()):
                seq = self.do_set_quorum(s, actor, now_ms, cls, m, lock, None).audit_seq
        return AdminResult(f"quorum set for {', '.join(sorted(rules))}", seq)

    def do_set_quorum(
        self,
        s: Session,
        actor: str,
        now_ms: int,
        action_class: str,
        m: int,
        time_lock_s: int,
        extra: Extra,
    ) -> AdminResult:
        quorum.set_rule(s, action_class, m, time_lock_s, now_ms, actor)
        quorum.bump(s, "operators")
        payload = {"action": "quorum_set", "actor": actor, "action_class": action_class}
        payload |= {"m": m, "time_lock_s": time_lock_s, **(extra or {})}
        rec = self.audit.append(s, "admin", payload, now_ms)
        return AdminResult(f"{action_class} now needs {m} signatures", rec.seq)

    def hold_key_if_needed(
        self, s: Session, actor: str, now_ms: int, key_id: str, generation: int, fingerprint: str
    ) -> str | None:
        """After keys add/generate/rotate/set-api-key: under a keys quorum the key stays
        pending until a proposal approves this exact material. Returns the notice, if held."""
        r = quorum.rule(s, "keys")
        if r.direct_ok:
            return None
        quorum.hold_key(s, key_id, generation, fingerprint, now_ms)
        payload = {"action": "key_held", "actor": actor, "key_id": key_id}
        payload |= {"generation": generation, "fingerprint": fingerprint}
        self.audit.append(s, "admin", payload, now_ms)
        return (
            f"key {key_id} is held (pending): it {r.needs()}; "
            f"run `bulkhead-signer proposal new key {key_id}`"
        )

    def do_approve_key(
        self, s: Session, actor: str, now_ms: int, key_id: str, extra: Extra
    ) -> AdminResult:
        quorum.release_key(s, key_id)
        payload = {"action": "key_approved", "actor": actor, "key_id": key_id, **(extra or {})}
        rec = self.audit.append(s, "admin", payload, now_ms)
        return AdminResult(f"key {key_id} approved and active", rec.seq)

    def revoke_bot(self, actor: str, now_ms: int, bot_id: str) -> AdminResult:
        state.check_id("bot_id", bot_id)
        with write_txn(self.engine) as s:
            state.revoke_bot(s, bot_id, now_ms)
            quorum.bump(s, f"bot:{bot_id}")
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


def check_operator_removable(s: Session, operator_id: str) -> None:
    """Never shrink the operator set below the largest quorum: that would lock everyone out."""
    n, m = quorum.active_operators(s), quorum.max_configured_m(s)
    row = state.get_operator(s, operator_id)
    if row is None or row.status != "active":
        raise ConfigError(f"operator_id: {operator_id!r} is not an active operator")
    if n - 1 < m:
        raise ConfigError(
            f"operator_id: removing {operator_id!r} leaves {n - 1} operators, fewer than the "
            f"largest quorum M={m}; lower that quorum first"
        )
