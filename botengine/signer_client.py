"""The bot's side of the signer contract: sign order intents with the bot's Ed25519 identity.

The bot holds only its identity key (never an exchange secret). Each call serialises a request
message with a fresh nonce and timestamp, signs CONTEXT || bytes, and sends bytes + signature.
Several signer addresses may be given; a call that finds one unavailable tries the next.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import grpc
from nacl.signing import SigningKey

from bulkhead.contract import (
    ADMIN_SIGNING_CONTEXT,
    BOT_SIGNING_CONTEXT,
    PROPOSAL_SIGNING_CONTEXT,
)
from bulkhead.signer.v1 import admin_pb2 as apb
from bulkhead.signer.v1 import admin_pb2_grpc, signer_pb2_grpc
from bulkhead.signer.v1 import signer_pb2 as pb

SIDES = {"buy": pb.SIDE_BUY, "sell": pb.SIDE_SELL}
TYPES = {"limit": pb.ORDER_TYPE_LIMIT, "market": pb.ORDER_TYPE_MARKET}
MODES = {None: pb.MODE_UNSPECIFIED, "submit": pb.MODE_SUBMIT, "sign-only": pb.MODE_SIGN_ONLY}
READS = {
    "order": pb.READ_KIND_ORDER,
    "open_orders": pb.READ_KIND_OPEN_ORDERS,
    "balances": pb.READ_KIND_BALANCES,
    "my_trades": pb.READ_KIND_MY_TRADES,
}


@dataclass(frozen=True)
class Identity:
    """An Ed25519 identity (a bot's or an operator's). `repr` never shows the private key."""

    name: str
    signing_key: SigningKey

    @classmethod
    def generate(cls, name: str) -> Identity:
        return cls(name, SigningKey.generate())

    @classmethod
    def from_file(cls, name: str, path: str | Path) -> Identity:
        raw = bytes.fromhex(Path(path).read_text().strip())
        return cls(name, SigningKey(raw))

    @property
    def public_key(self) -> bytes:
        return self.signing_key.verify_key.encode()

    def __repr__(self) -> str:
        return f"Identity({self.name!r}, public_key={self.public_key.hex()[:16]}...)"


def fresh_nonce() -> str:
    return secrets.token_urlsafe(18)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def money(value: Decimal | str | None) -> str:
    """Decimal or decimal string -> wire string; a float is refused (it cannot carry money)."""
    if value is None:
        return ""
    if isinstance(value, float):
        raise TypeError("money must be Decimal or a decimal string, never float")
    return format(value, "f") if isinstance(value, Decimal) else value


def channel_for(
    address: str, tls: tuple[bytes, bytes, bytes] | None = None, server_name: str | None = None
) -> grpc.Channel:
    if tls is None:
        return grpc.insecure_channel(address)
    opts = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    creds = grpc.ssl_channel_credentials(
        root_certificates=tls[0], private_key=tls[1], certificate_chain=tls[2]
    )
    return grpc.secure_channel(address, creds, options=opts)


class SignerClient:
    """A bot's connection to one or more signer replicas, for one exchange key."""

    def __init__(
        self,
        addresses: str | list[str],
        identity: Identity,
        key_id: str,
        exchange: str = "binance",
        *,
        tls: tuple[bytes, bytes, bytes] | None = None,
        server_name: str | None = None,
        timeout: float = 15.0,
    ) -> None:
        self.addresses = [addresses] if isinstance(addresses, str) else list(addresses)
        self.identity = identity
        self.key_id = key_id
        self.exchange = exchange
        self.timeout = timeout
        self._channels = [channel_for(a, tls, server_name) for a in self.addresses]
        self._stubs = [signer_pb2_grpc.SignerStub(c) for c in self._channels]
        self._current = 0

    def close(self) -> None:
        for c in self._channels:
            c.close()

    # --- request building (public so tests and audits can rebuild exact bytes) ---------------

    def header(
        self, method: str, *, nonce: str | None = None, timestamp_ms: int | None = None
    ) -> pb.RequestHeader:
        return pb.RequestHeader(
            bot_id=self.identity.name,
            key_id=self.key_id,
            method=method,
            nonce=nonce or fresh_nonce(),
            timestamp_ms=timestamp_ms or now_ms(),
        )

    def sign(self, message: object) -> pb.SignedRequest:
        body = message.SerializeToString()  # type: ignore[attr-defined]
        sig = self.identity.signing_key.sign(BOT_SIGNING_CONTEXT + body).signature
        return pb.SignedRequest(body=body, signature=sig)

    def order_request(
        self,
        symbol: str,
        side: str,
        order_type: str,
        amount: Decimal | str,
        price: Decimal | str | None,
        client_order_id: str,
        *,
        mode: str | None = None,
        **header_kw: object,
    ) -> pb.SignedRequest:
        intent = pb.OrderIntent(
            header=self.header("SubmitOrder", **header_kw),  # type: ignore[arg-type]
            exchange=self.exchange,
            symbol=symbol,
            side=SIDES[side],
            type=TYPES[order_type],
            amount=money(amount),
            limit_price=money(price),
            client_order_id=client_order_id,
            mode=MODES[mode],
        )
        return self.sign(intent)

    # --- calls -------------------------------------------------------------------------------

    def call(
        self,
        method: str,
        request: pb.SignedRequest,
        resign: Callable[[], pb.SignedRequest] | None = None,
    ) -> object:
        """Send to the current replica; on UNAVAILABLE move to the next one and retry once each.

        A replica can die after committing the request's nonce (and decision) but before
        answering; the same bytes sent to another replica would then be refused as a replayed
        nonce. So each retry is signed afresh by `resign` (new nonce and timestamp, same
        intent): a committed order then comes back as `duplicate_client_order_id`."""
        last: grpc.RpcError | None = None
        for attempt in range(len(self._stubs)):
            stub = self._stubs[self._current]
            if attempt and resign is not None:
                request = resign()
            try:
                return getattr(stub, method)(request, timeout=self.timeout)
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE or len(self._stubs) == 1:
                    raise
                last = e
                self._current = (self._current + 1) % len(self._stubs)
        assert last is not None
        raise last

    def submit_order(
        self,
        symbol: str,
        side: str,
        order_type: str,
        amount: Decimal | str,
        price: Decimal | str | None,
        client_order_id: str,
        *,
        mode: str | None = None,
    ) -> pb.OrderReply:
        def build() -> pb.SignedRequest:
            return self.order_request(
                symbol, side, order_type, amount, price, client_order_id, mode=mode
            )

        return self.call("SubmitOrder", build(), build)  # type: ignore[return-value]

    def cancel_order(
        self, symbol: str, client_order_id: str, *, mode: str | None = None
    ) -> pb.OrderReply:
        def build() -> pb.SignedRequest:
            return self.sign(
                pb.CancelIntent(
                    header=self.header("CancelOrder"),
                    exchange=self.exchange,
                    symbol=symbol,
                    client_order_id=client_order_id,
                    mode=MODES[mode],
                )
            )

        return self.call("CancelOrder", build(), build)  # type: ignore[return-value]

    def read(self, kind: str, symbol: str = "", client_order_id: str = "") -> pb.ReadReply:
        def build() -> pb.SignedRequest:
            return self.sign(
                pb.ReadIntent(
                    header=self.header("Read"),
                    exchange=self.exchange,
                    kind=READS[kind],
                    symbol=symbol,
                    client_order_id=client_order_id,
                )
            )

        return self.call("Read", build(), build)  # type: ignore[return-value]

    def get_policy(self) -> pb.PolicyView:
        def build() -> pb.SignedRequest:
            return self.sign(pb.PolicyQuery(header=self.header("GetPolicy")))

        return self.call("GetPolicy", build(), build)  # type: ignore[return-value]


