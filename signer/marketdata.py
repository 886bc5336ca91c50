"""The signer's own reference prices, used by the policy's price band and market-order notional.

A stolen engine must not be able to talk the signer into a price: the reference comes from the
exchange's public ticker, fetched by the signer itself (the `fetch` callable, supplied by the
exchange gateway; no key involved). Prices are cached per (exchange, symbol) and refetched when
older than the caller's bound. At most one fetch per (exchange, symbol) is in flight; concurrent
callers wait for it instead of hammering the endpoint. A failed fetch never raises: `get`
returns None and the policy denies with "reference_price_unavailable".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from signer.policy import RefPrice, decimal_problem

log = logging.getLogger(__name__)

Fetch = Callable[[str, str], Decimal]


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class _Slot:
    """Cache entry and single-flight state of one (exchange, symbol)."""

    ref: RefPrice | None = None
    failed_ms: int | None = None  # when the last fetch failed (for the back-off)
    inflight: threading.Event | None = None


class ReferencePrices:
    """Thread-safe cache of reference prices with single-flight refetching.

    `max_age_ms` caps how old a cached price may be whatever the caller asks for;
    `failure_backoff_ms` stops a dead endpoint being retried on every intent;
    `wait_s` bounds how long a caller waits for another thread's fetch.
    """

    def __init__(
        self,
        fetch: Fetch,
        clock: Callable[[], int] | None = None,
        max_age_ms: int = 10_000,
        *,
        failure_backoff_ms: int = 1_000,
        wait_s: float = 15.0,
    ) -> None:
        self._fetch = fetch
        self._clock = clock or wall_clock_ms
        self._max_age_ms = max_age_ms
        self._backoff_ms = failure_backoff_ms
        self._wait_s = wait_s
        self._lock = threading.Lock()
        self._slots: dict[tuple[str, str], _Slot] = {}

    def _usable(self, slot: _Slot, bound_ms: int, now: int) -> RefPrice | None:
        ref = slot.ref
        return ref if ref is not None and now - ref.fetched_ms <= bound_ms else None

    def get(self, exchange: str, symbol: str, max_age_s: int) -> RefPrice | None:
        """A price no older than `max_age_s` (and `max_age_ms`), or None if none can be had."""
        bound_ms = min(self._max_age_ms, max_age_s * 1000)
        key = (exchange, symbol)
        with self._lock:
            slot = self._slots.setdefault(key, _Slot())
            now = self._clock()
            fresh = self._usable(slot, bound_ms, now)
            if fresh is not None:
                return fresh
            if slot.failed_ms is not None and now - slot.failed_ms < self._backoff_ms:
                return None
            leader = slot.inflight is None
            if leader:
                slot.inflight = threading.Event()
            event = slot.inflight
        assert event is not None
        if not leader:
            event.wait(self._wait_s)
            with self._lock:
                return self._usable(slot, bound_ms, self._clock())
        started = self._clock()
        price: Decimal | None = None
        ref: RefPrice | None = None
        try:
            price = self._fetch_checked(exchange, symbol)
        finally:
            with self._lock:
                if price is None:
                    slot.failed_ms = self._clock()
                else:
                    # Stamped with the fetch's start: the price is at least that old.
                    ref = slot.ref = RefPrice(price, started)
                    slot.failed_ms = None
                slot.inflight = None
                event.set()
        return ref

    def _fetch_checked(self, exchange: str, symbol: str) -> Decimal | None:
        try:
            price = self._fetch(exchange, symbol)
        except Exception as e:  # any failure means "no reference", never a crash
            log.warning(
                "reference price %s %s: fetch failed (%s)", exchange, symbol, type(e).__name__
            )
            return None
        problem = decimal_problem(price)
        if problem:
            log.warning("reference price %s %s: refused, value %s", exchange, symbol, problem)
            return None
        return price
