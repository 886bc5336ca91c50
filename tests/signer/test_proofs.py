"""Order proofs and consistency on a log written by a real signer run through gRPC."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal

from sqlalchemy import create_engine, text

from tests.signer.stack import Stack


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "signer.cli",
            "audit",
            *args,
            "--data-dir",
            str(stack.data_dir),
            "--master-key-file",
            str(stack.keyfile),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_order_proofs_and_consistency_catch_a_rewritten_history(sqlite_stack: Stack) -> None:
    stack, root = sqlite_stack, sqlite_stack.root
    client = stack.client()
    price = (stack.price() * Decimal("0.99")).quantize(Decimal("0.01"))
    assert client.submit_order("BTC/USDT", "buy", "limit", "0.01", price, "pf-1").decision.allowed
    client.submit_order("DATA/USDT", "buy", "limit", "10", "0.5", "pf-denied")
    pub = str(stack.data_dir / "audit_pubkey.hex")

    assert cli(stack, "sth", "--out", str(root / "old.json")).returncode == 0
    proof = root / "pf-1.json"
    assert cli(stack, "prove", "--order", "pf-1", "--out", str(proof)).returncode == 0
    doc = json.loads(proof.read_text())
    assert [json.loads(r["record"])["kind"] for r in doc["records"]] == ["decision", "outcome"]
    done = cli(stack, "check-proof", str(proof), "--pubkey", pub)
    assert done.returncode == 0 and json.loads(done.stdout)["ok"], done.stdout

    # A proof whose record was edited, or whose head signature is wrong, fails.
    edited = json.loads(proof.read_text())
    edited["records"][0]["record"] = edited["records"][0]["record"].replace('"0.01"', '"1.00"')
    (root / "edited.json").write_text(json.dumps(edited))
    assert cli(stack, "check-proof", str(root / "edited.json"), "--pubkey", pub).returncode == 1
    forged = json.loads(proof.read_text())
    forged["tree_head"]["ts_ms"] += 1
    (root / "forged.json").write_text(json.dumps(forged))
    done = cli(stack, "check-proof", str(root / "forged.json"), "--pubkey", pub)
    assert done.returncode == 1 and "signature" in json.loads(done.stdout)["reason"]

    # More trading, then the newer head provably extends the older one.
    client.submit_order("BTC/USDT", "buy", "limit", "0.01", price, "pf-2")
    assert cli(stack, "sth", "--out", str(root / "new.json")).returncode == 0
    done = cli(stack, "consistency", str(root / "old.json"), str(root / "new.json"))
    assert done.returncode == 0, done.stdout

    # Rewrite an early record in the database (the denial becomes an allow): a head signed
    # after the rewrite no longer extends the head the auditor kept.
    eng = create_engine(f"sqlite:///{stack.data_dir / 'signer.db'}")
    with eng.begin() as c:
        seq = c.execute(
            text("SELECT seq FROM audit_records WHERE client_order_id = 'pf-denied'")
        ).scalar_one()
        c.execute(
            text("UPDATE audit_records SET record = replace(record, :a, :b) WHERE seq = :s"),
            {"a": '"allowed":false', "b": '"allowed":true', "s": seq},
        )
    eng.dispose()
    assert cli(stack, "sth", "--out", str(root / "after.json")).returncode == 0
    done = cli(stack, "consistency", str(root / "old.json"), str(root / "after.json"))
    assert done.returncode == 1
    assert "changed" in json.loads(done.stdout)["reason"]
    assert cli(stack, "prove", "--order", "nope", "--out", str(root / "x.json")).returncode == 2
