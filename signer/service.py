"""gRPC servicers: map the transport-independent core onto the `bulkhead.signer.v1` contract.

Every failure becomes a clear status: INVALID_ARGUMENT (malformed, nothing changed),
UNAUTHENTICATED (identity/signature/time/nonce; audited), PERMISSION_DENIED (authenticated but
not allowed; audited), UNAVAILABLE (audit store down; nothing signed), FAILED_PRECONDITION
(keystore state). Policy denials are not errors: they come back as a Decision with rule ids.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from bulkhead.signer.v1 import admin_pb2 as apb
from bulkhead.signer.v1 import admin_pb2_grpc, signer_pb2_grpc
from bulkhead.signer.v1 import signer_pb2 as pb
from signer import intents, state
from signer.admin import AdminActions
from signer.auth import ADMIN_SIGNING_CONTEXT, Header, authenticate, check_header_syntax
from signer.core import SignerCore, b64
from signer.db import read_session
from signer.errors import (
    AuditUnavailable,
    AuthError,
    ConfigError,
    InvalidRequest,
    KeystoreError,
    PermissionDenied,
)
from signer.proposal_changes import approve_key_change
from signer.proposal_doc import DEFAULT_TTL_S, AnyChange, parse_change, policy_change
from signer.proposals import Proposals, ProposalView
from signer.quorum import ProposalRefused

log = logging.getLogger("bulkhead.signer")
F = TypeVar("F", bound=Callable[..., Any])

STATUS = [
    (ProposalRefused, grpc.StatusCode.FAILED_PRECONDITION),  # code refined by its `code`
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (ConfigError, grpc.StatusCode.INVALID_ARGUMENT),
    (AuthError, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (AuditUnavailable, grpc.StatusCode.UNAVAILABLE),
    (KeystoreError, grpc.StatusCode.FAILED_PRECONDITION),
]


def grpc_errors(fn: F) -> F:
    """Turn signer exceptions into gRPC statuses; anything unexpected is INTERNAL, never a crash."""

    @functools.wraps(fn)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return fn(self, request, context)
        except Exception as e:  # noqa: BLE001 - the boundary: nothing crashes the signer
            for cls, code in STATUS:
                if isinstance(e, cls):
                    code = getattr(grpc.StatusCode, getattr(e, "code", ""), code)
                    rule = getattr(e, "rule_id", None)
                    context.abort(code, f"{rule}: {e}" if rule else str(e))
            log.error("internal error in %s: %s", fn.__name__, type(e).__name__, exc_info=True)
            context.abort(grpc.StatusCode.INTERNAL, "internal error; the request changed nothing")

    return wrapper  # type: ignore[return-value]


class SignerService(signer_pb2_grpc.SignerServicer):
    def __init__(self, core: SignerCore) -> None:
        self.core = core

    @grpc_errors
    def SubmitOrder(
        self, request: pb.SignedRequest, context: grpc.ServicerContext
    ) -> pb.OrderReply:
        return self.core.submit_order(request)

    @grpc_errors
    def CancelOrder(
        self, request: pb.SignedRequest, context: grpc.ServicerContext
    ) -> pb.OrderReply:
        return self.core.cancel_order(request)

    @grpc_errors
    def Read(self, request: pb.SignedRequest, context: grpc.ServicerContext) -> pb.ReadReply:
        return self.core.read(request)

    @grpc_errors
    def GetPolicy(self, request: pb.SignedRequest, context: grpc.ServicerContext) -> pb.PolicyView:
        return self.core.get_policy(request)


class AdminService(admin_pb2_grpc.AdminServicer):
    """Operator commands, each signed by a registered operator identity and audited."""

    def __init__(self, core: SignerCore, actions: AdminActions) -> None:
        self.core = core
        self.actions = actions
        self.proposals = Proposals(core.engine, core.audit, actions)

    def _auth(self, request: apb.SignedAdminRequest, cls: type, method: str) -> tuple[Any, str]:
        if len(request.body) > self.core.config.max_request_bytes:
            raise InvalidRequest(f"body: {len(request.body)} bytes is too large")
        if len(request.signature) != 64:
            raise InvalidRequest(f"signature: {len(request.signature)} bytes; must be 64 (Ed25519)")
        cmd = intents.parse_body(cls, request.body)
        h = cmd.header
        header = Header(
            principal=f"operator:{h.operator_id}",
            identity=h.operator_id,
            method=h.method,
            nonce=h.nonce,
            timestamp_ms=h.timestamp_ms,
        )
        check_header_syntax(header)
        now = self.core.clock()
        try:
            with self.core.txn() as s:
                op = state.get_operator(s, h.operator_id)
                authenticate(
                    s,
                    header,
                    op.public_key_hex if op else None,
                    bool(op and op.status == "active"),
                    request.body,
                    request.signature,
                    ADMIN_SIGNING_CONTEXT,
                    method,
                    now,
                    self.core.config.max_clock_skew_ms,
                )
        except AuthError as e:
            with self.core.txn() as s:
                self.core.audit.append(
                    s,
                    "auth_denied",
                    {
                        "rule_id": e.rule_id,
                        "message": str(e),
                        "method": method,
                        "claimed_identity": f"operator:{h.operator_id}",
                        "signature_b64": b64(request.signature),
                    },
                    now,
                )
            raise
        return cmd, header.principal

    def _reply(self, result: Any) -> apb.AdminReply:
        return apb.AdminReply(
            ok=True,
            message=result.message,
            audit_seq=result.audit_seq,
            policy_version=result.policy_version,
        )

    @grpc_errors
    def Freeze(
        self, request: apb.SignedAdminRequest, context: grpc.ServicerContext
    ) -> apb.AdminReply:
        cmd, actor = self._auth(request, apb.FreezeCommand, "Freeze")
        key = self._target(cmd)
        return self._reply(self.actions.freeze(actor, self.core.clock(), key, cmd.reason))

    @grpc_errors
    def Unfreeze(
        self, request: apb.SignedAdminRequest, context: grpc.ServicerContext
    ) -> apb.AdminReply:
        cmd, actor = self._auth(request, apb.FreezeCommand, "Unfreeze")
        key = self._target(cmd)
        return self._reply(self.actions.unfreeze(actor, self.core.clock(), key, cmd.reason))

    @staticmethod
    def _target(cmd: apb.FreezeCommand) -> str | None:
        if cmd.all == bool(cmd.key_id):
            raise InvalidRequest("key_id/all: give exactly one of a key id or all=true")
        return None if cmd.all else cmd.key_id

    @grpc_errors
    def SetPolicy(
        self, request: apb.SignedAdminRequest, context: grpc.ServicerContext
    ) -> apb.AdminReply:
        cmd, actor = self._auth(request, apb.SetPolicyCommand, "SetPolicy")
        return self._reply(
            self.actions.set_policy(
                actor, self.core.clock(), cmd.key_id, cmd.policy_toml, cmd.expected_version
            )
        )

    @grpc_errors
    def RegisterBot(
        self, request: apb.SignedAdminRequest, context: grpc.ServicerContext
    ) -> apb.AdminReply:
        cmd, actor = self._auth(request, apb.RegisterBotCommand, "RegisterBot")
        return self._reply(
            self.actions.register_bot(
                actor, self.core.clock(), cmd.bot_id, cmd.public_key, list(cmd.key_ids)
            )
        )

    @grpc_errors
    def RevokeBot(
        self, request: apb.SignedAdminRequest, context: grpc.ServicerContext
    ) -> apb.AdminReply:
        cmd, actor = self._auth(request, apb.RevokeBotCommand, "RevokeBot")
        return self._reply(self.actions.revoke_bot(actor, self.core.clock(), cmd.bot_id))

    @grpc_errors
    def Checkpoint(
        self, request: apb.SignedAdminRequest, context: grpc.ServicerContext
    ) -> apb.CheckpointReply:
        self._auth(request, apb.CheckpointCommand, "Checkpoint")
        cp = self.actions.checkpoint(self.core.clock())
        return apb.CheckpointReply(
            tree_size=cp.tree_size, head_hash=cp.head_hash, timestamp_ms=cp.ts_ms, signature=cp.sig
        )

    @grpc_errors
    def Status(
        self, request: apb.SignedAdminRequest, context: grpc.ServicerContext
    ) -> apb.StatusReply:
        self._auth(request, apb.StatusCommand, "Status")
        st = self.actions.status(self.core.clock())
        return apb.StatusReply(
            global_frozen=bool(st["global_frozen"]),
            frozen_keys=list(st["frozen_keys"]),  # type: ignore[call-overload]
            audit_size=int(st["audit_size"]),  # type: ignore[call-overload]
            audit_head=str(st["audit_head"]),
            keys=int(st["keys"]),  # type: ignore[call-overload]
            bots=int(st["bots"]),
        )  # type: ignore[call-overload]

    # --- proposals (M-of-N loosening) -------------------------------------------------------

    @grpc_errors
    def Propose(
        self, request: apb.SignedAdminRequest, context: grpc.ServicerContext
    ) -> apb.ProposalView:
        cmd, actor = self._auth(request, apb.ProposeCommand, "Propose")
        ttl = cmd.expires_in_s or DEFAULT_TTL_S
        return proposal_reply(
            self.proposals.propose(actor, self.core.clock(), self._change(cmd), ttl)
        )

    def _change(self, cmd: apb.ProposeCommand) -> AnyChange:
        which = cmd.WhichOneof("change")
        if which is None:
            raise InvalidRequest(
                "change: missing; give one of set_policy, unfreeze, register_bot, grant_keys, "
                "approve_key, add_operator, remove_operator, set_quorum"
            )
        c = getattr(cmd, which)
        if which == "set_policy":
            return policy_change(c.key_id, c.policy_toml)
        if which == "approve_key":
            state.check_id("key_id", c.key_id)
            with read_session(self.core.engine) as s:
                return approve_key_change(s, c.key_id)
        fields: dict[str, object] = {"kind": which}
        if which == "unfreeze":
            if c.all == bool(c.key_id):
                raise InvalidRequest("change.unfreeze: give exactly one of key_id or all=true")
            fields |= {"key_id": None if c.all else c.key_id, "reason": c.reason}
        elif which in ("register_bot", "add_operator"):
            if len(c.public_key) != 32:
                raise InvalidRequest(
                    f"change.{which}.public_key: {len(c.public_key)} bytes; Ed25519 needs 32"
                )
            fields["public_key_hex"] = c.public_key.hex()
            name = "bot_id" if which == "register_bot" else "operator_id"
            fields[name] = getattr(c, name)
            if which == "register_bot":
                fields["key_ids"] = list(c.key_ids)
        elif which == "grant_keys":
            fields |= {"bot_id": c.bot_id, "key_ids": list(c.key_ids)}
        elif which == "remove_operator":
            fields["operator_id"] = c.operator_id
        else:  # set_quorum
            fields |= {"target_class": c.action_class, "m": c.m, "time_lock_s": c.time_lock_s}
        return parse_change(fields)

    @grpc_errors
    def SubmitProposal(
        self, request: apb.SignedAdminRequest, context: grpc.ServicerContext
    ) -> apb.ProposalView:
        cmd, actor = self._auth(request, apb.SubmitProposalCommand, "SubmitProposal")
        sigs = []
        for i, sig in enumerate(cmd.signatures):
            if len(sig.public_key) != 32:
                raise InvalidRequest(
                    f"signatures[{i}].public_key: {len(sig.public_key)} bytes; Ed25519 needs 32"
                )
            sigs.append((sig.public_key.hex(), bytes(sig.signature)))
        view = self.proposals.submit(actor, self.core.clock(), cmd.proposal_id, sigs)
        return proposal_reply(view)

    @grpc_errors
    def Veto(
        self, request: apb.SignedAdminRequest, context: grpc.ServicerContext
    ) -> apb.ProposalView:
        cmd, actor = self._auth(request, apb.VetoCommand, "Veto")
        return proposal_reply(
            self.proposals.veto(actor, self.core.clock(), cmd.proposal_id, cmd.reason)
        )

    @grpc_errors
    def ListProposals(
        self, request: apb.SignedAdminRequest, context: grpc.ServicerContext
    ) -> apb.ProposalList:
        cmd, _ = self._auth(request, apb.ListProposalsCommand, "ListProposals")
        views = self.proposals.list(self.core.clock(), cmd.status, cmd.proposal_id)
        return apb.ProposalList(proposals=[proposal_reply(v) for v in views])


def proposal_reply(v: ProposalView) -> apb.ProposalView:
    return apb.ProposalView(
        proposal_id=v.proposal_id,
        document=v.document,
        status=v.status,
        action_class=v.action_class,
        kind=v.kind,
        required=v.required,
        operators=v.operators,
        approvals=[
            apb.ProposalSignature(
                public_key=bytes.fromhex(a.public_key_hex),
                signature=bytes.fromhex(a.signature_hex),
                operator_id=a.operator_id,
            )
            for a in v.approvers
        ],
        expires_ms=v.expires_ms,
        apply_after_ms=v.apply_after_ms,
        summary=v.summary,
        message=v.message,
        audit_seq=v.audit_seq,
    )
