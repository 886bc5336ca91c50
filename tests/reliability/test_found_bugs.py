"""Signer bugs the reliability scenarios found, each as the test that fails until it is fixed.

Each was a strict xfail until its fix landed; they stay as regression tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.reliability.processes import ROOT, SIGNER_MAIN, SimProcess, child_env, wait_until
from tests.reliability.provision import Auditor, bot_client, provision
from tests.reliability.volumes import Volume, VolumeUnavailable


def test_a_signer_started_on_a_read_only_store_refuses_in_one_clear_line(tmp_path: Path) -> None:
    try:
        volume = Volume.create(tmp_path)
    except VolumeUnavailable as e:
        pytest.skip(str(e))
    sim = SimProcess.start(tmp_path)
    try:
        home = provision(tmp_path, sim, data_dir=volume.mountpoint / "data", bots=1)
        volume.remount(read_only=True)
        done = subprocess.run(
            [sys.executable, "-c", SIGNER_MAIN, "serve", "--data-dir", str(home.data_dir),
             "--master-key-file", str(home.keyfile)],
            capture_output=True, text=True, timeout=120, cwd=ROOT, env=child_env(),
        )  # fmt: skip
    finally:
        sim.stop()
        volume.close()
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-2000:]
    assert "read-only" in lines[0] or "database" in lines[0], lines


def test_an_order_read_before_reconciliation_still_gets_an_audited_outcome(
    tmp_path: Path,
) -> None:
    sim = SimProcess.start(tmp_path)
    # The reconciler makes its first pass at start-up, with no grace: it owes this order one.
    home = provision(
        tmp_path, sim, bots=1, config_extra="reconcile_interval_s = 3600\nreconcile_grace_s = 0"
    )
    signer = home.process()
    try:
        signer.start()
        bot = bot_client(home, signer.addresses["bot_unix"], "bot-0")
        price = sim.limit_price()
        signed = bot.submit_order(
            "BTC/USDT", "buy", "limit", "0.001", price, "rd-1", mode="sign-only"
        ).signed_request
        request = urllib.request.Request(
            signed.url, data=signed.body.encode() or None, method=signed.method,
            headers=dict(signed.headers),
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as resp:  # the bot sends it itself
            assert json.loads(resp.read())["clientOrderId"] == "rd-1"
        # A control the reconciler must resolve: allowed, signed, never sent (created after rd-1,
        # and the reconciler takes pending orders oldest first).
        bot.submit_order("BTC/USDT", "buy", "limit", "0.001", price, "rd-2", mode="sign-only")
        sim.cancel_all()  # the account holder cancels rd-1 at the exchange
        order = bot.read("order", "BTC/USDT", "rd-1").orders[0]
        assert order.status == "canceled"
        bot.close()
        signer.kill9()
        signer.start()  # the reconciler's pass at start-up
        auditor = Auditor(home)

        def outcomes(coid: str) -> list[str]:
            return [
                r["payload"]["status"]
                for r in auditor.records()
                if r["kind"] == "outcome" and r["payload"]["client_order_id"] == coid
            ]

        try:
            wait_until("the reconciler's pass", lambda: "rejected" in outcomes("rd-2"), 60, 0.2)
            assert "canceled" in outcomes("rd-1"), f"the log says only {outcomes('rd-1')} of rd-1"
        finally:
            auditor.close()
    finally:
        signer.stop()
        sim.stop()
