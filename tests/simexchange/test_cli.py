"""`bulkhead exchange-sim account new` and `serve`, run as real processes."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from simexchange import load_accounts
from simexchange.cli import main
from simexchange.server import AccountKeys
from simexchange.testing import RawClient

BIN = Path(sys.executable).parent


def test_account_new_prints_the_secret_once_and_writes_a_private_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    accounts = tmp_path / "accounts.toml"
    args = [
        "--name",
        "alice",
        "--balance",
        "USDT=1000.5",
        "--balance",
        "btc=0.1",
        "--ip",
        "127.0.0.1",
    ]
    assert main(["account", "new", "--accounts", str(accounts), *args]) == 0
    out = capsys.readouterr()
    printed = dict(line.split(": ", 1) for line in out.out.splitlines())
    assert printed["account"] == "alice" and len(printed["secret"]) == 64
    assert out.out.count(printed["secret"]) == 1 and printed["secret"] not in out.err
    assert stat.S_IMODE(os.stat(accounts).st_mode) == 0o600

    (alice,) = load_accounts(accounts)
    assert alice.balances == {"USDT": Decimal("1000.5"), "BTC": Decimal("0.1")}
    (key,) = alice.keys
    assert key.api_key == printed["api_key"] and key.type == "HMAC"
    assert key.secret is not None and key.secret.get_secret_value() == printed["secret"]
    assert printed["secret"] not in repr(alice)  # the config never shows it
    assert key.can_trade and not key.can_withdraw and key.ip_allow == ("127.0.0.1",)

    assert main(["account", "new", "--accounts", str(accounts), "--name", "alice"]) != 0


def test_account_new_registers_an_ed25519_public_key_without_any_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pem = tmp_path / "bot.pub.pem"
    pem.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    accounts = tmp_path / "a.toml"
    assert (
        main(["account", "new", "--accounts", str(accounts), "--ed25519-public-key", str(pem)]) == 0
    )
    assert "secret" not in capsys.readouterr().out
    (acct,) = load_accounts(accounts)
    assert acct.keys[0].type == "ED25519" and "PUBLIC KEY" in (acct.keys[0].public_key or "")


def test_bad_accounts_file_names_field_and_value_but_never_the_secret(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[[accounts]]\nname = "x"\nbalances = { USDT = "-5x" }\n'
        '[[accounts.keys]]\napi_key = "k"\nsecret = "tooshort-secret"\n'
    )
    with pytest.raises(ValueError) as err:
        load_accounts(bad)
    text = str(err.value)
    assert "balances.USDT" in text and "-5x" in text and "tooshort-secret" not in text


def test_serve_runs_with_seeded_accounts_and_stops_on_sigterm(tmp_path: Path) -> None:
    accounts = tmp_path / "accounts.toml"
    new = subprocess.run(
        [str(BIN / "bulkhead"), "exchange-sim", "account", "new", "--accounts", str(accounts),
         "--name", "bob", "--balance", "USDT=250"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    printed = dict(line.split(": ", 1) for line in new.stdout.splitlines())
    proc = subprocess.Popen(
        [str(BIN / "bulkhead"), "exchange-sim", "serve", "--port", "0", "--accounts",
         str(accounts), "--synthetic", "BTCUSDT=60000", "--speed", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("simexchange serving http://127.0.0.1:"), line
        base_url = line.split()[2]
        client = RawClient(base_url)
        keys = AccountKeys(1, "bob", printed["api_key"], "HMAC", printed["secret"])
        now = client.get("/api/v3/time").body["serverTime"]
        account = client.signed("GET", "/api/v3/account", keys, {}, timestamp=now).body
        assert {"asset": "USDT", "free": "250.00000000", "locked": "0.00000000"} in account[
            "balances"
        ]
        assert client.get("/_sim/status").status == 404  # admin is off unless --admin
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert printed["secret"] not in out + err


def test_bulkhead_lists_exchange_sim(capsys: pytest.CaptureFixture[str]) -> None:
    from botengine.cli import main as bulkhead

    with pytest.raises(SystemExit):
        bulkhead(["--help"])
    assert "exchange-sim" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        bulkhead(["exchange-sim", "--help"])
    assert exit_info.value.code == 0
    assert "serve" in capsys.readouterr().out
