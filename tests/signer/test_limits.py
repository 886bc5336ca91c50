"""Limit counters: exact decimal windows, open-order slots, token bucket, and caps under races.

Real SQLite files (tmp_path) and, when BULKHEAD_TEST_PG_URL is set, real PostgreSQL in a private
schema with two OS processes. Time is injected (now_ms), never slept.
"""

from __future__ import annotations

import multiprocessing
import os
import secrets
import threading
from collections.abc import Iterator
from decimal import Context, Decimal, Inexact, localcontext
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, create_engine, func, select, text

from signer import limits
from signer.db import Base, make_engine, read_session, sqlite_url, write_txn
from signer.policy import IntentFacts, Policy, RefPrice, Usage, evaluate

D = Decimal
T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000
PG_URL = os.environ.get("BULKHEAD_TEST_PG_URL")
RACE_SYMBOLS = ("BTC/USDT", "ETH/USDT")
RACE_CAP = D("1000")


def make_policy(**changes: Any) -> Policy:
    base: dict[str, Any] = {
        "symbols": list(RACE_SYMBOLS), "sides": ["buy", "sell"], "order_types": ["limit"],
        "max_order_notional": "1000000", "max_notional_24h": "1000000", "max_open_orders": 100000,
        "orders_per_minute": 100000, "price_band_pct": "50", "reference_max_age_s": 60,
    }  # fmt: skip
    return Policy.model_validate({**base, **changes})


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = make_engine(sqlite_url(tmp_path))
    Base.metadata.create_all(eng, tables=limits.TABLES)
    yield eng
    eng.dispose()


def record(eng: Engine, coid: str, notional: str, now: int, symbol: str = "BTC/USDT",
           policy: Policy | None = None, key: str = "k1") -> None:  # fmt: skip
    with write_txn(eng) as s:
        limits.record_allowed(
            s, key, symbol, coid, "buy", D(notional), now, policy or make_policy()
        )


def usage_at(eng: Engine, now: int, symbol: str = "BTC/USDT", policy: Policy | None = None,
             key: str = "k1") -> Usage:  # fmt: skip
    with read_session(eng) as s:
        return limits.usage(s, key, symbol, now, policy or make_policy())


def outcome(eng: Engine, coid: str, status: str, key: str = "k1") -> None:
    with write_txn(eng) as s:
        limits.record_outcome(s, key, coid, status)


# --- basic accounting -----------------------------------------------------------------------


def test_an_allowed_order_counts_notional_a_token_and_an_open_slot(engine: Engine) -> None:
    p = make_policy(orders_per_minute=10)
    before = usage_at(engine, T0, policy=p)
    assert before.notional_24h_key == 0 and before.open_orders == 0 and before.tokens == 10
    record(engine, "a", "123.456789012345678901234567890123", T0, policy=p)
    record(engine, "b", "0.000000000000000000000000000001", T0, symbol="ETH/USDT", policy=p)
    u = usage_at(engine, T0, policy=p)
    assert u.notional_24h_key == D("123.456789012345678901234567890124")
    assert u.notional_24h_symbol == D("123.456789012345678901234567890123")
    assert u.open_orders == 2 and u.tokens == 8
    with read_session(engine) as s:
        snap = limits.counters_snapshot(s, "k1", T0)
    assert snap["used_24h_notional"] == "123.456789012345678901234567890124"
    assert snap["used_24h_notional_by_symbol"] == {
        "BTC/USDT": "123.456789012345678901234567890123",
        "ETH/USDT": "0.000000000000000000000000000001",
    }
    assert snap["open_orders"] == 2 and snap["tokens"] == "8"
    assert usage_at(engine, T0, key="other").notional_24h_key == 0  # keys are separate


