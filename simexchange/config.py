"""Simulator configuration (frozen pydantic models) and the ACCOUNTS.toml loader."""

from __future__ import annotations

import re
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

KNOWN_QUOTES = ("USDT", "USDC", "FDUSD", "BUSD", "TUSD", "BTC", "ETH", "BNB", "EUR", "TRY")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SyntheticSource(_Frozen):
    """A seeded GBM path (Decimal prices)."""

    kind: Literal["synthetic"] = "synthetic"
    start_price: Decimal = Field(gt=0)
    volatility: Decimal = Field(default=Decimal("0.6"), ge=0, le=10)
    drift: Decimal = Field(default=Decimal(0), ge=-10, le=10)
    seed: int = 0
    interval_s: int = Field(default=60, ge=1, le=86_400)
    history: int = Field(default=500, ge=0, le=100_000)


class FileSource(_Frozen):
    """Replayed candles from a freqtrade JSON or CSV file."""

    kind: Literal["file"] = "file"
    path: Path


class SymbolConfig(_Frozen):
    """One tradable symbol: its Binance filters, its price source and its depth."""

    symbol: str = Field(pattern=r"^[A-Z0-9]{2,20}$")
    base: str = Field(pattern=r"^[A-Z0-9]{1,12}$")
    quote: str = Field(pattern=r"^[A-Z0-9]{1,12}$")
    tick_size: Decimal = Field(gt=0, le=1000)
    step_size: Decimal = Field(gt=0, le=1000)
    min_qty: Decimal | None = Field(default=None, gt=0)
    max_qty: Decimal = Field(default=Decimal("9000000"), gt=0)
    min_notional: Decimal = Field(default=Decimal(5), ge=0)
    notional_filter: Literal["NOTIONAL", "MIN_NOTIONAL"] = "NOTIONAL"
    source: Annotated[SyntheticSource | FileSource, Field(discriminator="kind")]
    depth_quote_per_pct: Decimal = Field(default=Decimal(1_000_000), gt=0)
    price_impact: bool = False
    impact_half_life_s: int = Field(default=600, ge=1, le=86_400 * 30)

    @model_validator(mode="after")
    def _precision(self) -> SymbolConfig:
        places = -self.tick_size.normalize().as_tuple().exponent  # type: ignore[operator]
        places += -self.step_size.normalize().as_tuple().exponent  # type: ignore[operator]
        if self.symbol != self.base + self.quote:
            raise ValueError(
                f"symbol={self.symbol!r} must equal base+quote={self.base + self.quote!r}"
            )
        if places > 8:
            raise ValueError(
                f"tick_size={self.tick_size} and step_size={self.step_size} give {places} "
                "decimals in price*qty; allowed at most 8 (Binance's quote precision)"
            )
        return self


class KeyConfig(_Frozen):
    """An API key of an account; HMAC carries the secret, ED25519 the public key."""

    api_key: str = Field(pattern=r"^[A-Za-z0-9]{1,128}$")
    type: Literal["HMAC", "ED25519"] = "HMAC"
    secret: SecretStr | None = None
    public_key: str | None = None
    can_read: bool = True
    can_trade: bool = True
    can_withdraw: bool = False
    ip_allow: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _material(self) -> KeyConfig:
        if self.type == "HMAC" and (
            self.secret is None or len(self.secret.get_secret_value()) < 16
        ):
            raise ValueError("HMAC key needs a secret of at least 16 characters")
        if self.type == "ED25519" and not self.public_key:
            raise ValueError("ED25519 key needs public_key (PEM or base64 of 32 bytes)")
        return self


class AccountConfig(_Frozen):
    """A seeded paper account."""

    name: str = Field(min_length=1, max_length=64)
    balances: dict[str, Decimal] = Field(default_factory=dict)
    maker_commission: Decimal | None = Field(default=None, ge=0, le=Decimal("0.1"))
    taker_commission: Decimal | None = Field(default=None, ge=0, le=Decimal("0.1"))
    keys: tuple[KeyConfig, ...] = ()


