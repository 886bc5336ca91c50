"""What the demo returns: one check per claim, so a test asserts on values, not screen text."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Check:
    step: str  # "setup", "trade", "incident", "audit"
    name: str
    detail: str
    ok: bool
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class DemoResult:
    root: Path
    checks: list[Check] = field(default_factory=list)
    bots: dict[str, dict[str, Any]] = field(default_factory=dict)  # `bot status --json` per bot
    signer_counts: dict[str, Any] = field(default_factory=dict)
    report: Path | None = None
    wall_s: float = 0.0
    pids: dict[str, int] = field(default_factory=dict)
    stop: Callable[[], None] | None = None  # with --keep: stops the three processes

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def check(self, name: str) -> Check:
        """The check called `name` (KeyError if the demo never got that far)."""
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)
