"""A platform's worth of keys: 100,000 keys with policies and 10,000 bot identities (JSON).

The keys are imported HMAC keys sealed by the keystore's own code and bulk-inserted with their
policies and bots (minutes of CLI processes would measure the CLI, not the signer). Then, on a
real `bulkhead-signer serve` process:
- start-up: process start to gRPC health SERVING (median of 3), with an empty keystore and
  with the full one;
- resident memory (VmRSS) idle, and after a client has used a few thousand random keys;
- latency of one client over the Unix socket on one key (sign-only), and on random keys
  (each first use of a key builds its exchange client);
- `freeze --all`: a client hammers random keys; the real CLI freezes every key; we measure from
  the command returning until every request is refused.

    .venv/bin/python benchmarks/scale_keys.py [--quick] [--keys N] [--bots N] [--db sqlite]
"""

from __future__ import annotations

import argparse
import collections
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import ClientPool, Job, Result, bot_seed  # noqa: E402
from rig import ROOT, SYMBOL, SignerRig, machine_info, pg_base_url  # noqa: E402
from signing_latency import summarize  # noqa: E402

from signer.auditlog import iter_records  # noqa: E402
from signer.db import read_session  # noqa: E402


def import_seconds() -> float:
    """What a bare `import signer.cli` costs in a fresh interpreter (part of every start-up)."""
    code = "import time; t = time.perf_counter(); import signer.cli; print(time.perf_counter() - t)"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return round(float(done.stdout.strip()), 3)


def starts(rig: SignerRig, runs: int) -> list[float]:
    """Start-up times of `runs` starts (stopped in between; the last start keeps serving)."""
    times = []
    for i in range(runs):
        if i:
            rig.stop()
        times.append(round(rig.start(), 3))
    return times


def freeze_propagation(
    events: list[tuple[float, float, str, str]], returned: float
) -> dict[str, object]:
    """From the hammer's (sent, received, outcome) records and the CLI's return time."""
    after = [e for e in events if e[1] > returned]
    allowed_after = [e for e in after if e[2] == "allowed"]
    refused_after = [e for e in after if e[2] != "allowed"]
    last_allowed = max((e[1] for e in allowed_after), default=None)
    refused = [e for e in events if "global_freeze" in e[2]]
    first_refusal = min((e[1] for e in refused), default=None)
    propagation = 0.0 if last_allowed is None else last_allowed - returned
    tail = [e for e in after if e[1] > returned + propagation]
    return {
        "requests_total": len(events),
        "requests_answered_after_return": len(after),
        "allowed_answered_after_return": len(allowed_after),
        "allowed_sent_after_return": sum(1 for e in allowed_after if e[0] > returned),
        "refusals_after_return_by_rule": dict(collections.Counter(e[2] for e in refused_after)),
        "first_global_freeze_refusal_ms_vs_return": (
            None if first_refusal is None else round((first_refusal - returned) * 1e3, 1)
        ),
        # the last allowed answer that arrived after the command returned (0: none did)
        "propagation_ms": round(propagation * 1e3, 1),
        "every_request_after_refused": bool(tail) and all("global_freeze" in e[2] for e in tail),
    }


