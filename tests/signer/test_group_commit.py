"""Group commit: concurrent decisions share one transaction without giving up anything.

The batches are made deterministic by holding the signer's write lock (a real write
transaction, as an operator's command would) while bots' requests queue up behind it; when it is
released, the queued decisions run as one batch. Everything goes through real gRPC.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import text

from botengine.signer_client import Identity, SignerClient, fresh_nonce, now_ms
from signer.db import make_engine, write_txn
from signer.errors import AuditUnavailable, AuthError
from signer.groupcommit import GroupCommitter
from tests.signer.stack import KEY_ID, build_stack
from tests.signer.test_caps_under_contention import CAP, CAP_POLICY, expected_allowed


def wait_until(cond: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def queued_behind_the_write_lock(
    committer: GroupCommitter, engine: Any, calls: list[Callable[[], Any]]
) -> tuple[list[Any], int]:
    """Run `calls[0]` while the write lock is held (it leads a batch of its own and waits for
    the lock), then queue the others one by one, in order; release the lock. The rest then run
    as one batch, in that order. Returns every call's result and the batches used."""
    pool = ThreadPoolExecutor(max_workers=len(calls))
    try:
        before = committer.batches
        with write_txn(engine):
            futures: list[Future[Any]] = [pool.submit(calls[0])]
            wait_until(lambda: committer.batches == before + 1, "the first call to lead")
            for i, call in enumerate(calls[1:], start=1):
                futures.append(pool.submit(call))
                wait_until(lambda i=i: committer.queued == i, f"call {i} to queue")
        results = []
        for f in futures:
            try:
                results.append(f.result(timeout=60))
            except Exception as e:  # noqa: BLE001 - returned for the assertions
                results.append(e)
        return results, committer.batches - before
    finally:
        pool.shutdown(wait=True)


def order(client: SignerClient, price: Decimal, coid: str, amount: str = "0.001") -> Any:
    return client.submit_order("BTC/USDT", "buy", "limit", amount, price, coid, mode="sign-only")


def test_queued_decisions_commit_together_and_caps_stay_exact(
    tmp_path: Path, db_url: str | None
) -> None:
    stack = build_stack(tmp_path, db_url, policy=CAP_POLICY)
    try:
        price = (stack.price() * Decimal("0.99")).quantize(Decimal("0.01"))
        clients = [stack.client() for _ in range(4)]
        n = 12  # fewer than the server's worker threads, so every request is being served
        calls = [(lambda i=i: order(clients[i % 4], price, f"gc-{i}", "0.002")) for i in range(n)]
        size_before = stack.audit_size()
        committer, engine = stack.server.core.commits, stack.opened.engine
        replies, batches = queued_behind_the_write_lock(committer, engine, calls)
        allowed = [r for r in replies if r.decision.allowed]
        assert len(allowed) == expected_allowed(price, "0.002") < n
        assert batches == 2  # the first alone, then every decision that queued behind it
        for r in replies:
            if r.decision.allowed:
                assert r.HasField("signed_request")
            else:
                assert {v.rule_id for v in r.decision.violations} == {"notional_24h_cap"}
                assert not r.HasField("signed_request")
        used = Decimal(clients[0].get_policy().used_24h_notional)
        assert used == len(allowed) * price * Decimal("0.002") <= CAP
        # One decision record per order, one outcome per allowed order, chained in order.
        assert stack.audit_size() - size_before == n + len(allowed)
        seqs = sorted(r.decision.audit_seq for r in replies)
        assert len(set(seqs)) == n
        assert stack.verify().ok
    finally:
        stack.stop()


