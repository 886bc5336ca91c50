"""What Python gRPC alone costs on this machine: the floor under every signing figure (JSON).

A bare gRPC server (no signer, no interceptors, no TLS) answering the standard empty health
check over a Unix socket, sync (thread pool) and asyncio servers, with 1 client and with 8
clients (4 processes x 2 threads, as `signing_latency.py` runs 8 bots). Reports p50 latency,
calls/s and the server's CPU per call. Whatever a signed, audited order costs comes on top.

    .venv/bin/python benchmarks/grpc_floor.py [--duration S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rig import cpu_seconds, machine_info  # noqa: E402


def serve_sync(address: str, ready: Any) -> None:
    import grpc
    from grpc_health.v1 import health, health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    server.add_insecure_port(address)
    server.start()
    ready.set()
    server.wait_for_termination()


def serve_aio(address: str, ready: Any) -> None:
    import grpc
    from grpc_health.v1 import health, health_pb2_grpc

    async def main() -> None:
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        server.add_insecure_port(address)
        await server.start()
        ready.set()
        await server.wait_for_termination()

    asyncio.run(main())


def client(address: str, threads: int, start_at: float, duration: float, out: Any) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    latencies: list[float] = []
    rates: list[float] = []  # calls/s of each thread over its own measured window
    lock = threading.Lock()

    def one() -> None:
        with grpc.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest()
            for _ in range(50):
                stub.Check(request)
            while time.time() < start_at:
                time.sleep(0.001)
            began = time.time()  # later than start_at if this process was slow to start
            mine = []
            while time.time() < start_at + duration:
                t = time.perf_counter()
                stub.Check(request)
                mine.append(time.perf_counter() - t)
            window = time.time() - began
        with lock:
            latencies.extend(mine)
            rates.append(len(mine) / window if window > 0 else 0.0)

    pool = [threading.Thread(target=one) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    out.put((latencies, sum(rates)))


def cell(ctx: Any, address: str, server_pid: int, clients: int, duration: float) -> dict[str, Any]:
    procs = 1 if clients == 1 else 4
    per = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    out = ctx.Queue()
    start_at = time.time() + 4.0  # spawning and warming the client processes comes first
    workers = [ctx.Process(target=client, args=(address, n, start_at, duration, out)) for n in per]
    for w in workers:
        w.start()
    while time.time() < start_at:
        time.sleep(0.01)
    cpu0 = cpu_seconds(server_pid)
    parts = [out.get(timeout=120) for _ in workers]
    cpu1 = cpu_seconds(server_pid)
    latencies = [x for lat, _ in parts for x in lat]
    for w in workers:
        w.join()
    return {
        "clients": clients,
        "p50_ms": round(statistics.median(latencies) * 1e3, 3),
        "calls_per_s": round(sum(rate for _, rate in parts), 1),
        "server_cpu_ms_per_call": round((cpu1 - cpu0) * 1e3 / len(latencies), 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=3.0)
    args = p.parse_args(argv)
    ctx = mp.get_context("spawn")
    results = []
    for kind, target in (("sync", serve_sync), ("asyncio", serve_aio)):
        address = f"unix://{tempfile.mkdtemp(prefix='grpcfloor-')}/s.sock"
        ready = ctx.Event()
        server = ctx.Process(target=target, args=(address, ready), daemon=True)
        server.start()
        if not ready.wait(60):
            raise RuntimeError(f"{kind} server did not start")
        try:
            for n in (1, 8):
                results.append({"server": kind} | cell(ctx, address, server.pid, n, args.duration))
        finally:
            server.kill()
            server.join()
    print(json.dumps({"benchmark": "grpc_floor", "machine": machine_info(), "results": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
