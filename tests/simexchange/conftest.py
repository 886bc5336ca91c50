"""Fixtures for the simulator's tests: simulators on a frozen clock (stepped by the tests)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest

from simexchange import SimConfig, SimExchange, SyntheticSource, symbol_config

START_MS = 1_700_000_000_000  # 2023-11-14 22:13:20 UTC, a fixed simulated start


def frozen_config(**overrides: Any) -> SimConfig:
    """Synthetic BTC/ETH and the thin DATA market, clock frozen at START_MS, admin on."""
    symbols = (
        symbol_config("BTCUSDT", SyntheticSource(start_price=Decimal(60000), seed=1)),
        symbol_config("ETHUSDT", SyntheticSource(start_price=Decimal(3000), seed=2)),
        symbol_config("DATAUSDT", SyntheticSource(start_price=Decimal("0.07"), seed=3)),
    )
    fields: dict[str, Any] = {"symbols": symbols, "speed": 0, "start_ms": START_MS, "admin": True}
    fields.update(overrides)
    return SimConfig(**fields)


@pytest.fixture
def make_sim() -> Iterator[Callable[..., SimExchange]]:
    """Start simulators from `frozen_config(**overrides)`; all are stopped afterwards."""
    started: list[SimExchange] = []

    def make(**overrides: Any) -> SimExchange:
        exchange = SimExchange(frozen_config(**overrides)).start()
        started.append(exchange)
        return exchange

    yield make
    for exchange in started:
        exchange.stop()


@pytest.fixture
def sim(make_sim: Callable[..., SimExchange]) -> SimExchange:
    return make_sim()
