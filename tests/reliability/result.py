"""What a scenario reports, how big each form is, and the table the long runner prints.

The short form (inside `make test`) and the long form (`make reliability`) run the same
scenario functions; only `Scale` differs. `BULKHEAD_RELIABILITY=long` makes pytest use the long
scale too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Scale:
    name: str
    crash_trials: int
    store_trials: int
    contention_rounds: int
    soak_seconds: float
    soak_warmup_seconds: float
    fuzz_examples: int
    strict_rss: bool


SHORT = Scale(
    name="short",
    crash_trials=3,
    store_trials=2,
    contention_rounds=1,
    soak_seconds=4.0,
    soak_warmup_seconds=1.0,
    fuzz_examples=25,
    strict_rss=False,
)
LONG = Scale(
    name="long",
    crash_trials=200,
    store_trials=20,
    contention_rounds=20,
    soak_seconds=60.0,
    soak_warmup_seconds=10.0,
    fuzz_examples=400,
    strict_rss=True,
)


def current_scale() -> Scale:
    return LONG if os.environ.get("BULKHEAD_RELIABILITY", "short") == "long" else SHORT


@dataclass
class Result:
    """One scenario's run: how many trials, how many faults injected, every violation seen."""

    scenario: str
    trials: int = 0
    faults: int = 0
    violations: list[str] = field(default_factory=list)
    figures: dict[str, str] = field(default_factory=dict)

    def violate(self, what: str) -> None:
        self.violations.append(what)

    def check(self, ok: bool, what: str) -> bool:
        if not ok:
            self.violations.append(what)
        return ok

    def explain(self, limit: int = 20) -> str:
        shown = "\n  ".join(self.violations[:limit])
        more = len(self.violations) - limit
        return f"{self.scenario}: {len(self.violations)} violation(s)\n  {shown}" + (
            f"\n  ... and {more} more" if more > 0 else ""
        )


def held(result: Result) -> bool:
    """Print the scenario's figures (pytest -s shows them) and say whether it held."""
    print(f"\n{result.scenario}: {result.trials} trials, {result.faults} faults, {result.figures}")
    return not result.violations


def table(results: list[Result]) -> str:
    """A Markdown table: scenario, trials, faults injected, invariant violations, figures."""
    head = "| scenario | trials | faults injected | invariant violations | figures |"
    rows = [head, "|---|---:|---:|---:|---|"]
    for r in results:
        figures = "; ".join(f"{k} {v}" for k, v in r.figures.items())
        rows.append(f"| {r.scenario} | {r.trials} | {r.faults} | {len(r.violations)} | {figures} |")
    return "\n".join(rows)
