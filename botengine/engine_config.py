"""The engine's own configuration (`engine.toml`): where the signer is, which identity to sign
with, where bot state lives, where public market data comes from. Typed, frozen, validated.

    data_dir = "engine-data"                 # relative to this file; holds engine.db (0700)
    # database_url = "postgresql+psycopg://engine@db/bulkhead"   # instead of SQLite
    poll_interval_s = 2

    [signer]
    addresses = ["unix:///srv/signer/signer.sock"]   # or "host:port" (with [signer.tls])
    identity_name = "engine-1"               # as registered: bulkhead-signer bots add engine-1 ...
    identity_key = "/etc/bulkhead/engine.key"
    # tls = { ca = "ca.pem", cert = "engine.pem", key = "engine-key.pem" }

    [exchanges.binance]
    api_url = "http://127.0.0.1:8765"        # public market data (simexchange for paper trading)

There is deliberately no field for an exchange API key or secret: those live only in the
signer, and a config that tries to carry one is refused with that explanation.
"""

from __future__ import annotations

import re
import socket
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from botengine.configfields import show, validation_message

CONFIG_FILENAME = "engine.toml"
DB_FILENAME = "engine.db"
SECRET_WORDS = ("secret", "api_key", "apikey", "password", "passphrase", "private_key")
WORKER_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
IDENTITY_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
HOSTPORT_RE = re.compile(r"^[A-Za-z0-9_.-]+:[0-9]{1,5}$|^\[[0-9A-Fa-f:]+\]:[0-9]{1,5}$")