def test_a_duplicate_client_order_id_is_detected_and_changes_nothing(engine: Engine) -> None:
    record(engine, "dup", "10", T0)
    with read_session(engine) as s:
        assert limits.order_exists(s, "k1", "dup") and not limits.order_exists(s, "k2", "dup")
    with pytest.raises(limits.DuplicateClientOrderId, match="dup"):
        record(engine, "dup", "20", T0 + 1)
    u = usage_at(engine, T0 + 1)
    assert u.notional_24h_key == 10 and u.open_orders == 1
    record(engine, "dup", "5", T0, key="k2")  # the same id on another key is fine


def test_outcomes_release_slots_and_only_unplaced_rejections_refund(engine: Engine) -> None:
    for coid in ("closed", "canceled", "rejected", "open-then-rejected", "still-open"):
        record(engine, coid, "100", T0)
    outcome(engine, "closed", "open")
    outcome(engine, "closed", "closed")
    outcome(engine, "canceled", "canceled")
    outcome(engine, "rejected", "rejected")
    outcome(engine, "open-then-rejected", "open")
    outcome(engine, "open-then-rejected", "rejected")
    outcome(engine, "still-open", "open")
    u = usage_at(engine, T0 + 1)
    assert u.open_orders == 1 and u.notional_24h_key == D("400")
    for status in ("rejected", "open", "closed"):  # terminal is final: no double release/refund
        outcome(engine, "rejected", status)
        outcome(engine, "closed", status)
    outcome(engine, "never-recorded", "rejected")  # unknown order: nothing to release
    assert usage_at(engine, T0 + 1) == u
    with pytest.raises(ValueError, match="status"):
        outcome(engine, "still-open", "filled")


# --- windows and refills by injected time ---------------------------------------------------


def test_notional_older_than_24_hours_stops_counting(engine: Engine) -> None:
    t = T0 + 17 * MINUTE + 1234  # not on any bucket boundary
    record(engine, "old", "7.5", t)
    record(engine, "newer", "2.5", t + 5 * HOUR)
    assert usage_at(engine, t + DAY - 1).notional_24h_key == D("10")
    assert usage_at(engine, t + DAY).notional_24h_key == D("2.5")
    assert usage_at(engine, t + 5 * HOUR + DAY - 1).notional_24h_key == D("2.5")
    assert usage_at(engine, t + 5 * HOUR + DAY).notional_24h_key == 0
    assert usage_at(engine, t + DAY).open_orders == 2  # the window does not close orders


def test_a_refund_also_leaves_the_oldest_minute_of_the_window(engine: Engine) -> None:
    """The window's oldest minute is summed from order rows: a refunded row must not count."""
    t = T0 + 5 * MINUTE + 30_000
    record(engine, "kept", "1", t)
    record(engine, "refunded", "2", t)
    outcome(engine, "refunded", "rejected")
    for when in (t, t + HOUR, t + DAY - 30_001, t + DAY - 1):
        assert usage_at(engine, when).notional_24h_key == 1, when
    assert usage_at(engine, t + DAY).notional_24h_key == 0


def test_pruning_keeps_what_a_slightly_lagging_replica_still_counts(engine: Engine) -> None:
    t = T0 + 20 * MINUTE + 5
    record(engine, "early", "3", t)
    record(engine, "later", "4", t + DAY + 10 * MINUTE)  # a new hour bucket: pruning runs
    assert usage_at(engine, t + DAY - 20 * MINUTE).notional_24h_key == 7  # lagging 30 min
    assert usage_at(engine, t + DAY + 10 * MINUTE).notional_24h_key == 4


def test_token_bucket_refills_with_time_up_to_its_burst(engine: Engine) -> None:
    p = make_policy(orders_per_minute=60, orders_burst=2)  # one token per second
    record(engine, "a", "1", T0, policy=p)
    record(engine, "b", "1", T0, policy=p)
    assert usage_at(engine, T0, policy=p).tokens == 0
    assert usage_at(engine, T0 + 999, policy=p).tokens == D("0.999")
    assert usage_at(engine, T0 + 1000, policy=p).tokens == 1
    assert usage_at(engine, T0 + 10 * MINUTE, policy=p).tokens == 2  # capped at the burst
    i = IntentFacts("BTC/USDT", "buy", "limit", D("1"), D("1"), T0 + 999)
    ref = RefPrice(D("1"), T0)
    u = usage_at(engine, T0 + 999, policy=p)
    assert evaluate(p, i, u, ref, global_frozen=False, key_frozen=False).rule_ids == ("rate_limit",)
    u = usage_at(engine, T0 + 1000, policy=p)
    assert evaluate(p, i, u, ref, global_frozen=False, key_frozen=False).allowed
    with read_session(engine) as s:
        assert limits.counters_snapshot(s, "k1", T0 + 1500)["tokens"] == "1.5"


