"""The incident of December 2022, replayed against Bulkhead.

A rogue client holds the engine's identity key, exactly what a stolen engine host gives an
attacker. It tries what the attackers did with leaked keys: pump a thin, low-cap coin by buying
it far above its price, trade far beyond the usual sizes, replay a request it captured, and
withdraw. Each must be refused with its rule id, and the account's balances (read with the
account's own key) must not move. Then the operator pulls the kill switch.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import grpc

from botengine.signer_client import Identity, SignerClient
from bulkhead.signer.v1 import signer_pb2 as pb

from .market import ENGINE_ID, KEY_ID

REPLAY_RULES = ("replayed_nonce", "stale_timestamp")


@dataclass(frozen=True)
class Captured:
    """An order request the engine signed and sent, exactly as it crossed the wire."""

    body: bytes
    signature: bytes
    client_order_id: str
    ts_ms: int


def rules_of(reply: object) -> list[str]:
    return sorted(v.rule_id for v in reply.decision.violations)  # type: ignore[attr-defined]


class Rogue:
    """A client with the engine's Ed25519 identity, talking to the signer's bot socket."""

    def __init__(self, socket: str, engine_key: str) -> None:
        self.client = SignerClient(socket, Identity.from_file(ENGINE_ID, engine_key), KEY_ID)

    def close(self) -> None:
        self.client.close()

    def refused(self, symbol: str, amount: str, price: Decimal, coid: str) -> list[str] | None:
        """The rule ids of a denial, or None if the order was allowed."""
        reply = self.client.submit_order(symbol, "buy", "limit", amount, price, coid)
        return None if reply.decision.allowed else rules_of(reply)

    def pump(self, data_price: Decimal) -> tuple[str, bool, dict[str, object]]:
        """Buy the low-cap coin at 3.7 times its price, as the 2022 attackers did."""
        price = (data_price * Decimal("3.7")).quantize(Decimal("0.00001"))
        rules = self.refused("DATA/USDT", "2000", price, "rogue-pump")
        ok = rules is not None and "symbol_not_allowed" in rules
        return (
            f"buy 2000 DATA @ {price} (market {data_price.normalize()}): {_said(rules)}",
            ok,
            {"rules": rules},
        )

    def over_cap(self, btc_price: Decimal) -> tuple[str, bool, dict[str, object]]:
        """Spend the account at once: one BTC, far above the 3000 USDT order cap."""
        price = (btc_price * Decimal("0.99")).quantize(Decimal("0.01"))
        rules = self.refused("BTC/USDT", "1", price, "rogue-cap")
        ok = rules is not None and "notional_cap" in rules
        return f"buy 1 BTC @ {price}: {_said(rules)}", ok, {"rules": rules}

    def replay(self, captured: Captured | None) -> tuple[str, bool, dict[str, object]]:
        """Send again, byte for byte, an order the engine really sent (bytes and signature as
        the audit log holds them: what a wire tap would have seen). Within the signer's clock
        skew the nonce gives it away; later, its timestamp does."""
        if captured is None:
            return "no engine order to capture", False, {"rules": []}
        request = pb.SignedRequest(body=captured.body, signature=captured.signature)
        try:
            reply = self.client.call("SubmitOrder", request)
        except grpc.RpcError as e:
            said = e.details() or ""
            rule = next((r for r in REPLAY_RULES if r in said), e.code().name)
            return (
                f"engine's order {captured.client_order_id}, sent again: {rule}",
                rule in REPLAY_RULES,
                {"rules": [rule]},
            )
        return f"the replay was answered: {reply}", False, {"rules": []}

    def withdraw(self) -> tuple[str, bool, dict[str, object]]:
        """Call a Withdraw method on the signer's socket: no such RPC exists anywhere."""
        channel = grpc.insecure_channel(self.client.addresses[0])
        try:
            channel.unary_unary("/bulkhead.signer.v1.Signer/Withdraw")(b"", timeout=10)
            return "the signer answered a withdrawal call!", False, {"rules": []}
        except grpc.RpcError as e:
            code = e.code().name
            return f"{code}: no withdrawal RPC exists", code == "UNIMPLEMENTED", {"rules": [code]}
        finally:
            channel.close()

    def after_freeze(self, btc_price: Decimal) -> list[str] | None:
        price = (btc_price * Decimal("0.98")).quantize(Decimal("0.01"))
        return self.refused("BTC/USDT", "0.001", price, "rogue-after-freeze")


def _said(rules: list[str] | None) -> str:
    return "ALLOWED" if rules is None else "refused: " + ", ".join(rules)
