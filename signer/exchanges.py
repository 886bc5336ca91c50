"""Building, signing and sending exchange requests with ccxt -- order endpoints only.

Each gateway owns up to two ccxt instances: a *public* one that holds no credentials (markets,
reference price) and a *private* one that holds the key (orders, balance, trades). Both sit
behind the allow-list guard of signer.exchange_transport, which checks the final URL of every
request against signer.venues for the operation being run, before anything leaves the process:

* `submit`: the request goes out through ccxt's own transport; the raw JSON answer is mapped;
* `sign-only`: ccxt's real code path runs (create_order etc.) and the guard stops it at the
  transport, so the returned signature is exactly the one ccxt would have sent.

Results are plain dicts of strings read from the exchange's raw JSON (signer.venue_maps): a
float never touches money.
"""

from __future__ import annotations

import copy
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import ccxt

from signer.errors import ConfigError, ForbiddenEndpoint, InvalidRequest
from signer.exchange_transport import (
    Captured,
    CredentialsLike,
    ExchangeRequestError,
    GuardedClient,
    SignedHttp,
    install_log_redaction,
)
from signer.venue_maps import MAPPERS, MarketRules, dec, plain
from signer.venues import PRIVATE_OPS, PUBLIC_OPS, ExchangeSettings

__all__ = [
    "CredentialsLike",
    "ExchangeGateway",
    "ExchangeRequestError",
    "ExchangeSettings",
    "GatewayPool",
    "MarketRules",
    "SignedHttp",
]

log = logging.getLogger(__name__)


