"""`make reliability`: every reliability scenario at the long scale, then one table.

    python -m tests.reliability.run_long [--scale long|short] [--crash-trials N] [--only NAME ...]

Prints `| scenario | trials | faults injected | invariant violations | figures |` (Markdown),
then every violation, and exits 1 if there was any. The PostgreSQL half of the cap race runs
when BULKHEAD_TEST_PG_URL is set. Work files go to a temporary directory, kept on failure.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from tests.reliability import (
    authz,
    contention,
    crash,
    engine_crash,
    fuzz,
    secrets_scan,
    soak,
    storage,
)
from tests.reliability.result import LONG, SHORT, Result, Scale, table


def scenarios(scale: Scale, pg_url: str | None) -> dict[str, Callable[[Path], list[Result]]]:
    return {
        "crash": lambda d: [crash.run(d, scale.crash_trials)],
        "engine-crash": lambda d: [engine_crash.run(d, engine_crash.kills_for(scale))],
        "storage": lambda d: [storage.run(d, scale.store_trials)],
        "contention": lambda d: [contention.run(d, scale.contention_rounds, pg_url)],
        "soak": lambda d: [
            soak.run(d, scale.soak_seconds, scale.soak_warmup_seconds, scale.strict_rss)
        ],
        "fuzz": lambda d: list(fuzz.run(d, scale.fuzz_examples)),
        "authz": lambda d: [authz.run(d)],
        "secrets": lambda d: [secrets_scan.run(d)],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="make reliability", description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=["long", "short"], default="long")
    p.add_argument("--crash-trials", type=int, help="override the kill -9 trial count")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these scenarios")
    args = p.parse_args(argv)
    scale = LONG if args.scale == "long" else SHORT
    if args.crash_trials is not None:
        if args.crash_trials < 1:
            p.error(f"--crash-trials: {args.crash_trials} is not allowed; must be >= 1")
        scale = dataclasses.replace(scale, crash_trials=args.crash_trials)
    plan = scenarios(scale, os.environ.get("BULKHEAD_TEST_PG_URL"))
    unknown = sorted(set(args.only or []) - set(plan))
    if unknown:
        p.error(f"--only: {', '.join(unknown)} not allowed; choose from {', '.join(plan)}")
    work = Path(tempfile.mkdtemp(prefix="bulkhead-reliability-"))
    results: list[Result] = []
    started = time.monotonic()
    for name, run in plan.items():
        if args.only and name not in args.only:
            continue
        t0 = time.monotonic()
        print(f"== {name} ({scale.name}) ...", flush=True)
        (work / name).mkdir()
        try:
            got = run(work / name)
        except Exception as e:  # noqa: BLE001 - a scenario that cannot finish is a violation
            got = [Result(name, violations=[f"did not finish: {type(e).__name__}: {e}"])]
            traceback.print_exc()
        for r in got:
            r.figures["time"] = f"{time.monotonic() - t0:.0f} s"
            print(f"   {r.scenario}: {r.trials} trials, {len(r.violations)} violations", flush=True)
        results += got
    print()
    print(table(results))
    print(f"\n{scale.name} form, {time.monotonic() - started:.0f} s in all; work files in {work}")
    bad = [r for r in results if r.violations]
    for r in bad:
        print("\n" + r.explain(limit=50))
    if not bad:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
