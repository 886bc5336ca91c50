"""The closing summary table, and the how-to-poke-at-it note of `--keep`."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .market import KEY_ID
from .result import DemoResult

KEEP_SPEED = 60  # with --keep the market runs on at an hour a minute


def print_summary(console: Console, result: DemoResult) -> None:
    verdict = "[green]every step held[/]" if result.ok else "[red]a step FAILED[/]"
    table = Table(title=f"Bulkhead demo: {verdict} ({result.wall_s:.0f} s)")
    for col in ("step", "check", "detail", "result"):
        table.add_column(col)
    for c in result.checks:
        table.add_row(c.step, c.name, c.detail, "[green]held[/]" if c.ok else "[red]FAILED[/]")
    console.print(table)
    counts = result.signer_counts
    if counts:
        rules = ", ".join(f"{k} {v}" for k, v in sorted(counts["denied_by_rule"].items()))
        console.print(
            f"signer: {counts['allowed']} orders allowed, {counts['denied']} denied ({rules})"
        )
    if result.report is not None:
        console.print(f"auditor report: {result.report}", soft_wrap=True)
    console.print(f"data: {result.root}", soft_wrap=True)


def keep_note(result: DemoResult) -> str:
    """Plain text (no wrapping) so every command can be copied as it is."""
    root = result.root
    bin_dir = Path(sys.executable).parent
    bulkhead, signer_cli = bin_dir / "bulkhead", bin_dir / "bulkhead-signer"
    engine = f"--config {root / 'engine' / 'engine.toml'}"
    signer = f"--data-dir {root / 'signer-data'} --master-key-file {root / 'master.key'}"
    running = ", ".join(f"{k} pid {v}" for k, v in result.pids.items())
    return "\n".join(
        [
            f"--keep: still running: {running}; the market moves at {KEEP_SPEED}x real time",
            f"data dir: {root}   (logs: simexchange.log, signer.log, engine.log)",
            f"{bulkhead} bot list {engine}",
            f"{bulkhead} bot status btc-dca {engine}",
            f"{signer_cli} policy show {KEY_ID} {signer}",
            f"{signer_cli} unfreeze --all {signer}",
            f"{bulkhead} bot start btc-dca {engine}   # and eth-grid: trading resumes",
            f"{signer_cli} audit export --out {root / 'audit-2.jsonl'} {signer}",
            f"kill {' '.join(str(p) for p in result.pids.values())}   # stop all three",
        ]
    )
