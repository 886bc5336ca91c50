"""How a proposed change meets the signer's state: can it apply, what version it is based on,
and applying it through the same AdminActions steps (and audit records) a direct command uses.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from signer import quorum, state
from signer.admin import AdminActions, AdminResult, check_operator_removable
from signer.errors import ConfigError
from signer.keystore import ExchangeKey
from signer.policy import policy_from_mapping
from signer.proposal_doc import (
    AddOperatorChange,
    AnyChange,
    ApproveKeyChange,
    GrantKeysChange,
    RegisterBotChange,
    RemoveOperatorChange,
    SetPolicyChange,
    SetQuorumChange,
    UnfreezeChange,
)


def approve_key_change(s: Session, key_id: str) -> ApproveKeyChange:
    """The exact material a held key would be activated with: what the signers approve."""
    state.check_id("key_id", key_id)
    hold, row = quorum.held(s, key_id), s.get(ExchangeKey, key_id)
    if hold is None or row is None:
        raise ConfigError(f"key_id: {key_id!r} is not held for approval")
    if not row.api_key:
        raise ConfigError(f"key_id: {key_id!r} has no API key yet; run keys set-api-key first")
    return ApproveKeyChange(
        key_id=key_id,
        exchange=row.exchange,
        generation=row.generation,
        fingerprint=row.fingerprint,
        api_key=row.api_key,
    )


def key_material_moved(s: Session, change: ApproveKeyChange) -> bool:
    """Was the held key released, re-keyed or given another API key id since the proposal?"""
    try:
        return approve_key_change(s, change.key_id) != change
    except ConfigError:
        return True


def check_feasible(s: Session, c: AnyChange) -> None:
    """Refuse at once what could never apply (nothing to unfreeze, a bot already active)."""
    if isinstance(c, UnfreezeChange):
        frozen = state.global_frozen(s) if c.key_id is None else state.key_frozen(s, c.key_id)
        if not frozen:
            raise ConfigError(f"key_id: {c.key_id or 'all'!r} is not frozen; nothing to lift")
    elif isinstance(c, RegisterBotChange):
        bot = state.get_bot(s, c.bot_id)
        if bot is not None and bot.status == "active":
            raise ConfigError(f"bot_id: {c.bot_id!r} is already registered; revoke it first")
    elif isinstance(c, GrantKeysChange):
        bot = state.get_bot(s, c.bot_id)
        if bot is None or bot.status != "active":
            raise ConfigError(f"bot_id: {c.bot_id!r} is not an active bot")
    elif isinstance(c, ApproveKeyChange):
        if approve_key_change(s, c.key_id) != c:
            raise ConfigError(f"key_id: {c.key_id!r}: the held material differs; re-propose")
    elif isinstance(c, AddOperatorChange):
        if state.get_operator(s, c.operator_id) is not None:
            raise ConfigError(f"operator_id: {c.operator_id!r} exists (ids are not reused)")
        if any(o.public_key_hex == c.public_key_hex for o in state.list_operators(s)):
            raise ConfigError("public_key: already registered for another operator")
    elif isinstance(c, RemoveOperatorChange):
        check_operator_removable(s, c.operator_id)
    elif isinstance(c, SetQuorumChange):
        quorum.check_rule(c.target_class, c.m, c.time_lock_s, quorum.active_operators(s))


def current_version(s: Session, change: AnyChange) -> int:
    """The version of the change's subject now; the document's base must equal it."""
    if isinstance(change, SetPolicyChange):
        cur = state.current_policy(s, change.key_id)
        return cur.version if cur else 0
    if isinstance(change, ApproveKeyChange):
        row = s.get(ExchangeKey, change.key_id)
        return row.generation if row else 0
    return quorum.version(s, change.subject)


def run_change(
    a: AdminActions, s: Session, c: AnyChange, actor: str, now: int, extra: dict[str, object]
) -> AdminResult:
    """Apply an approved change through the same AdminActions steps a direct command uses."""
    if isinstance(c, SetPolicyChange):
        policy = policy_from_mapping(c.policy)
        return a.do_set_policy(s, actor, now, c.key_id, policy, 0, extra)
    if isinstance(c, UnfreezeChange):
        return a.do_unfreeze(s, actor, now, c.key_id, c.reason, extra)
    if isinstance(c, RegisterBotChange):
        keys = list(c.key_ids)
        return a.do_register_bot(s, actor, now, c.bot_id, c.public_key_hex, keys, extra)
    if isinstance(c, GrantKeysChange):
        return a.do_grant_keys(s, actor, now, c.bot_id, list(c.key_ids), extra)
    if isinstance(c, ApproveKeyChange):
        return a.do_approve_key(s, actor, now, c.key_id, extra)
    if isinstance(c, AddOperatorChange):
        return a.do_add_operator(s, actor, now, c.operator_id, c.public_key_hex, extra)
    if isinstance(c, RemoveOperatorChange):
        return a.do_remove_operator(s, actor, now, c.operator_id, extra)
    return a.do_set_quorum(s, actor, now, c.target_class, c.m, c.time_lock_s, extra)
