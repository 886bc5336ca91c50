"""Field parsers shared by the config models: exact decimals, bounded integers, messages.

Every refusal names the value and the allowed range; pydantic adds the field path. A float is
refused outright (with a request to quote it), never rounded into a Decimal.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from pydantic import ValidationError

MAX_DECIMAL_PLACES = 18
MAX_MAGNITUDE = Decimal(10) ** 20


def show(value: object) -> str:
    """A short rendering of a user-supplied value for messages."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 48 else text[:45] + "..."


def canonical(value: Decimal) -> str:
    """Plain decimal text without exponent or trailing zeros ("100.5", "0.001", "7")."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def decimal_field(value: object, low: Decimal, high: Decimal, *, low_incl: bool = False) -> Decimal:
    """Parse a decimal in (low, high] (or [low, high]); floats are refused, not rounded."""
    rng = f"a decimal {'>=' if low_incl else '>'} {low} and <= {high:f}"
    if isinstance(value, float):
        raise ValueError(
            f'{value!r} is a float; write it as a quoted decimal string ("{value!r}"): a float '
            "never touches money"
        )
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        raise ValueError(f"{show(value)} is not allowed; must be {rng}")
    try:
        number = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
    except (InvalidOperation, ValueError):
        raise ValueError(f"{show(value)} is not allowed; must be {rng}") from None
    ok = (
        number.is_finite()
        and (number >= low if low_incl else number > low)
        and number <= high
        and -int(number.normalize().as_tuple().exponent) <= MAX_DECIMAL_PLACES
    )
    if not ok:
        raise ValueError(
            f"{show(value)} is not allowed; must be {rng} with at most "
            f"{MAX_DECIMAL_PLACES} decimal places"
        )
    return Decimal(canonical(number))


def int_field(value: object, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise ValueError(f"{show(value)} is not allowed; must be an integer from {low} to {high}")
    return value


def validation_message(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if e["type"] == "value_error":
            msg = str(e["ctx"]["error"])
            m = re.match(r"^([a-z_]+): ", msg)
            if m and loc and "." not in loc:  # a cross-field check names its own field
                loc, msg = f"{loc}.{m[1]}", msg[m.end() :]
        elif e["type"] == "extra_forbidden":
            msg = f"unknown field (value {show(e['input'])}); refused"
        elif e["type"] == "missing":
            msg = "missing; this field is required"
        else:
            msg = f"{show(e['input'])} is not allowed; {e['msg']}"
        lines.append(f"{loc}: {msg}" if loc else msg)
    return "\n".join(lines)
