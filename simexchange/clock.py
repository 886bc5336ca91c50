"""The simulated clock: real time, N times real time, or frozen and stepped by tests.

Simulated time is what the exchange reports everywhere (server time, klines, order and trade
timestamps) and what signed requests' `timestamp`/`recvWindow` are checked against.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from decimal import Decimal

MAX_SPEED = Decimal(1_000_000)


def _as_speed(speed: Decimal | int | str) -> Decimal:
    value = Decimal(speed)
    if not value.is_finite() or value < 0 or value > MAX_SPEED:
        raise ValueError(f"speed={speed!r} is out of range: allowed 0 <= speed <= {MAX_SPEED}")
    return value


class SimClock:
    """Milliseconds since the epoch: `start + speed * wall elapsed + manual steps`.

    It never runs backwards (wall elapsed comes from a monotonic source) and is safe to
    share between threads. Speed 0 freezes it; `advance` steps it.
    """

    def __init__(
        self,
        start_ms: int | None = None,
        speed: Decimal | int | str = 1,
        *,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self._lock = threading.Lock()
        self._mono = monotonic_ns
        self._speed = _as_speed(speed)
        self._anchor_sim = start_ms if start_ms is not None else time.time_ns() // 1_000_000
        self._anchor_wall = monotonic_ns()

    def _now_locked(self) -> int:
        elapsed_ns = self._mono() - self._anchor_wall
        return self._anchor_sim + int(self._speed * elapsed_ns // 1_000_000)

    def now_ms(self) -> int:
        """The current simulated time in epoch milliseconds."""
        with self._lock:
            return self._now_locked()

    @property
    def speed(self) -> Decimal:
        return self._speed

    def set_speed(self, speed: Decimal | int | str) -> None:
        """Change the rate from now on; the current simulated time is kept."""
        value = _as_speed(speed)
        with self._lock:
            self._anchor_sim = self._now_locked()
            self._anchor_wall = self._mono()
            self._speed = value

    def advance(self, ms: int) -> int:
        """Step simulated time forward by `ms` milliseconds; returns the new time."""
        if ms < 0:
            raise ValueError(f"advance ms={ms} is out of range: allowed ms >= 0")
        with self._lock:
            self._anchor_sim += ms
            return self._now_locked()

    def advance_to(self, t_ms: int) -> int:
        """Step forward to `t_ms` if it lies ahead; time never goes back."""
        with self._lock:
            now = self._now_locked()
            if t_ms > now:
                self._anchor_sim += t_ms - now
            return self._now_locked()
