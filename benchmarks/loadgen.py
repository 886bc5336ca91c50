"""Load generators for the signer benchmarks, run in separate client processes.

gRPC Python clients in one process share one GIL, so 8 or 32 clients are spread over several
spawned processes (threads inside each). A `ClientPool` keeps those processes alive across the
measurement cells; each cell sends every process one `Job` and waits for its `Result`.

Kinds of job:
- `signer`: each thread is one bot sending SubmitOrder (sign-only) on its own key;
- `baseline`: the unsafe way, ccxt binance `sign()` of the same create-order request with the
  HMAC secret inside the bot process;
- `baseline_create_order`: ccxt's whole `create_order` path (markets, precision, sign) stopped
  just before the HTTP send;
- `health`: a gRPC health check over the same channel (what the transport alone costs);
- `hammer`: threads sending orders for random (bot, key) pairs of a large population, keeping
  the wall-clock send and receive time and the outcome of every request (freeze propagation).
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
from nacl.signing import SigningKey  # noqa: E402

from botengine.signer_client import Identity, SignerClient  # noqa: E402


def bot_seed(run_secret: bytes, index: int) -> bytes:
    """Deterministic per-run seeds, so client processes can rebuild 10,000 identities cheaply."""
    return hashlib.blake2b(index.to_bytes(8, "big"), key=run_secret, digest_size=32).digest()


@dataclass(frozen=True)
class Job:
    kind: str  # signer | baseline | baseline_create_order | health | hammer
    threads: int
    start_at: float  # wall clock (time.time) shared by every process of the cell
    end_at: float
    tag: str  # unique client-order-id prefix of this job
    price: str
    symbol: str = "BTC/USDT"
    amount: str = "0.001"
    warmup: int = 20
    count: int = 0  # signer: when > 0, send exactly this many orders per thread (no end_at)
    address: str = ""
    tls: tuple[bytes, bytes, bytes] | None = None
    server_name: str | None = None
    pairs: tuple[tuple[str, bytes, str], ...] = ()  # (bot_id, seed, key_id), one per thread
    sim_url: str = ""
    api_key: str = ""
    secret: str = ""
    # hammer: bot b{j} (seed from run_secret) may use keys j*per_bot .. j*per_bot+per_bot-1
    run_secret: bytes = b""
    n_bots: int = 0
    per_bot: int = 0


@dataclass
class Result:
    """One thread's tally, or a whole job's once the threads are merged."""

    latencies: list[float] = field(default_factory=list)  # seconds, measured requests only
    done_at: list[float] = field(default_factory=list)  # wall clock of each measured answer
    first_start: float = 0.0  # earliest measured request (wall clock)
    latest_start: float = 0.0  # the last thread to begin measuring (late: warm-up overran)
    last_end: float = 0.0
    allowed: int = 0
    denied: int = 0
    errors: int = 0
    first_problem: str = ""
    # hammer only: (sent, received, outcome, key id) per request, wall-clock seconds
    events: list[tuple[float, float, str, str]] = field(default_factory=list)

    def begin(self) -> None:
        self.first_start = self.latest_start = time.time()

    def answered(self, seconds: float, ok: bool = True, problem: str = "") -> None:
        self.latencies.append(seconds)
        self.done_at.append(time.time())
        if ok:
            self.allowed += 1
        else:
            self.denied += 1
            self.first_problem = self.first_problem or problem

    def failed(self, problem: str) -> None:
        self.errors += 1
        self.first_problem = self.first_problem or problem

    def merge(self, other: Result) -> None:
        self.latencies += other.latencies
        self.done_at += other.done_at
        self.events += other.events
        self.allowed += other.allowed
        self.denied += other.denied
        self.errors += other.errors
        self.first_problem = self.first_problem or other.first_problem
        if other.first_start:
            self.first_start = min(self.first_start or other.first_start, other.first_start)
            self.latest_start = max(self.latest_start, other.latest_start)
        self.last_end = max(self.last_end, other.last_end or time.time())


def _wait_until(t: float) -> None:
    """Start barrier across processes: every thread begins at the same wall-clock instant."""
    while (left := t - time.time()) > 0:
        time.sleep(min(left, 0.05))


def _signer_thread(job: Job, idx: int, tally: Result) -> None:
    bot_id, seed, key_id = job.pairs[idx]
    ident = Identity(bot_id, SigningKey(seed))
    client = SignerClient(job.address, ident, key_id, tls=job.tls, server_name=job.server_name)
    try:
        for i in range(job.warmup):
            client.submit_order(job.symbol, "buy", "limit", job.amount, job.price, f"{job.tag}w{i}")
        _wait_until(job.start_at)
        tally.begin()
        i = 0
        while (i < job.count) if job.count else (time.time() < job.end_at):
            coid = f"{job.tag}{idx}x{i}"
            i += 1
            t = time.perf_counter()
            try:
                reply = client.submit_order(job.symbol, "buy", "limit", job.amount, job.price, coid)
            except grpc.RpcError as e:
                tally.failed(f"{e.code().name}: {e.details()}")
                continue
            ok = reply.decision.allowed and reply.HasField("signed_request")
            rules = ",".join(v.rule_id for v in reply.decision.violations)
            tally.answered(time.perf_counter() - t, ok, rules or "allowed but not signed")
    finally:
        client.close()


def _ccxt_exchange(job: Job) -> Any:
    import ccxt

    from simexchange.testing import ccxt_config

    return ccxt.binance(ccxt_config(job.sim_url, job.api_key, job.secret))


class _Stop(Exception):
    """Raised by the patched transport: the request was built and signed, not sent."""


def _baseline_thread(job: Job, idx: int, tally: Result) -> None:
    """The unsafe baseline: the bot process holds the secret and signs with ccxt itself."""
    ex = _ccxt_exchange(job)
    market_id = job.symbol.replace("/", "")
    full = job.kind == "baseline_create_order"
    if full:
        ex.load_markets()  # real HTTP to the simulator, once, outside the measurement

        def stop(*_a: object, **_k: object) -> None:
            raise _Stop

        ex.fetch = stop

    def one(coid: str) -> None:
        if full:
            try:
                ex.create_order(
                    job.symbol, "limit", "buy", job.amount, job.price, {"newClientOrderId": coid}
                )
            except _Stop:
                return
            raise RuntimeError("ccxt did not reach the transport")
        params = {"symbol": market_id, "side": "BUY", "type": "LIMIT", "timeInForce": "GTC"}
        params |= {"quantity": job.amount, "price": job.price, "newClientOrderId": coid}
        signed = ex.sign("order", ["private"], "POST", params)
        if "signature=" not in (signed["body"] or ""):
            raise RuntimeError("ccxt produced no signature")

    for i in range(job.warmup):
        one(f"{job.tag}w{i}")
    _wait_until(job.start_at)
    tally.begin()
    i = 0
    while time.time() < job.end_at:
        t = time.perf_counter()
        one(f"{job.tag}{idx}x{i}")
        tally.answered(time.perf_counter() - t)
        i += 1


def _health_thread(job: Job, idx: int, tally: Result) -> None:
    """The transport's floor: a gRPC health check over the same socket and credentials."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from botengine.signer_client import channel_for

    channel = channel_for(job.address, job.tls, job.server_name)
    stub = health_pb2_grpc.HealthStub(channel)
    req = health_pb2.HealthCheckRequest(service="")
    try:
        for _ in range(job.warmup):
            stub.Check(req, timeout=10)
        _wait_until(job.start_at)
        tally.begin()
        while time.time() < job.end_at:
            t = time.perf_counter()
            stub.Check(req, timeout=10)
            tally.answered(time.perf_counter() - t)
    finally:
        channel.close()


