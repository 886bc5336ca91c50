"""Several `bulkhead-signer serve` replicas sharing one PostgreSQL, as an operator runs them.

Reuses the reliability scaffolding: `SimProcess` (simexchange through its own CLI), `provision`
(init, keys, policy, bots through the CLI's Python APIs) and `SignerProcess` (a real `serve`
process, killable with real signals). Each replica has its own data directory holding only
`signer.toml` (the shared database URL, the exchange URL, the reconciler settings) and its own
sockets; the audit key and the keystore live in the shared database, so every replica signs
the same chain with the same audit key.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from botengine.signer_client import SignerClient
from tests.reliability.invariants import Ledger, pending
from tests.reliability.processes import SignerProcess, SimProcess, wait_until
from tests.reliability.provision import Auditor, Home, provision
from tests.signer.stack import write_config

KEY_ID = "k1"
# The reconciler on every replica: a pass each second for orders pending longer than 3 s. The
# grace must exceed any request still in flight on a live replica (here: loopback to
# simexchange, milliseconds); production keeps the 120 s default.
RECONCILE = "reconcile_interval_s = 1\nreconcile_grace_s = 3"
CAP = Decimal("1500")


def cap_policy(cap: Decimal = CAP) -> str:
    """Roomy everywhere but the rolling 24 h notional, which the bursts contend for."""
    return f"""
symbols = ["BTC/USDT", "ETH/USDT"]
sides = ["buy", "sell"]
order_types = ["limit"]
max_order_notional = "100000"
max_notional_24h = "{cap}"
max_open_orders = 100000
orders_per_minute = 100000
price_band_pct = "5"
reference_max_age_s = 30
"""


@dataclass
class ReplicaSet:
    root: Path
    sim: SimProcess
    home: Home
    signers: list[SignerProcess]
    auditor: Auditor
    clients: list[SignerClient] = field(default_factory=list)

    @property
    def addresses(self) -> list[str]:
        return [s.addresses["bot_unix"] for s in self.signers]

    def client(self, address: str | list[str], bot: str = "bot-0") -> SignerClient:
        """A bot's SignerClient on one replica's address or, for failover, on several."""
        c = SignerClient(address, self.home.bots[bot], KEY_ID, timeout=20)
        self.clients.append(c)
        return c

    def stop(self) -> None:
        for c in self.clients:
            c.close()
        self.auditor.close()
        for s in self.signers:
            s.stop()
        self.sim.stop()


def _in_parallel(fns: list[Callable[[], object]]) -> None:
    """Start the replica processes at once (each `serve` start costs seconds on 2 cores)."""
    errors: list[BaseException] = []

    def run(fn: Callable[[], object]) -> None:
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - re-raised below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(fn,)) for fn in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    if errors:
        raise errors[0]


def start_replica_set(
    root: Path, db_url: str, count: int, *, policy: str | None = None, bots: int = 6
) -> ReplicaSet:
    """Provision one signer home on `db_url`, then start `count` replicas of it."""
    root.chmod(0o700)
    sim = SimProcess.start(root)
    try:
        home = provision(
            root,
            sim,
            db_url=db_url,
            key_ids=(KEY_ID,),
            bots=bots,
            policy=policy or cap_policy(),
            config_extra=RECONCILE,
        )
        signers = [home.process("replica-0")]
        for i in range(1, count):
            data_dir = root / f"replica-{i}"
            data_dir.mkdir(mode=0o700)
            write_config(data_dir, sim.base_url, db_url, RECONCILE)
            signers.append(SignerProcess(data_dir, home.keyfile, root / f"replica-{i}.log"))
        _in_parallel([s.start for s in signers])
    except BaseException:
        sim.stop()
        raise
    return ReplicaSet(root, sim, home, signers, Auditor(home))


def wait_reconciled(rs: ReplicaSet, timeout: float = 30) -> None:
    """Every allowed order has an outcome record (the reconciler closed what a kill left)."""
    wait_until(
        "every allowed order having an outcome record",
        lambda: pending(Ledger.replay(rs.auditor.records())) == 0,
        timeout,
        every=0.25,
    )
