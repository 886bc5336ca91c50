"""`bulkhead demo`, run as the product runs it (three real processes: simexchange, the signer,
the engine) over one simulated day instead of a week, asserting on its structured result and,
independently, on the exchange and the audit export it leaves behind."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import ccxt
import pytest
from rich.console import Console

from botengine.demo import DemoResult, run_demo
from simexchange.testing import ccxt_config


@pytest.fixture(scope="module")
def demo() -> Iterator[tuple[DemoResult, str]]:
    """One short demo, processes kept so the exchange can be asked afterwards."""
    out = io.StringIO()
    result = run_demo(Console(file=out, width=120), days=1, trade_seconds=8, keep=True)
    try:
        yield result, out.getvalue()
    finally:
        if result.stop is not None:
            result.stop()
        shutil.rmtree(result.root, ignore_errors=True)


def test_every_step_of_the_demo_held(demo: tuple[DemoResult, str]) -> None:
    result, screen = demo
    failed = [(c.name, c.detail) for c in result.checks if not c.ok]
    assert result.ok, f"{failed}\n{screen[-3000:]}"
    steps = [c.step for c in result.checks]
    assert steps.count("incident") >= 6 and steps.count("audit") == 3


def test_both_bots_filled_orders_during_the_simulated_day(demo: tuple[DemoResult, str]) -> None:
    result, _ = demo
    assert set(result.bots) == {"btc-dca", "eth-grid"}
    for name, bot in result.bots.items():
        assert bot["orders"].get("filled", 0) > 0, (name, bot["orders"])
        assert bot["fills"] > 0
    assert result.check("btc-dca traded").data["filled"] > 0


@pytest.mark.parametrize(
    ("attack", "rules"),
    [
        ("pump the thin coin", {"symbol_not_allowed"}),
        ("exceed the caps", {"notional_cap"}),
        # an engine order sent again byte for byte: its nonce, or (if older than the signer's
        # 30 s clock skew) its timestamp, gives it away
        ("replay a captured intent", {"replayed_nonce", "stale_timestamp"}),
        ("reach a withdrawal", {"UNIMPLEMENTED"}),
        ("freeze --all", {"global_freeze"}),
    ],
)
def test_each_attack_is_refused_with_its_rule_id(
    demo: tuple[DemoResult, str], attack: str, rules: set[str]
) -> None:
    check = demo[0].check(attack)
    assert check.ok and rules & set(check.data["rules"]), check


def test_the_attacks_moved_no_balance_and_placed_no_order(demo: tuple[DemoResult, str]) -> None:
    result, _ = demo
    check = result.check("balances untouched")
    assert check.ok and check.data["before"] == check.data["after"]
    assert check.data["before"]["USDT"] != "0"
    # Independently: the exchange, asked with the account's own key, never saw a rogue order.
    accounts = tomllib.loads((result.root / "accounts.toml").read_text())["accounts"][0]
    key = accounts["keys"][0]
    ex = ccxt.binance(ccxt_config(_sim_url(result), key["api_key"], key["secret"]))
    ex.load_time_difference()
    for market_id in ("BTCUSDT", "ETHUSDT", "DATAUSDT"):
        orders = ex.privateGetAllOrders({"symbol": market_id, "limit": 1000})
        assert not [o for o in orders if o["clientOrderId"].startswith("rogue-")]
        if market_id == "DATAUSDT":
            assert orders == []


def test_the_freeze_paused_the_engines_bots_with_the_rule_id(
    demo: tuple[DemoResult, str],
) -> None:
    result, _ = demo
    assert result.check("bots paused by the freeze").data["paused"]
    assert result.check("nothing placed after the freeze").ok
    paused = [b for b in result.bots.values() if b["status"] == "paused"]
    assert paused and all(b["last_denial"]["rules"] == ["global_freeze"] for b in paused)


def test_the_audit_export_verifies_and_the_report_is_written(
    demo: tuple[DemoResult, str],
) -> None:
    result, _ = demo
    assert result.check("audit verified").ok
    verified = subprocess.run(
        [sys.executable, "-m", "signer.cli", "audit", "verify", str(result.root / "audit.jsonl"),
         "--pubkey", str(result.root / "signer-data" / "audit_pubkey.hex"), "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["ok"] is True
    assert result.report == result.root / "report" / "index.html"
    assert "global_freeze" in result.report.read_text()
    assert result.signer_counts["allowed"] > 0
    assert result.signer_counts["denied_by_rule"]["symbol_not_allowed"] == 1


def _sim_url(result: DemoResult) -> str:
    log = (result.root / "signer-data" / "signer.toml").read_text()
    return tomllib.loads(log)["exchanges"]["binance"]["api_url"]


def _demo_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "botengine.cli", "demo", *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--days", "0"], "--days 0 is out of range: allowed 1..7"),
        (["--days", "8"], "--days 8 is out of range: allowed 1..7"),
        (["--days", "x"], "--days: invalid int value: 'x'"),
        (["--trade-seconds", "1"], "--trade-seconds 1.0 is out of range: allowed 5..600"),
        (["--trade-seconds", "nan"], "--trade-seconds nan is out of range: allowed 5..600"),
    ],
)
def test_bad_demo_arguments_are_refused_before_anything_starts(
    args: list[str], message: str
) -> None:
    done = _demo_cli(*args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "bulkhead-demo-" not in done.stdout + done.stderr  # no data dir was made


def test_a_missing_candle_directory_is_named_with_the_files_it_needs(tmp_path: Path) -> None:
    done = _demo_cli("--data", str(tmp_path / "nowhere"))
    assert done.returncode == 2
    assert f"{tmp_path / 'nowhere'} lacks BTC_USDT-1h.json" in done.stderr
    assert "../shared/data" in done.stderr
