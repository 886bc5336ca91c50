"""A stolen engine holding a registered bot's identity: every abuse is refused with its rule id,
audited, and the audit log still verifies; then one changed byte in one audit row is caught."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
from sqlalchemy import create_engine, text

from botengine.signer_client import Identity, SignerClient
from tests.signer.stack import BOT_ID, KEY_ID, POLICY_TOML, Stack, build_stack

RATE_POLICY = POLICY_TOML.replace("orders_per_minute = 600", "orders_per_minute = 4")


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "signer.cli",
            *args,
            "--data-dir",
            str(stack.data_dir),
            "--master-key-file",
            str(stack.keyfile),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def denied_rules(reply) -> set[str]:  # type: ignore[no-untyped-def]
    assert not reply.decision.allowed
    return {v.rule_id for v in reply.decision.violations}


@pytest.fixture
def rate_stack(tmp_path: Path, db_url: str | None):  # type: ignore[no-untyped-def]
    s = build_stack(tmp_path, db_url, policy=RATE_POLICY)
    try:
        yield s
    finally:
        s.stop()


def test_compromised_bot_is_refused_audited_and_the_log_verifies(rate_stack: Stack) -> None:
    stack = rate_stack
    bot = stack.client()
    px = stack.price("BTC/USDT")
    ok_price = (px * Decimal("0.99")).quantize(Decimal("0.01"))

    # 1. a thin coin that is not on the allow-list
    r = bot.submit_order("DATA/USDT", "buy", "limit", "1000", "0.5", "atk-symbol")
    assert "symbol_not_allowed" in denied_rules(r)
    # 2. a notional above the per-order cap (5000 USDT)
    r = bot.submit_order("BTC/USDT", "buy", "limit", "1", ok_price, "atk-notional")
    assert "notional_cap" in denied_rules(r)
    # 3. a limit price 30% above the signer's own reference price
    r = bot.submit_order(
        "BTC/USDT",
        "buy",
        "limit",
        "0.001",
        (px * Decimal("1.3")).quantize(Decimal("0.01")),
        "atk-band",
    )
    assert "price_band" in denied_rules(r)
    # 4. a replayed intent: the captured bytes and signature, sent again
    captured = bot.order_request("BTC/USDT", "buy", "limit", "0.001", ok_price, "ok-1")
    assert bot.call("SubmitOrder", captured).decision.allowed
    with pytest.raises(grpc.RpcError) as e:
        bot.call("SubmitOrder", captured)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "replayed_nonce" in e.value.details()
    # 5. a forged signature: someone else's key claiming to be the bot
    forger = SignerClient(stack.addresses["bot_unix"], Identity.generate(BOT_ID), KEY_ID)
    with pytest.raises(grpc.RpcError) as e:
        forger.submit_order("BTC/USDT", "buy", "limit", "0.001", ok_price, "atk-forged")
    forger.close()
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "bad_signature" in e.value.details()
    # 6. a burst past the rate limit (4 orders/minute; one was used above)
    replies = [
        bot.submit_order("BTC/USDT", "buy", "limit", "0.001", ok_price, f"burst-{i}")
        for i in range(5)
    ]
    assert [r.decision.allowed for r in replies] == [True, True, True, False, False]
    assert "rate_limit" in denied_rules(replies[-1])
    # 7. after `freeze --all` (the operator's CLI, a separate process), nothing passes
    done = cli(stack, "freeze", "--all", "--reason", "incident")
    assert done.returncode == 0, done.stderr
    r = bot.submit_order("BTC/USDT", "sell", "limit", "0.001", ok_price, "after-freeze")
    assert "global_freeze" in denied_rules(r)

    # Each refusal is in the audit log with its rule id.
    decisions = {
        rec["payload"]["client_order_id"]: rec["payload"] for rec in stack.audit_records("decision")
    }
    for coid, rule in [
        ("atk-symbol", "symbol_not_allowed"),
        ("atk-notional", "notional_cap"),
        ("atk-band", "price_band"),
        ("burst-4", "rate_limit"),
        ("after-freeze", "global_freeze"),
    ]:
        assert decisions[coid]["allowed"] is False
        assert rule in {x["rule_id"] for x in decisions[coid]["reasons"]}
    refusals = [rec["payload"]["rule_id"] for rec in stack.audit_records("auth_denied")]
    assert refusals == ["replayed_nonce", "bad_signature"]
    freezes = [
        rec["payload"]
        for rec in stack.audit_records("admin")
        if rec["payload"]["action"] == "freeze"
    ]
    assert freezes and freezes[-1]["all"] is True

    # Nothing the attacker tried reached the exchange: only the 4 allowed orders are open.
    open_ids = sorted(o.client_order_id for o in bot.read("open_orders", "BTC/USDT").orders)
    assert open_ids == ["burst-0", "burst-1", "burst-2", "ok-1"]

    # The auditor's path: export with the CLI, verify with only the export and the public key.
    export = stack.root / "audit.jsonl"
    done = cli(stack, "audit", "export", "--out", str(export))
    assert done.returncode == 0, done.stderr
    pub = stack.data_dir / "audit_pubkey.hex"
    done = cli(stack, "audit", "verify", str(export), "--pubkey", str(pub), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["ok"] is True

    # Change one byte of one audit row in the database: verification names that row.
    target = decisions["atk-band"]
    seq = next(
        rec["seq"]
        for rec in stack.audit_records("decision")
        if rec["payload"] is not None and rec["payload"].get("client_order_id") == "atk-band"
    )
    assert target["allowed"] is False
    url = stack.db_url or f"sqlite:///{stack.data_dir / 'signer.db'}"
    eng = create_engine(url)
    with eng.begin() as c:
        record = c.execute(
            text("SELECT record FROM audit_records WHERE seq = :s"), {"s": seq}
        ).scalar_one()
        tampered = record.replace('"allowed":false', '"allowed":true ', 1)[: len(record)]
        tampered = record.replace('"allowed":false', '"allowed":falsE', 1)
        assert tampered != record and len(tampered) == len(record)
        c.execute(
            text("UPDATE audit_records SET record = :r WHERE seq = :s"), {"r": tampered, "s": seq}
        )
    eng.dispose()
    export2 = stack.root / "audit-tampered.jsonl"
    assert cli(stack, "audit", "export", "--out", str(export2)).returncode == 0
    done = cli(stack, "audit", "verify", str(export2), "--pubkey", str(pub), "--json")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["ok"] is False and report["first_bad_seq"] == seq, report
