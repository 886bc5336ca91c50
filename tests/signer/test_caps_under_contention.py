"""Caps are exact under concurrency: racing intents never jointly pass a notional cap.

One signer with 50 client threads (SQLite and PostgreSQL), and two separate signer processes
sharing one PostgreSQL, each hammered at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

from botengine.signer_client import SignerClient
from tests.signer.stack import KEY_ID, POLICY_TOML, Stack, build_stack, write_config

CAP = Decimal("1000")
CAP_POLICY = POLICY_TOML.replace(
    'max_notional_24h = "20000"', f'max_notional_24h = "{CAP}"'
).replace("orders_per_minute = 600", "orders_per_minute = 100000")


def race(clients: list[SignerClient], price: Decimal, amount: str, n: int) -> list[bool]:
    def one(i: int) -> bool:
        c = clients[i % len(clients)]
        reply = c.submit_order(
            "BTC/USDT", "buy", "limit", amount, price, f"race-{i}", mode="sign-only"
        )
        if not reply.decision.allowed:
            assert {v.rule_id for v in reply.decision.violations} == {"notional_24h_cap"}
        return reply.decision.allowed

    with ThreadPoolExecutor(max_workers=50) as pool:
        return list(pool.map(one, range(n)))


def expected_allowed(price: Decimal, amount: str) -> int:
    return int(CAP // (price * Decimal(amount)))


def test_fifty_threads_never_pass_the_notional_cap(tmp_path: Path, db_url: str | None) -> None:
    stack = build_stack(tmp_path, db_url, policy=CAP_POLICY)
    try:
        price = (stack.price() * Decimal("0.99")).quantize(Decimal("0.01"))
        clients = [stack.client() for _ in range(5)]
        results = race(clients, price, "0.001", 50)
        assert sum(results) == expected_allowed(price, "0.001")
        used = Decimal(clients[0].get_policy().used_24h_notional)
        assert used <= CAP and used == sum(results) * price * Decimal("0.001")
        assert stack.verify().ok
    finally:
        stack.stop()


def start_replica(stack: Stack, name: str) -> tuple[subprocess.Popen[str], str]:
    """A second `bulkhead-signer serve` process on the same PostgreSQL, with its own sockets."""
    data_dir = stack.root / name
    data_dir.mkdir(mode=0o700)
    write_config(data_dir, stack.sim.base_url, stack.db_url)
    log = open(stack.root / f"{name}.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "signer.cli",
            "serve",
            "--data-dir",
            str(data_dir),
            "--master-key-file",
            str(stack.keyfile),
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        stdin=subprocess.DEVNULL,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("BULKHEAD_")},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, (stack.root / f"{name}.log").read_text()
    return proc, json.loads(line)["serving"]["bot_unix"]


def test_two_signer_processes_on_one_postgresql_never_jointly_pass_the_cap(
    tmp_path: Path, pg_url: str
) -> None:
    from tests.signer.stack import drop_pg_schema, pg_schema_url

    url, schema = pg_schema_url(pg_url)
    stack = build_stack(tmp_path, url, policy=CAP_POLICY)
    procs = []
    try:
        stack.server.stop(0)  # the in-process server only did the set-up
        addresses = []
        for name in ("replica-a", "replica-b"):
            proc, address = start_replica(stack, name)
            procs.append(proc)
            addresses.append(address)
        clients = [SignerClient(a, stack.bot, KEY_ID) for a in addresses for _ in range(3)]
        price = (stack.price() * Decimal("0.99")).quantize(Decimal("0.01"))
        results = race(clients, price, "0.001", 60)
        assert sum(results) == expected_allowed(price, "0.001")
        decisions = stack.audit_records("decision")
        assert sum(1 for d in decisions if d["payload"]["allowed"]) == sum(results)
        assert stack.verify().ok  # one chain, written by both replicas
        for c in clients:
            c.close()
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)
        stack.opened.close()
        stack.sim.stop()
        drop_pg_schema(pg_url, schema)