def decisions_after_freeze(rig: SignerRig) -> dict[str, int]:
    """What the audit log says: allowed decisions recorded after the freeze record (must be 0)."""
    assert rig.opened is not None
    freeze_seq, allowed, refused = 0, 0, 0
    with read_session(rig.opened.engine) as s:
        for rec in iter_records(s):
            body = json.loads(rec.record_bytes)
            payload = body.get("payload") or {}
            if body["kind"] == "admin" and payload.get("action") == "freeze":
                freeze_seq = int(body["seq"])
            elif freeze_seq and body["kind"] == "decision":
                allowed += bool(payload.get("allowed"))
                refused += not payload.get("allowed")
    return {"freeze_seq": freeze_seq, "allowed_after": allowed, "refused_after": refused}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="20,000 keys / 2,000 bots, short phases")
    p.add_argument("--keys", type=int)
    p.add_argument("--bots", type=int)
    p.add_argument("--duration", type=float, help="seconds per latency phase (default 5)")
    p.add_argument("--db", default="sqlite", choices=["sqlite", "postgresql"])
    args = p.parse_args(argv)
    n_keys = args.keys or (20_000 if args.quick else 100_000)
    n_bots = args.bots or (2_000 if args.quick else 10_000)
    duration = args.duration or (2.0 if args.quick else 5.0)
    pg = None
    if args.db == "postgresql":
        pg, why = pg_base_url()
        if pg is None:
            print(json.dumps({"benchmark": "scale_keys", "skipped": why}))
            return 0
    run_secret = secrets.token_bytes(32)
    out: dict[str, object] = {
        "benchmark": "scale_keys",
        "machine": machine_info(),
        "db": args.db,
        "keys": n_keys,
        "bots": n_bots,
        "keys_per_bot": n_keys // n_bots,
        "import_signer_cli_s": import_seconds(),
    }
    rig = SignerRig(Path(tempfile.mkdtemp(prefix="bench-scale-")), args.db, pg)
    pool = ClientPool(1)
    try:
        rig.init()
        empty = starts(rig, 3)
        out["rss_empty_mb"] = rig.rss_mb()
        rig.stop()
        out["startup_empty_s"], out["startup_empty_runs_s"] = statistics.median(empty), empty
        t = time.perf_counter()
        rig.bulk_load(n_keys, n_bots, run_secret)
        out["bulk_load_s"] = round(time.perf_counter() - t, 1)
        full = starts(rig, 3)  # the last one keeps serving
        out["startup_s"], out["startup_runs_s"] = statistics.median(full), full
        out["rss_idle_mb"] = rig.rss_mb()
        assert rig.sim is not None
        price = str((rig.sim.price("BTCUSDT") * Decimal("0.99")).quantize(Decimal("0.01")))
        unix = rig.addresses["bot_unix"]
        base = Job(kind="signer", threads=1, start_at=0, end_at=0, tag="s", price=str(price))
        base = Job(**{**base.__dict__, "symbol": SYMBOL, "address": unix})

        def phase(**kw: object) -> Result:
            start = time.time() + 2.0
            job = Job(**{**base.__dict__, "start_at": start, "end_at": start + duration, **kw})
            return pool.run([job])[0]

        hot = phase(pairs=(("b00000", bot_seed(run_secret, 0), "k000000"),), tag="hot")
        out["one_key_1_client_unix"] = summarize([hot], hot.first_start)
        cold = phase(
            kind="hammer", run_secret=run_secret, n_bots=n_bots, per_bot=n_keys // n_bots, tag="c"
        )
        out["random_keys_1_client_unix"] = summarize([cold], min(e[0] for e in cold.events))
        used = len({e[3] for e in cold.events if e[2] == "allowed"})
        out["random_keys_1_client_unix"]["distinct_keys_signed_for"] = used  # type: ignore[index]
        out["rss_after_random_keys_mb"] = rss = rig.rss_mb()
        out["rss_growth_per_key_signed_for_kb"] = round(
            (rss - out["rss_idle_mb"]) * 1024 / max(1, used),  # type: ignore[operator]
            1,
        )

        # freeze --all while 4 threads hammer random keys
        start = time.time() + 2.0
        hammer = Job(
            **{**base.__dict__, "kind": "hammer", "threads": 4, "tag": "f", "start_at": start}
            | {"end_at": start + 15.0, "run_secret": run_secret, "n_bots": n_bots}
            | {"per_bot": n_keys // n_bots}
        )
        box: list[list[Result]] = []
        runner = threading.Thread(target=lambda: box.append(pool.run([hammer])))
        runner.start()
        while time.time() < start + 2.0:  # let the hammer run for two seconds first
            time.sleep(0.05)
        returned = rig.freeze_all()
        runner.join()
        out["freeze_all"] = freeze_propagation(box[0][0].events, returned)
        out["freeze_all"]["audit_decisions_after_freeze"] = decisions_after_freeze(rig)
        out["rss_end_mb"] = rig.rss_mb()
    finally:
        pool.close()
        rig.close()
    out["at_target_scale"] = n_keys >= 100_000 and n_bots >= 10_000
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
