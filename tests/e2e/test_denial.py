"""A signer denial pauses the bot, visibly: `bulkhead bot status` names the rule id and the
signer's message. Once the operator allows the order and the trader restarts the bot, the very
same order (same client order id) goes out, once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import ccxt
import pytest

from botengine import store as st
from botengine.cli import main as bulkhead
from signer.core import now_ms
from simexchange.testing import ccxt_config
from tests.e2e.paper import wait_for
from tests.signer.stack import BOT_ID, KEY_ID, POLICY_TOML, Stack, build_stack

TIGHT = POLICY_TOML.replace('max_order_notional = "5000"', 'max_order_notional = "50"')
DCA = f"""
name = "btc-dca"
type = "dca"
symbol = "BTC/USDT"
key_id = "{KEY_ID}"
[dca]
base_order = "100"
safety_order = "100"
take_profit_pct = "1"
"""


@pytest.fixture
def tight_stack(tmp_path: Path) -> Iterator[Stack]:
    """simexchange and the signer (real gRPC on a Unix socket) with a 50 USDT order cap."""
    assert TIGHT != POLICY_TOML
    s = build_stack(tmp_path, policy=TIGHT)
    try:
        yield s
    finally:
        s.stop()


def bulkhead_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "botengine.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_a_denied_order_pauses_the_bot_and_bot_status_names_the_rule(
    tight_stack: Stack, tmp_path: Path
) -> None:
    key = tmp_path / "engine.key"
    key.write_text(bytes(tight_stack.bot.signing_key).hex() + "\n")
    os.chmod(key, 0o600)
    config = tmp_path / "engine.toml"
    config.write_text(
        'data_dir = "engine-data"\npoll_interval_s = 0.2\nlease_ttl_s = 6\n'
        f'[signer]\naddresses = ["{tight_stack.addresses["bot_unix"]}"]\n'
        f'identity_name = "{BOT_ID}"\nidentity_key = "engine.key"\n'
        f'[exchanges.binance]\napi_url = "{tight_stack.sim.base_url}"\n'
    )
    (tmp_path / "dca.toml").write_text(DCA)
    assert bulkhead(["bot", "add", str(tmp_path / "dca.toml"), "--config", str(config)]) == 0
    log = open(tmp_path / "engine.log", "w")  # noqa: SIM115
    engine = subprocess.Popen(
        [sys.executable, "-m", "botengine.cli", "run", "--config", str(config)],
        stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    store = st.Store(f"sqlite:///{tmp_path / 'engine-data' / 'engine.db'}")
    try:

        def status() -> str:
            with store.read() as s:
                return st.get_bot(s, "btc-dca").status

        wait_for(lambda: status() == "paused", 60, "the bot to be paused by the denial")
        shown = bulkhead_cli("bot", "status", "btc-dca", "--config", str(config))
        assert shown.returncode == 0, shown.stderr
        assert "bot btc-dca: paused" in shown.stdout
        assert "last denial: notional_cap: " in shown.stdout
        assert "exceeds 50" in shown.stdout  # the signer's own message
        assert "btc-dca-1-base: buy" in shown.stdout and "denied" in shown.stdout
        as_json = json.loads(
            bulkhead_cli("bot", "status", "btc-dca", "--config", str(config), "--json").stdout
        )
        assert as_json["last_denial"]["rules"] == ["notional_cap"]
        listed = bulkhead_cli("bot", "list", "--config", str(config)).stdout
        assert "paused (notional_cap)" in listed

        ex = ccxt.binance(
            ccxt_config(tight_stack.sim.base_url, tight_stack.account.api_key,
                        tight_stack.account.secret)
        )  # fmt: skip

        def placed() -> list[str]:
            return [o["clientOrderId"] for o in ex.privateGetAllOrders({"symbol": "BTCUSDT"})]

        assert placed() == []  # nothing reached the exchange
        denials = [r for r in tight_stack.audit_records("decision") if not r["payload"]["allowed"]]
        assert [r["payload"]["client_order_id"] for r in denials] == ["btc-dca-1-base"]

        # the operator raises the cap; the trader starts the bot: the same order goes out once
        tight_stack.opened.actions.set_policy("test", now_ms(), KEY_ID, POLICY_TOML)
        started = bulkhead_cli("bot", "start", "btc-dca", "--config", str(config))
        assert "paused -> running" in started.stdout, started.stderr

        def base_filled() -> bool:
            with store.read() as s:
                row = st.order_by_coid(s, "btc-dca-1-base")
                return row is not None and row.state == "filled"

        wait_for(base_filled, 60, "the denied base order to be sent again and fill")
        assert placed().count("btc-dca-1-base") == 1
    finally:
        store.close()
        engine.terminate()
        engine.wait(timeout=30)
        log.close()
    assert engine.returncode == 0, (tmp_path / "engine.log").read_text()[-2000:]
