"""Per-key trading policy: the operator's config model and the pure rule evaluation.

Deny by default: no policy means no order. `evaluate` checks every rule on every intent and
returns *all* failed rules with stable ids, so the bot, the operator and the audit log see the
whole reason at once. Nothing here touches a database, a clock or the network: usage counters
and the reference price are passed in, which keeps every decision reproducible from its audit
record. Decimal arithmetic runs in an exact context (inexact results raise, and fail closed).
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Context, Decimal, Inexact, InvalidOperation, localcontext
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from signer.errors import ConfigError

MAX_DECIMAL_PLACES = 18
MAX_MAGNITUDE = Decimal(10) ** 20  # exclusive bound for amounts, prices and caps (20 int digits)
SIDES = ("buy", "sell")
ORDER_TYPES = ("limit", "market")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_MS = 86_400_000
MINUTE_MS = 60_000
SYMBOL_RE = re.compile(r"^[A-Z0-9]{1,20}/[A-Z0-9]{1,20}$")
_WINDOW_RE = re.compile(r"^(?:([01]\d|2[0-3]):([0-5]\d))-(?:([01]\d|2[0-3]):([0-5]\d)|(24):(00))$")

RULE_IDS: frozenset[str] = frozenset({
    "no_policy", "global_freeze", "key_frozen", "symbol_not_allowed", "side_not_allowed",
    "order_type_not_allowed", "notional_cap", "notional_24h_cap", "symbol_notional_24h_cap",
    "open_orders_cap", "rate_limit", "price_band", "reference_price_unavailable",
    "reference_price_stale", "outside_trading_hours", "invalid_amount", "invalid_price",
})  # fmt: skip


def _exact() -> Context:
    """A context in which any rounding raises: cap checks must never be approximately right."""
    return Context(prec=400, traps=[Inexact, InvalidOperation])


class PolicyConfigError(ConfigError):
    """A policy document was refused; the message names every bad field, its value and the range."""


def show(value: object) -> str:
    """A short, safe rendering of a caller-supplied value for messages."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 48 else text[:45] + "..."


def decimal_problem(value: object) -> str | None:
    """Why `value` is not a usable positive decimal (finite, < 1e20, <= 18 places), or None.

    Pure integer inspection of the digits: safe for NaN, sNaN, infinities and huge exponents.
    """
    if not isinstance(value, Decimal):
        return "is not a decimal"
    if value.is_nan():
        return "is not a number"
    if value.is_infinite():
        return "is infinite"
    if value.is_signed() or value.is_zero():
        return "must be > 0"
    if value >= MAX_MAGNITUDE:
        return f"is too large; must be < {MAX_MAGNITUDE:f}"
    _, digits, exp = value.as_tuple()
    assert isinstance(exp, int)
    trailing = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    if -(exp + trailing) > MAX_DECIMAL_PLACES:
        return f"has more than {MAX_DECIMAL_PLACES} decimal places"
    return None


