"""The simulated clock: real time, N x real time, frozen and stepped."""

from __future__ import annotations

from decimal import Decimal

import pytest

from simexchange.clock import SimClock


class FakeMonotonic:
    """A wall clock the test moves by hand (nanoseconds)."""

    def __init__(self) -> None:
        self.ns = 5_000_000_000

    def __call__(self) -> int:
        return self.ns

    def wait_ms(self, ms: int) -> None:
        self.ns += ms * 1_000_000


def test_speed_multiplies_wall_time_and_advance_steps() -> None:
    wall = FakeMonotonic()
    clock = SimClock(1_000_000, 60, monotonic_ns=wall)
    wall.wait_ms(1500)
    assert clock.now_ms() == 1_000_000 + 90_000
    assert clock.advance(10_000) == 1_100_000
    clock.set_speed(0)
    wall.wait_ms(10_000)
    assert clock.now_ms() == 1_100_000  # frozen keeps its time
    clock.set_speed(Decimal("0.5"))
    wall.wait_ms(10)
    assert clock.now_ms() == 1_100_005


def test_clock_never_goes_back() -> None:
    clock = SimClock(500, 0)
    assert clock.advance_to(400) == 500
    assert clock.advance_to(900) == 900
    with pytest.raises(ValueError, match="allowed ms >= 0"):
        clock.advance(-1)


@pytest.mark.parametrize("speed", ["-1", "1000001", "NaN"])
def test_out_of_range_speed_names_the_allowed_range(speed: str) -> None:
    with pytest.raises(ValueError, match="allowed 0 <= speed <= 1000000"):
        SimClock(0, speed)


def test_default_clock_starts_at_wall_time() -> None:
    import time

    before = time.time_ns() // 1_000_000
    now = SimClock().now_ms()
    assert before <= now <= time.time_ns() // 1_000_000
