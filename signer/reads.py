"""Signed read-only calls (order status, open orders, balances, trades) and GetPolicy.

Reads are authenticated like orders (signature, fresh timestamp, unused nonce, key granted) but
change nothing except the nonce table, and freeing open-order slots of orders seen finished.
Successful reads are not audited; refused ones are.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from bulkhead.signer.v1 import signer_pb2 as pb
from signer import intents, limits, state
from signer.auditlog import records_for_client_order_id
from signer.db import read_session
from signer.errors import ExchangeError, InvalidRequest, PermissionDenied

if TYPE_CHECKING:
    from signer.core import SignerCore


class ReadOps:
    """Mixed into SignerCore: the read side of the Signer service."""

    def read(self: SignerCore, request: pb.SignedRequest) -> pb.ReadReply:
        self._check_envelope(request)
        intent = intents.parse_body(pb.ReadIntent, request.body)
        header = intents.bot_header(intent.header)
        exchange = intents.check_exchange(intent.exchange)
        kind = intent.kind
        symbol = intents.check_symbol(intent.symbol) if intent.symbol else None
        if kind == pb.READ_KIND_ORDER:
            if symbol is None:
                raise InvalidRequest("symbol: required for READ_KIND_ORDER")
            coid = intents.check_client_order_id(intent.client_order_id)
        elif kind == pb.READ_KIND_MY_TRADES and symbol is None:
            raise InvalidRequest("symbol: required for READ_KIND_MY_TRADES")
        elif kind not in (pb.READ_KIND_OPEN_ORDERS, pb.READ_KIND_BALANCES, pb.READ_KIND_MY_TRADES):
            raise InvalidRequest(f"kind: {kind} is not allowed; must be one of READ_KIND_*")
        key_id = intent.header.key_id
        with self._authenticated(header, key_id, request, "Read") as (s, _now):
            _, reasons = self._key_checks(s, key_id, exchange, self.gateways.key_status(s, key_id))
            if reasons:  # raised inside: the refusal is audited and the nonce rolled back
                raise PermissionDenied(reasons[0].rule_id, reasons[0].message)
        reply = pb.ReadReply()
        try:
            if kind == pb.READ_KIND_ORDER:
                order = self.gateways.fetch_order(key_id, exchange, symbol or "", coid)
                reply.orders.append(order_state(order))
                self._sync_ledger(key_id, [order])
            elif kind == pb.READ_KIND_OPEN_ORDERS:
                orders = self.gateways.fetch_open_orders(key_id, exchange, symbol)
                reply.orders.extend(order_state(o) for o in orders)
            elif kind == pb.READ_KIND_BALANCES:
                for b in self.gateways.fetch_balance(key_id, exchange):
                    reply.balances.append(
                        pb.Balance(asset=b["asset"], free=b["free"], locked=b["locked"])
                    )
            else:
                for t in self.gateways.fetch_my_trades(key_id, exchange, symbol or ""):
                    reply.trades.append(
                        pb.Trade(
                            **{k: t.get(k, "") for k in TRADE_FIELDS},
                            timestamp_ms=int(t.get("timestamp_ms") or 0),
                        )
                    )
        except ExchangeError as e:
            reply.exchange_error = str(e)
        return reply

    def _sync_ledger(self: SignerCore, key_id: str, orders: list[dict[str, str]]) -> None:
        """A query that shows an order done frees its open-order slot."""
        done = [
            o for o in orders if o.get("status") in ("closed", "canceled", "expired", "rejected")
        ]
        if not done:
            return
        for o in done:
            coid = o.get("client_order_id", "")
            status = {"expired": "canceled"}.get(o["status"], o["status"])
            with read_session(self.engine) as s:
                known = limits.order_status(s, key_id, coid)
                seq = allowed_decision_seq(s, key_id, coid) if known == "pending" else 0
            if known == "pending":  # no outcome in the log yet: this read supplies it, audited
                extra = {"exchange_order_id": o.get("exchange_order_id", "")}
                extra["filled"] = o.get("filled", "")
                self._record_late_outcome(seq, key_id, coid, status, reconciled="read", **extra)
            elif known is not None:
                with self.txn() as s:
                    limits.record_outcome(s, key_id, coid, status)

    def get_policy(self: SignerCore, request: pb.SignedRequest) -> pb.PolicyView:
        self._check_envelope(request)
        intent = intents.parse_body(pb.PolicyQuery, request.body)
        header = intents.bot_header(intent.header)
        key_id = intent.header.key_id
        with self._authenticated(header, key_id, request, "GetPolicy") as (s, now):
            pol = state.current_policy(s, key_id)
            frozen = state.global_frozen(s) or state.key_frozen(s, key_id)
            snap = limits.counters_snapshot(s, key_id, now)
        return pb.PolicyView(
            key_id=key_id,
            policy_version=pol.version if pol else 0,
            frozen=frozen,
            policy_json=pol.policy_json if pol else "",
            used_24h_notional=str(snap.get("used_24h_notional", "0")),
            open_orders=int(snap.get("open_orders", 0)),
        )


def allowed_decision_seq(s: Session, key_id: str, client_order_id: str) -> int:
    """The seq of the allow decision that created this order on this key (0 if none)."""
    for rec in records_for_client_order_id(s, client_order_id):
        body = json.loads(rec.record_bytes)
        payload = body.get("payload") or {}
        if (
            body.get("kind") == "decision"
            and payload.get("key_id") == key_id
            and payload.get("action") == "create"
            and payload.get("allowed")
        ):
            return int(body["seq"])
    return 0


TRADE_FIELDS = (
    "trade_id",
    "exchange_order_id",
    "symbol",
    "side",
    "price",
    "amount",
    "fee_cost",
    "fee_currency",
)
ORDER_FIELDS = (
    "exchange_order_id",
    "client_order_id",
    "symbol",
    "side",
    "type",
    "status",
    "amount",
    "filled",
    "price",
    "average",
    "fee_cost",
    "fee_currency",
)


def order_state(o: dict[str, str]) -> pb.OrderState:
    return pb.OrderState(
        **{k: str(o.get(k) or "") for k in ORDER_FIELDS},
        timestamp_ms=int(o.get("timestamp_ms") or 0),
    )
