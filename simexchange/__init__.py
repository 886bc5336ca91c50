"""A Binance-compatible spot exchange simulator for paper trading, demos and tests.

Public API: `SimExchange` (server.py), the config models (config.py) and the test helpers
in `simexchange.testing`. See docs/simexchange.md.
"""

from simexchange.clock import SimClock
from simexchange.config import (
    AccountConfig,
    FileSource,
    KeyConfig,
    SimConfig,
    SymbolConfig,
    SyntheticSource,
    load_accounts,
    symbol_config,
)
from simexchange.server import AccountKeys, SimExchange

__all__ = [
    "AccountConfig",
    "AccountKeys",
    "FileSource",
    "KeyConfig",
    "SimClock",
    "SimConfig",
    "SimExchange",
    "SymbolConfig",
    "SyntheticSource",
    "load_accounts",
    "symbol_config",
]