def canonical(value: Decimal) -> str:
    """Plain decimal text without exponent or trailing zeros ("100.5", "0.001", "7")."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


# --- config parsing helpers (raise ValueError; the loc is added by the converter) ----------


def _decimal_field(
    value: object, *, low: Decimal, low_incl: bool, high: Decimal, high_incl: bool
) -> Decimal:
    rng = f"{'>=' if low_incl else '>'} {low} and {'<=' if high_incl else '<'} {high:f}"
    rng += f" with at most {MAX_DECIMAL_PLACES} decimal places"
    if isinstance(value, float):
        raise ValueError(
            f'{value!r} is a float; write it as a quoted decimal string ("{value!r}"): a float '
            "never touches money"
        )
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        raise ValueError(f"{show(value)} is not allowed; must be a decimal {rng}")
    try:
        number = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
    except (InvalidOperation, ValueError):
        raise ValueError(f"{show(value)} is not allowed; must be a decimal {rng}") from None
    ok = (
        number.is_finite()
        and (number >= low if low_incl else number > low)
        and (number <= high if high_incl else number < high)
        and (number.is_zero() or decimal_problem(number) is None)
    )
    if not ok:
        raise ValueError(f"{show(value)} is not allowed; must be a decimal {rng}")
    return Decimal(canonical(number))


def _int_field(value: object, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise ValueError(f"{show(value)} is not allowed; must be an integer from {low} to {high}")
    return value


def _choice_tuple(value: object, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not value:
        raise ValueError(f"{show(value)} is not allowed; must be a non-empty list of {what}")
    for item in value:
        if item not in allowed:
            raise ValueError(f"{show(item)} is not allowed; must be one of {', '.join(allowed)}")
    if len(set(value)) != len(value):
        raise ValueError(f"{show(list(value))} is not allowed; entries must be unique")
    return tuple(sorted(value, key=allowed.index))


def _minutes(hh: str, mm: str) -> int:
    return int(hh) * 60 + int(mm)


class TradingHours(BaseModel):
    """UTC windows "HH:MM-HH:MM" (end exclusive, "24:00" allowed, start > end wraps midnight).

    `weekdays`, when set, filters on the UTC weekday of the current time (so a wrapping
    window listed for "fri" allows Friday 00:00-02:00 and 22:00-24:00, not Saturday morning).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    windows: tuple[str, ...]
    weekdays: tuple[str, ...] | None = None

    @field_validator("windows", mode="before")
    @classmethod
    def _check_windows(cls, value: object) -> tuple[str, ...]:
        if not isinstance(value, list | tuple) or not value or len(value) > 48:
            raise ValueError(f"{show(value)} is not allowed; must be a list of 1 to 48 windows")
        for w in value:
            m = _WINDOW_RE.match(w) if isinstance(w, str) else None
            if m is None or (m[5] is None and m.group(1, 2) == m.group(3, 4)):
                raise ValueError(
                    f'{show(w)} is not allowed; must be a non-empty UTC window like "08:00-16:30"'
                )
        return tuple(value)

    @field_validator("weekdays", mode="before")
    @classmethod
    def _check_weekdays(cls, value: object) -> tuple[str, ...] | None:
        return None if value is None else _choice_tuple(value, WEEKDAYS, "weekdays")

    def minutes_of_day(self) -> frozenset[int]:
        allowed: set[int] = set()
        for w in self.windows:
            m = _WINDOW_RE.match(w)
            assert m is not None
            start = _minutes(m[1], m[2])
            end = 1440 if m[5] else _minutes(m[3], m[4])
            allowed.update(range(start, end) if start < end else [*range(start, 1440), *range(end)])
        return frozenset(allowed)

    def days(self) -> frozenset[int]:
        return frozenset(range(7) if self.weekdays is None else map(WEEKDAYS.index, self.weekdays))

    def minutes_of_week(self) -> frozenset[int]:
        day_minutes = self.minutes_of_day()
        return frozenset(d * 1440 + m for d in self.days() for m in day_minutes)

    def allows(self, now_ms: int) -> bool:
        day, ms_of_day = divmod(now_ms, DAY_MS)
        weekday = (day + 3) % 7  # 1970-01-01 was a Thursday; Monday is 0
        return weekday in self.days() and ms_of_day // MINUTE_MS in self.minutes_of_day()


_POS: dict[str, Any] = dict(low=Decimal(0), low_incl=False, high=MAX_MAGNITUDE, high_incl=False)
_PCT: dict[str, Any] = dict(low=Decimal(0), low_incl=False, high=Decimal(100), high_incl=True)


