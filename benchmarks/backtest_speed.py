"""Backtest speed: candles per second for the fast and the reference path, as JSON.

A year of 1-minute candles (525,600) is synthesised from the real BTCUSDT_1m.csv by tiling it,
every other copy played backwards so the path stays continuous. One DCA and two grid bots (30
and 100 levels) run on it through both drivers; the run also checks that both produced identical
fills and deals.

    .venv/bin/python benchmarks/backtest_speed.py [--candles N] [--data FILE] [--repeat R]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from botengine.backtest.cli import default_rules  # noqa: E402
from botengine.backtest.engine import BacktestResult, run_backtest  # noqa: E402
from botengine.candles import Candles, load_candles  # noqa: E402
from botengine.config import BotConfig, bot_config_from_mapping, make_strategy  # noqa: E402

YEAR_1M = 525_600
BOTS: dict[str, dict[str, object]] = {
    "dca": {"type": "dca", "dca": {
        "base_order": "100", "safety_order": "100", "max_safety_orders": 6,
        "active_safety_orders": 2, "safety_deviation_pct": "1", "safety_volume_scale": "1.5",
        "safety_step_scale": "1.2", "take_profit_pct": "1"}},
    "grid": {"type": "grid", "grid": {
        "lower": "90000", "upper": "108000", "grids": 30, "spacing": "geometric",
        "investment": "5000"}},
    # many levels: a fill every few candles, so the per-fill cost dominates
    "grid100": {"type": "grid", "grid": {
        "lower": "90000", "upper": "108000", "grids": 100, "spacing": "geometric",
        "investment": "5000"}},
}  # fmt: skip


def config(kind: str) -> BotConfig:
    return bot_config_from_mapping(
        {"name": f"bench-{kind}", "symbol": "BTC/USDT", "key_id": "bench", **BOTS[kind]}
    )


def run(kind: str, data: Candles, mode: str, repeat: int) -> tuple[BacktestResult, float]:
    """Best of `repeat` runs (seconds of the engine loop only)."""
    cfg = config(kind)
    rules = default_rules(cfg.symbol, data)
    best: tuple[BacktestResult, float] | None = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = run_backtest(make_strategy(cfg, rules), data, rules, mode=mode)  # type: ignore[arg-type]
        elapsed = time.perf_counter() - started
        if best is None or elapsed < best[1]:
            best = (result, elapsed)
    assert best is not None
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=Path("/work/shared/data/BTCUSDT_1m.csv"))
    p.add_argument("--candles", type=int, default=YEAR_1M)
    p.add_argument("--repeat", type=int, default=3, help="fast-path repetitions (best counts)")
    args = p.parse_args(argv)
    started = time.perf_counter()
    source = load_candles(args.data)
    data = source.tiled(args.candles)
    prep_s = time.perf_counter() - started
    out: dict[str, object] = {
        "candles": len(data),
        "source": f"{args.data.name} ({len(source)} candles) tiled forwards/backwards",
        "load_and_tile_s": round(prep_s, 3),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },  # fmt: skip
        "results": [],
    }
    identical = {}
    for kind in BOTS:
        fast, fast_s = run(kind, data, "fast", args.repeat)
        ref, ref_s = run(kind, data, "reference", 1)
        identical[kind] = fast.fills == ref.fills and fast.deals == ref.deals
        for path, res, secs in (("fast", fast, fast_s), ("reference", ref, ref_s)):
            out["results"].append({  # type: ignore[attr-defined]
                "bot": kind, "path": path, "seconds": round(secs, 4),
                "candles_per_s": round(len(data) / secs), "fills": len(res.fills),
                "deals_closed": len(res.deals), "candles_visited": res.candles_visited,
            })  # fmt: skip
    out["identical_fills_and_deals"] = identical
    print(json.dumps(out, indent=2))
    return 0 if all(identical.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
