"""Fixtures for the paper-trading end-to-end tests: simexchange, signer and engine as three real
processes (see tests/e2e/paper.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.paper import PaperSession, wait_for, write_day

POLICY = """
symbols = ["BTC/USDT"]
sides = ["buy", "sell"]
order_types = ["limit", "market"]
max_order_notional = "2500"
max_notional_24h = "1000000"
max_open_orders = 60
orders_per_minute = 3000
price_band_pct = "10"
market_slippage_pct = "1"
reference_max_age_s = 2
"""

# Sized for 2024-12-03 (BTC/USDT open 95840.61, low 93578.17, high 96305.52, close 95849.69):
# 3 DCA deals (with 2, 0 and 1 safety orders) and dozens of grid round trips. The take profit
# sits 1.5 % above the first safety order, so it cannot fill in the moment between a safety
# fill and the engine replacing it (a move that large within one poll never happens that day);
# such a race pauses the DCA bot (see the report on the DCA strategy's handling of it).
DCA = """
name = "btc-dca"
type = "dca"
symbol = "BTC/USDT"
key_id = "main"
[dca]
base_order = "200"
safety_order = "200"
max_safety_orders = 4
active_safety_orders = 2
safety_deviation_pct = "1"
safety_volume_scale = "1.5"
safety_step_scale = "1.2"
take_profit_pct = "0.5"
"""

GRID = """
name = "btc-grid"
type = "grid"
symbol = "BTC/USDT"
key_id = "main"
[grid]
lower = "93600"
upper = "96300"
grids = 12
investment = "3000"
"""

DAY = "2024-12-03"
MINUTE_MS = 20  # one real minute lasts 20 ms: the day in 28.8 s


def start_session(session: PaperSession, candles: int = 1440) -> dict[str, Any]:
    """Signer and engine configured, simulator started; the day begins ~6 s after the
    simulator, so the engine is up and both bots have started before the first candle."""
    root = session.root
    session.setup_signer()
    session.configure_engine()
    # The simulator's clock starts 8 s ahead of the wall clock, so however long it takes to
    # start (up to 9 s), signed requests stay inside Binance's timing rule (1 s ahead, 10 s
    # behind at most); the candles begin 6 s after that start.
    start = int(time.time() * 1000) + 8000
    day = write_day(root / "day.json", DAY, start + 6000, MINUTE_MS, candles)
    session.start_sim(root / "day.json", start)
    session.start_engine()
    return day


def wait_day_over(session: PaperSession, day: dict[str, Any]) -> None:
    ex = session.exchange()
    wait_for(lambda: ex.fetch_time() > day["end_ms"], 120, "the replayed day to end", every=0.5)


@pytest.fixture(scope="module")
def paper_day(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PaperSession]:
    """One simulated day traded by a DCA and a grid bot; the engine is still running after."""
    session = PaperSession(tmp_path_factory.mktemp("paper-day"), POLICY, [DCA, GRID])
    try:
        day = start_session(session)
        wait_day_over(session, day)
        session.wait_settled()
        yield session
    finally:
        session.stop()
