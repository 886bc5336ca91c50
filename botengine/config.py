"""Bot configuration: one TOML file per bot, validated into frozen pydantic models.

    name = "btc-dca"          # 1-14 chars [A-Za-z0-9_-]: it prefixes every client order id
    type = "dca"              # or "grid"; the matching [dca] / [grid] table holds the parameters
    symbol = "BTC/USDT"
    exchange = "binance"
    key_id = "main"           # the signer key this bot trades through
    enabled = true

Money, prices and percentages are decimals written as quoted strings ("0.5"); a TOML float is
refused with a message asking to quote it, because a float never touches money. Every error
names the field, the value and the allowed range. `make_strategy` builds the strategy for the
exchange's market rules and refuses sizes the exchange would reject.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from botengine.configfields import (
    MAX_MAGNITUDE,
    canonical,
    decimal_field,
    int_field,
    show,
    validation_message,
)
from botengine.model import MarketRules, Strategy

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,13}$")
SYMBOL_RE = re.compile(r"^[A-Z0-9]{1,20}/[A-Z0-9]{1,20}$")
KEY_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
EXCHANGES = ("binance", "kucoin", "okx")
TIMEFRAMES_MS: dict[str, int] = {
    "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000,
    "1h": 3_600_000, "2h": 7_200_000, "4h": 14_400_000, "6h": 21_600_000,
    "12h": 43_200_000, "1d": 86_400_000,
}  # fmt: skip


class BotConfigError(ValueError):
    """A bot config was refused; the message names every bad field, its value and the range."""


_MONEY = (Decimal(0), MAX_MAGNITUDE - 1)
_PCT = (Decimal(0), Decimal(100))


class DcaParams(BaseModel):
    """DCA: a market base order, then a ladder of limit safety orders below the entry.

    Safety order n (1-based) sits `safety_deviation_pct * (1 + s + ... + s^(n-1))` % below the
    base order's fill price (s = `safety_step_scale`) and spends
    `safety_order * v^(n-1)` quote (v = `safety_volume_scale`). The take profit is measured
    from the average entry price; the stop loss too.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_order: Decimal  # quote
    safety_order: Decimal  # quote, the first safety order
    max_safety_orders: int = 0
    active_safety_orders: int = 1  # how many rest on the book at once
    safety_deviation_pct: Decimal = Decimal(1)
    safety_volume_scale: Decimal = Decimal(1)
    safety_step_scale: Decimal = Decimal(1)
    take_profit_pct: Decimal
    trailing_deviation_pct: Decimal | None = None  # None: a plain limit take-profit order
    stop_loss_pct: Decimal | None = None
    max_active_deals: int = 1
    cooldown_s: int = 0  # after a deal opens or closes, wait this long before the next opens
    start_condition: Literal["immediately", "rsi", "price"] = "immediately"
    rsi_timeframe: str = "1h"
    rsi_period: int = 14
    rsi_below: Decimal = Decimal(30)
    start_price_below: Decimal | None = None
    start_price_above: Decimal | None = None

    @field_validator("base_order", "safety_order", mode="before")
    @classmethod
    def _money(cls, value: object) -> Decimal:
        return decimal_field(value, *_MONEY)

    @field_validator("start_price_below", "start_price_above", mode="before")
    @classmethod
    def _opt_money(cls, value: object) -> Decimal | None:
        return None if value is None else decimal_field(value, *_MONEY)

    @field_validator("safety_deviation_pct", "trailing_deviation_pct", mode="before")
    @classmethod
    def _pct_below_100(cls, value: object) -> Decimal | None:
        return None if value is None else decimal_field(value, Decimal(0), Decimal("99.99"))

    @field_validator("stop_loss_pct", mode="before")
    @classmethod
    def _stop(cls, value: object) -> Decimal | None:
        return None if value is None else decimal_field(value, Decimal(0), Decimal("99.99"))

    @field_validator("take_profit_pct", mode="before")
    @classmethod
    def _tp(cls, value: object) -> Decimal:
        return decimal_field(value, Decimal(0), Decimal(1000))

    @field_validator("rsi_below", mode="before")
    @classmethod
    def _rsi(cls, value: object) -> Decimal:
        return decimal_field(value, *_PCT)

    @field_validator("safety_volume_scale", "safety_step_scale", mode="before")
    @classmethod
    def _scale(cls, value: object) -> Decimal:
        return decimal_field(value, Decimal("0"), Decimal(10))

    @field_validator("max_safety_orders", mode="before")
    @classmethod
    def _max_so(cls, value: object) -> int:
        return int_field(value, 0, 100)

    @field_validator("active_safety_orders", "max_active_deals", mode="before")
    @classmethod
    def _count(cls, value: object) -> int:
        return int_field(value, 1, 100)

    @field_validator("cooldown_s", mode="before")
    @classmethod
    def _cooldown(cls, value: object) -> int:
        return int_field(value, 0, 31_536_000)

    @field_validator("rsi_period", mode="before")
    @classmethod
    def _period(cls, value: object) -> int:
        return int_field(value, 2, 200)

    @field_validator("rsi_timeframe", mode="before")
    @classmethod
    def _timeframe(cls, value: object) -> str:
        if value not in TIMEFRAMES_MS:
            raise ValueError(
                f"{show(value)} is not allowed; must be one of {', '.join(TIMEFRAMES_MS)}"
            )
        return str(value)

    @model_validator(mode="after")
    def _cross(self) -> DcaParams:
        if self.max_safety_orders and self.active_safety_orders > self.max_safety_orders:
            raise ValueError(
                f"active_safety_orders: {self.active_safety_orders} is not allowed; must be <= "
                f"max_safety_orders ({self.max_safety_orders})"
            )
        if self.max_safety_orders and self.safety_deviations()[-1] >= 100:
            raise ValueError(
                f"safety_step_scale: {self.safety_step_scale} is not allowed with "
                f"safety_deviation_pct {self.safety_deviation_pct} and max_safety_orders "
                f"{self.max_safety_orders}: the last safety order would sit "
                f"{self.safety_deviations()[-1]:.2f}% below the entry (must be < 100)"
            )
        if self.start_condition == "price" and (
            self.start_price_below is None and self.start_price_above is None
        ):
            raise ValueError(
                'start_price_below: missing; start_condition = "price" needs start_price_below '
                "and/or start_price_above (a decimal > 0)"
            )
        return self

    def safety_deviations(self) -> list[Decimal]:
        """Deviation % of safety orders 1..max: d * (1 + s + ... + s^(n-1))."""
        out, term, total = [], Decimal(1), Decimal(0)
        for _ in range(self.max_safety_orders):
            total += term
            out.append(self.safety_deviation_pct * total)
            term *= self.safety_step_scale
        return out

    def safety_sizes(self) -> list[Decimal]:
        """Quote size of safety orders 1..max: size * v^(n-1)."""
        return [
            self.safety_order * self.safety_volume_scale**n for n in range(self.max_safety_orders)
        ]


