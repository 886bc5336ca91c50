"""kill -9 the engine while its bots trade, let the market run on without it, restart it: no
order is placed twice, no fill is lost, and every strategy's view matches the exchange."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.checks import assert_engine_matches_exchange
from tests.e2e.conftest import DCA, GRID, POLICY, start_session, wait_day_over
from tests.e2e.paper import PaperSession, wait_for


def test_an_engine_killed_mid_trading_resumes_without_duplicate_or_lost_orders(
    tmp_path: Path,
) -> None:
    # without safety orders the DCA bot never cancels and replaces a take profit, so the long
    # blind spot of a dead engine cannot race a take profit against its replacement
    dca = DCA.replace("max_safety_orders = 4\nactive_safety_orders = 2\n", "")
    assert dca != DCA
    session = PaperSession(tmp_path, POLICY, [dca, GRID])
    try:
        day = start_session(session, candles=720)  # half a day, 14.4 s
        wait_for(lambda: len(session.engine_fills()) >= 12, 60, "a dozen fills before the kill")
        session.kill_engine()

        def missed() -> bool:  # the exchange keeps filling orders the dead engine cannot see
            done = {
                o["clientOrderId"] for o in session.exchange_orders() if o["status"] == "FILLED"
            }
            return bool(done - {f.client_order_id for f in session.engine_fills()})

        wait_for(missed, 30, "a fill made while the engine was dead")
        restarted = session.start_engine()
        wait_day_over(session, day)
        session.wait_settled()
        counts = assert_engine_matches_exchange(session)
        assert counts["fills"] > 12
        log = restarted.log.read_text()
        assert "btc-dca: dca on BTC/USDT, resumed" in log
        assert "btc-grid: grid on BTC/USDT, resumed" in log
    finally:
        session.stop()
