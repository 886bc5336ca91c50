"""Per-exchange tables: which endpoints may ever be called, ccxt options, client order id rules.

The allow-lists are the last line of defence behind "only order endpoints are signable": every
request ccxt builds is matched here on its final URL *before* anything is sent, and must belong
to the operation the gateway is running. Anything else (withdrawals, transfers, sub-accounts,
key management, even a stray private call ccxt makes on its own) raises ForbiddenEndpoint.
ExchangeSettings (how to reach one exchange) lives here too, next to what it is checked against.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import ccxt
from pydantic import BaseModel, ConfigDict, Field, field_validator

# Operations the gateway runs. The public ones use a client that holds no credentials at all.
PRIVATE_OPS = frozenset(
    {
        "create_order",
        "cancel_order",
        "fetch_order",
        "fetch_open_orders",
        "fetch_my_trades",
        "fetch_balance",
    }
)
PUBLIC_OPS = frozenset({"load_markets", "ticker_price"})

_SEGMENT = "[A-Za-z0-9_-]+"  # one path segment for a {placeholder}: no '/', '.', '%', '?'


@dataclass(frozen=True)
class Endpoint:
    """One allowed (operation, HTTP method, path template) triple; `{x}` is one safe segment."""

    op: str
    method: str
    path: str

    def matches(self, method: str, path: str) -> bool:
        return method == self.method and _template(self.path).fullmatch(path) is not None


@dataclass(frozen=True)
class Venue:
    """What the signer knows about one exchange, independent of ccxt's internals."""

    exchange: str
    origins: frozenset[str]  # scheme://host the real exchange is reached at
    endpoints: tuple[Endpoint, ...]
    options: Mapping[str, Any]  # ccxt options forced on every instance (settings may add more)
    client_id_pattern: str  # what the exchange accepts as a client order id
    create_id_param: str  # ccxt params key carrying the client order id on create
    lookup_id_param: str  # ... on cancel / fetch order
    ticker_method: str  # ccxt implicit public method for the last price
    ticker_param: str  # its market id parameter

    def endpoint_for(self, method: str, path: str) -> Endpoint | None:
        for endpoint in self.endpoints:
            if endpoint.matches(method, path):
                return endpoint
        return None


@functools.cache
def _template(path: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"\\\{[a-z_]+\\\}", _SEGMENT, re.escape(path)))


def _eps(op: str, *pairs: str) -> tuple[Endpoint, ...]:
    return tuple(Endpoint(op, p.split(" ", 1)[0], p.split(" ", 1)[1]) for p in pairs)


BINANCE = Venue(
    exchange="binance",
    origins=frozenset({"https://api.binance.com"}),
    endpoints=(
        *_eps("create_order", "POST /api/v3/order"),
        *_eps("cancel_order", "DELETE /api/v3/order"),
        *_eps("fetch_order", "GET /api/v3/order"),
        *_eps("fetch_open_orders", "GET /api/v3/openOrders"),
        *_eps("fetch_my_trades", "GET /api/v3/myTrades"),
        *_eps("fetch_balance", "GET /api/v3/account"),
        *_eps("load_markets", "GET /api/v3/exchangeInfo", "GET /api/v3/time"),
        *_eps("ticker_price", "GET /api/v3/ticker/price"),
    ),
    options={
        "fetchMarkets": {"types": ["spot"]},
        "fetchCurrencies": False,  # a private /sapi call when keys are present
        "warnOnFetchOpenOrdersWithoutSymbol": False,
    },
    client_id_pattern=r"[A-Za-z0-9_-]{1,36}",
    create_id_param="newClientOrderId",
    lookup_id_param="origClientOrderId",
    ticker_method="public_get_ticker_price",
    ticker_param="symbol",
)

KUCOIN = Venue(
    exchange="kucoin",
    origins=frozenset({"https://api.kucoin.com"}),
    endpoints=(
        *_eps("create_order", "POST /api/v1/orders", "POST /api/v1/hf/orders"),
        *_eps(
            "cancel_order",
            "DELETE /api/v1/order/client-order/{client_oid}",
            "DELETE /api/v1/hf/orders/client-order/{client_oid}",
        ),
        *_eps(
            "fetch_order",
            "GET /api/v1/order/client-order/{client_oid}",
            "GET /api/v1/hf/orders/client-order/{client_oid}",
        ),
        *_eps("fetch_open_orders", "GET /api/v1/orders", "GET /api/v1/hf/orders/active"),
        *_eps("fetch_my_trades", "GET /api/v1/fills", "GET /api/v1/hf/fills"),
        *_eps("fetch_balance", "GET /api/v1/accounts"),
        *_eps(
            "load_markets", "GET /api/v3/currencies", "GET /api/v2/symbols", "GET /api/v1/timestamp"
        ),
        *_eps("ticker_price", "GET /api/v1/market/orderbook/level1"),
    ),
    options={
        "fetchMarkets": {"types": ["spot"], "fetchTickersFees": False},
        "uta": False,  # otherwise ccxt asks /api/ua/v1/account/mode before each order
        "hf": False,  # classic spot endpoints; set options {"hf": true} for HF accounts
    },
    client_id_pattern=r"[A-Za-z0-9_-]{1,40}",
    create_id_param="clientOid",
    lookup_id_param="clientOid",
    ticker_method="public_get_market_orderbook_level1",
    ticker_param="symbol",
)