class AdminClient:
    """An operator's signed connection to the signer's Admin service."""

    def __init__(
        self,
        address: str,
        identity: Identity,
        *,
        tls: tuple[bytes, bytes, bytes] | None = None,
        timeout: float = 15.0,
    ) -> None:
        self.identity = identity
        self.timeout = timeout
        self._channel = channel_for(address, tls)
        self.stub = admin_pb2_grpc.AdminStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def header(self, method: str) -> apb.AdminHeader:
        return apb.AdminHeader(
            operator_id=self.identity.name,
            method=method,
            nonce=fresh_nonce(),
            timestamp_ms=now_ms(),
        )

    def sign(self, command: object) -> apb.SignedAdminRequest:
        body = command.SerializeToString()  # type: ignore[attr-defined]
        sig = self.identity.signing_key.sign(ADMIN_SIGNING_CONTEXT + body).signature
        return apb.SignedAdminRequest(body=body, signature=sig)

    def freeze(
        self, key_id: str = "", *, all_keys: bool = False, reason: str = ""
    ) -> apb.AdminReply:
        cmd = apb.FreezeCommand(
            header=self.header("Freeze"), key_id=key_id, all=all_keys, reason=reason
        )
        return self.stub.Freeze(self.sign(cmd), timeout=self.timeout)

    def unfreeze(
        self, key_id: str = "", *, all_keys: bool = False, reason: str = ""
    ) -> apb.AdminReply:
        cmd = apb.FreezeCommand(
            header=self.header("Unfreeze"), key_id=key_id, all=all_keys, reason=reason
        )
        return self.stub.Unfreeze(self.sign(cmd), timeout=self.timeout)

    def set_policy(
        self, key_id: str, policy_toml: str, expected_version: int = 0
    ) -> apb.AdminReply:
        cmd = apb.SetPolicyCommand(
            header=self.header("SetPolicy"),
            key_id=key_id,
            policy_toml=policy_toml,
            expected_version=expected_version,
        )
        return self.stub.SetPolicy(self.sign(cmd), timeout=self.timeout)

    def register_bot(self, bot_id: str, public_key: bytes, key_ids: list[str]) -> apb.AdminReply:
        cmd = apb.RegisterBotCommand(
            header=self.header("RegisterBot"), bot_id=bot_id, public_key=public_key, key_ids=key_ids
        )
        return self.stub.RegisterBot(self.sign(cmd), timeout=self.timeout)

    def revoke_bot(self, bot_id: str) -> apb.AdminReply:
        cmd = apb.RevokeBotCommand(header=self.header("RevokeBot"), bot_id=bot_id)
        return self.stub.RevokeBot(self.sign(cmd), timeout=self.timeout)

    def checkpoint(self) -> apb.CheckpointReply:
        return self.stub.Checkpoint(
            self.sign(apb.CheckpointCommand(header=self.header("Checkpoint"))), timeout=self.timeout
        )

    def status(self) -> apb.StatusReply:
        return self.stub.Status(
            self.sign(apb.StatusCommand(header=self.header("Status"))), timeout=self.timeout
        )

    # --- M-of-N proposals: a loosening needs several operators' signatures ------------------

    def propose(self, expires_in_s: int = 0, **change: object) -> apb.ProposalView:
        """One change, e.g. propose(unfreeze=apb.UnfreezeChange(all=True))."""
        cmd = apb.ProposeCommand(
            header=self.header("Propose"),
            expires_in_s=expires_in_s,
            **change,  # type: ignore[arg-type]
        )
        return self.stub.Propose(self.sign(cmd), timeout=self.timeout)

    def proposal_signature(self, document: bytes) -> apb.ProposalSignature:
        """This operator's approval of exactly these document bytes (no network)."""
        sig = self.identity.signing_key.sign(PROPOSAL_SIGNING_CONTEXT + document).signature
        return apb.ProposalSignature(
            public_key=self.identity.public_key, signature=sig, operator_id=self.identity.name
        )

    def submit_proposal(
        self, proposal_id: str, signatures: list[apb.ProposalSignature] | None = None
    ) -> apb.ProposalView:
        cmd = apb.SubmitProposalCommand(
            header=self.header("SubmitProposal"),
            proposal_id=proposal_id,
            signatures=signatures or [],
        )
        return self.stub.SubmitProposal(self.sign(cmd), timeout=self.timeout)

    def approve(self, proposal: apb.ProposalView) -> apb.ProposalView:
        """Sign the proposal's document and submit the signature."""
        sig = self.proposal_signature(proposal.document)
        return self.submit_proposal(proposal.proposal_id, [sig])

    def veto(self, proposal_id: str, reason: str = "") -> apb.ProposalView:
        cmd = apb.VetoCommand(header=self.header("Veto"), proposal_id=proposal_id, reason=reason)
        return self.stub.Veto(self.sign(cmd), timeout=self.timeout)

    def list_proposals(self, status: str = "", proposal_id: str = "") -> list[apb.ProposalView]:
        cmd = apb.ListProposalsCommand(
            header=self.header("ListProposals"), status=status, proposal_id=proposal_id
        )
        return list(self.stub.ListProposals(self.sign(cmd), timeout=self.timeout).proposals)
