"""Where one order's time goes: 1 client over the Unix socket, sign-only, SQLite (JSON on stdout).

Nothing is added to the signer for this; it is observed from outside and from the harness:
- py-spy (`pip install py-spy`; optional) samples the real `bulkhead-signer serve` process while
  one client sends orders, and the samples are split by what they were doing (commit, SQL in the
  driver, SQLAlchemy, Ed25519, ccxt, policy parsing, gRPC) and by signing-path step;
- strace -c counts fsync/fdatasync and write syscalls of the server for exactly N orders;
- in this process, the same SignerCore is driven directly (no gRPC) with SQLAlchemy engine
  events counting statements and commits per order, and each step timed by wrapping the core's
  methods on that one instance;
- the crypto a decision needs is timed alone (Ed25519 verify and sign, SHA-256, ccxt HMAC).

    .venv/bin/python benchmarks/profile_signing.py [--orders N] [--db sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import ClientPool, Job  # noqa: E402
from rig import BENCH_POLICY, SYMBOL, SignerRig, machine_info, pg_base_url  # noqa: E402

# (category, substring of a py-spy frame); the first category any frame of a sample matches wins.
CATEGORIES = [
    ("db commit (WAL write + fsync, or PG COMMIT)", "do_commit"),
    ("db driver execute/fetch", "do_execute"),
    ("db driver execute/fetch", "fetchall"),
    ("db driver execute/fetch", "fetchone"),
    ("ed25519 verify (bot signature)", "crypto_sign_open"),
    ("ed25519 sign (audit record)", "crypto_sign ("),
    ("ccxt build + HMAC sign", "ccxt/"),
    ("policy parse (pydantic, twice per order)", "policy_from_json"),
    ("sqlalchemy (ORM/Core, compile, unit of work)", "sqlalchemy/"),
    ("grpc server", "grpc/"),
]
STEPS = [
    ("prefetch (policy, key, ref price, market rules)", "SignerCore._prefetch"),
    ("outcome record txn", "SignerCore._record_outcome"),
    ("ccxt sign-only request", "Gateways.create_order"),
    ("decision txn (auth, policy, counters, audit)", "SignerCore._authenticated"),
    ("decision txn (auth, policy, counters, audit)", "SignerCore._decide"),
    ("decision txn (auth, policy, counters, audit)", "SignerCore.txn"),
    ("request parsing", "SignerCore.submit_order"),
]


def classify(raw: Path) -> dict[str, object]:
    by_cat: collections.Counter[str] = collections.Counter()
    by_step: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        m = re.match(r"^(.*) (\d+)$", line)
        if not m or "SignerService.SubmitOrder" not in m.group(1):
            continue  # only request-handling threads
        frames, n = m.group(1).split(";"), int(m.group(2))
        total += n
        by_cat[next((c for c, s in CATEGORIES if any(s in f for f in frames)), "other")] += n
        by_step[next((c for c, s in STEPS if any(s in f for f in frames)), "other")] += n

    def share(c: collections.Counter[str]) -> dict[str, float]:
        return {k: round(100 * v / total, 1) for k, v in c.most_common()}

    return {"samples": total, "percent_by_kind": share(by_cat), "percent_by_step": share(by_step)}


def send_orders(pool: ClientPool, rig: SignerRig, price: str, count: int, tag: str) -> float:
    pair = rig.pairs[0]
    job = Job(
        kind="signer",
        threads=1,
        start_at=time.time() + 1.5,
        end_at=0,
        tag=tag,
        price=price,
        count=count,
        warmup=0,
        address=rig.addresses["bot_unix"],
        pairs=((pair.bot_id, pair.seed, pair.key_id),),
    )
    res = pool.run([job])[0]
    if res.errors or res.denied:
        raise RuntimeError(f"orders failed: {res.first_problem}")
    return statistics.median(res.latencies) * 1e3


def outside(rig: SignerRig, pool: ClientPool, price: str, orders: int) -> dict[str, object]:
    """py-spy and strace on the real server process while one client sends `orders` orders."""
    assert rig.proc is not None
    pid = str(rig.proc.pid)
    out: dict[str, object] = {"p50_ms_uninstrumented": send_orders(pool, rig, price, orders, "u")}
    if rig.pg_base:
        out["postgresql_per_order"] = pg_counters(rig, pool, price, orders)
    if shutil.which("strace"):
        trace = rig.root / "strace.txt"
        st = subprocess.Popen(["strace", "-c", "-f", "-p", pid, "-o", str(trace)])
        time.sleep(1.0)  # let strace attach to every thread before the first order
        send_orders(pool, rig, price, orders, "s")
        st.send_signal(2)
        st.wait(timeout=30)
        calls = {}
        for line in trace.read_text().splitlines():
            parts = line.split()
            if parts and parts[-1] in ("fsync", "fdatasync", "pwrite64", "write", "pread64"):
                calls[parts[-1]] = int(parts[3])
        out["syscalls_per_order"] = {k: round(v / orders, 2) for k, v in calls.items()}
        out["syscalls_note"] = "strace -c -f over exactly these orders (plus idle threads)"
    spy = shutil.which("py-spy") or _pyspy_from_target()
    if spy:
        raw = rig.root / "pyspy.raw"
        cmd = [spy, "record", "-p", pid, "-r", "250", "-f", "raw", "-o", str(raw)]
        ps = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # py-spy attaches
        send_orders(pool, rig, price, orders, "p")
        ps.send_signal(2)
        ps.wait(timeout=60)
        out["py_spy"] = classify(raw) if raw.exists() else "py-spy wrote nothing"
    else:
        out["py_spy"] = "py-spy not installed (pip install py-spy)"
    return out


def pg_counters(rig: SignerRig, pool: ClientPool, price: str, orders: int) -> dict[str, object]:
    """WAL syncs and commits in the whole PostgreSQL server while `orders` orders run (other
    sessions on the same server count too, so these are upper bounds)."""
    from sqlalchemy import create_engine, text

    assert rig.pg_base is not None
    eng = create_engine(rig.pg_base)
    query = text(
        "SELECT (SELECT wal_sync FROM pg_stat_wal), (SELECT sum(xact_commit) FROM pg_stat_database)"
    )
    try:
        with eng.connect() as c:
            before = c.execute(query).one()
        send_orders(pool, rig, price, orders, "g")
        with eng.connect() as c:
            after = c.execute(query).one()
    finally:
        eng.dispose()
    return {
        "wal_syncs": round(int(after[0] - before[0]) / orders, 2),
        "commits": round(int(after[1] - before[1]) / orders, 2),
        "note": "pg_stat_wal / pg_stat_database deltas, whole server (upper bounds)",
    }


def _pyspy_from_target() -> str | None:
    path = os.environ.get("PYSPY")
    return path if path and Path(path).exists() else None


def _timed(stats: dict[str, list[float]], name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            stats[name].append(time.perf_counter() - t)

    return wrapper


def inside(db_url: str | None, orders: int) -> dict[str, object]:
    """The same core driven in this process: statements and commits per order, time per step."""
    from sqlalchemy import event

    from tests.signer.stack import build_stack

    root = Path(tempfile.mkdtemp(prefix="prof-in-"))
    stack = build_stack(
        root, db_url, policy=BENCH_POLICY, config_extra='default_mode = "sign-only"'
    )
    try:
        core, engine = stack.server.core, stack.opened.engine
        client = stack.client()
        price = (stack.price() * Decimal("0.99")).quantize(Decimal("0.01"))

        def order(coid: str) -> None:
            req = client.order_request(SYMBOL, "buy", "limit", "0.001", price, coid)
            reply = core.submit_order(req)
            if not reply.HasField("signed_request"):
                raise RuntimeError(f"not signed: {reply.decision}")

        for i in range(30):
            order(f"w{i}")
        plain = []
        for i in range(orders):
            t = time.perf_counter()
            order(f"q{i}")
            plain.append(time.perf_counter() - t)

        stmts: collections.Counter[str] = collections.Counter()
        stats: dict[str, list[float]] = collections.defaultdict(list)
        sql_time = [0.0]
        starts: dict[int, float] = {}

        def count(statement: str) -> None:
            verb = statement.split(None, 1)[0].upper()
            table = re.search(r"(?:FROM|INTO|UPDATE)\s+(\w+)", statement)
            stmts[f"{verb} {table.group(1) if table else ''}".strip()] += 1

        @event.listens_for(engine, "before_cursor_execute")
        def _before(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
            count(statement)  # statements SQLAlchemy itself sends (BEGIN, locks, ORM)
            starts[id(cursor)] = time.perf_counter()

        from signer import fastsql  # the signing path's plain SQL bypasses SQLAlchemy's events

        def counted(fn: Callable[..., Any]) -> Callable[..., Any]:
            def wrapper(session: Any, sql: str, *a: Any) -> Any:
                count(sql)
                t = time.perf_counter()
                try:
                    return fn(session, sql, *a)
                finally:
                    sql_time[0] += time.perf_counter() - t

            return wrapper

        fastsql.run = counted(fastsql.run)  # type: ignore[method-assign]
        fastsql.write = counted(fastsql.write)  # type: ignore[method-assign]

        @event.listens_for(engine, "after_cursor_execute")
        def _after(conn: Any, cursor: Any, *_: Any) -> None:
            sql_time[0] += time.perf_counter() - starts.pop(id(cursor), time.perf_counter())

        dialect = engine.dialect
        dialect.do_commit = _timed(stats, "commit", dialect.do_commit)  # type: ignore[method-assign]
        for name in ("_prefetch", "_decide", "_record_outcome"):
            setattr(core, name, _timed(stats, name, getattr(core, name)))
        core.gateways.create_order = _timed(stats, "ccxt", core.gateways.create_order)  # type: ignore[method-assign]
        t0 = time.perf_counter()
        for i in range(orders):
            order(f"i{i}")
        instrumented = time.perf_counter() - t0

        def per(x: float) -> float:
            return round(x / orders * 1e3, 3)

        return {
            "db": "sqlite" if db_url is None else "postgresql",
            "p50_ms_in_process_no_grpc": round(statistics.median(plain) * 1e3, 3),
            "statements_per_order": {
                k: round(v / orders, 2) for k, v in sorted(stmts.items(), key=lambda kv: -kv[1])
            },
            "statements_per_order_total": round(sum(stmts.values()) / orders, 1),
            "commits_per_order": round(len(stats["commit"]) / orders, 2),
            "ms_per_order_instrumented": per(instrumented),
            "ms_per_order_in": {
                "sql_execute_in_driver": per(sql_time[0]),
                "commit": per(sum(stats["commit"])),
                "prefetch_step": per(sum(stats["_prefetch"])),
                "decide_step (inside the decision txn)": per(sum(stats["_decide"])),
                "ccxt_sign_only_step": per(sum(stats["ccxt"])),
                "outcome_txn_step": per(sum(stats["_record_outcome"])),
            },
        }
    finally:
        stack.stop()
        shutil.rmtree(root, ignore_errors=True)


def crypto() -> dict[str, float]:
    import ccxt
    from nacl.signing import SigningKey

    key = SigningKey.generate()
    body = secrets.token_bytes(300)
    sig = key.sign(body).signature
    record = secrets.token_bytes(1200)
    ex = ccxt.binance({"apiKey": "a" * 64, "secret": "b" * 64})
    params = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": "0.001"}

    def us(fn: Callable[[], object], n: int = 2000) -> float:
        t = time.perf_counter()
        for _ in range(n):
            fn()
        return round((time.perf_counter() - t) / n * 1e6, 1)

    return {
        "ed25519_verify_us": us(lambda: key.verify_key.verify(body, sig)),
        "ed25519_sign_us": us(lambda: key.sign(record)),
        "sha256_1200B_us": us(lambda: hashlib.sha256(record).hexdigest()),
        "ccxt_binance_sign_us": us(lambda: ex.sign("order", ["private"], "POST", dict(params))),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--orders", type=int, default=400)
    p.add_argument("--db", default="sqlite", choices=["sqlite", "postgresql"])
    args = p.parse_args(argv)
    pg = None
    if args.db == "postgresql":
        pg, why = pg_base_url()
        if pg is None:
            print(json.dumps({"skipped": why}))
            return 0
    out: dict[str, object] = {"benchmark": "profile_signing", "machine": machine_info()}
    rig = SignerRig(Path(tempfile.mkdtemp(prefix="prof-")), args.db, pg)
    pool = ClientPool(1)
    try:
        rig.init()
        rig.add_pairs(1, secrets.token_bytes(32))
        rig.start()
        assert rig.sim is not None
        price = str((rig.sim.price("BTCUSDT") * Decimal("0.99")).quantize(Decimal("0.01")))
        send_orders(pool, rig, price, 50, "w")  # warm: markets, gateway, caches
        out["server_process"] = outside(rig, pool, price, args.orders)
    finally:
        pool.close()
        rig.close()
    db_url = None
    if args.db == "postgresql":
        from tests.signer.stack import drop_pg_schema, pg_schema_url

        assert pg is not None
        db_url, schema = pg_schema_url(pg)
    try:
        out["in_process"] = inside(db_url, args.orders)
    finally:
        if db_url:
            drop_pg_schema(pg, schema)  # type: ignore[arg-type]
    out["crypto_alone"] = crypto()
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "profile"
    raise SystemExit(main())
