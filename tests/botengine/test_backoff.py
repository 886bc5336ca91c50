"""Retry delays for an unreachable signer: exponential, jittered, capped, reset on success."""

from __future__ import annotations

import random
import socket
from pathlib import Path

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as hs

from botengine.backoff import Backoff, is_transient
from botengine.signer_client import Identity, SignerClient


@given(
    base=hs.floats(min_value=0.001, max_value=5),
    factor=hs.floats(min_value=1, max_value=1000),
    seed=hs.integers(min_value=0, max_value=2**32),
    n=hs.integers(min_value=1, max_value=80),
)
def test_each_delay_lies_between_half_and_all_of_its_capped_exponential_ceiling(
    base: float, factor: float, seed: int, n: int
) -> None:
    cap = base * factor
    b = Backoff(base, cap, random.Random(seed))
    for attempt in range(n):
        ceiling = min(cap, base * 2**attempt)
        delay = b.next_delay()
        assert ceiling / 2 <= delay <= ceiling <= cap
    assert b.ceiling(n) >= b.ceiling(n - 1)


def test_delays_grow_until_the_cap_and_start_over_after_a_success() -> None:
    b = Backoff(0.5, 4.0, random.Random(1))
    ceilings = [b.ceiling(i) for i in range(6)]
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    first = [b.next_delay() for _ in range(6)]
    assert max(first[3:]) <= 4.0 and min(first[3:]) >= 2.0
    b.reset()
    assert 0.25 <= b.next_delay() <= 0.5


def test_jitter_spreads_bots_apart() -> None:
    delays = {round(Backoff(1, 8, random.Random(seed)).next_delay(), 6) for seed in range(50)}
    assert len(delays) > 40


@pytest.mark.parametrize(("base", "cap"), [(0, 1), (-1, 1), (2, 1)])
def test_a_backoff_without_0_lt_base_le_cap_is_refused(base: float, cap: float) -> None:
    with pytest.raises(ValueError, match="need 0 < base_s <= cap_s"):
        Backoff(base, cap)


def test_an_unreachable_or_too_slow_signer_is_transient(tmp_path: Path) -> None:
    """Real gRPC failures: nothing listens on a socket; a listener that never answers."""
    down = SignerClient(f"unix://{tmp_path}/none.sock", Identity.generate("b"), "k", timeout=5)
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.bind(str(tmp_path / "silent.sock"))
    silent.listen(1)
    slow = SignerClient(f"unix://{tmp_path}/silent.sock", Identity.generate("b"), "k", timeout=0.5)
    try:
        for client, code in ((down, "UNAVAILABLE"), (slow, "DEADLINE_EXCEEDED")):
            with pytest.raises(grpc.RpcError) as e:
                client.read("balances")
            assert e.value.code() == getattr(grpc.StatusCode, code) and is_transient(e.value)
    finally:
        down.close()
        slow.close()
        silent.close()
