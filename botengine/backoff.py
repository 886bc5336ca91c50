"""Exponential backoff with jitter, capped, for an unreachable signer or exchange.

Delay n (0-based) is drawn uniformly from [d/2, d] with d = min(cap, base * 2**n) ("equal
jitter"): it grows fast enough not to hammer a signer that is down, never waits longer than
`cap`, and spreads many bots' retries apart so they do not arrive in lockstep. What is retried
is always the same client order id, so a retry can never become a second order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import grpc

TRANSIENT_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)


@dataclass
class Backoff:
    base_s: float = 0.5
    cap_s: float = 30.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.base_s <= self.cap_s:
            raise ValueError(f"base_s={self.base_s}, cap_s={self.cap_s}: need 0 < base_s <= cap_s")

    def ceiling(self, attempt: int) -> float:
        """The largest delay attempt `attempt` may wait."""
        if attempt >= 64:
            return self.cap_s
        return min(self.cap_s, self.base_s * (2**attempt))

    def next_delay(self) -> float:
        """The delay before the next retry; each call counts one more failed attempt."""
        top = self.ceiling(self.attempt)
        self.attempt += 1
        return self.rng.uniform(top / 2, top)

    def reset(self) -> None:
        """A call succeeded: the next failure starts from `base_s` again."""
        self.attempt = 0


def is_transient(error: grpc.RpcError) -> bool:
    """The signer could not be reached or did not answer in time: retry, never give up."""
    code = error.code() if hasattr(error, "code") else None
    return code in TRANSIENT_CODES
