"""Several signer replicas on one PostgreSQL, as real `bulkhead-signer serve` processes.

Already covered elsewhere, not repeated here: two replicas racing one cap in sign-only mode
(tests/signer/test_caps_under_contention.py) and 64 clients over two replicas with the cap
replayed decision by decision (tests/reliability/contention.py). Added here: three replicas
in submit mode (real orders, outcome records written by every replica) with the log exported
and verified by the real CLI; a replica killed with SIGKILL mid-burst while the others keep
serving; and the engine's client failing over between replica addresses without doubling an
order.
"""

from __future__ import annotations

import threading
from collections import Counter
from decimal import Decimal
from pathlib import Path

import grpc

from botengine.model import Place
from botengine.orders import Duplicate, SignerGateway
from tests.reliability.invariants import Ledger, counters_match_audit, exchange_matches_audit
from tests.reliability.processes import wait_until
from tests.scaleout.replicas import (
    CAP,
    KEY_ID,
    ReplicaSet,
    cap_policy,
    start_replica_set,
    wait_reconciled,
)

AMOUNT = "0.001"


def test_three_replicas_keep_the_cap_exact_and_one_verifiable_chain_in_submit_mode(
    replicas: ReplicaSet,
) -> None:
    price = replicas.sim.limit_price(factor="0.98")
    notional = price * Decimal(AMOUNT)
    want_allowed = int(CAP // notional)
    threads_n, per_thread = 12, 4
    assert threads_n * per_thread > want_allowed  # the cap is contended
    gate = threading.Barrier(threads_n)
    answered: Counter[int] = Counter()  # replica index -> decisions it answered
    allowed: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        replica = i % len(replicas.signers)
        client = replicas.client(replicas.addresses[replica], f"bot-{i % 6}")
        gate.wait(timeout=60)
        for j in range(per_thread):
            coid = f"burst-{i}-{j}"
            try:
                reply = client.submit_order("BTC/USDT", "buy", "limit", AMOUNT, price, coid)
            except grpc.RpcError as e:
                errors.append(f"{coid}: {e.code().name} {e.details()}")
                continue
            with lock:
                answered[replica] += 1
            rules = {v.rule_id for v in reply.decision.violations}
            if reply.decision.allowed:
                allowed.append(coid)
                if reply.order.status != "open":
                    errors.append(f"{coid}: allowed but {reply.order.status!r} {reply}")
            elif rules != {"notional_24h_cap"}:
                errors.append(f"{coid}: denied for {sorted(rules)}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert sorted(answered) == [0, 1, 2], answered  # every replica decided some of them
    assert len(allowed) == want_allowed

    report, records = replicas.auditor.snapshot()
    assert report.ok, report.summary
    ledger = Ledger.replay(records)
    # replayed in log order, the cap held at every step, and every denial was at the cap
    used = Decimal(0)
    for rec in sorted(records, key=lambda r: r["seq"]):
        p = rec["payload"]
        if rec["kind"] == "decision" and p.get("action") == "create":
            if p["allowed"]:
                used += Decimal(p["notional"])
                assert used <= CAP, p["client_order_id"]
            else:
                assert used + Decimal(p["notional"]) > CAP, p["client_order_id"]
    assert exchange_matches_audit(ledger, replicas.sim.orders()) == []
    assert sorted(c for (_, c) in ledger.orders) == sorted(allowed)
    view = replicas.client(replicas.addresses[1]).get_policy()
    assert counters_match_audit(ledger, KEY_ID, view.used_24h_notional, view.open_orders) == []
    ok, cli_report = replicas.auditor.cli_export_and_verify()  # the real export + verify
    assert ok, cli_report


class Burst:
    """One bot per thread, each on one replica, sending orders until told to stop."""

    def __init__(self, rs: ReplicaSet, price: Decimal) -> None:
        self.rs, self.price = rs, price
        self.stop = threading.Event()
        self.sent = 0
        self.failed: dict[int, str] = {}  # thread -> the first RPC error it met
        self._lock = threading.Lock()

    def run(self, i: int, replica: int) -> None:
        client = self.rs.client(self.rs.addresses[replica], f"bot-{i}")
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                client.submit_order("BTC/USDT", "buy", "limit", AMOUNT, self.price, f"k-{i}-{n}")
            except grpc.RpcError as e:
                self.failed[i] = f"replica {replica}: {e.code().name}"
                return
            with self._lock:
                self.sent += 1


def test_a_replica_killed_mid_burst_loses_nothing_and_the_others_reconcile_it(
    tmp_path: Path, pg_schema: str
) -> None:
    rs = start_replica_set(tmp_path, pg_schema, count=3, policy=cap_policy(Decimal(10**9)))
    try:
        burst = Burst(rs, rs.sim.limit_price(factor="0.98"))
        threads = [threading.Thread(target=burst.run, args=(i, i % 3)) for i in range(6)]
        for t in threads:
            t.start()
        wait_until("20 answered orders", lambda: burst.sent >= 20, timeout=60, every=0.005)
        victim = rs.signers[1]
        victim.kill9()  # requests to it are in flight at this moment
        killed_at = burst.sent
        wait_until(
            "the surviving replicas answering 20 more",
            lambda: burst.sent >= killed_at + 20,
            timeout=60,
            every=0.01,
        )
        burst.stop.set()
        for t in threads:
            t.join(timeout=60)
        # only the dead replica's bots met an error, and only UNAVAILABLE
        assert set(burst.failed) == {1, 4}, burst.failed
        assert all(v == "replica 1: UNAVAILABLE" for v in burst.failed.values()), burst.failed
        wait_reconciled(rs)  # no allowed order left without an outcome
        report, records = rs.auditor.snapshot()
        assert report.ok, report.summary
        ledger = Ledger.replay(records)
        assert exchange_matches_audit(ledger, rs.sim.orders()) == []
        view = rs.client(rs.addresses[0]).get_policy()
        assert counters_match_audit(ledger, KEY_ID, view.used_24h_notional, view.open_orders) == []
        ok, cli_report = rs.auditor.cli_export_and_verify()
        assert ok, cli_report
    finally:
        rs.stop()


def test_the_client_fails_over_to_another_replica_and_an_order_is_not_doubled(
    tmp_path: Path, pg_schema: str
) -> None:
    rs = start_replica_set(tmp_path, pg_schema, count=2)
    try:
        price = rs.sim.limit_price(factor="0.98")
        client = rs.client(rs.addresses)  # both replica addresses, the first one current
        gateway = SignerGateway(client)  # the engine's view of the same client
        first = client.submit_order("BTC/USDT", "buy", "limit", AMOUNT, price, "fo-1")
        assert first.decision.allowed and first.order.status == "open"
        rs.signers[0].kill9()
        # the engine did not see the answer (say) and sends the same order again
        again = gateway.submit("BTC/USDT", Place("fo-1", "buy", Decimal(AMOUNT), price, "base"))
        assert isinstance(again, Duplicate)
        adopted = gateway.order("BTC/USDT", "fo-1")
        assert adopted is not None
        assert adopted.exchange_order_id == first.order.exchange_order_id
        nxt = client.submit_order("BTC/USDT", "buy", "limit", AMOUNT, price, "fo-2")
        assert nxt.decision.allowed and nxt.order.status == "open"
        on_exchange = Counter(o["clientOrderId"] for o in rs.sim.orders())
        assert on_exchange == Counter({"fo-1": 1, "fo-2": 1})
        report, records = rs.auditor.snapshot()
        assert report.ok, report.summary
        assert exchange_matches_audit(Ledger.replay(records), rs.sim.orders()) == []
    finally:
        rs.stop()


def test_calls_in_flight_when_their_replica_dies_are_answered_by_another(
    tmp_path: Path, pg_schema: str
) -> None:
    """A replica may die after committing a request's nonce and decision but before it answers.
    The client's retry on the next replica must then be answered (the order as a duplicate),
    not refused as a replayed nonce, which would pause the bot."""
    rs = start_replica_set(tmp_path, pg_schema, count=2, policy=cap_policy(Decimal(10**9)))
    try:
        price = rs.sim.limit_price(factor="0.98")
        stop = threading.Event()
        answered: list[str] = []
        duplicates: list[str] = []
        errors: list[str] = []

        def bot(i: int) -> None:
            client = rs.client(rs.addresses, f"bot-{i}")  # replica 0 first, then replica 1
            n = 0
            while not stop.is_set():
                n += 1
                coid = f"f-{i}-{n}"
                try:
                    reply = client.submit_order("BTC/USDT", "buy", "limit", AMOUNT, price, coid)
                except grpc.RpcError as e:
                    errors.append(f"{coid}: {e.code().name}: {e.details()}")
                    return
                rules = [v.rule_id for v in reply.decision.violations]
                if rules == ["duplicate_client_order_id"]:
                    duplicates.append(coid)  # the dead replica had allowed it
                elif not reply.decision.allowed:
                    errors.append(f"{coid}: denied {rules}")
                answered.append(coid)

        threads = [threading.Thread(target=bot, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        wait_until("20 answered orders", lambda: len(answered) >= 20, timeout=60, every=0.005)
        rs.signers[0].kill9()  # six requests are in flight to it at every moment
        at = len(answered)
        wait_until("20 more answered", lambda: len(answered) >= at + 20, timeout=60, every=0.01)
        stop.set()
        for t in threads:
            t.join(timeout=60)
        assert errors == []
        wait_reconciled(rs)
        report, records = rs.auditor.snapshot()
        assert report.ok, report.summary
        ledger = Ledger.replay(records)
        assert exchange_matches_audit(ledger, rs.sim.orders()) == []
        assert {c for (_, c) in ledger.orders} >= set(duplicates)  # allowed once, not twice
    finally:
        rs.stop()