NOTIONALS = st.decimals(min_value=D("1e-30"), max_value=D("100000"), places=30)


@pytest.fixture(scope="module")
def shared_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    eng = make_engine(sqlite_url(tmp_path_factory.mktemp("limits")))
    Base.metadata.create_all(eng, tables=limits.TABLES)
    yield eng
    eng.dispose()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(
        st.tuples(
            st.integers(0, 4 * HOUR),  # gap since the previous order
            st.sampled_from(RACE_SYMBOLS),
            NOTIONALS,
            st.sampled_from(["keep", "keep", "reject", "close"]),
            st.integers(0, 26 * HOUR),  # when to look, after this order
        ),
        min_size=1,
        max_size=20,
    )
)
def test_rolling_window_matches_a_brute_force_sum(
    shared_engine: Engine, steps: list[tuple[int, str, Decimal, str, int]]
) -> None:
    key, policy = secrets.token_hex(8), make_policy()
    now, placed = T0 + 59_999, []  # start just before a minute boundary
    with write_txn(shared_engine) as s, localcontext(Context(prec=200, traps=[Inexact])):
        for n, (gap, symbol, notional, fate, look) in enumerate(steps):
            now += gap
            limits.record_allowed(s, key, symbol, f"o{n}", "sell", notional, now, policy)
            if fate != "keep":
                limits.record_outcome(s, key, f"o{n}", "rejected" if fate == "reject" else "closed")
            placed.append((now, symbol, D(0) if fate == "reject" else notional))
            # now - 30 min: a replica whose clock lags a little must still read exact sums.
            for when in (now - 30 * MINUTE, now, now + look):
                check_window(s, key, symbol, when, placed)
        # Exactly at each order's expiry, and 1 ms before it.
        for t, symbol, _ in placed:
            for when in (t + DAY - 1, t + DAY):
                if when >= now:
                    check_window(s, key, symbol, when, placed)


def check_window(s: Any, key: str, symbol: str, when: int, placed: list[Any]) -> None:
    u = limits.usage(s, key, symbol, when, make_policy())
    live = [(sym, x) for t, sym, x in placed if t > when - DAY]
    assert u.notional_24h_key == sum((x for _, x in live), D(0))
    assert u.notional_24h_symbol == sum((x for sym, x in live if sym == symbol), D(0))


def test_old_buckets_are_pruned_and_usage_stays_exact(engine: Engine) -> None:
    """Three days of one order every 10 minutes: the bucket table stays ~one window deep."""
    p = make_policy()
    with write_txn(engine) as s:
        for n in range(3 * 24 * 6):
            limits.record_allowed(
                s, "k1", "BTC/USDT", f"o{n}", "buy", D("0.1"), T0 + n * 10 * MINUTE, p
            )
        buckets = s.execute(select(func.count()).select_from(limits.NotionalBucket)).scalar_one()
        u = limits.usage(s, "k1", "BTC/USDT", T0 + (3 * 24 * 6 - 1) * 10 * MINUTE, p)
    assert u.notional_24h_key == D("14.4")  # exactly 144 orders of 0.1 in the last 24 h
    assert buckets <= 2 * (26 * 6 + 26)  # minute + hour buckets of ~26 h, not 3 days


# --- caps under concurrency -----------------------------------------------------------------


def race_policy() -> Policy:
    return make_policy(max_notional_24h=str(RACE_CAP))


