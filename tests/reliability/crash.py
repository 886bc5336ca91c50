"""kill -9 the signer at random (seeded) moments while several bots send bursts of intents.

After every restart: every order the exchange holds has an audit allow record (and is what was
allowed); every allowed order the exchange never got has an outcome record saying so; the limit
counters the signer reports equal what the audit log allowed; the log verifies.

The signer's reconciler resolves orders a crash left pending. It runs its first pass as the
signer starts; with ONE signer process, nothing can be in flight at that moment (the previous
process is dead), so this scenario configures `reconcile_grace_s = 0` and no periodic pass
(`reconcile_interval_s = 3600`): a periodic pass with grace 0 could race a request in flight,
which is exactly what the grace period exists to prevent in production.
"""

from __future__ import annotations

import random
import threading
import time
from decimal import Decimal
from pathlib import Path

import grpc

from tests.reliability.invariants import (
    Ledger,
    counters_match_audit,
    exchange_matches_audit,
    pending,
)
from tests.reliability.processes import SimProcess, wait_until
from tests.reliability.provision import Auditor, Home, bot_client, provision
from tests.reliability.result import Result

RECONCILE_ON_START_ONLY = "reconcile_interval_s = 3600\nreconcile_grace_s = 0"
AMOUNTS = {"BTC/USDT": "0.001", "ETH/USDT": "0.01"}


class Burst:
    """Bots sending intents as fast as the signer answers, until the signer dies under them."""

    def __init__(self, home: Home, address: str, trial: int, prices: dict[str, Decimal]) -> None:
        self.home, self.address, self.trial, self.prices = home, address, trial, prices
        self.killed = threading.Event()
        self.unexpected: list[str] = []
        self.sent = 0
        self._lock = threading.Lock()

    def run_bot(self, bot: str, seed: int) -> None:
        rnd = random.Random(seed)
        client = bot_client(self.home, self.address, bot)
        last_open: tuple[str, str] | None = None
        i = 0
        try:
            while not self.killed.is_set():
                i += 1
                coid = f"t{self.trial}-{bot}-{i}"
                symbol = rnd.choice(list(AMOUNTS))
                try:
                    if last_open is not None and rnd.random() < 0.5:
                        client.cancel_order(last_open[0], last_open[1])
                        last_open = None
                    elif rnd.random() < 0.1:  # outside the policy: a denial, audited
                        r = client.submit_order("DATA/USDT", "buy", "limit", "100", "0.07", coid)
                        if r.decision.allowed:
                            self.unexpected.append(f"{coid}: DATA/USDT was allowed")
                    else:
                        r = client.submit_order(
                            symbol, "buy", "limit", AMOUNTS[symbol], self.prices[symbol], coid
                        )
                        if r.decision.allowed and r.order.status == "open":
                            last_open = (symbol, coid)
                    with self._lock:
                        self.sent += 1
                except grpc.RpcError as e:
                    if not self.killed.is_set():
                        self.unexpected.append(f"{coid}: {e.code().name} {e.details()}")
                    return
        finally:
            client.close()


def run(
    root: Path, trials: int, seed: int = 20240607, bots: int = 4, cli_every: int = 25
) -> Result:
    """`trials` kills; returns the violations found after each restart."""
    result = Result("signer kill -9 during bursts")
    rnd = random.Random(seed)
    sim = SimProcess.start(root)
    home = provision(
        root, sim, key_ids=("k1", "k2"), bots=bots, config_extra=RECONCILE_ON_START_ONLY
    )
    signer = home.process()
    auditor = Auditor(home)
    kill_at: list[float] = []
    try:
        signer.start()
        for trial in range(trials):
            prices = {s: sim.limit_price(s) for s in AMOUNTS}
            burst = Burst(home, signer.addresses["bot_unix"], trial, prices)
            threads = [
                threading.Thread(target=burst.run_bot, args=(b, rnd.randrange(1 << 30)))
                for b in home.bots
            ]
            # The moment of the kill: after a random number of answered intents (0 = before
            # the first answer), with the other bots' requests in flight at every stage.
            target = rnd.randrange(0, 40)
            started = time.monotonic()
            for t in threads:
                t.start()

            def reached(b: Burst = burst, n: int = target, ts: list = threads) -> bool:
                return b.sent >= n or not any(t.is_alive() for t in ts)

            wait_until("the burst reaching its kill point", reached, timeout=60, every=0.001)
            burst.killed.set()
            signer.kill9()
            kill_at.append(time.monotonic() - started)
            result.faults += 1
            for t in threads:
                t.join(timeout=60)
            result.violations += [f"trial {trial}: {u}" for u in burst.unexpected]
            signer.start()
            check_after_restart(result, trial, home, signer.addresses["bot_unix"], sim, auditor)
            if cli_every and (trial % cli_every == cli_every - 1 or trial == trials - 1):
                ok, report = auditor.cli_export_and_verify()
                result.check(ok, f"trial {trial}: bulkhead-signer audit verify: {report}")
            sim.cancel_all()
            result.trials += 1
        ledger = Ledger.replay(auditor.records())
        reconciled = [
            out for o in ledger.orders.values() for out in o.outcomes if out.get("reconciled")
        ]
        never = sum(1 for out in reconciled if out["status"] == "rejected")
        result.figures = {
            "allowed orders": str(ledger.allowed()),
            "decisions": str(len(ledger.decisions)),
            "left pending by a kill": f"{len(reconciled)} ({never} never placed)",
            "kill moments": f"{min(kill_at):.2f}-{max(kill_at):.2f} s into a burst",
        }
    finally:
        auditor.close()
        signer.stop()
        sim.stop()
    return result


def check_after_restart(
    result: Result, trial: int, home: Home, address: str, sim: SimProcess, auditor: Auditor
) -> None:
    def settled() -> bool:
        return pending(Ledger.replay(auditor.records())) == 0

    try:
        wait_until("the reconciler resolving every pending order", settled, timeout=60, every=0.2)
    except TimeoutError as e:
        result.violate(f"trial {trial}: {e}")
    report, records = auditor.snapshot()
    ledger = Ledger.replay(records)
    result.check(report.ok, f"trial {trial}: audit verify: {report.summary}")
    result.violations += [
        f"trial {trial}: {v}" for v in exchange_matches_audit(ledger, sim.orders())
    ]
    for key_id in home.key_ids:
        bot = next(b for b, keys in home.grants.items() if key_id in keys)
        client = bot_client(home, address, bot, key_id)
        try:
            view = client.get_policy()
        finally:
            client.close()
        bad = counters_match_audit(ledger, key_id, view.used_24h_notional, view.open_orders)
        result.violations += [f"trial {trial}: {v}" for v in bad]
