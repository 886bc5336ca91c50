"""The keyed gateway cache is bounded: least recently used gateways are closed and dropped.

No network: building a keyed gateway only creates ccxt clients; nothing here calls an endpoint.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pytest

from signer.errors import ConfigError
from signer.exchanges import ExchangeGateway, ExchangeSettings, GatewayPool
from signer.keystore import Credentials

SETTINGS = ExchangeSettings(exchange="binance", api_url="http://127.0.0.1:9")


def _loader(loads: list[str], key_id: str) -> Callable[[], Credentials]:
    def load() -> Credentials:
        loads.append(key_id)
        return Credentials(
            api_key=secrets.token_hex(16), secret=secrets.token_hex(32), password=None
        )

    return load


def _get(pool: GatewayPool, loads: list[str], key_id: str, generation: int = 1) -> ExchangeGateway:
    return pool.for_key(SETTINGS, key_id, generation, _loader(loads, key_id))


def test_pool_evicts_and_closes_the_least_recently_used_gateway() -> None:
    pool = GatewayPool(max_keyed=3)
    loads: list[str] = []
    k1, k2, k3 = (_get(pool, loads, k) for k in ("k1", "k2", "k3"))
    assert _get(pool, loads, "k1") is k1  # k1 is now the most recently used
    k4 = _get(pool, loads, "k4")
    assert len(pool) == 3
    assert k2.closed and not (k1.closed or k3.closed or k4.closed)
    assert loads == ["k1", "k2", "k3", "k4"]
    again = _get(pool, loads, "k2")  # an evicted key is rebuilt from its credentials
    assert again is not k2 and not again.closed and loads[-1] == "k2"
    assert k3.closed and len(pool) == 3
    pool.close()
    assert all(g.closed for g in (k1, k4, again))


def test_rotated_generation_closes_the_old_gateway() -> None:
    pool = GatewayPool(max_keyed=2)
    loads: list[str] = []
    old = _get(pool, loads, "k1", generation=1)
    new = _get(pool, loads, "k1", generation=2)
    assert new is not old and old.closed and not new.closed and len(pool) == 1
    pool.close()


def test_pool_size_below_one_is_refused() -> None:
    with pytest.raises(ConfigError, match="max_keyed: 0 is not allowed; must be >= 1"):
        GatewayPool(max_keyed=0)
