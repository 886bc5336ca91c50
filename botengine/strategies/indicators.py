"""Indicators for start conditions, computed in Decimal so a restored bot resumes bit for bit."""

from __future__ import annotations

from decimal import Context, Decimal
from typing import Any

_CTX = Context(prec=34)  # fixed precision: the same numbers on every machine and after a restore


class Rsi:
    """Wilder's RSI over samples fed one at a time (one per timeframe close).

    The first value appears after `period + 1` samples (the seed is the simple mean of the first
    `period` changes); after that each change is smoothed:
    avg = (avg * (period - 1) + x) / period.
    """

    def __init__(self, period: int) -> None:
        self.period = period
        self.last: Decimal | None = None
        self.count = 0  # changes seen
        self.gain = Decimal(0)
        self.loss = Decimal(0)

    def add(self, price: Decimal) -> Decimal | None:
        """Feed one sample; return the RSI once enough samples arrived."""
        if self.last is not None:
            change = _CTX.subtract(price, self.last)
            up = change if change > 0 else Decimal(0)
            down = -change if change < 0 else Decimal(0)
            p = Decimal(self.period)
            if self.count < self.period:
                self.gain = _CTX.add(self.gain, up)
                self.loss = _CTX.add(self.loss, down)
                if self.count + 1 == self.period:
                    self.gain = _CTX.divide(self.gain, p)
                    self.loss = _CTX.divide(self.loss, p)
            else:
                self.gain = _CTX.divide(_CTX.add(_CTX.multiply(self.gain, p - 1), up), p)
                self.loss = _CTX.divide(_CTX.add(_CTX.multiply(self.loss, p - 1), down), p)
            self.count += 1
        self.last = price
        return self.value()

    def value(self) -> Decimal | None:
        if self.count < self.period:
            return None
        if self.loss == 0:
            return Decimal(100) if self.gain > 0 else Decimal(50)
        rs = _CTX.divide(self.gain, self.loss)
        return _CTX.subtract(Decimal(100), _CTX.divide(Decimal(100), _CTX.add(Decimal(1), rs)))

    def snapshot(self) -> dict[str, Any]:
        return {
            "last": None if self.last is None else str(self.last),
            "count": self.count,
            "gain": str(self.gain),
            "loss": str(self.loss),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.last = None if state["last"] is None else Decimal(state["last"])
        self.count = int(state["count"])
        self.gain = Decimal(state["gain"])
        self.loss = Decimal(state["loss"])