OKX = Venue(
    exchange="okx",
    origins=frozenset({"https://www.okx.com"}),
    endpoints=(
        *_eps("create_order", "POST /api/v5/trade/order"),
        *_eps("cancel_order", "POST /api/v5/trade/cancel-order"),
        *_eps("fetch_order", "GET /api/v5/trade/order"),
        *_eps("fetch_open_orders", "GET /api/v5/trade/orders-pending"),
        *_eps("fetch_my_trades", "GET /api/v5/trade/fills-history"),
        *_eps("fetch_balance", "GET /api/v5/account/balance"),
        *_eps("load_markets", "GET /api/v5/public/instruments", "GET /api/v5/public/time"),
        *_eps("ticker_price", "GET /api/v5/market/ticker"),
    ),
    options={
        "fetchMarkets": {"types": ["spot"]},
        "createOrder": "privatePostTradeOrder",  # one order per signed request, not batch-orders
    },
    client_id_pattern=r"[A-Za-z0-9]{1,32}",
    create_id_param="clOrdId",
    lookup_id_param="clOrdId",
    ticker_method="public_get_market_ticker",
    ticker_param="instId",
)

VENUES: dict[str, Venue] = {v.exchange: v for v in (BINANCE, KUCOIN, OKX)}
SUPPORTED = frozenset(VENUES)


@dataclass(frozen=True)
class Base:
    """Where requests may go: allowed origins and the path prefix in front of the exchange path."""

    origins: frozenset[str]
    prefix: str  # "" for the real exchange; the api_url's path for an override

    @classmethod
    def for_venue(cls, venue: Venue, api_url: str | None) -> Base:
        if api_url is None:
            return cls(venue.origins, "")
        parts = urlsplit(api_url)
        return cls(frozenset({f"{parts.scheme}://{parts.netloc}"}), parts.path.rstrip("/"))

    def exchange_path(self, url: str) -> str | None:
        """The path below the API root when `url` points at an allowed origin, else None."""
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}" not in self.origins or parts.fragment:
            return None
        if not parts.path.startswith(self.prefix + "/"):
            return None
        return parts.path[len(self.prefix) :]


def override_api_urls(urls: Any, api_url: str) -> Any:
    """Point every ccxt API URL at `api_url`, keeping each URL's own path.

    binance's 'https://api.binance.com/api/v3' becomes api_url + '/api/v3' (what a
    Binance-compatible simulator serves); sapi/fapi/... move there too, so nothing can
    ever reach the real exchange from a gateway configured for a simulator.
    """
    if isinstance(urls, dict):
        return {k: override_api_urls(v, api_url) for k, v in urls.items()}
    if isinstance(urls, str):
        path = urlsplit(urls).path if "://" in urls else ""
        return api_url.rstrip("/") + path
    return urls


_PINNED = frozenset(  # ccxt options the venue tables fix; settings may not change them
    {
        "fetchMarkets",
        "fetchCurrencies",
        "warnOnFetchOpenOrdersWithoutSymbol",
        "timeDifference",
        "uta",
        "createOrder",
        "maxRetriesOnFailure",
        "maxRetriesOnFailureDelay",
    }
)


class ExchangeSettings(BaseModel):
    """How to reach one exchange. `api_url` points every ccxt URL at another base (a simulator)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    exchange: str
    api_url: str | None = None
    timeout_ms: int = Field(default=10_000, ge=100, le=120_000)
    options: dict[str, str | int | bool] = Field(default_factory=dict)

    @field_validator("exchange")
    @classmethod
    def _exchange(cls, v: str) -> str:
        if v not in SUPPORTED or v not in ccxt.exchanges:
            raise ValueError(
                f"exchange {v!r} is not supported; allowed: {', '.join(sorted(SUPPORTED))}"
            )
        return v

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"api_url {v!r} must be http(s)://host[:port][/path]")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError(f"api_url {v!r} may not carry a query, fragment or user info")
        return v.rstrip("/")

    @field_validator("options")
    @classmethod
    def _options(cls, v: dict[str, str | int | bool]) -> dict[str, str | int | bool]:
        pinned = sorted(_PINNED & set(v))
        if pinned:
            raise ValueError(f"options {pinned} are fixed by the signer; allowed: any other key")
        return v

    def cache_key(self) -> str:
        """A stable string identity (the model is frozen but holds a dict, so it is unhashable)."""
        return self.model_dump_json()