class Policy(BaseModel):
    """One key's policy. Every bound is required and validated; nothing defaults to "allow"."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbols: tuple[str, ...]
    sides: tuple[str, ...]
    order_types: tuple[str, ...]
    max_order_notional: Decimal
    max_notional_24h: Decimal
    max_notional_24h_per_symbol: Decimal | None = None
    symbol_max_notional_24h: dict[str, Decimal] = {}  # per-symbol override of the line above
    max_open_orders: int
    orders_per_minute: int
    orders_burst: int | None = None  # token bucket capacity; defaults to orders_per_minute
    price_band_pct: Decimal
    market_slippage_pct: Decimal | None = None  # required when order_types has "market"
    reference_max_age_s: int
    trading_hours: TradingHours | None = None
    frozen: bool = False

    @field_validator("symbols", mode="before")
    @classmethod
    def _check_symbols(cls, value: object) -> tuple[str, ...]:
        if not isinstance(value, list | tuple) or not 1 <= len(value) <= 1000:
            raise ValueError(
                f'{show(value)} is not allowed; must list 1 to 1000 symbols like "BTC/USDT" '
                "(set frozen = true to stop trading)"
            )
        for s in value:
            if not isinstance(s, str) or not SYMBOL_RE.match(s):
                raise ValueError(f'{show(s)} is not allowed; must be a symbol like "BTC/USDT"')
        if len(set(value)) != len(value):
            raise ValueError(f"{show(list(value))} is not allowed; symbols must be unique")
        return tuple(sorted(value))

    @field_validator("sides", mode="before")
    @classmethod
    def _check_sides(cls, value: object) -> tuple[str, ...]:
        return _choice_tuple(value, SIDES, "sides")

    @field_validator("order_types", mode="before")
    @classmethod
    def _check_types(cls, value: object) -> tuple[str, ...]:
        return _choice_tuple(value, ORDER_TYPES, "order types")

    @field_validator("max_order_notional", "max_notional_24h", mode="before")
    @classmethod
    def _check_cap(cls, value: object) -> Decimal:
        return _decimal_field(value, **_POS)

    @field_validator("max_notional_24h_per_symbol", mode="before")
    @classmethod
    def _check_optional_cap(cls, value: object) -> Decimal | None:
        return None if value is None else _decimal_field(value, **_POS)

    @field_validator("symbol_max_notional_24h", mode="before")
    @classmethod
    def _check_symbol_caps(cls, value: object) -> dict[str, Decimal]:
        if not isinstance(value, Mapping):
            raise ValueError(f'{show(value)} is not allowed; must be a table symbol = "decimal"')
        out: dict[str, Decimal] = {}
        for sym, cap in sorted(value.items(), key=lambda kv: str(kv[0])):
            try:
                out[sym] = _decimal_field(cap, **_POS)
            except ValueError as e:
                raise ValueError(f"[{show(sym)}] {e}") from None
        return out

    @field_validator("max_open_orders", "orders_per_minute", "orders_burst", mode="before")
    @classmethod
    def _check_count(cls, value: object) -> int | None:
        return None if value is None else _int_field(value, 1, 100_000)

    @field_validator("price_band_pct", mode="before")
    @classmethod
    def _check_band(cls, value: object) -> Decimal:
        return _decimal_field(value, **_PCT)

    @field_validator("market_slippage_pct", mode="before")
    @classmethod
    def _check_slippage(cls, value: object) -> Decimal | None:
        if value is None:
            return None
        return _decimal_field(value, **{**_PCT, "low_incl": True})

    @field_validator("reference_max_age_s", mode="before")
    @classmethod
    def _check_age(cls, value: object) -> int:
        return _int_field(value, 1, 3600)

    @field_validator("frozen", mode="before")
    @classmethod
    def _check_frozen(cls, value: object) -> bool:
        if not isinstance(value, bool):
            raise ValueError(f"{show(value)} is not allowed; must be true or false")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> Policy:
        unknown = sorted(set(self.symbol_max_notional_24h) - set(self.symbols))
        if unknown:
            raise ValueError(
                f"symbol_max_notional_24h: {show(unknown)} is not allowed; every symbol must also "
                "be in symbols"
            )
        slip = self.market_slippage_pct
        if "market" in self.order_types and slip is None:
            raise ValueError(
                'market_slippage_pct: missing; required when order_types includes "market" '
                f"(a decimal >= 0 and <= price_band_pct {self.price_band_pct})"
            )
        if slip is not None and slip > self.price_band_pct:
            raise ValueError(
                f"market_slippage_pct: {slip} is not allowed; must be <= price_band_pct "
                f"({self.price_band_pct}), or a market order could execute outside the band"
            )
        return self

    def __hash__(self) -> int:  # the per-symbol dict would make the generated hash fail
        return hash(policy_to_json(self))

    @property
    def burst(self) -> int:
        return self.orders_per_minute if self.orders_burst is None else self.orders_burst

    def symbol_cap(self, symbol: str) -> Decimal | None:
        """The rolling-24h cap for one symbol (None: only the key-wide cap applies)."""
        return self.symbol_max_notional_24h.get(symbol, self.max_notional_24h_per_symbol)


def _validation_message(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if e["type"] == "value_error":
            msg = str(e["ctx"]["error"])
        elif e["type"] == "extra_forbidden":
            msg = f"unknown field (value {show(e['input'])}); refused"
        elif e["type"] == "missing":
            msg = "missing; this field is required"
        else:
            msg = f"{show(e['input'])} is not allowed; {e['msg']}"
        lines.append(f"{loc}: {msg}" if loc else msg)
    return "\n".join(lines)


def policy_from_mapping(data: object) -> Policy:
    """Validate a mapping (from TOML or JSON); PolicyConfigError names every problem."""
    if not isinstance(data, Mapping):
        raise PolicyConfigError(f"policy: {show(data)} is not allowed; must be a table of fields")
    try:
        return Policy.model_validate(dict(data))
    except ValidationError as e:
        raise PolicyConfigError(_validation_message(e)) from None


def parse_policy_toml(text: str) -> Policy:
    """Parse an operator's TOML policy. Floats and unknown fields are refused."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PolicyConfigError(f"policy TOML: {e}") from None
    return policy_from_mapping(data)


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return canonical(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def policy_to_json(policy: Policy) -> str:
    """Canonical JSON (sorted keys, decimals as plain strings): same policy, same bytes."""
    return json.dumps(_plain(policy.model_dump()), sort_keys=True, separators=(",", ":"))


def policy_from_json(text: str) -> Policy:
    try:
        data = json.loads(text)
    except ValueError as e:
        raise PolicyConfigError(f"policy JSON: {e}") from None
    return policy_from_mapping(data)


# --- loosening ------------------------------------------------------------------------------


def _raised(name: str, old: Decimal | int | None, new: Decimal | int | None) -> list[str]:
    """For caps where None means "no cap": did the cap go up (or vanish)?"""
    if old is None or (new is not None and new <= old):
        return []
    return [f"{name}: raised {old} -> {'no cap' if new is None else new}"]


def is_loosening(old: Policy | None, new: Policy) -> list[str]:
    """Every change from `old` to `new` that lets through something `old` refused.

    Empty list: the change only tightens (or changes nothing) and may apply at once. With no
    previous policy everything was denied, so any policy is a loosening.
    """
    if old is None:
        return ["policy: created (the key was deny-all before)"]
    out: list[str] = []
    for name in ("symbols", "sides", "order_types"):
        added = sorted(set(getattr(new, name)) - set(getattr(old, name)))
        if added:
            out.append(f"{name}: added {', '.join(added)}")
    for name in ("max_order_notional", "max_notional_24h", "max_open_orders",
                 "orders_per_minute", "price_band_pct", "reference_max_age_s"):  # fmt: skip
        out += _raised(name, getattr(old, name), getattr(new, name))
    out += _raised("orders_burst", old.burst, new.burst)
    for sym in new.symbols:
        out += _raised(f"24h cap for {sym}", old.symbol_cap(sym), new.symbol_cap(sym))
    old_slip, new_slip = old.market_slippage_pct, new.market_slippage_pct
    if old_slip is not None and new_slip is not None and new_slip < old_slip:
        out.append(
            f"market_slippage_pct: lowered {old_slip} -> {new_slip} "
            "(market orders count less notional)"
        )
    if old.trading_hours is not None:
        old_minutes = old.trading_hours.minutes_of_week()
        new_minutes = frozenset(range(7 * 1440)) if new.trading_hours is None else (
            new.trading_hours.minutes_of_week()
        )  # fmt: skip
        if new_minutes - old_minutes:
            out.append(f"trading_hours: {len(new_minutes - old_minutes)} more minutes per week")
    if old.frozen and not new.frozen:
        out.append("frozen: unfrozen")
    return out


# --- evaluation -----------------------------------------------------------------------------


@dataclass(frozen=True)
class IntentFacts:
    symbol: str
    side: str
    order_type: str
    amount: Decimal
    limit_price: Decimal | None
    now_ms: int


@dataclass(frozen=True)
class Usage:
    """The key's counters read under the write lock, just before this intent."""

    notional_24h_key: Decimal
    notional_24h_symbol: Decimal
    open_orders: int
    tokens: Decimal  # tokens in the order-rate bucket now; an order needs one


@dataclass(frozen=True)
class RefPrice:
    price: Decimal
    fetched_ms: int


@dataclass(frozen=True)
class Reason:
    rule_id: str
    message: str


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reasons: tuple[Reason, ...]
    notional: Decimal | None  # quote notional counted against caps (None if not computable)

    @property
    def rule_ids(self) -> tuple[str, ...]:
        return tuple(r.rule_id for r in self.reasons)


def _counter_ok(value: object) -> bool:
    return isinstance(value, Decimal) and value.is_finite() and not value.is_signed()


def _over(used: object, notional: Decimal, cap: Decimal) -> bool:
    """used + notional > cap, exactly; an unreadable counter or inexact sum fails closed."""
    if not _counter_ok(used):
        return True
    try:
        with localcontext(_exact()):
            return used + notional > cap  # type: ignore[operator]
    except ArithmeticError:
        return True


def evaluate(
    policy: Policy | None,
    intent: IntentFacts,
    usage: Usage,
    ref: RefPrice | None,
    *,
    global_frozen: bool,
    key_frozen: bool,
) -> Decision:
    """Check every rule; allowed only if none failed and the notional is known. Never raises."""
    reasons: list[Reason] = []

    def fail(rule_id: str, message: str) -> None:
        reasons.append(Reason(rule_id, message))

    if global_frozen:
        fail("global_freeze", "all trading is frozen (global kill switch)")
    if key_frozen or (policy is not None and policy.frozen):
        fail("key_frozen", "this key is frozen")
    amount, price, otype = intent.amount, intent.limit_price, intent.order_type
    amount_problem = decimal_problem(amount)
    if amount_problem:
        fail("invalid_amount", f"amount {show(amount)} {amount_problem}")
    price_problem = None
    if otype == "limit":
        price_problem = "is missing" if price is None else decimal_problem(price)
    elif otype == "market" and price is not None:
        price_problem = "must be empty for a market order"
    if price_problem:
        fail("invalid_price", f"limit price {show(price)} {price_problem}")
    if policy is None:
        fail("no_policy", "no policy is set for this key; orders are denied by default")
        return Decision(False, tuple(reasons), None)

    if intent.symbol not in policy.symbols:
        fail("symbol_not_allowed", f"symbol {show(intent.symbol)} is not in the allow-list")
    if intent.side not in policy.sides:
        fail(
            "side_not_allowed", f"side {show(intent.side)} is not allowed; allowed: {policy.sides}"
        )
    if otype not in policy.order_types:
        fail("order_type_not_allowed", f"order type {show(otype)} is not allowed")
    now = intent.now_ms if type(intent.now_ms) is int else None
    hours = policy.trading_hours
    if hours is not None and (now is None or not hours.allows(now)):
        fail("outside_trading_hours", f"outside the policy's UTC trading hours {hours.windows}")

    ref_price = None
    symbol_ok = intent.symbol in policy.symbols  # no price is fetched for a refused symbol
    if ref is None or decimal_problem(ref.price) or type(ref.fetched_ms) is not int:
        if symbol_ok:
            fail("reference_price_unavailable", "the signer has no reference price for this symbol")
    else:
        ref_price = ref.price
        age_ms = None if now is None else now - ref.fetched_ms
        if age_ms is None or age_ms > policy.reference_max_age_s * 1000:
            fail(
                "reference_price_stale",
                f"reference price is {age_ms} ms old; "
                f"at most {policy.reference_max_age_s} s allowed",
            )

    notional: Decimal | None = None
    with localcontext(_exact()):
        if otype == "limit" and not amount_problem and not price_problem:
            notional = amount * price  # type: ignore[operator]
            if ref_price is not None and abs(price - ref_price) * 100 > (  # type: ignore[operator]
                policy.price_band_pct * ref_price
            ):
                fail(
                    "price_band",
                    f"limit price {price} is outside +/-{policy.price_band_pct}% of the "
                    f"reference price {ref_price}",
                )
        elif otype == "market" and not amount_problem and ref_price is not None:
            # Slippage <= band is enforced by the config, so the band holds for market orders.
            slip = policy.market_slippage_pct or Decimal(0)
            notional = amount * ref_price * (1 + slip.scaleb(-2))  # type: ignore[operator]

    if notional is not None:
        if notional > policy.max_order_notional:
            fail("notional_cap", f"notional {notional} exceeds {policy.max_order_notional}")
        if _over(usage.notional_24h_key, notional, policy.max_notional_24h):
            fail(
                "notional_24h_cap",
                f"notional {notional} on top of {show(usage.notional_24h_key)} used in 24 h "
                f"exceeds {policy.max_notional_24h}",
            )
        sym_cap = policy.symbol_cap(intent.symbol)
        if sym_cap is not None and _over(usage.notional_24h_symbol, notional, sym_cap):
            fail(
                "symbol_notional_24h_cap",
                f"notional {notional} on top of {show(usage.notional_24h_symbol)} used in 24 h "
                f"on {show(intent.symbol)} exceeds {sym_cap}",
            )
    opened = usage.open_orders
    if type(opened) is not int or not 0 <= opened < policy.max_open_orders:
        fail("open_orders_cap", f"{show(opened)} open orders; at most {policy.max_open_orders}")
    if not _counter_ok(usage.tokens) or usage.tokens < 1:
        fail("rate_limit", f"order rate limit reached ({policy.orders_per_minute} per minute)")
    allowed = not reasons and notional is not None
    return Decision(allowed, tuple(reasons), notional)
