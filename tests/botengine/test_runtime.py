"""The runtime against a real signer (gRPC on Unix sockets) and simexchange: an unreachable
signer, a lost answer, a crash between deciding and sending, bot stop/start. Every order must
reach the exchange exactly once, whatever goes wrong on the way."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from botengine import store as st
from botengine.signer_client import Identity
from signer.server import SignerServer
from tests.botengine.conftest import (
    add_bot,
    engine_config,
    order_row,
    orders_on_exchange,
    running,
)
from tests.botengine.faults import AnswerDroppingProxy
from tests.e2e.paper import wait_for
from tests.signer.stack import Stack

BASE = "d1-1-base"


def settled_dca(config: object) -> bool:
    """Base order filled, take profit and first safety order resting."""
    rows = [order_row(config, c) for c in (BASE, "d1-1-so1", "d1-1-tp0")]  # type: ignore[arg-type]
    return [r.state if r else None for r in rows] == ["filled", "open", "open"]


def test_an_unreachable_signer_is_retried_with_backoff_and_the_order_is_placed_once(
    signer_stack: Stack, tmp_path: Path
) -> None:
    config = engine_config(tmp_path, signer_stack)
    add_bot(config)
    signer_stack.server.stop(0)  # the signer is down: every call is UNAVAILABLE
    with running(config):

        def retried() -> bool:
            row = order_row(config, BASE)
            return row is not None and row.attempts >= 3

        wait_for(retried, 30, "three attempts at the base order while the signer is down")
        row = order_row(config, BASE)
        assert row is not None and row.state == "submitted" and row.exchange_order_id is None
        assert orders_on_exchange(signer_stack) == []
        signer_stack.server = SignerServer(signer_stack.opened)
        signer_stack.server.start()  # same socket path: the engine's next retry gets through
        wait_for(lambda: settled_dca(config), 30, "the deal to be placed once the signer is up")
    placed = Counter(orders_on_exchange(signer_stack))
    assert placed[BASE] == 1 and set(placed.values()) == {1}


def test_orders_recorded_before_a_crash_are_sent_by_the_restarted_engine_exactly_once(
    signer_stack: Stack, tmp_path: Path, db_url: str
) -> None:
    """On SQLite and on PostgreSQL."""
    config = engine_config(tmp_path, signer_stack, database_url=db_url)
    add_bot(config)
    signer_stack.server.stop(0)
    with running(config):  # decides, records the base order, cannot send it
        wait_for(lambda: order_row(config, BASE), 30, "the base order to be recorded")
    # "crash": this engine is gone; a new one starts with the signer back up
    signer_stack.server = SignerServer(signer_stack.opened)
    signer_stack.server.start()
    with running(config):
        wait_for(lambda: settled_dca(config), 30, "the restarted engine to carry out the deal")
    placed = Counter(orders_on_exchange(signer_stack))
    assert placed == Counter({BASE: 1, "d1-1-so1": 1, "d1-1-tp0": 1})


def test_an_order_whose_answer_was_lost_is_adopted_not_placed_again(
    signer_stack: Stack, tmp_path: Path
) -> None:
    sock = Path(signer_stack.addresses["bot_unix"].removeprefix("unix://"))
    proxy = AnswerDroppingProxy(tmp_path / "proxy.sock", sock)
    try:
        config = engine_config(tmp_path, signer_stack, address=proxy.address)
        add_bot(config)
        with running(config):
            # the signer places the base order; the engine never hears back
            wait_for(lambda: BASE in orders_on_exchange(signer_stack), 30, "the base order")
            row = order_row(config, BASE)
            assert row is not None and row.state == "submitted"
            proxy.heal()
            wait_for(lambda: settled_dca(config), 30, "the engine to adopt the placed order")
    finally:
        proxy.close()
    placed = Counter(orders_on_exchange(signer_stack))
    assert placed[BASE] == 1 and set(placed.values()) == {1}
    decisions = [
        r["payload"]
        for r in signer_stack.audit_records("decision")
        if r["payload"]["client_order_id"] == BASE
    ]
    assert [d["allowed"] for d in decisions if d["action"] == "create"].count(True) == 1


def test_an_order_sent_but_not_recorded_before_a_crash_is_adopted_on_restart(
    signer_stack: Stack, tmp_path: Path
) -> None:
    config = engine_config(tmp_path, signer_stack)
    add_bot(config)
    with running(config):
        wait_for(lambda: settled_dca(config), 30, "the deal to be placed")
    store = st.Store(config.db_url(), config.data_dir)
    try:  # as if the engine died after sending the take profit, before storing the answer
        with store.write() as s:
            st.update_order(s, "d1-1-tp0", st.now_ms(), state="submitted",
                            exchange_order_id=None, exchange_status=None)  # fmt: skip
    finally:
        store.close()
    with running(config):
        wait_for(lambda: settled_dca(config), 30, "the restarted engine to adopt the order")
    row = order_row(config, "d1-1-tp0")
    assert row is not None and row.exchange_order_id  # learnt from the exchange again
    assert Counter(orders_on_exchange(signer_stack))["d1-1-tp0"] == 1


def test_bot_stop_ends_its_runner_and_bot_start_resumes_it_without_new_orders(
    signer_stack: Stack, tmp_path: Path
) -> None:
    config = engine_config(tmp_path, signer_stack)
    add_bot(config)
    store = st.Store(config.db_url(), config.data_dir)
    try:
        with running(config) as runtime:
            wait_for(lambda: settled_dca(config), 30, "the deal to be placed")
            with store.write() as s:
                st.set_status(s, "d1", "stopped", st.now_ms())
            wait_for(lambda: not runtime.running, 10, "the runner to stop")
            before = Counter(orders_on_exchange(signer_stack))
            with store.write() as s:
                st.set_status(s, "d1", "running", st.now_ms())
            wait_for(lambda: "d1" in runtime.running, 10, "the runner to start again")
            wait_for(lambda: settled_dca(config), 10, "the resumed bot to be settled")
        assert Counter(orders_on_exchange(signer_stack)) == before
    finally:
        store.close()


def test_a_signer_refusal_pauses_the_bot_with_the_signers_rule_id(
    signer_stack: Stack, tmp_path: Path
) -> None:
    """An identity the signer does not know: UNAUTHENTICATED, never retried, bot paused."""
    stranger = tmp_path / "stranger.key"
    stranger.write_text(bytes(Identity.generate("x").signing_key).hex())
    stranger.chmod(0o600)
    config = engine_config(tmp_path, signer_stack)
    signer = config.signer.model_copy(update={"identity_key": stranger})  # type: ignore[union-attr]
    config = config.model_copy(update={"signer": signer})
    add_bot(config)
    store = st.Store(config.db_url(), config.data_dir)
    try:
        with running(config) as runtime:
            wait_for(lambda: not runtime.running and bot_paused(store), 30, "the pause")
        with store.read() as s:
            denial = st.denial_of(st.get_bot(s, "d1"))
        assert denial is not None and denial["rules"] == ["bad_signature"]
        assert orders_on_exchange(signer_stack) == []
    finally:
        store.close()


def bot_paused(store: st.Store) -> bool:
    with store.read() as s:
        return st.get_bot(s, "d1").status == "paused"
