"""`make bench`: run every benchmark and print ONE JSON document with targets and pass/fail.

Each benchmark runs as its own process (its JSON on stdout, progress on stderr); this merges
them and puts every figure that has a target beside it, with pass/fail. Figures without a
target are listed with `target: null`. The raw documents are kept under `benchmarks`.

    .venv/bin/python benchmarks/run_all.py [--quick] [--only NAME,...]

--quick: short cells, 20,000 keys instead of 100,000, 100,000 candles: a smoke run whose
figures are marked `at_target_scale: false` where that matters.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from rig import machine_info  # noqa: E402

NOTE = (
    "2-core machine shared with other engineers' concurrent test runs: latency and throughput "
    "figures are pessimistic; ratios to the baseline measured in the same run are the fairer read"
)


def benches(quick: bool) -> dict[str, list[str]]:
    q = ["--quick"] if quick else []
    return {
        "signing_latency": ["signing_latency.py", *q],
        "scale_keys": ["scale_keys.py", *q],
        "backtest_speed": [
            "backtest_speed.py",
            *(["--candles", "100000", "--repeat", "1"] * quick),
        ],
        "merkle_proofs": ["merkle_proofs.py"],
        "grpc_floor": ["grpc_floor.py", *(["--duration", "1.5"] * quick)],
    }


def run(name: str, argv: list[str], timeout_s: float = 900) -> tuple[dict[str, Any] | None, str]:
    print(f"[bench] {name} ...", file=sys.stderr, flush=True)
    t = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, str(HERE / argv[0]), *argv[1:]],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout_s} s"
    print(f"[bench] {name}: {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    try:
        doc = json.loads(done.stdout)
    except json.JSONDecodeError:
        return None, f"exit {done.returncode}, no JSON: {done.stderr.strip()[-600:]}"
    if done.returncode != 0:
        return doc, f"exit {done.returncode}"
    return doc, ""


def fig(
    name: str, value: Any, unit: str, target: str | None, ok: Callable[[Any], bool] | None = None
) -> dict[str, Any]:
    passed = None if ok is None or value is None else bool(ok(value))
    return {"figure": name, "value": value, "unit": unit, "target": target, "pass": passed}


def signing_figures(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    floor = {"sqlite": 2000, "postgresql": 1000}
    for backend in doc.get("backends", []):
        db = backend["db"]
        cells = {(c["transport"], c["clients"]): c for c in backend["cells"]}
        for transport in ("unix", "tcp"):
            one = cells.get((transport, 1), {})
            where = f"{db}, {'Unix socket' if transport == 'unix' else 'mTLS TCP'}"
            target = transport == "unix"
            out.append(
                fig(f"sign p50, 1 client, {where}", one.get("p50_ms"), "ms",
                    "<= 1" if target else None, (lambda v: v <= 1) if target else None)
            )  # fmt: skip
            out.append(
                fig(f"sign p99, 1 client, {where}", one.get("p99_ms"), "ms",
                    "<= 3" if target else None, (lambda v: v <= 3) if target else None)
            )  # fmt: skip
            out.append(
                fig(f"overhead vs ccxt in-bot signing, p50, 1 client, {where}",
                    one.get("overhead_p50_ms"), "ms", None)
            )  # fmt: skip
            health = backend.get("grpc_health_check", {}).get(transport, {})
            out.append(
                fig(f"gRPC alone (empty health check) p50, 1 client, {where}",
                    health.get("1", {}).get("p50_ms"), "ms", None)
            )  # fmt: skip
            out.append(
                fig(f"gRPC alone (empty health check) calls/s, 8 clients, {where}",
                    health.get("8", {}).get("orders_per_s"), "calls/s", None)
            )  # fmt: skip
            out.append(
                fig(f"signer CPU per order, 8 clients, {where}",
                    cells.get((transport, 8), {}).get("server_cpu_ms_per_request"), "ms", None)
            )  # fmt: skip
            for n in (8, 32):
                cell = cells.get((transport, n), {})
                goal = floor[db] if n == 8 else None
                out.append(
                    fig(f"audited orders/s, {n} clients, {where}", cell.get("orders_per_s"),
                        "orders/s", f">= {goal}" if goal else None,
                        (lambda v, g=goal: v >= g) if goal else None)
                )  # fmt: skip
                out.append(fig(f"sign p99, {n} clients, {where}", cell.get("p99_ms"), "ms", None))
        base = backend.get("baseline_ccxt_sign", {}).get("1", {})
        out.append(
            fig(f"baseline ccxt sign() p50, 1 client ({db} run)", base.get("p50_ms"), "ms", None)
        )
    for skipped in doc.get("skipped", []):
        out.append(fig(f"signing on {skipped['db']}", None, "", "run", None) | {"skipped": skipped})
    return out


def scale_figures(doc: dict[str, Any]) -> list[dict[str, Any]]:
    scale = {"at_target_scale": doc.get("at_target_scale"), "keys": doc.get("keys")}
    one = doc.get("one_key_1_client_unix", {})
    freeze = doc.get("freeze_all", {})
    rows = [
        fig("signer start-up with all keys loaded (to health SERVING)", doc.get("startup_s"), "s",
            "<= 5", lambda v: v <= 5),
        fig("signer RSS idle with all keys loaded", doc.get("rss_idle_mb"), "MB", "<= 500",
            lambda v: v <= 500),
        fig("signer RSS after signing for random keys", doc.get("rss_after_random_keys_mb"), "MB",
            "<= 500", lambda v: v <= 500),
        fig("sign p50, 1 client, Unix socket, all keys loaded", one.get("p50_ms"), "ms", "<= 1",
            lambda v: v <= 1),
        fig("sign p99, 1 client, Unix socket, all keys loaded", one.get("p99_ms"), "ms", "<= 3",
            lambda v: v <= 3),
        fig("freeze --all: last allowed answer after the command returned",
            freeze.get("propagation_ms"), "ms", "<= 1000", lambda v: v <= 1000),
        fig("freeze --all: orders sent after the command returned and still allowed",
            freeze.get("allowed_sent_after_return"), "orders", "== 0", lambda v: v == 0),
        fig("freeze --all: allowed decisions in the audit log after the freeze record",
            freeze.get("audit_decisions_after_freeze", {}).get("allowed_after"), "orders", "== 0",
            lambda v: v == 0),
        fig("bulk load of keys, policies and bots", doc.get("bulk_load_s"), "s", None),
    ]  # fmt: skip
    return [r | scale for r in rows]


def backtest_figures(doc: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [
        fig(f"backtest {r['bot']} {r['path']} path", r["candles_per_s"], "candles/s", None)
        for r in doc.get("results", [])
    ]
    same = doc.get("identical_fills_and_deals", {})
    rows.append(fig("fast path == reference path (fills and deals)", same, "", "all true",
                    lambda v: bool(v) and all(v.values())))  # fmt: skip
    return rows


def merkle_figures(doc: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for r in doc.get("results", []):
        n = r["records"]
        rows.append(
            fig(f"inclusion proof hashes, {n} records", r["inclusion"]["hashes_max"], "", None)
        )
        rows.append(
            fig(f"inclusion proof time, {n} records", r["inclusion"]["prove_us_median"], "us", None)
        )
    return rows


def grpc_floor_figures(doc: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for r in doc.get("results", []):
        where = f"bare {r['server']} gRPC server, empty call, {r['clients']} client(s)"
        rows.append(fig(f"{where}: p50", r["p50_ms"], "ms", None))
        rows.append(fig(f"{where}: calls/s", r["calls_per_s"], "calls/s", None))
        rows.append(fig(f"{where}: server CPU", r["server_cpu_ms_per_call"], "ms/call", None))
    return rows


FIGURES = {
    "signing_latency": signing_figures,
    "scale_keys": scale_figures,
    "backtest_speed": backtest_figures,
    "merkle_proofs": merkle_figures,
    "grpc_floor": grpc_floor_figures,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", help="comma list of " + ", ".join(FIGURES))
    args = p.parse_args(argv)
    started = time.perf_counter()
    selected = benches(args.quick)
    if args.only:
        selected = {k: v for k, v in selected.items() if k in args.only.split(",")}
    docs: dict[str, Any] = {}
    errors: dict[str, str] = {}
    figures: list[dict[str, Any]] = []
    for name, argv_ in selected.items():
        doc, err = run(name, argv_)
        if err:
            errors[name] = err
        if doc is not None:
            docs[name] = doc
            try:
                figures += [f | {"benchmark": name} for f in FIGURES[name](doc)]
            except (KeyError, TypeError) as e:
                errors[name] = f"unexpected output shape: {type(e).__name__}: {e}"
    judged = [f["pass"] for f in figures if f["pass"] is not None]
    machine = machine_info() | {"load_avg_1m_at_end": round(os.getloadavg()[0], 2)}
    out = {
        "bench": "make bench",
        "quick": args.quick,
        "machine": machine,
        "note": NOTE,
        "summary": {
            "with_target": len(judged),
            "passed": sum(judged),
            "failed": len(judged) - sum(judged),
            "total_s": round(time.perf_counter() - started, 1),
        },
        "figures": figures,
        "errors": errors,
        "benchmarks": docs,
    }
    print(json.dumps(out, indent=2, default=str))
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
