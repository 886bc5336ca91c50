"""kill -9 the engine (`bulkhead run`) at random, seeded moments while a DCA and a grid bot
trade, restart it each time, and count what the exchange and the engine's store disagree on.

The three processes (simexchange, signer, engine) are the e2e paper session
(tests/e2e/paper.py), imported, not copied. After every restart, once the engine has settled
(nothing in flight, every exchange fill recorded), these are counted as violations:

- a client order id placed twice on the exchange, or an exchange order the engine never recorded
  (a duplicate or an orphan from a half-finished submit);
- an exchange trade whose order has no fill in the engine's store (a lost fill);
- the orders the engine thinks rest (its `open` rows, and each strategy's saved snapshot) differ
  from the orders resting on the exchange.

Every other kill is aimed: it waits (up to 5 s) for an order to show in the store between the
intent and the exchange's answer, the moment a crash could duplicate or orphan an order; the
figures count how many kills caught one.

The market keeps moving while we look, so a disagreement is re-read until a deadline before it
counts: a real violation persists, a read that straddles one engine poll does not. When a
session's day is over, the e2e end-of-day check (`assert_engine_matches_exchange`: amounts,
prices, fees, balances) runs too, and its failure counts as one violation.

The DCA bot runs without safety orders, as in tests/e2e/test_restart.py: a take profit filling
while the engine is dead, racing its own replacement, pauses the DCA bot by design, which is
not what this scenario measures.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

from botengine import store as st
from tests.e2e.checks import assert_engine_matches_exchange, strategy_resting
from tests.e2e.conftest import DCA, GRID, MINUTE_MS, POLICY, start_session, wait_day_over
from tests.e2e.paper import PaperSession, wait_for
from tests.reliability.result import Result, Scale

SAFETY = "max_safety_orders = 4\nactive_safety_orders = 2\n"
NO_SAFETY_DCA = DCA.replace(SAFETY, "")
SEED = 20261129
SETTLE_S = 30.0
AGREE_S = 10.0
KILLS = {"short": 2, "long": 20}  # short: one half-day session; long: five whole days


def kills_for(scale: Scale) -> int:
    """The kill -9 count for a scale (kept here, beside the scenario it sizes)."""
    return KILLS[scale.name]


def disagreements(s: PaperSession) -> list[str]:
    """Every invariant the exchange and the engine's store break right now (exchange read
    first, so an order the engine places meanwhile shows as a transient mismatch only)."""
    orders, trades = s.exchange_orders(), s.exchange_trades()
    engine = {o.client_order_id: o for o in s.engine_orders()}
    fills = {f.client_order_id for f in s.engine_fills()}
    store = s.engine_store()
    try:
        with store.read() as session:
            believed: set[str] = set()
            for bot in st.list_bots(session):
                snap = st.load_snapshot(session, bot.name)
                believed |= strategy_resting(snap) if snap else set()
    finally:
        store.close()
    out: list[str] = []
    counts = Counter(o["clientOrderId"] for o in orders)
    out += [f"duplicate order {c} x{n} on the exchange" for c, n in counts.items() if n > 1]
    out += [f"exchange order {c} unknown to the engine" for c in sorted(set(counts) - set(engine))]
    coid_of = {str(o["orderId"]): o["clientOrderId"] for o in orders}
    traded = {coid_of.get(str(t["orderId"]), f"order#{t['orderId']}") for t in trades}
    out += [f"lost fill: trade on {c} not in the engine store" for c in sorted(traded - fills)]
    on_book = {o["clientOrderId"] for o in orders if o["status"] == "NEW"}
    rows_open = {c for c, row in engine.items() if row.state == "open"}
    if rows_open != on_book:
        out.append(f"engine open rows vs exchange book differ: {sorted(rows_open ^ on_book)}")
    if believed != on_book:
        out.append(f"strategies vs exchange book differ: {sorted(believed ^ on_book)}")
    return out


def settle_and_count(s: PaperSession) -> list[str]:
    """Wait for the engine to settle, then re-read until exchange and store agree or
    AGREE_S passes; return what still disagrees (empty when the invariants hold)."""
    try:
        s.wait_settled(SETTLE_S)
    except AssertionError as e:  # a paused bot or an engine that never catches up
        return [f"engine did not settle: {str(e)[:300]}"]
    deadline = time.monotonic() + AGREE_S
    while True:
        now = disagreements(s)
        if not now or time.monotonic() > deadline:
            return now
        time.sleep(0.3)


def in_flight_now(s: PaperSession) -> bool:
    return any(o.state in ("intent", "submitted") for o in s.engine_orders())


def aim_at_in_flight(s: PaperSession, within_s: float = 5.0) -> None:
    """Return as soon as the engine's store shows an order in flight, or after `within_s`
    (the kill then lands wherever it lands: a quiet market places few orders)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline and not in_flight_now(s):
        time.sleep(0.01)


def restart_engine(s: PaperSession) -> None:
    old = s.procs["engine"].popen
    if old.stdout is not None:
        old.stdout.close()
    s.start_engine()


def one_session(
    root: Path, kills: int, rng: random.Random, candles: int, result: Result, in_flight: list[int]
) -> dict[str, int]:
    """One paper session with `kills` engine kill -9s; violations go into `result`."""
    s = PaperSession(root, POLICY, [NO_SAFETY_DCA, GRID])
    try:
        day = start_session(s, candles=candles)
        ex = s.exchange()
        begins = day["end_ms"] - candles * MINUTE_MS
        wait_for(lambda: ex.fetch_time() > begins, 60, "the replayed day to begin")
        for k in range(kills):
            time.sleep(rng.uniform(0.2, 2.5))  # the fault's random moment, not a wait on state
            if k % 2 == 1:  # every other kill aims at an order between intent and exchange answer
                aim_at_in_flight(s)
            s.kill_engine()
            result.faults += 1
            if in_flight_now(s):
                in_flight[0] += 1  # the kill caught an order between intent and exchange answer
            time.sleep(rng.uniform(0.0, 1.5))  # random dead time: the market runs on unseen
            restart_engine(s)
            result.trials += 1
            for v in settle_and_count(s):
                result.violate(f"{root.name} kill {k + 1}: {v}")
        wait_day_over(s, day)
        for v in settle_and_count(s):
            result.violate(f"{root.name} end of day: {v}")
        try:
            return assert_engine_matches_exchange(s)
        except AssertionError as e:
            result.violate(f"{root.name} end-of-day check: {str(e)[:300]}")
            return {}
    finally:
        s.stop()


def run(work: Path, kills: int, per_session: int = 4, seed: int = SEED) -> Result:
    """`kills` engine kill -9s, `per_session` to a session (a half day for 2 or fewer kills,
    a whole day otherwise); one Result with trials = restarts checked."""
    assert NO_SAFETY_DCA != DCA, "the e2e DCA config changed; update SAFETY"
    result = Result("engine kill -9")
    rng = random.Random(seed)
    totals: Counter[str] = Counter()
    sessions = 0
    in_flight = [0]
    left = kills
    while left > 0:
        n = min(per_session, left)
        root = work / f"session-{sessions}"
        root.mkdir(parents=True)
        counts: dict[str, Any] = one_session(
            root, n, rng, 720 if n <= 2 else 1440, result, in_flight
        )
        totals.update(counts)
        sessions += 1
        left -= n
    result.figures.update(
        {
            "sessions": str(sessions),
            "exchange orders": str(totals["orders"]),
            "fills": str(totals["fills"]),
            "kills with an order in flight": str(in_flight[0]),
        }
    )
    return result
