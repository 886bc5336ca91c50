"""Bad input to the proposal RPCs (Propose, SubmitProposal, Veto, ListProposals): each gets a
clear status naming the field, value and allowed range, and changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from botengine.signer_client import Identity
from bulkhead.signer.v1 import admin_pb2 as apb
from signer.proposal_doc import MAX_TTL_S
from tests.signer.stack import BOT_ID, KEY_ID, OPERATOR_ID, Stack

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
UNKNOWN_ID = "ab" * 32

BAD_PROPOSALS: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "no_change": ({}, ("change: missing",)),
    "bad_key_id": (
        {"set_policy": apb.SetPolicyChange(key_id="k 1!", policy_toml="")},
        ("key_id", "'k 1!'"),
    ),
    "float_in_policy": (
        {"set_policy": apb.SetPolicyChange(key_id=KEY_ID, policy_toml="max_order_notional = 1.5")},
        ("max_order_notional",),
    ),
    "unfreeze_both_targets": (
        {"unfreeze": apb.UnfreezeChange(key_id=KEY_ID, all=True)},
        ("exactly one of key_id or all",),
    ),
    "unfreeze_nothing_frozen": (
        {"unfreeze": apb.UnfreezeChange(key_id=KEY_ID)},
        ("not frozen", "nothing to lift"),
    ),
    "short_bot_key": (
        {"register_bot": apb.RegisterBotChange(bot_id="b2", public_key=b"x" * 31)},
        ("public_key", "31 bytes", "32"),
    ),
    "bot_already_active": (
        {"register_bot": apb.RegisterBotChange(bot_id=BOT_ID, public_key=b"x" * 32)},
        ("bot_id", "already registered"),
    ),
    "grant_to_unknown_bot": (
        {"grant_keys": apb.GrantKeysChange(bot_id="nobody", key_ids=[KEY_ID])},
        ("bot_id", "'nobody'", "not an active bot"),
    ),
    "grant_no_keys": (
        {"grant_keys": apb.GrantKeysChange(bot_id=BOT_ID)},
        ("key_ids",),
    ),
    "approve_a_key_not_held": (
        {"approve_key": apb.ApproveKeyChange(key_id=KEY_ID)},
        ("key_id", "not held for approval"),
    ),
    "duplicate_operator": (
        {"add_operator": apb.AddOperatorChange(operator_id=OPERATOR_ID, public_key=b"y" * 32)},
        ("operator_id", "exists"),
    ),
    "remove_the_last_operator": (
        {"remove_operator": apb.RemoveOperatorChange(operator_id=OPERATOR_ID)},
        ("leaves 0 operators",),
    ),
    "quorum_zero": (
        {"set_quorum": apb.SetQuorumChange(action_class="policy", m=0)},
        ("m", "greater than or equal to 1"),
    ),
    "quorum_above_n": (
        {"set_quorum": apb.SetQuorumChange(action_class="policy", m=2)},
        ("M=2", "1 <= M <= 1"),
    ),
    "unknown_class": (
        {"set_quorum": apb.SetQuorumChange(action_class="withdrawals", m=1)},
        ("target_class", "'withdrawals'"),
    ),
    "time_lock_too_long": (
        {"set_quorum": apb.SetQuorumChange(action_class="policy", m=1, time_lock_s=10**8)},
        ("time_lock_s",),
    ),
    "expiry_too_far": (
        {
            "expires_in_s": MAX_TTL_S + 1,
            "unfreeze": apb.UnfreezeChange(all=True),
        },
        ("expires_in_s", str(MAX_TTL_S + 1), str(MAX_TTL_S)),
    ),
}


def refused(call: Callable[[], object], code: grpc.StatusCode, *needles: str) -> None:
    with pytest.raises(grpc.RpcError) as e:
        call()
    details = e.value.details() or ""
    assert e.value.code() == code, details
    for n in needles:
        assert n in details, details


@pytest.mark.parametrize("name", list(BAD_PROPOSALS))
def test_a_bad_proposal_is_refused_and_changes_nothing(stack: Stack, name: str) -> None:
    fields, needles = BAD_PROPOSALS[name]
    admin = stack.admin()
    if name == "expiry_too_far":
        admin.freeze(all_keys=True)
    size = stack.audit_size()
    refused(lambda: admin.propose(**fields), INVALID, *needles)
    assert stack.audit_size() == size
    assert admin.list_proposals() == []


def test_bad_submissions_are_refused_and_change_nothing(stack: Stack) -> None:
    admin = stack.admin()
    admin.freeze(KEY_ID)
    p = admin.propose(unfreeze=apb.UnfreezeChange(key_id=KEY_ID))
    good = admin.proposal_signature(p.document)
    size = stack.audit_size()
    refused(lambda: admin.submit_proposal("not-an-id", [good]), INVALID, "proposal_id")
    refused(lambda: admin.submit_proposal(UNKNOWN_ID, [good]), NOT_FOUND, "not known")
    short_sig = apb.ProposalSignature(public_key=good.public_key, signature=b"s" * 10)
    refused(
        lambda: admin.submit_proposal(p.proposal_id, [short_sig]),
        INVALID,
        "signatures[0].signature",
        "10 bytes",
    )
    short_key = apb.ProposalSignature(public_key=b"k" * 5, signature=good.signature)
    refused(
        lambda: admin.submit_proposal(p.proposal_id, [short_key]),
        INVALID,
        "signatures[0].public_key",
    )
    many = [admin.proposal_signature(p.document) for _ in range(65)]
    refused(lambda: admin.submit_proposal(p.proposal_id, many), INVALID, "at most 64")
    assert stack.audit_size() == size
    (view,) = admin.list_proposals()
    assert view.status == "open" and list(view.approvals) == []
    assert list(admin.status().frozen_keys) == [KEY_ID]


def test_bad_vetoes_and_listings_are_refused(stack: Stack) -> None:
    admin = stack.admin()
    admin.freeze(KEY_ID)
    p = admin.propose(unfreeze=apb.UnfreezeChange(key_id=KEY_ID))
    assert admin.approve(p).status == "applied"  # N=1: M=1
    size = stack.audit_size()
    refused(lambda: admin.veto("zz"), INVALID, "proposal_id")
    refused(lambda: admin.veto(UNKNOWN_ID), NOT_FOUND, "not known")
    refused(lambda: admin.veto(p.proposal_id, "r" * 501), INVALID, "reason", "500")
    refused(lambda: admin.veto(p.proposal_id), grpc.StatusCode.FAILED_PRECONDITION, "is applied")
    refused(lambda: admin.list_proposals(status="pending"), INVALID, "status", "'pending'")
    refused(lambda: admin.list_proposals(proposal_id=UNKNOWN_ID), NOT_FOUND)
    assert stack.audit_size() == size
    assert [v.status for v in admin.list_proposals(status="applied")] == ["applied"]


def test_a_proposal_rpc_signed_for_another_method_is_unauthenticated(stack: Stack) -> None:
    admin = stack.admin()
    cmd = apb.ProposeCommand(
        header=admin.header("SubmitProposal"), unfreeze=apb.UnfreezeChange(all=True)
    )
    refused(
        lambda: admin.stub.Propose(admin.sign(cmd), timeout=10),
        grpc.StatusCode.UNAUTHENTICATED,
        "wrong_method",
    )
    outsider = stack.admin(Identity.generate("mallory"))
    refused(lambda: outsider.list_proposals(), grpc.StatusCode.UNAUTHENTICATED, "unknown_identity")
