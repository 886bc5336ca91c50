"""Two engine workers on one PostgreSQL: each bot is run by exactly one worker at a time, and a
worker killed with SIGKILL has its bots resumed by the other within the lease timeout, with no
order placed twice. Real processes: simexchange, the signer and two `bulkhead run` workers."""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from pathlib import Path

from botengine.engine_config import EngineConfig
from tests.e2e.checks import assert_engine_matches_exchange, audit_records
from tests.e2e.conftest import POLICY, start_session, wait_day_over
from tests.e2e.paper import wait_for
from tests.scaleout.workers import BOTS, LEASE_TTL_S, WORKERS, LeaseWatch, WorkersSession

IDENTITY_WORKER = {identity: worker for worker, identity in WORKERS.items()}


def test_the_lease_timeout_defaults_to_ten_seconds() -> None:
    assert EngineConfig().lease_ttl_s == 10


def test_two_workers_never_share_a_bot_and_a_killed_workers_bots_resume_on_the_other(
    tmp_path: Path, pg_schema: str
) -> None:
    session = WorkersSession(tmp_path, POLICY, BOTS, db_url=pg_schema)
    try:
        day = start_session(session, candles=720)  # 14.4 s of market
        banners = {w: json.loads(session.procs[w].banner) for w in WORKERS}
        started = [set(b["bots"]) for b in banners.values()]
        assert not started[0] & started[1], banners  # no bot started by both workers
        with LeaseWatch(session) as watch:
            wait_for(lambda: len(session.engine_fills()) >= 6, 60, "fills before the kill")
            held = session.leases()
            victim = max(WORKERS, key=lambda w: sum(o == w for o, _ in held.values()))
            survivor = next(w for w in WORKERS if w != victim)
            moved = sorted(b for b, (o, _) in held.items() if o == victim)
            assert moved, held
            proc = session.procs[victim].popen
            proc.kill()  # SIGKILL: no lease released, no goodbye
            proc.wait(timeout=30)
            killed_ms = int(time.time() * 1000)
            wait_for(
                lambda: all(o == survivor for o, _ in session.leases().values()),
                LEASE_TTL_S + 10,
                "the survivor holding every bot",
                every=0.05,
            )
            taken_ms = int(time.time() * 1000)
            wait_day_over(session, day)
            session.wait_settled()
        # taken over within the lease timeout, plus the survivor's supervisor cycle (1 s) and
        # a second of slack for a loaded machine
        assert taken_ms - killed_ms <= (LEASE_TTL_S + 2) * 1000, taken_ms - killed_ms
        assert_engine_matches_exchange(session)  # no order twice, none lost, books agree

        # at every sample each bot had exactly one owner, a worker that was alive and whose
        # lease had not run out -- except a dead worker's, until the survivor took it over
        last_dead_lease: dict[str, int] = {}
        assert len(watch.samples) > 50
        for at, leases in watch.samples:
            assert set(leases) == set(held)
            for bot, (owner, expires) in leases.items():
                assert owner in WORKERS, (at, bot, owner)
                if at < killed_ms:  # no bot moves while its worker is alive
                    assert owner == held[bot][0], (at, bot, owner)
                if owner == victim and at >= killed_ms:
                    last_dead_lease[bot] = expires or 0
                else:
                    assert (expires or 0) > at, (at, bot, owner, expires)
        # each bot's orders (every create and cancel the signer decided) came from one worker
        # at a time: the victim's bots switch once, after the victim's lease ran out
        export, report = session.audit_export()
        assert report["ok"], report
        bot_of = {o.client_order_id: o.bot for o in session.engine_orders()}
        senders: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for rec in audit_records(export):
            p = rec["payload"]
            if rec["kind"] == "decision" and p.get("client_order_id") in bot_of:
                worker = IDENTITY_WORKER[p["bot_id"]]
                senders[bot_of[p["client_order_id"]]].append((rec["ts_ms"], worker))
        for bot, seq in senders.items():
            workers = [w for _, w in seq]
            switches = sum(1 for a, b in zip(workers, workers[1:], strict=False) if a != b)
            if bot in moved:
                assert switches <= 1 and workers[0] == victim, (bot, workers)
                after = [t for t, w in seq if w == survivor]
                if after:
                    assert min(after) >= last_dead_lease.get(bot, 0), (bot, after[:1])
            else:
                assert set(workers) == {survivor}, (bot, workers)
        log = session.procs[survivor].log.read_text()
        for bot in moved:  # resumed from its saved state, not started afresh
            kind = "dca" if "dca" in bot else "grid"
            assert f"{bot}: {kind} on BTC/USDT, resumed" in log, bot
        print(
            f"\nsplit {banners}; killed {victim} holding {moved}; survivor held all after "
            f"{taken_ms - killed_ms} ms; orders per bot and worker: "
            f"{ {b: Counter(w for _, w in q) for b, q in senders.items()} }"
        )
    finally:
        session.stop()