def test_a_refused_request_in_a_batch_is_undone_alone(tmp_path: Path, db_url: str | None) -> None:
    stack = build_stack(tmp_path, db_url)
    try:
        price = (stack.price() * Decimal("0.99")).quantize(Decimal("0.01"))
        client = stack.client()
        shared_nonce, forged_nonce = fresh_nonce(), fresh_nonce()
        good = client.order_request("BTC/USDT", "buy", "limit", "0.001", price, "ok-1")
        first = client.order_request(
            "BTC/USDT", "buy", "limit", "0.001", price, "ok-2", nonce=shared_nonce
        )
        replay = client.order_request(
            "BTC/USDT", "buy", "limit", "0.001", price, "re-1", nonce=shared_nonce
        )
        forged = client.order_request(
            "BTC/USDT", "buy", "limit", "0.001", price, "fg-1", nonce=forged_nonce
        )
        forged.signature = bytes([forged.signature[0] ^ 1]) + forged.signature[1:]
        # A registered bot whose signature verifies but which may not use the key: refused
        # after its nonce was written, so only the savepoint keeps that nonce out of the batch.
        outsider_id = Identity.generate("bot-outsider")
        stack.opened.actions.register_bot(
            "test", now_ms(), "bot-outsider", outsider_id.public_key, []
        )
        outsider = stack.client(identity=outsider_id)
        ungranted = outsider.order_request("BTC/USDT", "buy", "limit", "0.001", price, "ou-1")

        def send(c: SignerClient, req: Any) -> Any:
            try:
                return c.call("SubmitOrder", req)
            except grpc.RpcError as e:
                return e

        calls = [
            (lambda r=r, c=c: send(c, r))
            for c, r in (
                (client, good),
                (client, first),
                (outsider, ungranted),
                (client, replay),
                (client, forged),
            )
        ]
        committer, engine = stack.server.core.commits, stack.opened.engine
        replies, batches = queued_behind_the_write_lock(committer, engine, calls)
        assert batches == 2  # `good` alone; then the four others together, in order
        ok_good, ok_first, refused_ungranted, refused_replay, refused_forged = replies
        assert isinstance(refused_ungranted, grpc.RpcError)
        assert refused_ungranted.code() == grpc.StatusCode.PERMISSION_DENIED
        assert ok_good.decision.allowed and ok_first.decision.allowed
        for refused, rule in (
            (refused_replay, "replayed_nonce"),
            (refused_forged, "bad_signature"),
        ):
            assert isinstance(refused, grpc.RpcError)
            assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
            assert rule in (refused.details() or "")
        denials = [r["payload"]["rule_id"] for r in stack.audit_records("auth_denied")]
        assert sorted(denials) == ["bad_signature", "replayed_nonce"]
        # The forged request's nonce was not consumed: signed properly, it is accepted once.
        again = client.order_request(
            "BTC/USDT", "buy", "limit", "0.001", price, "fg-1", nonce=forged_nonce
        )
        assert client.call("SubmitOrder", again).decision.allowed
        # Nor was the ungranted bot's: once granted the key, the very same request goes through.
        with write_txn(stack.opened.engine) as s:
            stack.opened.actions.do_grant_keys(s, "test", now_ms(), "bot-outsider", [KEY_ID], None)
        assert outsider.call("SubmitOrder", ungranted).decision.allowed
        assert stack.verify().ok
    finally:
        stack.stop()


def test_a_failed_commit_fails_every_decision_of_its_batch(tmp_path: Path) -> None:
    """A real commit failure (a deferred foreign-key violation SQLite reports at COMMIT):
    every caller of the batch gets AuditUnavailable, and none of the batch's writes remain."""
    engine = make_engine(f"sqlite:///{tmp_path / 'gc.db'}")
    with engine.begin() as c:
        c.execute(text("CREATE TABLE parent (id INTEGER PRIMARY KEY)"))
        c.execute(
            text(
                "CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER"
                " REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)"
            )
        )
    committer = GroupCommitter(lambda: write_txn(engine))

    def insert(sql: str) -> Callable[[Any], str]:
        def work(s: Any) -> str:
            s.execute(text(sql))
            return "done"

        return work

    works = [
        insert("INSERT INTO parent (id) VALUES (10)"),  # leads alone, commits
        insert("INSERT INTO parent (id) VALUES (1)"),
        insert("INSERT INTO child (id, parent_id) VALUES (1, 99)"),  # fails only at COMMIT
        insert("INSERT INTO parent (id) VALUES (2)"),
    ]
    results, batches = queued_behind_the_write_lock(
        committer, engine, [lambda w=w: committer.run(w) for w in works]
    )
    assert batches == 2
    assert results[0] == "done"
    assert all(isinstance(e, AuditUnavailable) for e in results[1:]), results
    with engine.connect() as c:
        assert c.execute(text("SELECT id FROM parent")).scalars().all() == [10]
        assert c.execute(text("SELECT count(*) FROM child")).scalar_one() == 0
    assert committer.run(insert("INSERT INTO parent (id) VALUES (3)")) == "done"
    engine.dispose()


def test_a_refusal_alone_in_its_batch_rolls_back_and_reaches_the_caller(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'gc1.db'}")
    with engine.begin() as c:
        c.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
    committer = GroupCommitter(lambda: write_txn(engine))

    def refuse(s: Any) -> None:
        s.execute(text("INSERT INTO t (id) VALUES (1)"))
        raise AuthError("bad_signature", "refused after writing")

    with pytest.raises(AuthError, match="refused after writing"):
        committer.run(refuse)
    with engine.connect() as c:
        assert c.execute(text("SELECT count(*) FROM t")).scalar_one() == 0
    engine.dispose()
