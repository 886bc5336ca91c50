"""The runtime's view of the signer: every answer classified into what the bot must do next.

A policy denial is a value (`Denied`, with the signer's rule ids), not an exception: the bot is
paused with it. A signer that cannot be reached or does not answer in time raises
`SignerUnreachable` (retry with backoff; the same client order id is sent again, so at most one
order can exist). Any other gRPC refusal (unauthenticated identity, key not granted...) raises
`SignerRefused`, which pauses the bot with the signer's rule id and message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

import grpc

from botengine.backoff import is_transient
from botengine.model import Fill, Place
from botengine.signer_client import SignerClient

_RULE = re.compile(r"^([a-z][a-z0-9_]*): (.*)$", re.S)
_NOT_FOUND = ("code -2013", "Order does not exist")
_UNCERTAIN = ("may have reached", "transport failure")


class SignerUnreachable(RuntimeError):
    """UNAVAILABLE / DEADLINE_EXCEEDED, or the exchange behind the signer did not answer."""


class SignerRefused(RuntimeError):
    """A non-retriable gRPC refusal; `rule_id` is the signer's stable id when it gave one."""

    def __init__(self, rule_id: str, message: str) -> None:
        super().__init__(f"{rule_id}: {message}")
        self.rule_id = rule_id
        self.message = message


@dataclass(frozen=True)
class OrderView:
    """One order as the exchange reports it (through the signer); decimals as strings."""

    client_order_id: str
    exchange_order_id: str
    status: str  # open, closed, canceled, expired, rejected
    amount: str = ""
    filled: str = ""
    average: str = ""
    fee_cost: str = ""
    fee_currency: str = ""
    timestamp_ms: int = 0


@dataclass(frozen=True)
class TradeView:
    trade_id: str
    exchange_order_id: str
    price: Decimal
    amount: Decimal
    fee: Decimal
    fee_asset: str
    timestamp_ms: int


@dataclass(frozen=True)
class Placed:
    order: OrderView


@dataclass(frozen=True)
class Duplicate:
    """The signer already allowed this client order id once: it was placed (or is in flight)."""


@dataclass(frozen=True)
class Denied:
    rules: tuple[str, ...]
    message: str


@dataclass(frozen=True)
class ExchangeRefused:
    message: str


@dataclass(frozen=True)
class Uncertain:
    """The request may have reached the exchange; a query by client order id will tell."""

    message: str


SubmitOutcome = Placed | Duplicate | Denied | ExchangeRefused | Uncertain


def _view(o: object) -> OrderView:
    return OrderView(
        client_order_id=o.client_order_id,  # type: ignore[attr-defined]
        exchange_order_id=o.exchange_order_id,  # type: ignore[attr-defined]
        status=o.status,  # type: ignore[attr-defined]
        amount=o.amount,  # type: ignore[attr-defined]
        filled=o.filled,  # type: ignore[attr-defined]
        average=o.average,  # type: ignore[attr-defined]
        fee_cost=o.fee_cost,  # type: ignore[attr-defined]
        fee_currency=o.fee_currency,  # type: ignore[attr-defined]
        timestamp_ms=o.timestamp_ms,  # type: ignore[attr-defined]
    )


def refusal(error: grpc.RpcError) -> SignerRefused:
    details = (error.details() if hasattr(error, "details") else "") or ""
    m = _RULE.match(details)
    code = error.code().name.lower() if hasattr(error, "code") and error.code() else "error"
    return SignerRefused(m[1], m[2]) if m else SignerRefused(code, details or code)


