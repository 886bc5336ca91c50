"""Insider-proof administration through the real Admin gRPC service: one operator can tighten at
once but cannot loosen anything; M of N operators' signatures over the exact proposal document
apply a loosening; forged, foreign, repeated, expired and stale approvals are refused; a veto
during the time lock stops it; and the audit log verifies and names every approver.

The three-operator set-up itself goes through proposals: op-1 alone (N=1) adds op-2, then
op-1 and op-2 (default M = min(2, N)) add op-3.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from nacl.signing import VerifyKey

from botengine.signer_client import AdminClient, Identity
from bulkhead.contract import ADMIN_SIGNING_CONTEXT, PROPOSAL_SIGNING_CONTEXT
from bulkhead.signer.v1 import admin_pb2 as apb
from signer.core import now_ms
from signer.db import read_session, write_txn
from tests.signer.stack import BOT_ID, KEY_ID, POLICY_TOML, Stack

FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT
LOOSER = POLICY_TOML.replace('max_order_notional = "5000"', 'max_order_notional = "9000"')
TIGHTER = POLICY_TOML.replace('max_order_notional = "5000"', 'max_order_notional = "1000"')
NEEDS = "needs a proposal with 2 of 3 operator signatures"
LOCK_S = 2  # long enough that the calls right after approval land inside it


@dataclass
class Trio:
    stack: Stack
    op1: AdminClient
    op2: AdminClient
    op3: AdminClient


def refused(call: Callable[[], object], code: grpc.StatusCode, *needles: str) -> str:
    with pytest.raises(grpc.RpcError) as e:
        call()
    details = e.value.details() or ""
    assert e.value.code() == code, details
    for n in needles:
        assert n in details, details
    return details


def wait_until(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    """Poll a condition with a deadline (the time lock and expiry run on the signer's clock)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.05)


def add_operator_change(identity: Identity) -> dict[str, Any]:
    return {
        "add_operator": apb.AddOperatorChange(
            operator_id=identity.name, public_key=identity.public_key
        )
    }


@pytest.fixture
def trio(stack: Stack) -> Iterator[Trio]:
    op1 = stack.admin()
    id2, id3 = Identity.generate("op-2"), Identity.generate("op-3")
    first = op1.propose(**add_operator_change(id2))
    assert (first.required, first.operators) == (1, 1)
    assert op1.approve(first).status == "applied"
    op2 = stack.admin(id2)
    second = op1.propose(**add_operator_change(id3))
    assert op1.approve(second).status == "open"  # N=2: default M=2
    assert op2.approve(second).status == "applied"
    yield Trio(stack, op1, op2, stack.admin(id3))


def policy_version(t: Trio) -> int:
    return t.stack.client().get_policy().policy_version


def frozen_keys(t: Trio) -> list[str]:
    return list(t.op1.status().frozen_keys)


def hold_new_key(t: Trio, key_id: str) -> None:
    """What `keys add` does on the signer host: the keystore write, then the quorum hold."""
    op = t.stack.opened
    with write_txn(op.engine) as s:
        info = op.keystore.add_hmac(
            s, key_id, "binance", t.stack.account.api_key, t.stack.account.secret
        )
        held = op.actions.hold_key_if_needed(
            s, "test", now_ms(), key_id, info.generation, info.fingerprint
        )
    assert held and "needs a proposal with 2 of 3" in held


def key_status(t: Trio, key_id: str) -> str:
    with read_session(t.stack.opened.engine) as s:
        return t.stack.opened.keystore.get(s, key_id).status


def bot_status(t: Trio, bot_id: str) -> tuple[str, tuple[str, ...]] | None:
    from signer import state

    with read_session(t.stack.opened.engine) as s:
        b = state.get_bot(s, bot_id)
    return None if b is None else (b.status, b.key_ids)


def quorum_m(t: Trio, action_class: str) -> int:
    from signer import quorum

    with read_session(t.stack.opened.engine) as s:
        return quorum.rule(s, action_class).m


def operator_ids(t: Trio) -> list[str]:
    from signer import state

    with read_session(t.stack.opened.engine) as s:
        return [o.operator_id for o in state.list_operators(s) if o.status == "active"]


NEW_BOT = Identity.generate("bot-new")


@dataclass(frozen=True)
class Case:
    """One loosening: how to set it up, the change, and how to observe whether it applied."""

    setup: Callable[[Trio], None]
    change: Callable[[Trio], dict[str, Any]]
    observe: Callable[[Trio], object]


def _nothing(t: Trio) -> None:
    return None


def _freeze_key(t: Trio) -> None:
    t.op1.freeze(KEY_ID, reason="incident")


def _freeze_all(t: Trio) -> None:
    t.op1.freeze(all_keys=True, reason="incident")


def _second_key(t: Trio) -> None:
    hold_new_key(t, "k2")


CASES: dict[str, Case] = {
    "raise_a_cap": Case(
        _nothing,
        lambda t: {"set_policy": apb.SetPolicyChange(key_id=KEY_ID, policy_toml=LOOSER)},
        policy_version,
    ),
    "unfreeze_a_key": Case(
        _freeze_key,
        lambda t: {"unfreeze": apb.UnfreezeChange(key_id=KEY_ID)},
        frozen_keys,
    ),
    "lift_the_global_freeze": Case(
        _freeze_all,
        lambda t: {"unfreeze": apb.UnfreezeChange(all=True)},
        lambda t: t.op1.status().global_frozen,
    ),
    "register_a_bot": Case(
        _nothing,
        lambda t: {
            "register_bot": apb.RegisterBotChange(
                bot_id="bot-new", public_key=NEW_BOT.public_key, key_ids=[KEY_ID]
            )
        },
        lambda t: bot_status(t, "bot-new"),
    ),
    "grant_a_bot_a_key": Case(
        _nothing,
        lambda t: {"grant_keys": apb.GrantKeysChange(bot_id=BOT_ID, key_ids=["k9"])},
        lambda t: bot_status(t, BOT_ID),
    ),
    "add_an_exchange_key": Case(
        _second_key,
        lambda t: {"approve_key": apb.ApproveKeyChange(key_id="k2")},
        lambda t: key_status(t, "k2"),
    ),
    "add_an_operator": Case(
        _nothing,
        lambda t: add_operator_change(Identity.generate("op-4")),
        operator_ids,
    ),
    "remove_an_operator": Case(
        _nothing,
        lambda t: {"remove_operator": apb.RemoveOperatorChange(operator_id="op-3")},
        operator_ids,
    ),
    "change_a_quorum": Case(
        _nothing,
        lambda t: {"set_quorum": apb.SetQuorumChange(action_class="policy", m=3)},
        lambda t: quorum_m(t, "policy"),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_one_signature_does_not_loosen_and_two_apply_it(trio: Trio, name: str) -> None:
    case = CASES[name]
    case.setup(trio)
    before = case.observe(trio)
    proposal = trio.op1.propose(**case.change(trio))
    assert proposal.status == "open" and (proposal.required, proposal.operators) == (2, 3)
    after_one = trio.op1.approve(proposal)
    assert after_one.status == "open", after_one.message
    assert [a.operator_id for a in after_one.approvals] == ["op-1"]
    assert case.observe(trio) == before, f"{name}: one operator's signature changed the state"
    applied = trio.op2.approve(proposal)
    assert applied.status == "applied", applied.message
    assert case.observe(trio) != before, f"{name}: two signatures did not apply it"
    assert trio.stack.verify().ok


def test_direct_loosening_rpcs_need_a_proposal(trio: Trio) -> None:
    admin = trio.op1
    admin.freeze(KEY_ID)
    admin.freeze(all_keys=True)
    bot = Identity.generate("bot-rogue")
    size = trio.stack.audit_size()
    refused(lambda: admin.set_policy(KEY_ID, LOOSER), FAILED_PRECONDITION, NEEDS, "raised")
    refused(lambda: admin.unfreeze(KEY_ID), FAILED_PRECONDITION, NEEDS)
    refused(lambda: admin.unfreeze(all_keys=True), FAILED_PRECONDITION, NEEDS)
    refused(
        lambda: admin.register_bot("bot-rogue", bot.public_key, [KEY_ID]),
        FAILED_PRECONDITION,
        NEEDS,
    )
    assert trio.stack.audit_size() == size, "a refused loosening changed the audit log"
    st = admin.status()
    assert st.global_frozen and list(st.frozen_keys) == [KEY_ID]
    assert bot_status(trio, "bot-rogue") is None and policy_version(trio) == 1


def test_tightening_is_instant_on_one_signature(trio: Trio) -> None:
    admin = trio.op3
    assert admin.set_policy(KEY_ID, TIGHTER).policy_version == 2
    assert json.loads(trio.stack.client().get_policy().policy_json)["max_order_notional"] == "1000"
    admin.freeze(KEY_ID, reason="r")
    assert frozen_keys(trio) == [KEY_ID]
    admin.freeze(all_keys=True, reason="r")
    assert admin.status().global_frozen
    admin.revoke_bot(BOT_ID)
    assert bot_status(trio, BOT_ID) == ("revoked", (KEY_ID,))


def test_a_signature_over_a_different_document_is_refused(trio: Trio) -> None:
    p = trio.op1.propose(set_policy=apb.SetPolicyChange(key_id=KEY_ID, policy_toml=LOOSER))
    trio.op1.approve(p)
    other = trio.op1.propose(set_policy=apb.SetPolicyChange(key_id=KEY_ID, policy_toml=LOOSER))
    assert other.document != p.document  # same change, another nonce: another document
    wrong = trio.op2.proposal_signature(other.document)
    refused(
        lambda: trio.op2.submit_proposal(p.proposal_id, [wrong]),
        PERMISSION_DENIED,
        "op-2's signature is not over this proposal",
    )
    # The same bytes signed under the admin-request context are not an approval either.
    admin_ctx = trio.op2.identity.signing_key.sign(ADMIN_SIGNING_CONTEXT + p.document).signature
    forged = apb.ProposalSignature(public_key=trio.op2.identity.public_key, signature=admin_ctx)
    refused(lambda: trio.op2.submit_proposal(p.proposal_id, [forged]), PERMISSION_DENIED)
    (now,) = trio.op1.list_proposals(proposal_id=p.proposal_id)
    assert now.status == "open" and len(now.approvals) == 1 and policy_version(trio) == 1


def test_an_expired_proposal_is_refused(trio: Trio) -> None:
    p = trio.op1.propose(
        expires_in_s=1, set_policy=apb.SetPolicyChange(key_id=KEY_ID, policy_toml=LOOSER)
    )
    trio.op1.approve(p)
    wait_until(lambda: now_ms() > p.expires_ms)
    refused(lambda: trio.op2.approve(p), FAILED_PRECONDITION, "expired")
    assert trio.op1.list_proposals(proposal_id=p.proposal_id)[0].status == "expired"
    assert policy_version(trio) == 1
    assert any(
        r["payload"].get("action") == "proposal_expired" for r in trio.stack.audit_records("admin")
    )


def test_a_proposal_on_a_stale_base_version_is_refused(trio: Trio) -> None:
    p = trio.op1.propose(set_policy=apb.SetPolicyChange(key_id=KEY_ID, policy_toml=LOOSER))
    trio.op1.approve(p)
    assert trio.op3.set_policy(KEY_ID, TIGHTER).policy_version == 2  # the base moved
    refused(lambda: trio.op2.approve(p), FAILED_PRECONDITION, "stale", "version 2, not 1")
    view = trio.stack.client().get_policy()
    assert view.policy_version == 2
    assert json.loads(view.policy_json)["max_order_notional"] == "1000"


def test_an_unfreeze_proposal_does_not_lift_a_later_freeze(trio: Trio) -> None:
    trio.op1.freeze(KEY_ID, reason="incident 1")
    p = trio.op1.propose(unfreeze=apb.UnfreezeChange(key_id=KEY_ID))
    trio.op1.approve(p)
    trio.op3.freeze(KEY_ID, reason="incident 2")  # re-frozen: a new state the signers never saw
    refused(lambda: trio.op2.approve(p), FAILED_PRECONDITION, "stale")
    assert frozen_keys(trio) == [KEY_ID]


def test_a_repeated_signer_counts_once(trio: Trio) -> None:
    trio.op1.freeze(all_keys=True)
    p = trio.op1.propose(unfreeze=apb.UnfreezeChange(all=True))
    trio.op1.approve(p)
    refused(lambda: trio.op1.approve(p), grpc.StatusCode.ALREADY_EXISTS, "op-1 already signed")
    sig = trio.op1.proposal_signature(p.document)
    refused(lambda: trio.op2.submit_proposal(p.proposal_id, [sig, sig]), INVALID_ARGUMENT, "twice")
    (now,) = trio.op1.list_proposals(proposal_id=p.proposal_id)
    assert now.status == "open" and [a.operator_id for a in now.approvals] == ["op-1"]
    assert trio.op1.status().global_frozen


def test_a_non_operator_key_is_refused(trio: Trio) -> None:
    trio.op1.freeze(KEY_ID)
    p = trio.op1.propose(unfreeze=apb.UnfreezeChange(key_id=KEY_ID))
    trio.op1.approve(p)
    outsider = Identity.generate("mallory")
    sig = outsider.signing_key.sign(PROPOSAL_SIGNING_CONTEXT + p.document).signature
    bad = apb.ProposalSignature(public_key=outsider.public_key, signature=sig, operator_id="op-2")
    refused(
        lambda: trio.op1.submit_proposal(p.proposal_id, [bad]),
        PERMISSION_DENIED,
        "is not an active operator's",
    )
    # Nor may an outsider call the Admin service at all.
    refused(lambda: trio.stack.admin(outsider).approve(p), grpc.StatusCode.UNAUTHENTICATED)
    assert frozen_keys(trio) == [KEY_ID]
    refusals = [
        r["payload"]
        for r in trio.stack.audit_records("admin")
        if r["payload"].get("action") == "proposal_refused"
    ]
    assert refusals and refusals[-1]["proposal_id"] == p.proposal_id


def set_time_lock(t: Trio, action_class: str, seconds: int) -> None:
    change = apb.SetQuorumChange(action_class=action_class, m=2, time_lock_s=seconds)
    p = t.op1.propose(set_quorum=change)
    t.op1.approve(p)
    assert t.op2.approve(p).status == "applied"


def test_a_veto_during_the_time_lock_stops_it(trio: Trio) -> None:
    set_time_lock(trio, "unfreeze", LOCK_S)
    trio.op1.freeze(KEY_ID)
    refused(lambda: trio.op1.unfreeze(KEY_ID), FAILED_PRECONDITION, f"{LOCK_S} s time lock")
    p = trio.op1.propose(unfreeze=apb.UnfreezeChange(key_id=KEY_ID))
    trio.op1.approve(p)
    locked = trio.op2.approve(p)
    assert locked.status == "approved" and locked.apply_after_ms > 0
    assert frozen_keys(trio) == [KEY_ID]
    vetoed = trio.op3.veto(p.proposal_id, reason="not during the incident")
    assert vetoed.status == "vetoed"
    wait_until(lambda: now_ms() > locked.apply_after_ms)
    refused(lambda: trio.op1.submit_proposal(p.proposal_id), FAILED_PRECONDITION, "vetoed")
    assert frozen_keys(trio) == [KEY_ID]
    vetoes = [
        r["payload"]
        for r in trio.stack.audit_records("admin")
        if r["payload"].get("action") == "proposal_vetoed"
    ]
    assert vetoes == [
        {
            "action": "proposal_vetoed",
            "actor": "operator:op-3",
            "proposal_id": p.proposal_id,
            "reason": "not during the incident",
        }
    ]


def test_a_time_locked_proposal_applies_only_after_the_lock(trio: Trio) -> None:
    set_time_lock(trio, "unfreeze", LOCK_S)
    trio.op1.freeze(KEY_ID)
    p = trio.op1.propose(unfreeze=apb.UnfreezeChange(key_id=KEY_ID))
    trio.op1.approve(p)
    locked = trio.op2.approve(p)
    early = trio.op3.submit_proposal(p.proposal_id)
    assert early.status == "approved" and "time lock" in early.message
    assert frozen_keys(trio) == [KEY_ID]
    wait_until(lambda: now_ms() >= locked.apply_after_ms)
    assert trio.op3.submit_proposal(p.proposal_id).status == "applied"
    assert frozen_keys(trio) == []


def test_the_audit_log_verifies_and_names_every_approver(trio: Trio) -> None:
    trio.op1.freeze(KEY_ID)
    for change in (
        {"set_policy": apb.SetPolicyChange(key_id=KEY_ID, policy_toml=LOOSER)},
        {"unfreeze": apb.UnfreezeChange(key_id=KEY_ID)},
    ):
        p = trio.op2.propose(**change)
        trio.op3.approve(p)
        assert trio.op1.approve(p).status == "applied"
    report = trio.stack.verify()
    assert report.ok, report
    admin = [r["payload"] for r in trio.stack.audit_records("admin")]
    # operator keys as the log registered them: at init, then by applied proposals
    keys = {o["operator_id"]: o["public_key_hex"] for p in admin for o in p.get("operators", [])}
    keys |= {
        p["operator_id"]: p["public_key_hex"] for p in admin if p["action"] == "operator_added"
    }
    created = [p for p in admin if p["action"] == "proposal_created"]
    documents = {p["proposal_id"]: p["document"] for p in created}
    applied = [p for p in admin if p["action"] in ("set_policy", "unfreeze") and "approvers" in p]
    assert [p["action"] for p in applied] == ["set_policy", "unfreeze"]
    for p in applied:
        assert p["actor"] == "quorum:op-3+op-1"
        assert [a["operator_id"] for a in p["approvers"]] == ["op-3", "op-1"]
        document = documents[p["proposal_id"]].encode("ascii")
        for a in p["approvers"]:  # an auditor re-checks each approval offline
            assert keys[a["operator_id"]] == a["public_key_hex"]
            VerifyKey(bytes.fromhex(a["public_key_hex"])).verify(
                PROPOSAL_SIGNING_CONTEXT + document, bytes.fromhex(a["signature_hex"])
            )
    steps = [p["action"] for p in admin if p.get("proposal_id") == applied[0]["proposal_id"]]
    assert steps == ["proposal_created", "proposal_signed", "proposal_signed", "set_policy"]


def test_single_operator_installs_keep_working_directly(stack: Stack) -> None:
    """N=1: M=1 is the only possible quorum, so the direct RPCs still loosen."""
    admin = stack.admin()
    assert admin.set_policy(KEY_ID, LOOSER).policy_version == 2
    admin.freeze(KEY_ID)
    assert admin.unfreeze(KEY_ID).ok
    bot = Identity.generate("bot-2")
    assert admin.register_bot("bot-2", bot.public_key, [KEY_ID]).ok
