"""The engine store on SQLite and PostgreSQL: bots, orders, fills, deals, snapshots, leases."""

from __future__ import annotations

import json
import stat
import threading
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import text

from botengine import leases
from botengine import store as st
from botengine.config import make_strategy, parse_bot_config
from botengine.model import Deal, Fill, Place, Tick
from botengine.status import bot_status, format_status
from tests.botengine.conftest import DCA
from tests.botengine.support import BTC


def dca_text(name: str) -> str:
    return DCA.replace('name = "d1"', f'name = "{name}"')


@pytest.fixture
def store(db_url: str, tmp_path: Path) -> st.Store:
    s = st.Store(db_url, tmp_path / "engine-data")
    with s.write() as ses:
        st.add_bot(ses, parse_bot_config(DCA), DCA, 1000)
    yield s
    s.close()


def test_a_bot_is_stored_with_its_config_and_a_second_one_of_that_name_is_refused(
    store: st.Store,
) -> None:
    with store.read() as s:
        row = st.get_bot(s, "d1")
    assert (row.bot_type, row.symbol, row.key_id, row.status, row.enabled) == (
        "dca", "BTC/USDT", "k1", "running", True,
    )  # fmt: skip
    assert parse_bot_config(row.config_toml).dca is not None
    with pytest.raises(st.StoreError, match="name: bot 'd1' already exists"), store.write() as s:
        st.add_bot(s, parse_bot_config(DCA), DCA, 2000)
    with store.read() as s:
        assert [b.name for b in st.list_bots(s)] == ["d1"]
        with pytest.raises(st.StoreError, match="no bot named 'zz'"):
            st.get_bot(s, "zz")


def test_a_denial_pauses_the_bot_and_status_shows_rule_and_message(store: st.Store) -> None:
    with store.write() as s:
        st.record_denial(s, "d1", ["notional_cap", "price_band"], "notional 100 exceeds 50", 5000)
    with store.read() as s:
        info = bot_status(s, "d1")
    assert info["status"] == "paused"
    assert info["last_denial"] == {
        "rules": ["notional_cap", "price_band"],
        "message": "notional 100 exceeds 50",
        "at_ms": 5000,
    }
    assert "last denial: notional_cap, price_band: notional 100 exceeds 50" in format_status(info)
    with store.write() as s:
        st.set_status(s, "d1", "running", 6000)
    with store.read() as s:
        row = st.get_bot(s, "d1")
        assert (row.status, row.enabled) == ("running", True)
    with pytest.raises(st.StoreError, match="status: 'gone' is not allowed"), store.write() as s:
        st.set_status(s, "d1", "gone", 7000)


def test_an_order_is_recorded_once_per_client_order_id(store: st.Store) -> None:
    place = Place("d1-1-so1", "buy", Decimal("0.002"), Decimal("59000.10"), "safety-1")
    with store.write() as s:
        first = st.add_order(s, "d1", "BTC/USDT", place, 1)
        again = st.add_order(s, "d1", "BTC/USDT", place, 2)  # the same order re-derived
        assert first.id == again.id
    with store.read() as s:
        (row,) = st.orders_of(s, "d1")
    assert (row.state, row.amount, row.price, row.order_type) == (
        "intent", "0.002", "59000.10", "limit",
    )  # fmt: skip
    other = Place("d1-1-so1", "sell", Decimal("0.5"), None, "x")
    with pytest.raises(st.StoreError, match="already used by a different order"):
        with store.write() as s:
            st.add_order(s, "d1", "BTC/USDT", other, 3)


def test_a_failed_transaction_leaves_no_fill_order_or_snapshot_behind(store: st.Store) -> None:
    place = Place("d1-1-base", "buy", Decimal("0.002"), None, "base")
    with store.write() as s:
        st.add_order(s, "d1", "BTC/USDT", place, 1)
    fill = Fill("d1-1-base", "buy", Decimal("60000"), Decimal("0.002"), Decimal("0.000002"),
                "BTC", 10)  # fmt: skip
    with pytest.raises(RuntimeError), store.write() as s:
        st.record_fill(s, "d1", fill, ["7"], 11)
        st.add_order(s, "d1", "BTC/USDT", Place("d1-1-tp0", "sell", Decimal("0.001"),
                                                 Decimal("61000"), "take-profit"), 11)  # fmt: skip
        st.save_snapshot(s, "d1", {"kind": "dca", "n": 1}, 11)
        raise RuntimeError("crash before commit")
    with store.read() as s:
        assert [o.client_order_id for o in st.orders_of(s, "d1")] == ["d1-1-base"]
        assert st.orders_of(s, "d1")[0].state == "intent"
        assert st.fills_of(s, "d1") == [] and st.load_snapshot(s, "d1") is None
    with store.write() as s:
        st.record_fill(s, "d1", fill, ["7"], 12)
        st.save_snapshot(s, "d1", {"kind": "dca", "n": 1}, 12)
    with store.read() as s:
        (f,) = st.fills_of(s, "d1")
        assert (f.price, f.amount, f.fee, f.fee_asset, json.loads(f.trade_ids)) == (
            "60000", "0.002", "0.000002", "BTC", ["7"],
        )  # fmt: skip
        assert st.order_by_coid(s, "d1-1-base").state == "filled"  # type: ignore[union-attr]
        assert st.load_snapshot(s, "d1") == {"kind": "dca", "n": 1}


def test_cancel_requests_and_closed_deals_with_their_pnl(store: st.Store) -> None:
    place = Place("d1-1-tp0", "sell", Decimal("0.002"), Decimal("61000"), "take-profit")
    deal = Deal(1, 100, 900, Decimal("0.002"), Decimal("120"), Decimal("0.002"),
                Decimal("121.5"), Decimal("0.2"), 1, ["d1-1-base", "d1-1-tp0"])  # fmt: skip
    with store.write() as s:
        st.add_order(s, "d1", "BTC/USDT", place, 1)
        assert st.request_cancel(s, "d1-1-tp0", 2) is not None
        assert st.request_cancel(s, "nope", 2) is None
        st.add_deals(s, "d1", [deal, Deal(2, 950)])  # an open deal is not stored
    with store.read() as s:
        assert st.order_by_coid(s, "d1-1-tp0").cancel_requested  # type: ignore[union-attr]
        (row,) = st.deals_of(s, "d1")
        info = bot_status(s, "d1")
    assert (row.pnl, json.loads(row.orders)) == ("1.5", ["d1-1-base", "d1-1-tp0"])
    assert info["realised_pnl"] == "1.5" and info["closed_deals"] == 1


def test_the_sqlite_store_is_private_and_in_wal_mode(tmp_path: Path) -> None:
    data = tmp_path / "engine-data"
    s = st.Store(f"sqlite:///{data / 'engine.db'}", data)
    try:
        with s.read() as ses:
            assert ses.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        assert stat.S_IMODE((data / "engine.db").stat().st_mode) == 0o600
    finally:
        s.close()


# --- leases -----------------------------------------------------------------------------------


def test_each_bot_is_leased_to_exactly_one_worker_and_taken_over_when_it_expires(
    store: st.Store,
) -> None:
    with store.write() as s:
        for n in range(2, 7):
            st.add_bot(s, parse_bot_config(dca_text(f"d{n}")), dca_text(f"d{n}"), 1)
    ttl = 10_000
    with store.write() as s:
        a = leases.acquire(s, "worker-a", 1_000, ttl, limit=3)
    with store.write() as s:
        b = leases.acquire(s, "worker-b", 1_001, ttl)
    assert len(a) == 3 and len(b) == 3 and not set(a) & set(b)
    with store.write() as s:  # renewing keeps them; another worker cannot renew them
        assert leases.renew(s, "worker-a", a, 5_000, ttl) == a
        assert leases.renew(s, "worker-b", a, 5_000, ttl) == []
    with store.write() as s:  # worker-b's leases ran out (it died): worker-a takes them over
        taken = leases.acquire(s, "worker-a", 1_001 + ttl + 1, ttl)
    assert sorted(taken) == sorted(a + b)
    with store.read() as s:
        assert leases.holder(s, b[0], 1_001 + ttl + 2) == "worker-a"
    with store.write() as s:
        leases.release(s, "worker-a", taken)
        st.set_status(s, "d2", "paused", 1)
    with store.write() as s:  # a paused bot is not run by anyone
        assert "d2" not in leases.acquire(s, "worker-b", 2 * ttl, ttl)


def test_workers_claiming_at_the_same_moment_never_share_a_bot(store: st.Store) -> None:
    with store.write() as s:
        for n in range(2, 13):
            st.add_bot(s, parse_bot_config(dca_text(f"d{n}")), dca_text(f"d{n}"), 1)
    claims: dict[str, list[str]] = {}
    barrier = threading.Barrier(4)

    def claim(worker: str) -> None:
        barrier.wait()
        with store.write() as s:
            claims[worker] = leases.acquire(s, worker, 1_000, 60_000, limit=4)

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    every = [name for names in claims.values() for name in names]
    assert len(every) == len(set(every)) == 12


def test_status_shows_the_open_deal_from_the_strategys_own_snapshot(store: st.Store) -> None:
    strategy = make_strategy(parse_bot_config(DCA), BTC)
    (base,) = strategy.on_start(Tick(1_000, Decimal("60000")))
    assert isinstance(base, Place)
    strategy.on_fill(Fill(base.client_order_id, "buy", Decimal("60000"), base.amount,
                          Decimal("0.000002"), "BTC", 2_000))  # fmt: skip
    with store.write() as s:
        st.save_snapshot(s, "d1", strategy.snapshot(), 2_000)
    with store.read() as s:
        info = bot_status(s, "d1")
    (deal,) = info["open_deals"]
    assert (deal["deal_id"], deal["bought"], deal["average_price"]) == (
        1,
        str(base.amount),
        "60000",
    )
    assert f"open deal 1: bought {base.amount} for " in format_status(info)
