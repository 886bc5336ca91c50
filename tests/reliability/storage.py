"""The audit store fails under a running signer: the disk fills up, or goes read-only.

Every intent during the outage is refused (UNAVAILABLE, "nothing was signed"), nothing reaches
the exchange, nothing about it is in the log, and the signer stays up and healthy. When the
store is back the signer serves again: after a disk-full episode by itself, once space is freed;
after a read-only episode once the operator has repaired the file system and restarted it (its
open files belong to the aborted mount). Orders acknowledged before the fault are in the log.

Disk full needs SQLite's WAL to need new blocks: the scenario first checkpoints and truncates the
WAL (as SQLite itself does routinely), otherwise writes would reuse WAL space already allocated
and the fault would land a few hundred intents later instead of at once.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from botengine.signer_client import AdminClient, SignerClient
from tests.reliability.invariants import Ledger, counters_match_audit, exchange_matches_audit
from tests.reliability.processes import SignerProcess, SimProcess, wait_until
from tests.reliability.provision import Auditor, Home, admin_client, bot_client, provision
from tests.reliability.result import Result
from tests.reliability.volumes import Volume

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


def truncate_wal(home: Home) -> None:
    db = sqlite3.connect(home.data_dir / "signer.db", timeout=30)
    try:

        def done() -> bool:
            busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            return busy == 0

        wait_until("a WAL checkpoint", done, timeout=30, every=0.05)
    finally:
        db.close()


def outage_calls(
    bot: SignerClient, admin: AdminClient, sim: SimProcess, trial: int, acked: str
) -> dict[str, Callable[[], object]]:
    """One of each kind of request the signer must refuse while it cannot write its log."""
    price = sim.limit_price()
    return {
        f"s{trial}-submit": lambda: bot.submit_order(
            "BTC/USDT", "buy", "limit", "0.001", price, f"s{trial}-submit"
        ),
        f"s{trial}-signonly": lambda: bot.submit_order(
            "BTC/USDT", "buy", "limit", "0.001", price, f"s{trial}-signonly", mode="sign-only"
        ),
        f"s{trial}-cancel": lambda: bot.cancel_order("BTC/USDT", acked),
        f"s{trial}-getpolicy": bot.get_policy,
        f"s{trial}-freeze": lambda: admin.freeze(all_keys=True, reason="during outage"),
    }


def run(root: Path, trials: int) -> Result:
    result = Result("audit store fails: disk full / read-only")
    volume = Volume.create(root)
    sim = SimProcess.start(root)
    signer: SignerProcess | None = None
    refused_coids: list[str] = []
    acked_coids: list[str] = []
    recovery_s: list[float] = []
    kinds = {"disk full": 0, "read-only": 0}
    try:
        home = provision(root, sim, data_dir=volume.mountpoint / "data", bots=2)
        signer = home.process()
        signer.start()
        for trial in range(trials):
            kind = "read-only" if trial % 2 and volume.can_break_read_only else "disk full"
            kinds[kind] += 1
            bot = bot_client(home, signer.addresses["bot_unix"], "bot-0")
            admin = admin_client(home, signer.addresses["admin_unix"])
            try:
                acked = f"s{trial}-before"
                reply = bot.submit_order(
                    "BTC/USDT", "buy", "limit", "0.001", sim.limit_price(), acked
                )
                if result.check(reply.decision.allowed, f"trial {trial}: {acked} refused"):
                    acked_coids.append(acked)
                if kind == "disk full":
                    truncate_wal(home)
                    volume.fill()
                else:
                    volume.break_read_only()
                    result.check(volume.read_only(), f"trial {trial}: volume not read-only")
                result.faults += 1
                for coid, call in outage_calls(bot, admin, sim, trial, acked).items():
                    refused_coids.append(coid)
                    try:
                        call()
                        result.violate(f"trial {trial} ({kind}): {coid} was answered")
                    except grpc.RpcError as e:
                        result.check(
                            e.code() == UNAVAILABLE,
                            f"trial {trial} ({kind}): {coid}: {e.code().name} {e.details()}",
                        )
                result.check(signer.alive(), f"trial {trial} ({kind}): the signer died")
                result.check(signer.healthy(), f"trial {trial} ({kind}): health not SERVING")
            finally:
                bot.close()
                admin.close()
            started = time.monotonic()
            if kind == "disk full":
                volume.free()
            else:
                signer.signal(signal.SIGTERM)
                volume.repair()
                signer.start()
            recovered = recover(result, home, signer, sim, trial, refused_coids)
            if recovered:
                acked_coids.append(recovered)
            recovery_s.append(time.monotonic() - started)
            check_log(result, home, signer, sim, trial, refused_coids, acked_coids)
            result.trials += 1
        result.figures = {
            "volume": volume.kind,
            "episodes": ", ".join(f"{k} {n}" for k, n in kinds.items()),
            "refused during outages": str(len(refused_coids)),
            "max time to serve again": f"{max(recovery_s, default=0):.1f} s",
        }
    finally:
        if signer is not None:
            signer.stop()
        sim.stop()
        volume.close()
    return result


def recover(
    result: Result,
    home: Home,
    signer: SignerProcess,
    sim: SimProcess,
    trial: int,
    refused: list[str],
) -> str | None:
    """Retry a fresh intent until the signer accepts one (deadline 60 s); each miss is refused."""
    bot = bot_client(home, signer.addresses["bot_unix"], "bot-1")
    tried: list[str] = []

    def accepted() -> bool:
        coid = f"s{trial}-after-{len(tried)}"
        tried.append(coid)
        try:
            reply = bot.submit_order("BTC/USDT", "buy", "limit", "0.001", sim.limit_price(), coid)
        except grpc.RpcError as e:
            refused.append(coid)
            result.check(e.code() == UNAVAILABLE, f"trial {trial}: {coid}: {e.code().name}")
            return False
        return result.check(reply.order.status == "open", f"trial {trial}: {coid}: {reply}")

    try:
        wait_until("the signer serving again", accepted, timeout=60, every=0.2)
        return tried[-1]
    except TimeoutError as e:
        result.violate(f"trial {trial}: {e}")
        return None
    finally:
        bot.close()


def check_log(
    result: Result,
    home: Home,
    signer: SignerProcess,
    sim: SimProcess,
    trial: int,
    refused: list[str],
    acked: list[str],
) -> None:
    """Nothing refused left a trace (log or exchange); everything acknowledged is in the log."""
    auditor = Auditor(home)
    try:
        report, records = auditor.snapshot()
    finally:
        auditor.close()
    result.check(report.ok, f"trial {trial}: audit verify: {report.summary}")
    named = {r["payload"].get("client_order_id") for r in records}
    result.violations += [
        f"trial {trial}: refused {c} is in the log" for c in refused if c in named
    ]
    result.violations += [
        f"trial {trial}: acknowledged {c} is lost" for c in acked if c not in named
    ]
    at_exchange = sim.orders()
    coids = {o["clientOrderId"] for o in at_exchange}
    result.violations += [
        f"trial {trial}: refused {c} reached the exchange" for c in refused if c in coids
    ]
    ledger = Ledger.replay(records)
    result.violations += [
        f"trial {trial}: {v}" for v in exchange_matches_audit(ledger, at_exchange)
    ]
    frozen = [r for r in records if r["kind"] == "admin" and r["payload"]["action"] == "freeze"]
    result.check(not frozen, f"trial {trial}: a freeze sent during the outage was applied")
    client = bot_client(home, signer.addresses["bot_unix"], "bot-0")
    try:
        view = client.get_policy()
    finally:
        client.close()
    bad = counters_match_audit(ledger, "k1", view.used_24h_notional, view.open_orders)
    result.violations += [f"trial {trial}: {v}" for v in bad]
