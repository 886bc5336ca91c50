"""Fixtures for the runtime tests: a real signer stack (simexchange on a socket, the signer's
gRPC servers on Unix sockets, see tests/signer/stack.py) and the engine's Runtime in a thread."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ccxt
import pytest

from botengine import store as st
from botengine.config import parse_bot_config
from botengine.engine_config import EngineConfig, engine_config_from_mapping
from botengine.runtime import Runtime
from simexchange.testing import ccxt_config
from tests.signer.stack import BOT_ID, KEY_ID, Stack, build_stack

PG_URL = os.environ.get("BULKHEAD_TEST_PG_URL")

DCA = f"""
name = "d1"
type = "dca"
symbol = "BTC/USDT"
key_id = "{KEY_ID}"
[dca]
base_order = "100"
safety_order = "100"
max_safety_orders = 2
safety_deviation_pct = "1"
take_profit_pct = "1"
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An engine database: a SQLite file, or a fresh PostgreSQL schema when one is configured."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'engine.db'}"
        return
    if not PG_URL:
        pytest.skip("BULKHEAD_TEST_PG_URL is not set")
    from tests.signer.stack import drop_pg_schema, pg_schema_url

    url, schema = pg_schema_url(PG_URL)
    try:
        yield url
    finally:
        drop_pg_schema(PG_URL, schema)


@pytest.fixture
def signer_stack(tmp_path: Path) -> Iterator[Stack]:
    (tmp_path / "stack").mkdir()
    s = build_stack(tmp_path / "stack")
    try:
        yield s
    finally:
        s.stop()


def engine_config(
    root: Path, stack: Stack, address: str | None = None, **extra: Any
) -> EngineConfig:
    key = root / "engine.key"
    if not key.exists():
        key.write_text(bytes(stack.bot.signing_key).hex() + "\n")
        os.chmod(key, 0o600)
    data: dict[str, Any] = {
        "data_dir": "engine-data",
        "poll_interval_s": 0.1,
        "retry_base_s": 0.05,
        "retry_cap_s": 0.3,
        "lease_ttl_s": 6,
        "signer": {
            "addresses": [address or stack.addresses["bot_unix"]],
            "identity_name": BOT_ID,
            "identity_key": str(key),
            "timeout_s": 2.0,
        },
        "exchanges": {"binance": {"api_url": stack.sim.base_url}},
    }
    data.update(extra)
    return engine_config_from_mapping(data, "test", root)


def add_bot(config: EngineConfig, text: str = DCA) -> None:
    store = st.Store(config.db_url(), config.data_dir)
    try:
        with store.write() as s:
            st.add_bot(s, parse_bot_config(text), text, st.now_ms())
    finally:
        store.close()


@contextmanager
def running(config: EngineConfig) -> Iterator[Runtime]:
    """The engine's supervisor in a thread, stopped (as on SIGTERM) on exit."""
    runtime = Runtime(config)
    stop = threading.Event()
    thread = threading.Thread(target=runtime.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield runtime
    finally:
        stop.set()
        thread.join(timeout=60)
        assert not thread.is_alive(), "the runtime did not stop"


def orders_on_exchange(stack: Stack) -> list[str]:
    """Client order ids of every order the account holds, read with the account's own key."""
    ex = ccxt.binance(ccxt_config(stack.sim.base_url, stack.account.api_key, stack.account.secret))
    return [o["clientOrderId"] for o in ex.privateGetAllOrders({"symbol": "BTCUSDT"})]


def order_row(config: EngineConfig, coid: str) -> st.OrderRow | None:
    store = st.Store(config.db_url(), config.data_dir)
    try:
        with store.read() as s:
            return st.order_by_coid(s, coid)
    finally:
        store.close()