def _hammer_thread(job: Job, idx: int, tally: Result) -> None:
    """Random keys of the whole population; every request's wall-clock times and outcome."""
    rng = random.Random(idx)
    client = SignerClient(job.address, Identity("b00000", SigningKey(b"\x00" * 32)), "k000000")
    keys: dict[int, SigningKey] = {}
    _wait_until(job.start_at)
    tally.begin()
    i = 0
    try:
        while time.time() < job.end_at:
            j = rng.randrange(job.n_bots)
            if j not in keys:
                keys[j] = SigningKey(bot_seed(job.run_secret, j))
            client.identity = Identity(f"b{j:05d}", keys[j])
            client.key_id = f"k{j * job.per_bot + rng.randrange(job.per_bot):06d}"
            sent, t = time.time(), time.perf_counter()
            try:
                reply = client.submit_order(
                    job.symbol, "buy", "limit", job.amount, job.price, f"{job.tag}{idx}x{i}"
                )
                rules = [v.rule_id for v in reply.decision.violations]
                outcome = "allowed" if reply.decision.allowed else ",".join(rules)
            except grpc.RpcError as e:
                outcome = f"error:{e.code().name}"
            tally.answered(time.perf_counter() - t, outcome == "allowed", outcome)
            tally.events.append((sent, time.time(), outcome, client.key_id))
            i += 1
    finally:
        client.close()


RUNNERS = {
    "signer": _signer_thread,
    "baseline": _baseline_thread,
    "baseline_create_order": _baseline_thread,
    "hammer": _hammer_thread,
    "health": _health_thread,
}


def run_job(job: Job) -> Result:
    res = Result()
    lock = threading.Lock()

    def guarded(i: int) -> None:
        tally = Result()
        try:
            RUNNERS[job.kind](job, i, tally)
        except Exception as e:  # noqa: BLE001 - reported back to the orchestrator
            tally.failed(f"{type(e).__name__}: {e}")
        tally.last_end = time.time()
        with lock:
            res.merge(tally)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(job.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return res


def _serve(inbox: Any, outbox: Any) -> None:
    outbox.put("ready")  # imports done: the pool does not compete with what it measures
    while (job := inbox.get()) is not None:
        try:
            outbox.put(run_job(job))
        except Exception as e:  # noqa: BLE001
            outbox.put(Result(errors=1, first_problem=f"{type(e).__name__}: {e}"))


class ClientPool:
    """Long-lived client processes (spawned, so no gRPC state is inherited across fork)."""

    def __init__(self, processes: int) -> None:
        ctx = mp.get_context("spawn")
        self._slots = []
        for _ in range(processes):
            inbox, outbox = ctx.Queue(), ctx.Queue()
            proc = ctx.Process(target=_serve, args=(inbox, outbox), daemon=True)
            proc.start()
            self._slots.append((proc, inbox, outbox))
        for _, _, outbox in self._slots:
            if outbox.get(timeout=120) != "ready":
                raise RuntimeError("a client process did not start")

    def run(self, jobs: list[Job], timeout_s: float = 300.0) -> list[Result]:
        if len(jobs) > len(self._slots):
            raise ValueError(f"{len(jobs)} jobs but only {len(self._slots)} client processes")
        used = self._slots[: len(jobs)]
        for (_, inbox, _), job in zip(used, jobs, strict=True):
            inbox.put(job)
        return [outbox.get(timeout=timeout_s) for _, _, outbox in used]

    def close(self) -> None:
        for proc, inbox, _ in self._slots:
            inbox.put(None)
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