class SignerGateway:
    """One bot's calls to the signer, for one key and exchange."""

    def __init__(self, client: SignerClient) -> None:
        self.client = client

    def _call(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return fn(*args, **kwargs)
        except grpc.RpcError as e:
            if is_transient(e):
                raise SignerUnreachable(f"signer: {e.code().name}") from None  # type: ignore[attr-defined]
            raise refusal(e) from None

    def submit(self, symbol: str, place: Place) -> SubmitOutcome:
        order_type = "market" if place.price is None else "limit"
        reply = self._call(
            self.client.submit_order,
            symbol,
            place.side,
            order_type,
            place.amount,
            place.price,
            place.client_order_id,
        )
        d = reply.decision
        if not d.allowed:
            rules = tuple(v.rule_id for v in d.violations)
            if "duplicate_client_order_id" in rules:
                return Duplicate()
            text = "; ".join(f"{v.rule_id}: {v.message}" for v in d.violations)
            return Denied(rules or ("denied",), text or "denied by the signer's policy")
        if reply.exchange_error:
            if any(u in reply.exchange_error for u in _UNCERTAIN):
                return Uncertain(reply.exchange_error)
            return ExchangeRefused(reply.exchange_error)
        if not reply.order.status:
            return Uncertain("the signer returned no order state")
        return Placed(_view(reply.order))

    def cancel(self, symbol: str, coid: str) -> OrderView | str:
        """The cancelled order, or the reason it could not be cancelled (already done...)."""
        reply = self._call(self.client.cancel_order, symbol, coid)
        if not reply.decision.allowed:
            return "; ".join(f"{v.rule_id}: {v.message}" for v in reply.decision.violations)
        if reply.exchange_error:
            return reply.exchange_error
        return _view(reply.order)

    def order(self, symbol: str, coid: str) -> OrderView | None:
        """The order by client order id; None when the exchange has never seen it."""
        reply = self._call(self.client.read, "order", symbol, coid)
        if reply.exchange_error:
            if any(n in reply.exchange_error for n in _NOT_FOUND):
                return None
            raise SignerUnreachable(f"order query: {reply.exchange_error}")
        if not reply.orders:
            raise SignerUnreachable("order query: the signer returned no order")
        return _view(reply.orders[0])

    def open_orders(self, symbol: str) -> list[OrderView]:
        reply = self._call(self.client.read, "open_orders", symbol)
        if reply.exchange_error:
            raise SignerUnreachable(f"open orders: {reply.exchange_error}")
        return [_view(o) for o in reply.orders]

    def trades(self, symbol: str) -> list[TradeView]:
        reply = self._call(self.client.read, "my_trades", symbol)
        if reply.exchange_error:
            raise SignerUnreachable(f"trades: {reply.exchange_error}")
        return [
            TradeView(
                t.trade_id,
                t.exchange_order_id,
                Decimal(t.price),
                Decimal(t.amount),
                Decimal(t.fee_cost or "0"),
                t.fee_currency,
                t.timestamp_ms,
            )
            for t in reply.trades
        ]


def fill_from_trades(
    coid: str, side: str, amount: Decimal, trades: list[TradeView]
) -> tuple[Fill, list[str]] | None:
    """The whole-order fill from its trades, or None while they do not yet add up to it."""
    if not trades:
        return None
    total = sum((t.amount for t in trades), Decimal(0))
    if total < amount:
        return None
    assets = {t.fee_asset for t in trades if t.fee}
    if len(assets) > 1:
        raise ValueError(f"{coid}: fees in several assets {sorted(assets)} are not supported")
    notional = sum((t.price * t.amount for t in trades), Decimal(0))
    fill = Fill(
        client_order_id=coid,
        side=side,  # type: ignore[arg-type]
        price=notional / total if len(trades) > 1 else trades[0].price,
        amount=total,
        fee=sum((t.fee for t in trades), Decimal(0)),
        fee_asset=assets.pop() if assets else (trades[0].fee_asset or ""),
        ts_ms=max(t.timestamp_ms for t in trades),
    )
    return fill, [t.trade_id for t in trades]


def fill_from_view(coid: str, side: str, view: OrderView) -> Fill | None:
    """A market order's fill straight from the create answer, when it carries price and fee."""
    if view.status != "closed" or not view.average or not view.fee_currency or not view.filled:
        return None
    return Fill(
        client_order_id=coid,
        side=side,  # type: ignore[arg-type]
        price=Decimal(view.average),
        amount=Decimal(view.filled),
        fee=Decimal(view.fee_cost or "0"),
        fee_asset=view.fee_currency,
        ts_ms=view.timestamp_ms,
    )