class GridParams(BaseModel):
    """Grid: `grids` intervals between `lower` and `upper`, one order per interval.

    Each interval k (levels L_k < L_k+1) holds either a buy at L_k or a sell of the same
    quantity at L_k+1; a filled buy places the sell one level up and vice versa.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    lower: Decimal
    upper: Decimal
    grids: int
    spacing: Literal["arithmetic", "geometric"] = "arithmetic"
    investment: Decimal | None = None  # quote, total (buy orders + the initial position)
    quantity_per_grid: Decimal | None = None  # base
    stop_loss: Decimal | None = None  # price below `lower`
    stop_loss_action: Literal["stop", "stop_and_sell"] = "stop_and_sell"
    take_profit: Decimal | None = None  # price above `upper`
    take_profit_action: Literal["stop", "stop_and_sell"] = "stop_and_sell"

    @field_validator("lower", "upper", mode="before")
    @classmethod
    def _price(cls, value: object) -> Decimal:
        return decimal_field(value, *_MONEY)

    @field_validator("investment", "quantity_per_grid", "stop_loss", "take_profit", mode="before")
    @classmethod
    def _opt(cls, value: object) -> Decimal | None:
        return None if value is None else decimal_field(value, *_MONEY)

    @field_validator("grids", mode="before")
    @classmethod
    def _grids(cls, value: object) -> int:
        return int_field(value, 2, 500)

    @model_validator(mode="after")
    def _cross(self) -> GridParams:
        if self.upper <= self.lower:
            raise ValueError(f"upper: {self.upper} is not allowed; must be > lower ({self.lower})")
        if (self.investment is None) == (self.quantity_per_grid is None):
            raise ValueError(
                "investment: set exactly one of investment (quote) or quantity_per_grid (base)"
            )
        if self.stop_loss is not None and self.stop_loss >= self.lower:
            raise ValueError(
                f"stop_loss: {self.stop_loss} is not allowed; must be < lower ({self.lower})"
            )
        if self.take_profit is not None and self.take_profit <= self.upper:
            raise ValueError(
                f"take_profit: {self.take_profit} is not allowed; must be > upper ({self.upper})"
            )
        return self


class BotConfig(BaseModel):
    """One bot: identity, market, the signer key it trades through, and its strategy table."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    type: Literal["dca", "grid"]
    symbol: str
    exchange: Literal["binance", "kucoin", "okx"] = "binance"
    key_id: str
    enabled: bool = True
    dca: DcaParams | None = None
    grid: GridParams | None = None

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: object) -> str:
        if not isinstance(value, str) or not NAME_RE.match(value):
            raise ValueError(
                f"{show(value)} is not allowed; must be 1 to 14 characters A-Z a-z 0-9 _ - "
                "(starting with a letter or digit): it prefixes every client order id"
            )
        return value

    @field_validator("symbol", mode="before")
    @classmethod
    def _symbol(cls, value: object) -> str:
        if not isinstance(value, str) or not SYMBOL_RE.match(value):
            raise ValueError(f'{show(value)} is not allowed; must be a symbol like "BTC/USDT"')
        return value

    @field_validator("key_id", mode="before")
    @classmethod
    def _key(cls, value: object) -> str:
        if not isinstance(value, str) or not KEY_ID_RE.match(value):
            raise ValueError(f"{show(value)} is not allowed; must be 1 to 64 of A-Z a-z 0-9 _ . -")
        return value

    @field_validator("enabled", mode="before")
    @classmethod
    def _enabled(cls, value: object) -> bool:
        if not isinstance(value, bool):
            raise ValueError(f"{show(value)} is not allowed; must be true or false")
        return value

    @model_validator(mode="after")
    def _table(self) -> BotConfig:
        own, other = (self.dca, self.grid) if self.type == "dca" else (self.grid, self.dca)
        if own is None:
            raise ValueError(
                f'{self.type}: missing; type = "{self.type}" needs a [{self.type}] table'
            )
        if other is not None:
            wrong = "grid" if self.type == "dca" else "dca"
            raise ValueError(f'{wrong}: not allowed with type = "{self.type}"; remove the table')
        return self

    @property
    def base_asset(self) -> str:
        return self.symbol.split("/")[0]

    @property
    def quote_asset(self) -> str:
        return self.symbol.split("/")[1]


