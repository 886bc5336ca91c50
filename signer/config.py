"""The signer's typed, frozen configuration (`signer.toml` in the data directory).

Validated at parse time: an unknown field or a value out of range is reported with its name,
value and allowed range before anything starts.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from signer.errors import ConfigError

CONFIG_FILENAME = "signer.toml"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ExchangeEntry(_Frozen):
    """How to reach one exchange. `api_url` points ccxt at another base URL (a simulator)."""

    api_url: str | None = None
    timeout_ms: int = Field(default=10_000, ge=100, le=120_000)

    @field_validator("api_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v


class TlsEntry(_Frozen):
    """Mutual TLS for the TCP listener: the client certificate is required and checked."""

    cert: Path
    key: Path
    client_ca: Path


class SignerConfig(_Frozen):
    database_url: str | None = None  # PostgreSQL URL; default: SQLite in the data dir
    socket: Path | None = None  # bot service Unix socket; default DATA/signer.sock
    socket_mode: Literal["0600", "0660"] = "0600"
    admin_socket: Path | None = None  # admin service Unix socket; default DATA/admin.sock
    tcp: str | None = None  # "host:port" for the bot service over TCP (needs tls)
    admin_tcp: str | None = None
    tls: TlsEntry | None = None
    default_mode: Literal["submit", "sign-only"] = "submit"
    allow_sign_only: bool = True
    max_clock_skew_ms: int = Field(default=30_000, ge=1_000, le=300_000)
    max_request_bytes: int = Field(default=65_536, ge=1_024, le=1_048_576)
    checkpoint_interval_s: int = Field(default=300, ge=0, le=86_400)  # 0 = only on demand
    anchor_path: Path | None = None  # signed tree heads also go here (file or dir, outside DATA)
    workers: int = Field(default=16, ge=1, le=256)
    reconcile_interval_s: int = Field(default=30, ge=0, le=3_600)  # 0 = never
    reconcile_grace_s: int = Field(default=120, ge=0, le=86_400)  # older pending orders only
    exchanges: dict[str, ExchangeEntry] = Field(default_factory=dict)

    @field_validator("anchor_path")
    @classmethod
    def _anchor(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_absolute():
            raise ValueError("must be an absolute path (a file or directory outside the data dir)")
        return v

    @field_validator("tcp", "admin_tcp")
    @classmethod
    def _hostport(cls, v: str | None) -> str | None:
        if v is None:
            return v
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("must be HOST:PORT with PORT in 0..65535")
        return v

    def socket_path(self, data_dir: Path) -> Path:
        return self.socket or data_dir / "signer.sock"

    def admin_socket_path(self, data_dir: Path) -> Path:
        return self.admin_socket or data_dir / "admin.sock"

    def exchange(self, exchange_id: str) -> ExchangeEntry:
        return self.exchanges.get(exchange_id, ExchangeEntry())


def format_validation_error(where: str, err: ValidationError) -> str:
    """One line per bad field: name, value given, and what is allowed."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(root)"
        given = e.get("input")
        shown = repr(given)[:80] if not isinstance(given, dict) else "{...}"
        lines.append(f"{where}: {loc}: {shown} is not allowed; {e['msg']}")
    return "\n".join(lines)


def parse_config(text: str, where: str = CONFIG_FILENAME) -> SignerConfig:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where}: not valid TOML: {e}") from None
    try:
        return SignerConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(where, e)) from None


def load_config(data_dir: Path, path: Path | None = None) -> SignerConfig:
    path = path or data_dir / CONFIG_FILENAME
    if not path.exists():
        return SignerConfig()
    return parse_config(path.read_text(encoding="utf-8"), str(path))
