"""Order-signing latency and throughput through the signer, beside the unsafe baseline (JSON).

For each storage backend (SQLite file, a fresh PostgreSQL schema) a real `bulkhead-signer serve`
process runs in sign-only mode; bots send SubmitOrder over the Unix socket and over mutual-TLS
TCP with 1, 8 and 32 concurrent clients (one bot identity and one key per client; 8 and 32
clients are spread over 4 client processes). Every allowed order is a durable audit decision
plus its outcome record. In the same run, the same orders are signed the unsafe way: ccxt
binance `sign()` with the HMAC secret inside the bot process, at the same concurrency.

    .venv/bin/python benchmarks/signing_latency.py [--quick] [--duration S] [--db sqlite,postgresql]

Reports p50, p99 and mean latency (ms), orders/s, and the overhead vs the baseline in ms.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import ClientPool, Job, Result  # noqa: E402
from rig import AMOUNT, SERVER_NAME, SYMBOL, SignerRig, cpu_seconds, machine_info, pg_base_url  # noqa: E402

PROCESSES = 4  # client processes for 8 and 32 clients (each runs clients/4 threads)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def summarize(
    results: list[Result], start_at: float, end_at: float | None = None
) -> dict[str, Any]:
    """Latency over every measured request; orders/s over the window in which every client
    was measuring (a client whose warm-up overran starts late; `late_start_s` says by how much).
    """
    lat = [x for r in results for x in r.latencies]
    problems = [r.first_problem for r in results if r.first_problem]
    if not lat:
        return {"n": 0, "errors": sum(r.errors for r in results), "problem": problems[:1]}
    t0 = max(start_at, *(r.latest_start for r in results))
    t1 = end_at if end_at is not None else max(r.last_end for r in results)
    done = sum(1 for r in results for d in r.done_at if t0 <= d <= t1)
    out: dict[str, Any] = {
        "n": len(lat),
        "p50_ms": round(percentile(lat, 50) * 1e3, 3),
        "p99_ms": round(percentile(lat, 99) * 1e3, 3),
        "mean_ms": round(statistics.fmean(lat) * 1e3, 3),
        "max_ms": round(max(lat) * 1e3, 3),
        "orders_per_s": round(done / (t1 - t0), 1) if t1 > t0 else None,
        "refused": sum(r.denied for r in results),
        "errors": sum(r.errors for r in results),
        "late_start_s": round(t0 - start_at, 3),
    }
    if problems:
        out["first_problem"] = problems[0]
    return out


def layout(clients: int) -> list[int]:
    """Threads per client process: 1 client alone; otherwise spread over PROCESSES processes."""
    procs = 1 if clients == 1 else min(PROCESSES, clients)
    return [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]


def run_cell(
    pool: ClientPool, base: Job, clients: int, duration: float, server_pid: int | None = None
) -> dict[str, Any]:
    """One cell; with `server_pid`, also the server's CPU per answered request (warm-up and
    measured requests alike, over the whole cell)."""
    cpu0 = cpu_seconds(server_pid) if server_pid else 0.0
    start_at = time.time() + 3.0 + 0.1 * clients  # room for connecting and warming up
    jobs, first = [], 0
    for p, threads in enumerate(layout(clients)):
        pairs = base.pairs[first : first + threads]
        first += threads
        jobs.append(
            Job(
                **{
                    **base.__dict__,
                    "threads": threads,
                    "pairs": pairs,
                    "start_at": start_at,
                    "end_at": start_at + duration,
                    "tag": f"{base.tag}p{p}",
                }
            )
        )
    results = pool.run(jobs)
    out = summarize(results, start_at, start_at + duration)
    if server_pid and out.get("n"):
        answered = out["n"] + sum(j.warmup * j.threads for j in jobs)
        out["server_cpu_ms_per_request"] = round(
            (cpu_seconds(server_pid) - cpu0) * 1e3 / answered, 3
        )
    return out


def bench_backend(
    db: str, pg: str | None, clients: list[int], duration: float, pool: ClientPool
) -> dict[str, object]:
    rig = SignerRig(Path(tempfile.mkdtemp(prefix=f"bench-{db}-")), db, pg)
    try:
        rig.init()
        pairs = rig.add_pairs(max(clients), secrets.token_bytes(32))
        startup = rig.start()
        assert rig.sim is not None and rig.account is not None
        price = (rig.sim.price(SYMBOL.replace("/", "")) * Decimal("0.99")).quantize(Decimal("0.01"))
        common = {"price": str(price), "symbol": SYMBOL, "amount": AMOUNT}
        baseline_job = Job(
            kind="baseline",
            threads=1,
            start_at=0,
            end_at=0,
            tag=f"bl{db[0]}",
            sim_url=rig.sim.base_url,
            api_key=rig.account.api_key,
            secret=rig.account.secret,
            pairs=tuple((p.bot_id, p.seed, p.key_id) for p in pairs),
            **common,
        )
        baseline = {str(n): run_cell(pool, baseline_job, n, duration) for n in clients}
        full = Job(**{**baseline_job.__dict__, "kind": "baseline_create_order", "tag": "cf"})
        baseline_create = run_cell(pool, full, 1, duration)
        cells = []
        floors: dict[str, object] = {}
        for transport in ("unix", "tcp"):
            tls = transport == "tcp"
            job = Job(
                **{
                    **baseline_job.__dict__,
                    "kind": "signer",
                    "warmup": 5,
                    "address": rig.addresses["bot_tcp" if tls else "bot_unix"],
                    "tls": rig.client_tls() if tls else None,
                    "server_name": SERVER_NAME if tls else None,
                    "secret": "",
                }
            )
            health = Job(**{**job.__dict__, "kind": "health", "tag": "h"})
            pid = rig.proc.pid if rig.proc is not None else None
            floors[transport] = {
                str(n): run_cell(pool, health, n, min(duration, 2.0), pid) for n in clients
            }
            for n in clients:
                job = Job(**{**job.__dict__, "tag": f"{transport[0]}{n}"})
                cell = run_cell(pool, job, n, duration, pid)
                base = baseline[str(n)]
                if cell.get("n") and base.get("n"):
                    for q in ("p50", "p99"):
                        cell[f"overhead_{q}_ms"] = round(cell[f"{q}_ms"] - base[f"{q}_ms"], 3)
                cells.append({"db": db, "transport": transport, "clients": n, **cell})
        rss = rig.rss_mb()
        return {
            "db": db,
            "startup_s": round(startup, 3),
            "rss_mb_after": rss,
            "baseline_ccxt_sign": baseline,
            "baseline_ccxt_create_order_1_client": baseline_create,
            "grpc_health_check": floors,
            "cells": cells,
        }
    finally:
        rig.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="short cells (about a minute in all)")
    p.add_argument(
        "--duration", type=float, help="seconds measured per cell (default 5; quick 1.5)"
    )
    p.add_argument("--db", default="sqlite,postgresql", help="comma list: sqlite, postgresql")
    p.add_argument("--clients", default="1,8,32", help="comma list of concurrent clients")
    args = p.parse_args(argv)
    duration = args.duration or (1.5 if args.quick else 5.0)
    clients = [int(c) for c in args.clients.split(",")]
    started = time.perf_counter()
    out: dict[str, Any] = {
        "benchmark": "signing_latency",
        "machine": machine_info(),
        "mode": "sign-only",
        "duration_s_per_cell": duration,
        "client_processes": {str(n): layout(n) for n in clients},
        "backends": [],
        "skipped": [],
    }
    pool = ClientPool(PROCESSES)
    try:
        for db in args.db.split(","):
            pg = None
            if db == "postgresql":
                pg, why = pg_base_url()
                if pg is None:
                    out["skipped"].append({"db": db, "reason": why})
                    continue
            out["backends"].append(bench_backend(db, pg, clients, duration, pool))
    finally:
        pool.close()
    out["total_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
