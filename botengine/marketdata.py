"""Public market data for live and paper bots: market rules and the last price, through ccxt's
public API with no key at all.

Prices and filters are read from the exchange's own JSON strings (ccxt's parsed structures
hold floats), so a float never touches a price. The tick's time is the exchange's clock (the
ticker's close time), so a strategy's cooldowns and indicator candles follow the exchange -- a
simulator replaying a day at high speed included. Pointing `api_url` at simexchange is all
paper trading needs.
"""

from __future__ import annotations

import copy
import time
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

import ccxt

from botengine.model import MarketRules, Tick

SUPPORTED = ("binance",)


class MarketDataError(RuntimeError):
    """The exchange's public API did not answer usably. `transient`: worth retrying."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


def _override(urls: Any, api_url: str) -> Any:
    """Point every ccxt API URL at `api_url`, keeping each URL's own path."""
    if isinstance(urls, dict):
        return {k: _override(v, api_url) for k, v in urls.items()}
    if isinstance(urls, str):
        return api_url.rstrip("/") + (urlsplit(urls).path if "://" in urls else "")
    return urls


def _dec(value: Any, what: str) -> Decimal:
    if isinstance(value, float | bool) or value is None:
        raise MarketDataError(f"{what}: {value!r} is not a decimal string", transient=False)
    try:
        out = Decimal(str(value))
    except InvalidOperation:
        raise MarketDataError(f"{what}: {value!r} is not a decimal", transient=False) from None
    if not out.is_finite() or out < 0:
        raise MarketDataError(f"{what}: {value!r} is out of range", transient=False)
    return out


class MarketData:
    """One exchange's public endpoints. Not thread-safe (ccxt is not): one per bot thread."""

    def __init__(self, exchange: str, api_url: str | None, timeout_s: float = 10.0) -> None:
        if exchange not in SUPPORTED:
            raise MarketDataError(
                f"exchange: {exchange!r} is not supported for live market data yet; "
                f"allowed: {', '.join(SUPPORTED)}",
                transient=False,
            )
        ex: Any = getattr(ccxt, exchange)(
            {
                "enableRateLimit": False,
                "timeout": int(timeout_s * 1000),
                "options": {
                    "defaultType": "spot",
                    "fetchMarkets": {"types": ["spot"]},
                    "fetchCurrencies": False,
                    "fetchMargins": False,
                },
            }
        )
        if api_url is not None:
            ex.urls["api"] = _override(copy.deepcopy(ex.urls["api"]), api_url)
        ex.session.trust_env = False
        self.ex = ex
        self.exchange = exchange
        self._markets_loaded = False

    def _call(self, what: str, fn: Any) -> Any:
        try:
            return fn()
        except ccxt.NetworkError as e:
            raise MarketDataError(f"{what}: {type(e).__name__}", transient=True) from None
        except ccxt.BaseError as e:
            raise MarketDataError(
                f"{what}: {type(e).__name__}: {e}"[:300], transient=False
            ) from None

    def _market(self, symbol: str) -> dict[str, Any]:
        if not self._markets_loaded:
            self._call("load_markets", self.ex.load_markets)
            self._markets_loaded = True
        market = (self.ex.markets or {}).get(symbol)
        if market is None:
            raise MarketDataError(
                f"symbol: {symbol!r} is not a market on {self.exchange}", transient=False
            )
        return market  # type: ignore[no-any-return]

    def rules(self, symbol: str) -> MarketRules:
        """Tick, step, minimum amount and notional from the exchange's raw filters."""
        info = self._market(symbol).get("info") or {}
        filters = {f.get("filterType"): f for f in info.get("filters", [])}
        price, lot = filters.get("PRICE_FILTER", {}), filters.get("LOT_SIZE", {})
        notional = filters.get("NOTIONAL") or filters.get("MIN_NOTIONAL") or {}
        tick = _dec(price.get("tickSize"), f"{symbol} tickSize")
        step = _dec(lot.get("stepSize"), f"{symbol} stepSize")
        if tick <= 0 or step <= 0:
            raise MarketDataError(f"{symbol}: tick or step size is zero", transient=False)
        return MarketRules(
            symbol,
            tick.normalize(),
            step.normalize(),
            _dec(lot.get("minQty", "0"), f"{symbol} minQty"),
            _dec(notional.get("minNotional", "0"), f"{symbol} minNotional"),
        )

    def tick(self, symbol: str) -> Tick:
        """The last trade price and the exchange's time of it."""
        market_id = self._market(symbol)["id"]
        raw = self._call("ticker", lambda: self.ex.publicGetTicker24hr({"symbol": market_id}))
        price = _dec(raw.get("lastPrice"), f"{symbol} lastPrice")
        if price <= 0:
            raise MarketDataError(f"{symbol}: the exchange gave no price", transient=True)
        ts = raw.get("closeTime")
        ts_ms = (
            int(ts) if isinstance(ts, int | str) and str(ts).isdigit() else time.time_ns() // 10**6
        )
        return Tick(ts_ms, price)

    def close(self) -> None:
        try:
            self.ex.session.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass
