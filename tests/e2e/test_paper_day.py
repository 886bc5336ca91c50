"""Paper trading end to end: simexchange, the signer and `bulkhead run` as three processes; a
DCA bot and a grid bot trade one real day of BTC/USDT (replayed in under 30 s), then the
exchange, the engine's records and the signer's audit log must agree, and the engine must hold
no trace of the exchange secret."""

from __future__ import annotations

import json
import os
from decimal import Decimal

from botengine import store as st
from tests.e2e.checks import assert_engine_matches_exchange, audit_records
from tests.e2e.memscan import encodings, scan_files, scan_memory
from tests.e2e.paper import ENGINE_ID, PaperSession


def test_a_simulated_day_fills_on_the_exchange_match_the_engine_records(
    paper_day: PaperSession,
) -> None:
    counts = assert_engine_matches_exchange(paper_day)
    store = paper_day.engine_store()
    try:
        with store.read() as s:
            dca = st.deals_of(s, "btc-dca")
            grid = st.deals_of(s, "btc-grid")
            paused = [b.name for b in st.list_bots(s) if b.status != "running"]
    finally:
        store.close()
    assert not paused, f"bots paused during the day: {paused}"
    assert len(dca) >= 1, "the DCA bot closed no deal in a day that ranged 2.9 %"
    assert len(grid) >= 5, "the grid bot made fewer than 5 round trips"
    fills = {f.client_order_id: f for f in paper_day.engine_fills()}
    for d in dca:  # each deal closed at its take profit: 0.5 % above the average entry
        legs = [fills[c] for c in json.loads(d.orders)]
        buys = [f for f in legs if f.side == "buy"]
        (sell,) = [f for f in legs if f.side == "sell"]
        bought = sum((Decimal(f.amount) for f in buys), Decimal(0))
        avg = sum((Decimal(f.price) * Decimal(f.amount) for f in buys), Decimal(0)) / bought
        assert Decimal(sell.price) >= avg * Decimal("1.005") and Decimal(d.pnl) != 0
    assert counts["trades"] == counts["fills"] >= len(dca) * 2 + len(grid) * 2


def test_every_exchange_order_is_in_the_signer_audit_log_which_verifies(
    paper_day: PaperSession,
) -> None:
    export, report = paper_day.audit_export()
    assert report["ok"] is True, report
    records = audit_records(export)
    allowed_creates = {
        r["payload"]["client_order_id"]
        for r in records
        if r["kind"] == "decision"
        and r["payload"]["action"] == "create"
        and r["payload"]["allowed"]
        and r["payload"]["bot_id"] == ENGINE_ID
    }
    outcomes = {
        r["payload"]["client_order_id"]
        for r in records
        if r["kind"] == "outcome" and r["payload"]["action"] == "create"
    }
    cancels = {
        r["payload"]["client_order_id"]
        for r in records
        if r["kind"] == "decision"
        and r["payload"]["action"] == "cancel"
        and r["payload"]["allowed"]
    }
    orders = paper_day.exchange_orders()
    placed = {o["clientOrderId"] for o in orders}
    assert placed and placed <= allowed_creates, placed - allowed_creates
    assert placed <= outcomes, placed - outcomes
    cancelled = {o["clientOrderId"] for o in orders if o["status"] == "CANCELED"}
    assert cancelled <= cancels, cancelled - cancels
    assert allowed_creates <= placed, "the signer allowed orders that never reached the exchange"


def test_the_engine_holds_no_byte_of_the_exchange_secret_in_memory_files_logs_or_environment(
    paper_day: PaperSession,
) -> None:
    engine = paper_day.procs["engine"].popen
    assert engine.poll() is None, "the engine must still be running for the memory scan"
    secret_forms = encodings(paper_day.secret) + encodings(paper_day.api_key)
    # positive controls: the scanner finds what the engine does hold (its bots' order ids) and
    # finds the secret in a process that must hold it (the exchange simulator checks HMACs)
    marker = b"btc-grid-"
    found, scanned = scan_memory(engine.pid, [*secret_forms, marker])
    assert scanned > 10_000_000 and marker in found
    assert not (found & set(secret_forms)), "the exchange secret or API key is in engine memory"
    sim_found, _ = scan_memory(paper_day.procs["simexchange"].popen.pid, secret_forms[:1])
    assert sim_found, "control: the simulator's memory must contain the secret"

    environ = open(f"/proc/{engine.pid}/environ", "rb").read()  # noqa: SIM115
    assert not any(f in environ for f in secret_forms)
    assert scan_files(paper_day.engine_dir, secret_forms) == {}  # config, key, data dir, db
    assert scan_files(paper_day.procs["engine"].log, secret_forms) == {}
    assert paper_day.procs["engine"].log.stat().st_size > 0
    assert os.listdir(paper_day.engine_data)  # the data dir was there to scan