def bot_config_from_mapping(data: object, source: str = "bot config") -> BotConfig:
    """Validate a mapping (parsed TOML or JSON); BotConfigError names every problem."""
    if not isinstance(data, Mapping):
        raise BotConfigError(f"{source}: {show(data)} is not allowed; must be a table of fields")
    try:
        return BotConfig.model_validate(dict(data))
    except ValidationError as e:
        raise BotConfigError(f"{source}:\n{validation_message(e)}") from None


def parse_bot_config(text: str, source: str = "bot config") -> BotConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise BotConfigError(f"{source}: not valid TOML: {e}") from None
    return bot_config_from_mapping(data, source)


def load_bot_config(path: str | Path) -> BotConfig:
    """Read and validate one bot's TOML file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise BotConfigError(f"{p}: cannot read: {e.strerror}") from None
    return parse_bot_config(text, str(p))


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return canonical(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    return value


def bot_config_to_dict(config: BotConfig) -> dict[str, Any]:
    """JSON-ready form (decimals as strings, unset options dropped); loads back unchanged."""
    return _plain(config.model_dump())


def make_strategy(config: BotConfig, rules: MarketRules) -> Strategy:
    """The strategy for `config` on a market with `rules`.

    Raises BotConfigError when the market is a different symbol or a configured size could
    never make an order the exchange accepts (below its minimum notional or amount).
    """
    if rules.symbol != config.symbol:
        raise BotConfigError(
            f"symbol: {config.symbol!r} does not match the market rules' symbol {rules.symbol!r}"
        )
    if config.dca is not None:
        from botengine.strategies.dca import DcaStrategy

        return DcaStrategy(config.name, config.symbol, config.dca, rules)
    assert config.grid is not None
    from botengine.strategies.grid import GridStrategy

    return GridStrategy(config.name, config.symbol, config.grid, rules)