class ExchangeGateway:
    """Order endpoints of one exchange for one key (or none: public data only). Thread-safe.

    ccxt's sync instances are not thread-safe, so every call holds this gateway's lock.
    """

    def __init__(
        self,
        settings: ExchangeSettings,
        credentials: CredentialsLike | None,
        *,
        markets_from: ExchangeGateway | None = None,
    ) -> None:
        install_log_redaction()
        self.settings = settings
        self._mapper = MAPPERS[settings.exchange]
        self._lock = threading.RLock()
        self._loaded = False
        if markets_from is not None and markets_from.settings.cache_key() != settings.cache_key():
            raise ConfigError("markets_from must be a gateway with the same exchange settings")
        self._markets_from = markets_from
        self._public = GuardedClient(settings, None, PUBLIC_OPS) if markets_from is None else None
        self._private: GuardedClient | None = None
        self.closed = False
        if credentials is not None:
            if not credentials.api_key or not credentials.secret:
                raise ConfigError(f"{settings.exchange}: credentials need an api key and a secret")
            private = GuardedClient(settings, credentials, PRIVATE_OPS)
            if private.ex.requiredCredentials.get("password") and not credentials.password:
                private.close()
                raise ConfigError(f"{settings.exchange}: credentials need a passphrase")
            self._private = private

    def __repr__(self) -> str:
        return (
            f"ExchangeGateway(exchange={self.settings.exchange!r}, "
            f"api_url={self.settings.api_url!r}, keyed={self._private is not None})"
        )

    # ------------------------------------------------------------ markets and public data

    def load_markets(self) -> None:
        """Load markets once (public endpoint only; a keyed gateway never loads them itself)."""
        with self._lock:
            if self._loaded:
                return
            if self._markets_from is not None:
                self._markets_from.load_markets()
                source = self._markets_from._markets_client().ex
            else:
                assert self._public is not None
                public = self._public
                self._run(public, "load_markets", lambda: public.ex.load_markets())
                source = public.ex
            if self._private is not None:
                self._private.ex.set_markets_from_exchange(source)
                # options {"adjustForTimeDifference": true}: the public client measured the
                # clock offset (GET time) while loading; the private client signs with it.
                offset = source.options.get("timeDifference")
                if offset is not None:
                    self._private.ex.options["timeDifference"] = offset
            self._loaded = True

    def use_markets(self, markets: list[dict[str, Any]]) -> None:
        """Install ccxt market structures without any request (offline use and tests)."""
        with self._lock:
            for client in (self._public, self._private):
                if client is not None:
                    client.ex.set_markets(copy.deepcopy(markets))
            self._loaded = True

    def market_rules(self, symbol: str) -> MarketRules:
        """Tick size, step size, minimum amount and notional, from the exchange's raw filters."""
        market = self._market(symbol)
        try:
            return self._mapper.rules(market)
        except ValueError as exc:
            raise self._error(str(exc), "market_rules") from None

    def ticker_price(self, symbol: str) -> Decimal:
        """The last price from the public ticker endpoint, as a Decimal from the raw string."""
        if self._markets_from is not None:
            return self._markets_from.ticker_price(symbol)
        market = self._market(symbol)
        assert self._public is not None
        public, venue = self._public, self._public.venue
        method = getattr(public.ex, venue.ticker_method)
        raw = self._run(public, "ticker_price", lambda: method({venue.ticker_param: market["id"]}))
        price = dec(self._mapper.ticker(raw))
        if price is None or not price.is_finite() or price <= 0:
            raise self._error(f"{venue.exchange} gave no usable price for {symbol}", "ticker_price")
        return price

    # ------------------------------------------------------------ order endpoints

    def create_order(
        self,
        symbol: str,
        side: str,
        order_type: str,
        amount: Decimal,
        price: Decimal | None,
        client_order_id: str,
        *,
        sign_only: bool,
    ) -> SignedHttp | dict[str, str]:
        """Place (or, sign-only, just sign) one spot order. Amount/price must fit step/tick."""
        client = self._need_private()
        if side not in ("buy", "sell"):
            raise InvalidRequest(f"side {side!r} is not allowed; allowed: buy, sell")
        if order_type not in ("limit", "market"):
            raise InvalidRequest(
                f"order_type {order_type!r} is not allowed; allowed: limit, market"
            )
        if order_type == "limit" and price is None:
            raise InvalidRequest("price is required for a limit order")
        if order_type == "market" and price is not None:
            raise InvalidRequest("price must be empty for a market order")
        self._check_client_id(client_order_id)
        rules = self.market_rules(symbol)
        amount_s = self._aligned("amount", amount, rules.step_size, symbol)
        price_s = None if price is None else self._aligned("price", price, rules.tick_size, symbol)
        with self._lock:
            self._check_ccxt_precision(client, symbol, amount_s, price_s)
            params = {client.venue.create_id_param: client_order_id}
            raw = self._run(
                client,
                "create_order",
                lambda: client.ex.create_order(symbol, order_type, side, amount_s, price_s, params),
                sign_only=sign_only,
            )
        if isinstance(raw, SignedHttp):
            return raw
        known = {"client_order_id": client_order_id, "symbol": symbol, "side": side}
        known |= {"type": order_type, "amount": amount_s} | ({"price": price_s} if price_s else {})
        return self._mapper.order(raw, self._resolve, known)

    def cancel_order(
        self, symbol: str, client_order_id: str, *, sign_only: bool
    ) -> SignedHttp | dict[str, str]:
        """Cancel by client order id (or, sign-only, just sign the cancel)."""
        client = self._need_private()
        self._check_client_id(client_order_id)
        self._market(symbol)
        params = {client.venue.lookup_id_param: client_order_id}
        raw = self._run(
            client,
            "cancel_order",
            lambda: client.ex.cancel_order(None, symbol, params),
            sign_only=sign_only,
        )
        if isinstance(raw, SignedHttp):
            return raw
        known = {"client_order_id": client_order_id, "symbol": symbol, "status": "canceled"}
        return self._mapper.order(raw, self._resolve, known)

    def fetch_order(self, symbol: str, client_order_id: str) -> dict[str, str]:
        """One order by client order id."""
        client = self._need_private()
        self._check_client_id(client_order_id)
        self._market(symbol)
        params = {client.venue.lookup_id_param: client_order_id}
        raw = self._run(client, "fetch_order", lambda: client.ex.fetch_order(None, symbol, params))
        known = {"client_order_id": client_order_id, "symbol": symbol}
        return self._mapper.order(raw, self._resolve, known)

    def fetch_open_orders(self, symbol: str | None) -> list[dict[str, str]]:
        """Open orders on one market, or on all markets when `symbol` is None."""
        client = self._need_private()
        if symbol is not None:
            self._market(symbol)
        else:
            self.load_markets()
        raw = self._run(client, "fetch_open_orders", lambda: client.ex.fetch_open_orders(symbol))
        return [self._mapper.order(o, self._resolve, {}) for o in self._mapper.orders(raw)]

    def fetch_balance(self) -> list[dict[str, str]]:
        """Non-zero balances of the trading account: asset, free, locked."""
        client = self._need_private()
        self.load_markets()
        raw = self._run(client, "fetch_balance", lambda: client.ex.fetch_balance())
        return self._mapper.balances(raw)

    def fetch_my_trades(self, symbol: str) -> list[dict[str, str]]:
        """This key's recent trades on one market."""
        client = self._need_private()
        self._market(symbol)
        raw = self._run(client, "fetch_my_trades", lambda: client.ex.fetch_my_trades(symbol))
        return [self._mapper.trade(t, self._resolve) for t in self._mapper.trades(raw)]

    def close(self) -> None:
        """Close the HTTP sessions; the gateway must not be used afterwards."""
        with self._lock:
            self.closed = True
            for client in (self._public, self._private):
                if client is not None:
                    client.close()

    # ------------------------------------------------------------ internals

    def _run(
        self,
        client: GuardedClient,
        op: str,
        call: Callable[[], Any],
        *,
        sign_only: bool = False,
        resynced: bool = False,
    ) -> Any:
        """Run one ccxt call under the lock with the guard set to `op`; return the raw JSON.

        A refusal for a stale timestamp (binance -1021, ccxt InvalidNonce) means nothing was
        placed: the clock offset is measured again and the call retried once.
        """
        failure: ExchangeRequestError | None = None
        clock_refused = False
        with self._lock:
            client.begin(op, capture=sign_only)
            try:
                call()
            except Captured as captured:
                return captured.request
            except ForbiddenEndpoint:
                raise
            except Exception as exc:  # ccxt raised; after a completed request it is only parsing
                if not client.done:
                    if not isinstance(exc, ccxt.BaseError):
                        raise
                    failure = client.translate(op, exc)
                    clock_refused = isinstance(exc, ccxt.InvalidNonce)
                else:
                    log.warning(
                        "%s %s: ccxt could not parse the answer (%s); using raw JSON",
                        self.settings.exchange,
                        op,
                        type(exc).__name__,
                    )
            finally:
                raw, done = client.raw, client.done
                client.begin(None, capture=False)
        if failure is not None and clock_refused and not resynced and client is self._private:
            self._resync_clock()
            return self._run(client, op, call, sign_only=sign_only, resynced=True)
        if failure is not None:
            raise failure  # raised outside `except`: no chained ccxt text (it holds signed URLs)
        if sign_only or not done:
            raise self._error(f"{self.settings.exchange} {op}: ccxt built no request", op)
        return raw

    def _resync_clock(self) -> None:
        """Measure the exchange's clock offset again (public GET time) for the private client."""
        if self._markets_from is not None:
            self._markets_from._resync_clock()
            source = self._markets_from._markets_client()
        else:
            assert self._public is not None
            source = self._public
            self._run(source, "load_markets", lambda: source.ex.load_time_difference())
        offset = source.ex.options.get("timeDifference")
        if self._private is not None and offset is not None:
            self._private.ex.options["timeDifference"] = offset

    def _error(self, message: str, op: str) -> ExchangeRequestError:
        return ExchangeRequestError(message, exchange=self.settings.exchange, operation=op)

    def _need_private(self) -> GuardedClient:
        if self._private is None:
            raise ConfigError(f"{self.settings.exchange}: this gateway holds no key")
        return self._private

    def _markets_client(self) -> GuardedClient:
        client = self._private or self._public
        assert client is not None
        return client

    def _market(self, symbol: str) -> dict[str, Any]:
        self.load_markets()
        market = (self._markets_client().ex.markets or {}).get(symbol)
        if not isinstance(market, dict) or not market.get("spot"):
            raise InvalidRequest(
                f"symbol {symbol!r} is not a spot market on {self.settings.exchange}"
            )
        return market

    def _resolve(self, market_id: str) -> str:
        found = (self._markets_client().ex.markets_by_id or {}).get(market_id)
        return str(found[0]["symbol"]) if found else market_id

    def _check_client_id(self, client_order_id: str) -> None:
        pattern = self._markets_client().venue.client_id_pattern
        if not isinstance(client_order_id, str) or not re.fullmatch(pattern, client_order_id):
            raise InvalidRequest(
                f"client_order_id {client_order_id!r} is not allowed on "
                f"{self.settings.exchange}; allowed: {pattern}"
            )

    @staticmethod
    def _aligned(field: str, value: Decimal, step: Decimal, symbol: str) -> str:
        if not isinstance(value, Decimal) or not value.is_finite() or value <= 0:
            raise InvalidRequest(f"{field} {value!r} is not allowed; allowed: a Decimal above 0")
        if value % step != 0:
            raise InvalidRequest(
                f"{field} {plain(value)} is not a multiple of {plain(step)} on {symbol}"
            )
        return plain(value)

    def _check_ccxt_precision(
        self, client: GuardedClient, symbol: str, amount: str, price: str | None
    ) -> None:
        """What ccxt will put in the request must equal what was asked (and audited)."""
        try:
            ok = Decimal(client.ex.amount_to_precision(symbol, amount)) == Decimal(amount)
            if price is not None:
                ok = ok and Decimal(client.ex.price_to_precision(symbol, price)) == Decimal(price)
        except ccxt.BaseError as exc:
            raise InvalidRequest(
                f"{symbol}: {type(exc).__name__}: amount or price out of range"
            ) from None
        if not ok:
            raise InvalidRequest(f"{symbol}: ccxt would round amount {amount} or price {price}")


