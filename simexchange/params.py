"""Request parameter parsing with Binance's validation errors."""

from __future__ import annotations

import re
from decimal import Decimal

from simexchange import errors

DECIMAL_RE = re.compile(r"([0-9]{1,20})(\.[0-9]{1,20})?")
INT_RE = re.compile(r"[0-9]{1,20}")
CLIENT_ID_RE = re.compile(r"[.A-Z:/a-z0-9_-]{1,36}")
CLIENT_ID_RANGE = r"^[\.A-Z\:/a-z0-9_-]{1,36}$"
MAX_DECIMALS = 8

Params = dict[str, str]


def text(params: Params, name: str, *, required: bool = False) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise errors.mandatory(name)
        return None
    return value


def decimal(params: Params, name: str, *, required: bool = False) -> Decimal | None:
    """A decimal parameter: digits with an optional fraction, at most 8 decimals."""
    value = text(params, name, required=required)
    if value is None:
        return None
    if not DECIMAL_RE.fullmatch(value):
        raise errors.illegal_chars(name, errors.DECIMAL_RANGE)
    number = Decimal(value)
    if -number.normalize().as_tuple().exponent > MAX_DECIMALS:  # type: ignore[operator]
        raise errors.too_much_precision(name)
    return number


def integer(params: Params, name: str, *, required: bool = False) -> int | None:
    value = text(params, name, required=required)
    if value is None:
        return None
    if not INT_RE.fullmatch(value):
        raise errors.illegal_chars(name, "^[0-9]{1,20}$")
    return int(value)


def limit(params: Params, default: int, maximum: int) -> int:
    """`limit`: default when absent, capped at the endpoint's maximum."""
    value = integer(params, "limit")
    if value is None:
        return default
    if value <= 0:
        raise errors.invalid_parameter("limit")
    return min(value, maximum)


def client_id(params: Params, name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if value == "":
        raise errors.empty_client_order_id()
    if not CLIENT_ID_RE.fullmatch(value):
        raise errors.illegal_chars(name, CLIENT_ID_RANGE)
    return value


def boolean(params: Params, name: str) -> bool:
    value = text(params, name)
    if value is None:
        return False
    if value.lower() not in ("true", "false"):
        raise errors.invalid_parameter(name)
    return value.lower() == "true"


def not_sent(params: Params, *names: str) -> None:
    """-1106 for each parameter that makes no sense for this order type."""
    for name in names:
        if params.get(name) not in (None, ""):
            raise errors.not_required(name)
