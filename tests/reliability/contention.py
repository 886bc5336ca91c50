"""64 concurrent clients race one key's 24 h notional cap, on SQLite (one signer process) and on
PostgreSQL (two signer processes sharing the database).

Beyond "allowed total <= cap", the audit log must show the decisions were made one at a time
against the true running total: replaying them in sequence order, every allowed intent fits
under the cap and every `notional_24h_cap` denial would not have. That is what "exact" means.
Each round races a fresh key (its own cap), so rounds are independent.

tests/signer/test_caps_under_contention.py already races 50 threads in-process and 60 intents
over two PostgreSQL replicas once; this scenario reuses its replica set-up (a data dir holding
only signer.toml that points at the shared database) with real `serve` processes, 64 clients
released together by a barrier, mixed order sizes and repeated rounds.
"""

from __future__ import annotations

import random
import threading
from decimal import Decimal
from pathlib import Path

from tests.reliability.processes import SignerProcess, SimProcess
from tests.reliability.provision import Auditor, Home, bot_client, provision
from tests.reliability.result import Result
from tests.signer.stack import drop_pg_schema, pg_schema_url, write_config

CLIENTS = 64
INTENTS_PER_CLIENT = 2
CAP = Decimal("1500")
AMOUNTS = ("0.001", "0.002", "0.003")


def cap_policy(cap: Decimal = CAP) -> str:
    return f"""
symbols = ["BTC/USDT"]
sides = ["buy"]
order_types = ["limit"]
max_order_notional = "100000"
max_notional_24h = "{cap}"
max_open_orders = 100000
orders_per_minute = 100000
price_band_pct = "5"
reference_max_age_s = 60
"""


def race(home: Home, addresses: list[str], key_id: str, price: Decimal, seed: int) -> list[str]:
    """64 clients, released at once, each sending INTENTS_PER_CLIENT sign-only intents."""
    rnd = random.Random(seed)
    plan = [[rnd.choice(AMOUNTS) for _ in range(INTENTS_PER_CLIENT)] for _ in range(CLIENTS)]
    bots = sorted(home.bots)
    gate = threading.Barrier(CLIENTS)
    problems: list[str] = []

    def one(i: int) -> None:
        client = bot_client(home, addresses[i % len(addresses)], bots[i % len(bots)], key_id)
        try:
            gate.wait(timeout=60)
            for j, amount in enumerate(plan[i]):
                reply = client.submit_order(
                    "BTC/USDT", "buy", "limit", amount, price, f"{key_id}-{i}-{j}", mode="sign-only"
                )
                rules = {v.rule_id for v in reply.decision.violations}
                if not reply.decision.allowed and rules != {"notional_24h_cap"}:
                    problems.append(f"{key_id}-{i}-{j}: denied for {sorted(rules)}")
        except Exception as e:  # noqa: BLE001 - any error in a racer is a finding
            problems.append(f"client {i}: {type(e).__name__}: {e}")
        finally:
            client.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return problems


def check_round(result: Result, records: list[dict], key_id: str, reported_used: str) -> int:
    """Replay the key's decisions in log order: the cap held exactly at every step.
    Returns how many intents were denied at the cap (the attempts to pass it)."""
    used, allowed, denied = Decimal(0), 0, 0
    for rec in sorted(records, key=lambda r: r["seq"]):
        p = rec["payload"]
        if rec["kind"] != "decision" or p.get("key_id") != key_id:
            continue
        notional = Decimal(p["notional"])
        if p["allowed"]:
            allowed += 1
            used += notional
            result.check(
                used <= CAP, f"{key_id}: allowed {p['client_order_id']} took {used} > {CAP}"
            )
        else:
            denied += 1
            result.check(
                used + notional > CAP,
                f"{key_id}: denied {p['client_order_id']} ({notional}) though {used} was used",
            )
    result.check(
        allowed + denied == CLIENTS * INTENTS_PER_CLIENT,
        f"{key_id}: {allowed + denied} decisions for {CLIENTS * INTENTS_PER_CLIENT} intents",
    )
    result.check(Decimal(reported_used) == used, f"{key_id}: GetPolicy {reported_used} vs {used}")
    return denied


def run(root: Path, rounds: int, pg_url: str | None, seed: int = 7) -> Result:
    """SQLite with one signer process; with `pg_url`, also PostgreSQL with two."""
    where = " (SQLite; PostgreSQL x2 signers)" if pg_url else " (SQLite)"
    result = Result(f"{CLIENTS} clients race one notional cap{where}")
    sim = SimProcess.start(root)
    try:
        run_backend(result, root / "sqlite", sim, None, rounds, seed)
        if pg_url:
            url, schema = pg_schema_url(pg_url)
            try:
                run_backend(result, root / "pg", sim, url, rounds, seed + 1)
            finally:
                drop_pg_schema(pg_url, schema)
    finally:
        sim.stop()
    result.figures["intents per round"] = f"{CLIENTS * INTENTS_PER_CLIENT} against a {CAP} cap"
    return result


def run_backend(
    result: Result, root: Path, sim: SimProcess, db_url: str | None, rounds: int, seed: int
) -> None:
    root.mkdir(mode=0o700)
    keys = tuple(f"cap{r}" for r in range(rounds))
    home = provision(
        root,
        sim,
        db_url=db_url,
        key_ids=keys,
        bots=8,
        policy=cap_policy(),
        grant_all=True,
        config_extra="reconcile_interval_s = 0",
    )
    signers = [home.process("signer-a")]
    if db_url:  # a second replica: its own data dir and sockets, the same database
        replica = root / "replica-b"
        replica.mkdir(mode=0o700)
        write_config(replica, sim.base_url, db_url, "reconcile_interval_s = 0")
        signers.append(SignerProcess(replica, home.keyfile, root / "signer-b.log"))
    auditor = Auditor(home)
    try:
        addresses = [s.start()["bot_unix"] for s in signers]
        for r, key_id in enumerate(keys):
            price = sim.limit_price(factor="0.99")
            problems = race(home, addresses, key_id, price, seed * 1000 + r)
            result.violations += problems
            client = bot_client(home, addresses[0], "bot-0", key_id)
            try:
                used = client.get_policy().used_24h_notional
            finally:
                client.close()
            result.faults += check_round(result, auditor.records(), key_id, used)
            result.trials += 1
        report, _ = auditor.snapshot()
        backend = "PostgreSQL" if db_url else "SQLite"
        result.check(report.ok, f"audit verify ({backend}): {report.summary}")
    finally:
        auditor.close()
        for s in signers:
            s.stop()
