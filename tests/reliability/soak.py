"""A soak: 8 clients at the signer's maximum rate (each sends its next request the moment the
last is answered) for a fixed time: orders placed and cancelled at the exchange, policy reads,
balance reads and a share of intents the policy must deny.

Invariant: no error other than a policy denial (no gRPC error, no exchange error) and the log
verifies. Figures: requests per second, p99 latency in the first and the last fifth of the run,
and the signer's RSS (/proc/PID/status VmRSS) after the warm-up and at the end; in the long form
RSS growth must stay under 10 %.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from tests.reliability.processes import SimProcess
from tests.reliability.provision import Auditor, Home, bot_client, provision
from tests.reliability.result import Result

CLIENTS = 8
RSS_GROWTH_LIMIT = 0.10


@dataclass
class Sample:
    at: float
    seconds: float


@dataclass
class Load:
    home: Home
    address: str
    prices: dict[str, str]
    stop: threading.Event = field(default_factory=threading.Event)
    samples: list[Sample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    denials: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def timed(self, call: object) -> object:
        start = time.monotonic()
        reply = call()  # type: ignore[operator]
        with self.lock:
            self.samples.append(Sample(start, time.monotonic() - start))
        return reply

    def client_loop(self, n: int) -> None:
        rnd = random.Random(n)
        bot = sorted(self.home.bots)[n % len(self.home.bots)]
        client = bot_client(self.home, self.address, bot)
        i = 0
        try:
            while not self.stop.is_set():
                i += 1
                coid = f"soak-{n}-{i}"
                roll = rnd.random()
                try:
                    if roll < 0.1:
                        r = self.timed(
                            lambda c=coid: client.submit_order(
                                "DATA/USDT", "buy", "limit", "100", "0.07", c
                            )
                        )
                        if r.decision.allowed:  # type: ignore[attr-defined]
                            self.errors.append(f"{coid}: a DATA/USDT order was allowed")
                        self.denials += 1
                    elif roll < 0.2:
                        self.timed(client.get_policy)
                    elif roll < 0.25:
                        r = self.timed(lambda: client.read("balances"))
                        if r.exchange_error:  # type: ignore[attr-defined]
                            self.errors.append(f"read: {r.exchange_error}")  # type: ignore[attr-defined]
                    else:
                        self.order_and_cancel(client, coid)
                except grpc.RpcError as e:
                    self.errors.append(f"{coid}: {e.code().name} {e.details()}")
        finally:
            client.close()

    def order_and_cancel(self, client: object, coid: str) -> None:
        r = self.timed(
            lambda: client.submit_order(  # type: ignore[attr-defined]
                "BTC/USDT", "buy", "limit", "0.001", self.prices["BTC/USDT"], coid
            )
        )
        if not r.decision.allowed or r.exchange_error:  # type: ignore[attr-defined]
            self.errors.append(f"{coid}: not placed: {r}")
            return
        c = self.timed(lambda: client.cancel_order("BTC/USDT", coid))  # type: ignore[attr-defined]
        if c.exchange_error or c.order.status not in ("canceled", "closed"):  # type: ignore[attr-defined]
            self.errors.append(f"{coid}: cancel: {c}")

    def p99_ms(self, start: float, end: float) -> float:
        window = sorted(s.seconds for s in self.samples if start <= s.at < end)
        if not window:
            return float("nan")
        return 1000 * window[min(len(window) - 1, int(len(window) * 0.99))]


def run(root: Path, seconds: float, warmup: float, strict_rss: bool) -> Result:
    result = Result(f"soak: {CLIENTS} clients at max rate")
    sim = SimProcess.start(root)
    home = provision(root, sim, bots=CLIENTS)
    signer = home.process()
    try:
        signer.start()
        prices = {"BTC/USDT": str(sim.limit_price(factor="0.97"))}
        load = Load(home, signer.addresses["bot_unix"], prices)
        threads = [threading.Thread(target=load.client_loop, args=(n,)) for n in range(CLIENTS)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        load.stop.wait(warmup)  # the load runs meanwhile; this is the measurement window
        rss_start, m0 = signer.rss_kb(), time.monotonic()
        load.stop.wait(seconds)
        rss_end, m1 = signer.rss_kb(), time.monotonic()
        load.stop.set()
        for t in threads:
            t.join(timeout=60)
        result.check(signer.alive(), "the signer died under load")
        result.violations += load.errors[:50]
        if len(load.errors) > 50:
            result.violate(f"... {len(load.errors) - 50} more errors")
        fifth = (m1 - m0) / 5
        measured = [s for s in load.samples if m0 <= s.at < m1]
        growth = (rss_end - rss_start) / rss_start
        result.trials = len(load.samples)
        result.faults = load.denials
        result.figures = {
            "duration": f"{m1 - m0:.0f} s (+{m0 - t0:.0f} s warm-up)",
            "rate": f"{len(measured) / (m1 - m0):.0f} req/s",
            "p99 first/last fifth": (
                f"{load.p99_ms(m0, m0 + fifth):.0f}/{load.p99_ms(m1 - fifth, m1):.0f} ms"
            ),
            "RSS start/end": f"{rss_start / 1024:.1f}/{rss_end / 1024:.1f} MiB ({growth:+.1%})",
        }
        if strict_rss:
            result.check(growth < RSS_GROWTH_LIMIT, f"RSS grew {growth:.1%} (limit 10 %)")
        auditor = Auditor(home)
        try:
            report, _ = auditor.snapshot()
        finally:
            auditor.close()
        result.check(report.ok, f"audit verify: {report.summary}")
    finally:
        signer.stop()
        sim.stop()
    return result
