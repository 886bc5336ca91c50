"""Group commit: decisions that arrive together share one write transaction and one commit.

Every decision must be durable before anything it allows leaves the process, and decisions are
serialised (caps, nonces and the audit chain are read and written under one write lock). Done
one transaction at a time, concurrent bots queue behind each other's BEGIN, COMMIT and fsync.
Here a thread that finds decisions waiting becomes the leader: it takes the write lock once,
runs every queued decision in order in the same transaction -- each sees the counters, nonces
and audit head the previous ones left, so caps stay exact -- commits once, and only then hands
each caller its result. Nothing is released before that commit; if the commit (or the store)
fails, every decision of the batch fails with it and nothing was signed.

A decision that is refused by raising (authentication, grants) is undone alone: each runs under
a SAVEPOINT when the batch holds more than one, so its nonce or records never reach the log.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Generic, TypeVar

from sqlalchemy.orm import Session

from signer import fastsql
from signer.auditlog import forget_cached_head
from signer.errors import AuditUnavailable, SignerError

T = TypeVar("T")

# At most this many decisions per transaction: bounds the time the write lock is held (and so
# the wait of a writer outside the batch, e.g. an operator's freeze).
MAX_BATCH = 64


class _Pending(Generic[T]):
    __slots__ = ("work", "result", "error", "done")

    def __init__(self, work: Callable[[Session], T]) -> None:
        self.work = work
        self.result: T | None = None
        self.error: BaseException | None = None
        self.done = False


class GroupCommitter:
    """Runs decisions in shared write transactions (see the module docstring)."""

    def __init__(
        self, txn: Callable[[], AbstractContextManager[Session]], max_batch: int = MAX_BATCH
    ) -> None:
        self._txn = txn
        self._max_batch = max_batch
        self._queue: list[_Pending[object]] = []
        self._queue_lock = threading.Lock()
        self._leader = threading.Lock()
        self.batches = 0  # transactions committed (or attempted), for benchmarks and tests
        self.decisions = 0

    @property
    def queued(self) -> int:
        """Decisions waiting for a leader (a gauge for operators, and for tests)."""
        with self._queue_lock:
            return len(self._queue)

    def run(self, work: Callable[[Session], T]) -> T:
        """Run `work(session)` inside a committed write transaction and return its result.

        `work` may raise a SignerError to refuse (its writes are undone, the others' are not);
        any other failure fails the whole batch. Returns only after the commit."""
        pending: _Pending[T] = _Pending(work)
        with self._queue_lock:
            self._queue.append(pending)  # type: ignore[arg-type]
        while not pending.done:  # lead a batch, unless an earlier leader took ours
            with self._leader:
                if not pending.done:
                    with self._queue_lock:
                        batch = self._queue[: self._max_batch]
                        del self._queue[: self._max_batch]
                    self._execute(batch)
        if pending.error is not None:
            raise pending.error
        return pending.result  # type: ignore[return-value]

    def _execute(self, batch: list[_Pending[object]]) -> None:
        self.batches += 1
        self.decisions += len(batch)
        try:
            with self._txn() as s:
                if len(batch) == 1:
                    batch[0].result = batch[0].work(s)  # a refusal rolls the whole txn back
                else:
                    for pending in batch:
                        self._run_one(s, pending)
        except BaseException as e:  # noqa: BLE001 - handed to every caller of the batch
            for pending in batch:
                if pending.error is None:
                    pending.result = None
                    pending.error = e if len(batch) == 1 else _batch_failure(e)
        finally:
            for pending in batch:
                pending.done = True

    @staticmethod
    def _run_one(s: Session, pending: _Pending[object]) -> None:
        fastsql.write(s, "SAVEPOINT bulkhead_decision")
        try:
            pending.result = pending.work(s)
        except SignerError as e:
            if isinstance(e, AuditUnavailable):
                raise  # the store failed: the whole batch fails
            fastsql.run(s, "ROLLBACK TO SAVEPOINT bulkhead_decision")
            forget_cached_head(s)
            pending.error = e
        fastsql.write(s, "RELEASE SAVEPOINT bulkhead_decision")


def _batch_failure(e: BaseException) -> BaseException:
    if isinstance(e, SignerError):
        return e
    return AuditUnavailable(f"audit store unavailable ({type(e).__name__}); nothing was signed")
