"""Exchange gateways per key, built from keystore credentials and the signer's exchange config.

A keyed gateway is cached per (key id, key generation) by `GatewayPool`: rotating or removing a
key makes the next request build a fresh one (or fail), so no stale secret outlives its
rotation. Markets and reference prices come from one keyless gateway per exchange. ccxt's sync
clients are not thread-safe, so the gateways serialise their own calls.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from signer.config import SignerConfig
from signer.db import read_session
from signer.errors import KeystoreError
from signer.exchanges import ExchangeGateway, ExchangeSettings, GatewayPool, MarketRules
from signer.keystore import KeyInfo, KeyStatus, Keystore


class Gateways:
    def __init__(self, engine: Engine, keystore: Keystore, config: SignerConfig) -> None:
        self.engine = engine
        self.keystore = keystore
        self.config = config
        self.pool = GatewayPool()

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

    def key_status(self, session: Session, key_id: str) -> KeyStatus | None:
        """Exchange, kind, status and generation of a key in one cheap read (no unsealing)."""
        return self.keystore.status_of(session, key_id)

    def sign_create_order(
        self,
        session: Session,
        key: KeyStatus,
        symbol: str,
        side: str,
        order_type: str,
        amount: Decimal,
        price: Decimal | None,
        client_order_id: str,
    ) -> Any:
        """Sign (never send) an order inside the caller's decision transaction: the request
        leaves the process only after that transaction commits."""

        def load() -> Any:
            return self.keystore.credentials(session, key.key_id)

        gateway = self.pool.for_key(self.settings(key.exchange), key.key_id, key.generation, load)
        return gateway.create_order(
            symbol, side, order_type, amount, price, client_order_id, sign_only=True
        )

    def _for_key(self, key_id: str, exchange: str) -> ExchangeGateway:
        with read_session(self.engine) as s:
            info = self.keystore.get(s, key_id)

            def load() -> Any:
                return self.keystore.credentials(s, key_id)

            return self.pool.for_key(self.settings(exchange), key_id, info.generation, load)

    def ticker_price(self, exchange: str, symbol: str) -> Decimal:
        return self.pool.public(self.settings(exchange)).ticker_price(symbol)

    def market_rules(self, exchange: str, symbol: str) -> MarketRules:
        return self.pool.public(self.settings(exchange)).market_rules(symbol)

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
        return self._for_key(key_id, exchange).create_order(
            symbol, side, order_type, amount, price, client_order_id, sign_only=sign_only
        )

    def cancel_order(
        self, key_id: str, exchange: str, symbol: str, client_order_id: str, *, sign_only: bool
    ) -> Any:
        return self._for_key(key_id, exchange).cancel_order(
            symbol, client_order_id, sign_only=sign_only
        )

    def fetch_order(self, key_id: str, exchange: str, symbol: str, coid: str) -> dict[str, str]:
        return self._for_key(key_id, exchange).fetch_order(symbol, coid)

    def fetch_open_orders(
        self, key_id: str, exchange: str, symbol: str | None
    ) -> list[dict[str, str]]:
        return self._for_key(key_id, exchange).fetch_open_orders(symbol)

    def fetch_balance(self, key_id: str, exchange: str) -> list[dict[str, str]]:
        return self._for_key(key_id, exchange).fetch_balance()

    def fetch_my_trades(self, key_id: str, exchange: str, symbol: str) -> list[dict[str, str]]:
        return self._for_key(key_id, exchange).fetch_my_trades(symbol)

    def forget(self, key_id: str) -> None:
        self.pool.forget(key_id)

    def close(self) -> None:
        self.pool.close()