def race_notional(idx: int) -> tuple[Decimal, Decimal]:
    """Distinct amounts at an odd price: about half of the 50 intents fit under the cap."""
    return D("0.7") * (idx + 1), D("3.00000071")


def attempt(eng: Engine, key: str, idx: int) -> tuple[str, bool]:
    """One intent the way the signer handles it: usage -> evaluate -> record, under the lock."""
    policy, symbol = race_policy(), RACE_SYMBOLS[idx % 2]
    amount, price = race_notional(idx)
    now = T0 + idx
    facts = IntentFacts(symbol, "buy", "limit", amount, price, now)
    with write_txn(eng) as s:
        u = limits.usage(s, key, symbol, now, policy)
        d = evaluate(policy, facts, u, RefPrice(price, T0), global_frozen=False, key_frozen=False)
        if d.allowed:
            assert d.notional is not None
            limits.record_allowed(s, key, symbol, f"race-{idx}", "buy", d.notional, now, policy)
    return str(d.notional), d.allowed


def race_threads(eng: Engine, key: str, indices: list[int]) -> list[tuple[str, bool]]:
    barrier = threading.Barrier(len(indices))
    results: list[tuple[str, bool]] = []
    errors: list[BaseException] = []

    def run(idx: int) -> None:
        barrier.wait()
        try:
            results.append(attempt(eng, key, idx))
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in indices]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


def check_race(results: list[tuple[str, bool]], snapshot: dict[str, Any]) -> None:
    assert len(results) == 50
    allowed = [D(n) for n, ok in results if ok]
    denied = [D(n) for n, ok in results if not ok]
    total = sum(allowed, D(0))
    assert allowed and denied, "the cap must bind for this test to mean anything"
    assert total <= RACE_CAP
    assert D(snapshot["used_24h_notional"]) == total  # exactly, not approximately
    assert snapshot["open_orders"] == len(allowed)
    assert all(total + n > RACE_CAP for n in denied), "an intent that fitted was denied"


def test_fifty_threads_never_jointly_pass_the_cap_on_sqlite(engine: Engine) -> None:
    results = race_threads(engine, "racer", list(range(50)))
    with read_session(engine) as s:
        check_race(results, limits.counters_snapshot(s, "racer", T0 + 50))


def pg_engine(schema: str) -> Engine:
    assert PG_URL
    return create_engine(PG_URL, connect_args={"options": f"-csearch_path={schema}"},
                         pool_size=5, max_overflow=25, pool_pre_ping=True)  # fmt: skip


def _pg_process(schema: str, key: str, indices: list[int], start: Any, out: Any) -> None:
    """Runs in a spawned child process: own interpreter, engine and connections."""
    eng = pg_engine(schema)
    try:
        with eng.connect():
            pass
        start.wait(timeout=60)  # both processes connected: now race
        out.put(race_threads(eng, key, indices))
    except BaseException as e:
        out.put(repr(e))
    finally:
        eng.dispose()


@pytest.mark.pg
def test_two_processes_of_25_threads_never_jointly_pass_the_cap_on_postgresql() -> None:
    if not PG_URL:
        pytest.skip("BULKHEAD_TEST_PG_URL is not set")
    schema = f"limits_test_{secrets.token_hex(6)}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        eng = pg_engine(schema)
        Base.metadata.create_all(eng, tables=limits.TABLES)
        ctx = multiprocessing.get_context("spawn")
        start, out = ctx.Barrier(3), ctx.Queue()
        procs = [ctx.Process(target=_pg_process, args=(schema, "pgracer", list(r), start, out))
                 for r in (range(0, 50, 2), range(1, 50, 2))]  # fmt: skip
        for p in procs:
            p.start()
        start.wait(timeout=60)
        results: list[tuple[str, bool]] = []
        for _ in procs:
            got = out.get(timeout=120)
            assert isinstance(got, list), got
            results += got
        for p in procs:
            p.join(timeout=30)
            assert p.exitcode == 0
        with read_session(eng) as s:
            check_race(results, limits.counters_snapshot(s, "pgracer", T0 + 50))
        eng.dispose()
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