class EngineConfigError(ValueError):
    """engine.toml was refused; the message names the field, the value and the allowed range."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TlsFiles(_Frozen):
    """Mutual TLS to a signer on TCP: the signer's CA, and this engine's client cert and key."""

    ca: Path
    cert: Path
    key: Path
    server_name: str | None = None  # override the name checked in the signer's certificate


class SignerSettings(_Frozen):
    addresses: list[str] = Field(min_length=1, max_length=8)
    identity_name: str
    identity_key: Path
    tls: TlsFiles | None = None
    timeout_s: float = Field(default=15.0, ge=0.1, le=120.0)

    @field_validator("addresses")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for a in value:
            if a.startswith("unix://"):
                if not a.startswith("unix:///"):
                    raise ValueError(
                        f"{show(a)} is not allowed; a Unix socket must be unix:///ABSOLUTE/PATH"
                    )
            elif not HOSTPORT_RE.match(a) or not 0 < int(a.rsplit(":", 1)[1]) <= 65535:
                raise ValueError(
                    f"{show(a)} is not allowed; must be unix:///ABSOLUTE/PATH or HOST:PORT "
                    "with PORT 1..65535"
                )
        return value

    @field_validator("identity_name")
    @classmethod
    def _identity(cls, value: str) -> str:
        if not IDENTITY_RE.match(value):
            raise ValueError(f"{show(value)} is not allowed; must be 1 to 64 of A-Z a-z 0-9 _ . -")
        return value

    @model_validator(mode="after")
    def _tls_for_tcp(self) -> SignerSettings:
        tcp = [a for a in self.addresses if not a.startswith("unix://")]
        if tcp and self.tls is None:
            raise ValueError(
                f"tls: missing; TCP address {tcp[0]!r} needs [signer.tls] ca, cert and key "
                "(mutual TLS), or use a unix:/// socket"
            )
        return self


class MarketDataSettings(_Frozen):
    """Public market data for one exchange (no key): tickers and market rules."""

    api_url: str | None = None  # None: the exchange's real public URL
    timeout_s: float = Field(default=10.0, ge=0.1, le=120.0)

    @field_validator("api_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.match(r"^https?://[A-Za-z0-9_.:\[\]-]+(/[^?#]*)?$", value):
            raise ValueError(f"{show(value)} is not allowed; must be http(s)://host[:port][/path]")
        return value.rstrip("/")


class EngineConfig(_Frozen):
    data_dir: Path = Path("engine-data")
    database_url: str | None = None
    worker_id: str = Field(default_factory=socket.gethostname)
    poll_interval_s: float = Field(default=2.0, ge=0.05, le=3600.0)
    lease_ttl_s: int = Field(default=10, ge=5, le=3600)  # issue 8: resume within 10 s
    retry_base_s: float = Field(default=0.5, ge=0.01, le=60.0)
    retry_cap_s: float = Field(default=30.0, ge=0.1, le=3600.0)
    lost_order_grace_s: int = Field(default=120, ge=1, le=86_400)
    log_file: Path | None = None
    signer: SignerSettings | None = None  # required by `bulkhead run`, not by `bulkhead bot ...`
    exchanges: dict[str, MarketDataSettings] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _no_secrets(cls, data: Any) -> Any:
        bad = _secret_fields(data)
        if bad:
            raise ValueError(
                f"{bad}: refused; exchange API keys and secrets never belong in the engine "
                "config: they live only in the signer (bulkhead-signer keys add)"
            )
        return data

    @field_validator("worker_id")
    @classmethod
    def _worker(cls, value: str) -> str:
        if not WORKER_RE.match(value):
            raise ValueError(
                f"{show(value)} is not allowed; must be 1 to 64 of A-Z a-z 0-9 _ . : -"
            )
        return value

    @field_validator("database_url")
    @classmethod
    def _db(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("sqlite:///", "postgresql")):
            raise ValueError(
                f"{show(value.split('@')[-1])} is not allowed; must be sqlite:///PATH or "
                "postgresql+psycopg://..."
            )
        return value

    @field_validator("exchanges")
    @classmethod
    def _exchanges(cls, value: dict[str, MarketDataSettings]) -> dict[str, MarketDataSettings]:
        for name in value:
            if name not in ("binance", "kucoin", "okx"):
                raise ValueError(f"{show(name)} is not allowed; must be binance, kucoin or okx")
        return value

    @model_validator(mode="after")
    def _retry(self) -> EngineConfig:
        if self.retry_cap_s < self.retry_base_s:
            raise ValueError(
                f"retry_cap_s: {self.retry_cap_s} is not allowed; must be >= retry_base_s "
                f"({self.retry_base_s})"
            )
        return self

    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / DB_FILENAME}"

    def market(self, exchange: str) -> MarketDataSettings:
        return self.exchanges.get(exchange) or MarketDataSettings()


def _secret_fields(data: Any, prefix: str = "") -> str:
    if not isinstance(data, dict):
        return ""
    for key, value in data.items():
        path = f"{prefix}{key}"
        if any(w in str(key).lower().replace("-", "_") for w in SECRET_WORDS):
            return path
        found = _secret_fields(value, path + ".")
        if found:
            return found
    return ""


def _resolve(base: Path, p: Path | None) -> Path | None:
    return None if p is None else (p if p.is_absolute() else base / p)


def engine_config_from_mapping(data: object, source: str, base_dir: Path) -> EngineConfig:
    """Validate a parsed mapping; relative paths are resolved against `base_dir`."""
    if not isinstance(data, dict):
        raise EngineConfigError(f"{source}: must be a table of fields")
    try:
        cfg = EngineConfig.model_validate(data)
    except ValidationError as e:
        raise EngineConfigError(f"{source}: {validation_message(e)}") from None
    signer = cfg.signer
    if signer is not None:
        tls = signer.tls
        if tls is not None:
            tls = tls.model_copy(
                update={k: _resolve(base_dir, getattr(tls, k)) for k in ("ca", "cert", "key")}
            )
        signer = signer.model_copy(
            update={"identity_key": _resolve(base_dir, signer.identity_key), "tls": tls}
        )
    return cfg.model_copy(
        update={
            "data_dir": _resolve(base_dir, cfg.data_dir),
            "log_file": _resolve(base_dir, cfg.log_file),
            "signer": signer,
        }
    )


def load_engine_config(path: str | Path) -> EngineConfig:
    """Read and validate engine.toml; EngineConfigError names every problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise EngineConfigError(f"{p}: cannot read: {e.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise EngineConfigError(f"{p}: not valid TOML: {e}") from None
    return engine_config_from_mapping(data, str(p), p.resolve().parent)
