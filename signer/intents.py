"""Parsing and field validation of signed bot requests, before anything is looked up or stored.

Everything here is pure: a malformed request raises InvalidRequest (gRPC INVALID_ARGUMENT) with
the field, the value (truncated) and what is allowed, and nothing in the signer changes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from bulkhead.signer.v1 import signer_pb2 as pb
from signer.auth import Header, check_header_syntax
from signer.errors import InvalidRequest

# Plain positive decimals only: no sign, exponent, NaN or infinity; bounded digits.
DECIMAL_RE = re.compile(r"^[0-9]{1,20}(\.[0-9]{1,18})?$")
SYMBOL_RE = re.compile(r"^[A-Z0-9]{1,20}/[A-Z0-9]{1,20}$")
CLIENT_ORDER_ID_RE = re.compile(r"^[A-Za-z0-9_.:/-]{1,36}$")
EXCHANGE_RE = re.compile(r"^[a-z0-9]{2,32}$")

SIDES = {pb.SIDE_BUY: "buy", pb.SIDE_SELL: "sell"}
TYPES = {pb.ORDER_TYPE_LIMIT: "limit", pb.ORDER_TYPE_MARKET: "market"}

M = TypeVar("M", bound=Message)


def show(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:40] + "...")


def parse_body(cls: type[M], body: bytes) -> M:
    msg = cls()
    try:
        msg.ParseFromString(body)
    except (DecodeError, RuntimeError, ValueError):
        raise InvalidRequest(f"body: not a valid serialized {cls.DESCRIPTOR.full_name}") from None
    if not msg.HasField("header"):  # type: ignore[arg-type]
        raise InvalidRequest("header: missing")
    return msg


def bot_header(h: pb.RequestHeader) -> Header:
    header = Header(
        principal=f"bot:{h.bot_id}",
        identity=h.bot_id,
        method=h.method,
        nonce=h.nonce,
        timestamp_ms=h.timestamp_ms,
    )
    check_header_syntax(header)
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", h.key_id):
        raise InvalidRequest(
            f"header.key_id: {show(h.key_id)} is not allowed; use 1-64 characters A-Z a-z 0-9 _ . -"
        )
    return header


def parse_decimal(field: str, value: str) -> Decimal:
    if not DECIMAL_RE.fullmatch(value):
        raise InvalidRequest(
            f"{field}: {show(value)} is not allowed; must be a plain decimal string > 0 "
            "(up to 20 integer and 18 fractional digits, no sign or exponent)"
        )
    try:
        d = Decimal(value)
    except InvalidOperation:  # unreachable given the regex; kept for clarity
        raise InvalidRequest(f"{field}: {show(value)} is not a decimal") from None
    if d <= 0:
        raise InvalidRequest(f"{field}: {show(value)} is not allowed; must be > 0")
    return d


def check_symbol(value: str) -> str:
    if not SYMBOL_RE.fullmatch(value):
        raise InvalidRequest(
            f"symbol: {show(value)} is not allowed; must look like BASE/QUOTE in ASCII A-Z 0-9"
        )
    return value


def check_client_order_id(value: str) -> str:
    if not CLIENT_ORDER_ID_RE.fullmatch(value):
        raise InvalidRequest(
            f"client_order_id: {show(value)} is not allowed; "
            "use 1-36 characters A-Z a-z 0-9 _ . : / -"
        )
    return value


def check_exchange(value: str) -> str:
    if not EXCHANGE_RE.fullmatch(value):
        raise InvalidRequest(
            f"exchange: {show(value)} is not allowed; must be a ccxt id like 'binance'"
        )
    return value


@dataclass(frozen=True)
class OrderFields:
    symbol: str
    side: str
    order_type: str
    amount: Decimal
    limit_price: Decimal | None
    client_order_id: str
    exchange: str


def order_fields(intent: pb.OrderIntent) -> OrderFields:
    if intent.side not in SIDES:
        raise InvalidRequest(f"side: {intent.side} is not allowed; must be SIDE_BUY or SIDE_SELL")
    if intent.type not in TYPES:
        raise InvalidRequest(
            f"type: {intent.type} is not allowed; must be ORDER_TYPE_LIMIT or ORDER_TYPE_MARKET"
        )
    order_type = TYPES[intent.type]
    if intent.quote_amount:
        raise InvalidRequest("quote_amount: not supported yet; give amount in the base asset")
    price: Decimal | None = None
    if order_type == "limit":
        price = parse_decimal("limit_price", intent.limit_price)
    elif intent.limit_price:
        raise InvalidRequest("limit_price: must be empty for a market order")
    return OrderFields(
        symbol=check_symbol(intent.symbol),
        side=SIDES[intent.side],
        order_type=order_type,
        amount=parse_decimal("amount", intent.amount),
        limit_price=price,
        client_order_id=check_client_order_id(intent.client_order_id),
        exchange=check_exchange(intent.exchange),
    )


def mode_of(mode: int, default: str) -> str:
    if mode == pb.MODE_UNSPECIFIED:
        return default
    if mode == pb.MODE_SUBMIT:
        return "submit"
    if mode == pb.MODE_SIGN_ONLY:
        return "sign-only"
    raise InvalidRequest(f"mode: {mode} is not allowed; must be MODE_SUBMIT or MODE_SIGN_ONLY")
