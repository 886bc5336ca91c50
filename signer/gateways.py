"""Exchange gateways per key, built from keystore credentials and the signer's exchange config.

A gateway is cached per (key id, key generation): rotating or removing a key makes the next
request build a fresh one (or fail), so no stale secret outlives its rotation in this cache.
ccxt's sync clients are not thread-safe, so each gateway is used under its own lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from signer.config import SignerConfig
from signer.db import read_session
from signer.errors import KeystoreError
from signer.exchanges import ExchangeGateway, ExchangeSettings
from signer.keystore import KeyInfo, Keystore

T = TypeVar("T")


class Gateways:
    def __init__(self, engine: Engine, keystore: Keystore, config: SignerConfig) -> None:
        self.engine = engine
        self.keystore = keystore
        self.config = config
        self._lock = threading.Lock()
        self._keyed: dict[str, tuple[int, ExchangeGateway, threading.Lock]] = {}
        self._public: dict[str, tuple[ExchangeGateway, threading.Lock]] = {}

    def settings(self, exchange: str) -> ExchangeSettings:
        entry = self.config.exchange(exchange)
        return ExchangeSettings(
            exchange=exchange, api_url=entry.api_url, timeout_ms=entry.timeout_ms
        )

    def key_info(self, session: Session, key_id: str) -> KeyInfo | None:
        try:
            return self.keystore.get(session, key_id)
        except KeystoreError:
            return None

    def _public_gateway(self, exchange: str) -> tuple[ExchangeGateway, threading.Lock]:
        with self._lock:
            if exchange not in self._public:
                self._public[exchange] = (
                    ExchangeGateway(self.settings(exchange), None),
                    threading.Lock(),
                )
            return self._public[exchange]

    def _key_gateway(self, key_id: str, exchange: str) -> tuple[ExchangeGateway, threading.Lock]:
        with read_session(self.engine) as s:
            info = self.keystore.get(s, key_id)
            cached = self._keyed.get(key_id)
            if cached is not None and cached[0] == info.generation:
                return cached[1], cached[2]
            creds = self.keystore.credentials(s, key_id)
        gw = ExchangeGateway(self.settings(exchange), creds)
        entry = (info.generation, gw, threading.Lock())
        with self._lock:
            self._keyed[key_id] = entry
        return entry[1], entry[2]

    def _with_key(self, key_id: str, exchange: str, fn: Callable[[ExchangeGateway], T]) -> T:
        gw, lock = self._key_gateway(key_id, exchange)
        with lock:
            return fn(gw)

    def ticker_price(self, exchange: str, symbol: str) -> Decimal:
        gw, lock = self._public_gateway(exchange)
        with lock:
            return gw.ticker_price(symbol)

    def create_order(
        self,
        key_id: str,
        exchange: str,
        symbol: str,
        side: str,
        order_type: str,
        amount: Decimal,
        price: Decimal | None,
        client_order_id: str,
        *,
        sign_only: bool,
    ) -> Any:
        return self._with_key(
            key_id,
            exchange,
            lambda gw: gw.create_order(
                symbol, side, order_type, amount, price, client_order_id, sign_only=sign_only
            ),
        )

    def cancel_order(
        self, key_id: str, exchange: str, symbol: str, client_order_id: str, *, sign_only: bool
    ) -> Any:
        return self._with_key(
            key_id,
            exchange,
            lambda gw: gw.cancel_order(symbol, client_order_id, sign_only=sign_only),
        )

    def fetch_order(self, key_id: str, exchange: str, symbol: str, coid: str) -> dict[str, str]:
        return self._with_key(key_id, exchange, lambda gw: gw.fetch_order(symbol, coid))

    def fetch_open_orders(
        self, key_id: str, exchange: str, symbol: str | None
    ) -> list[dict[str, str]]:
        return self._with_key(key_id, exchange, lambda gw: gw.fetch_open_orders(symbol))

    def fetch_balance(self, key_id: str, exchange: str) -> list[dict[str, str]]:
        return self._with_key(key_id, exchange, lambda gw: gw.fetch_balance())

    def fetch_my_trades(self, key_id: str, exchange: str, symbol: str) -> list[dict[str, str]]:
        return self._with_key(key_id, exchange, lambda gw: gw.fetch_my_trades(symbol))

    def close(self) -> None:
        with self._lock:
            self._keyed.clear()
            self._public.clear()