class SimConfig(_Frozen):
    """Everything a `SimExchange` needs."""

    symbols: tuple[SymbolConfig, ...] = Field(min_length=1)
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65_535)
    speed: Decimal = Field(default=Decimal(1), ge=0, le=1_000_000)
    start_ms: int | None = Field(default=None, ge=0)
    admin: bool = False
    maker_fee: Decimal = Field(default=Decimal("0.001"), ge=0, le=Decimal("0.1"))
    taker_fee: Decimal = Field(default=Decimal("0.001"), ge=0, le=Decimal("0.1"))
    slippage_bps: Decimal = Field(default=Decimal(0), ge=0, le=1000)
    state_path: Path | None = None
    accounts: tuple[AccountConfig, ...] = ()


# --- presets -------------------------------------------------------------------------------
_PRESETS: dict[str, dict[str, object]] = {
    "BTCUSDT": {"tick_size": "0.01", "step_size": "0.00001", "max_qty": "9000",
                "min_notional": "5", "depth_quote_per_pct": "5000000"},
    "ETHUSDT": {"tick_size": "0.01", "step_size": "0.0001", "max_qty": "9000",
                "min_notional": "5", "depth_quote_per_pct": "2000000"},
    "DATAUSDT": {"tick_size": "0.00001", "step_size": "1", "max_qty": "9000000",
                 "min_notional": "10", "notional_filter": "MIN_NOTIONAL",
                 "depth_quote_per_pct": "2000", "price_impact": True},
    "PERLUSDT": {"tick_size": "0.00001", "step_size": "1", "max_qty": "9000000",
                 "min_notional": "10", "notional_filter": "MIN_NOTIONAL",
                 "depth_quote_per_pct": "2000", "price_impact": True},
}  # fmt: skip


def split_symbol(symbol: str) -> tuple[str, str]:
    """'BTCUSDT' or 'BTC/USDT' -> ('BTC', 'USDT')."""
    text = symbol.upper().replace("-", "/").replace("_", "/")
    if "/" in text:
        base, quote = text.split("/", 1)
        return base, quote
    for quote in KNOWN_QUOTES:
        if text.endswith(quote) and len(text) > len(quote):
            return text[: -len(quote)], quote
    raise ValueError(f"cannot split symbol {symbol!r}: use BASE/QUOTE (quotes: {KNOWN_QUOTES})")


def symbol_from_filename(path: Path) -> str:
    """'BTC_USDT-1h.json' -> 'BTC/USDT'; 'BTCUSDT_1m.csv' -> 'BTCUSDT'."""
    match = re.match(r"([A-Za-z0-9]+)[_/-]([A-Za-z0-9]+)-", path.name)
    if match:
        return f"{match.group(1)}/{match.group(2)}".upper()
    return re.split(r"[_\-.]", path.name)[0].upper()


def symbol_config(
    symbol: str, source: SyntheticSource | FileSource, **overrides: object
) -> SymbolConfig:
    """A symbol with Binance-like rules: presets for BTC/ETH/DATA/PERL, generic otherwise."""
    base, quote = split_symbol(symbol)
    fields: dict[str, object] = {"tick_size": "0.01", "step_size": "0.001", "min_notional": "5"}
    fields.update(_PRESETS.get(base + quote, {}))
    fields.update(overrides)
    return SymbolConfig(symbol=base + quote, base=base, quote=quote, source=source, **fields)


def _describe(exc: ValidationError, where: str) -> str:
    """Validation errors naming field, value and rule, never echoing a secret."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        raw = err.get("input")
        scalar = isinstance(raw, str | int | Decimal | bool) or raw is None
        value = f" (value {raw!r})" if scalar and "secret" not in loc else ""
        lines.append(f"{where}: {loc}: {err['msg']}{value}")
    return "\n".join(lines)


def load_accounts(path: str | Path) -> tuple[AccountConfig, ...]:
    """Read ACCOUNTS.toml (`[[accounts]]` tables; see docs/simexchange.md)."""
    p = Path(path)
    with p.open("rb") as fh:
        doc = tomllib.load(fh, parse_float=Decimal)
    unknown = set(doc) - {"accounts"}
    if unknown:
        raise ValueError(f"{p}: unknown top-level keys {sorted(unknown)}; allowed: accounts")
    out = []
    for i, raw in enumerate(doc.get("accounts", [])):
        try:
            out.append(AccountConfig.model_validate(raw))
        except ValidationError as exc:
            raise ValueError(_describe(exc, f"{p} accounts[{i}]")) from None
    return tuple(out)