DEFAULT_MAX_KEYED = 1024  # ~284 KB of ccxt client each: a bounded ~300 MB at most


class GatewayPool:
    """One public gateway per exchange settings and one keyed gateway per (key id, generation).

    Keyed gateways take their markets (and reference prices) from the public gateway of the same
    settings, so markets load once per exchange. The keyed cache is an LRU of at most
    `max_keyed` gateways (a platform may hold 100,000 keys); the least recently used one is
    closed when it falls out, and rebuilt from the keystore if its key signs again. Thread-safe.
    """

    def __init__(self, max_keyed: int = DEFAULT_MAX_KEYED) -> None:
        if max_keyed < 1:
            raise ConfigError(f"max_keyed: {max_keyed} is not allowed; must be >= 1")
        self._lock = threading.Lock()
        self._max_keyed = max_keyed
        self._public: dict[str, ExchangeGateway] = {}
        self._keyed: OrderedDict[tuple[str, str], tuple[int, ExchangeGateway]] = OrderedDict()

    def __len__(self) -> int:
        """Keyed gateways currently cached."""
        with self._lock:
            return len(self._keyed)

    def public(self, settings: ExchangeSettings) -> ExchangeGateway:
        """The keyless gateway for these settings (markets, reference price)."""
        with self._lock:
            return self._public_locked(settings)

    def for_key(
        self,
        settings: ExchangeSettings,
        key_id: str,
        generation: int,
        load_credentials: Callable[[], CredentialsLike],
    ) -> ExchangeGateway:
        """The gateway for `key_id`; `load_credentials` runs only when none is cached for
        this generation (a rotated key gets a new generation and replaces the old gateway)."""
        evicted: list[ExchangeGateway] = []
        with self._lock:
            slot = (settings.cache_key(), key_id)
            cached = self._keyed.get(slot)
            if cached is not None and cached[0] == generation:
                self._keyed.move_to_end(slot)
                return cached[1]
            public = self._public_locked(settings)
            gateway = ExchangeGateway(settings, load_credentials(), markets_from=public)
            if cached is not None:
                evicted.append(cached[1])  # an older generation: its secret is gone
            self._keyed[slot] = (generation, gateway)
            self._keyed.move_to_end(slot)
            while len(self._keyed) > self._max_keyed:
                evicted.append(self._keyed.popitem(last=False)[1][1])
        for old in evicted:  # outside the pool lock: close waits for a call in flight
            old.close()
        return gateway

    def forget(self, key_id: str) -> None:
        """Drop every cached gateway (and so the secret) of `key_id`: frozen, rotated, deleted."""
        with self._lock:
            for slot in [s for s in self._keyed if s[1] == key_id]:
                del self._keyed[slot]

    def close(self) -> None:
        with self._lock:
            gateways = [g for _, g in self._keyed.values()] + list(self._public.values())
            self._keyed.clear()
            self._public.clear()
        for gateway in gateways:
            gateway.close()

    def _public_locked(self, settings: ExchangeSettings) -> ExchangeGateway:
        key = settings.cache_key()
        if key not in self._public:
            self._public[key] = ExchangeGateway(settings, None)
        return self._public[key]
