"""`bulkhead bot add|list|start|stop|status`, `identity new`, `run`: what they do, and that bad
input is one line naming field, value and range, exit status 2, changing nothing."""

from __future__ import annotations

import fcntl
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from botengine.cli import main

DCA = """name = "btc-dca"
type = "dca"
symbol = "BTC/USDT"
key_id = "main"
[dca]
base_order = "20"
safety_order = "20"
take_profit_pct = "1"
"""


@pytest.fixture
def engine(tmp_path: Path) -> Path:
    cfg = tmp_path / "engine.toml"
    cfg.write_text('data_dir = "data"\n')
    (tmp_path / "dca.toml").write_text(DCA)
    return cfg


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code, out, err = cli(capsys, *args)
    assert code == 2 and out == "", (code, out, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def bots(capsys: pytest.CaptureFixture[str], engine: Path) -> list[dict[str, object]]:
    code, out, _ = cli(capsys, "bot", "list", "--config", str(engine), "--json")
    assert code == 0
    return json.loads(out)  # type: ignore[no-any-return]


def test_add_list_stop_start_and_status(capsys: pytest.CaptureFixture[str], engine: Path) -> None:
    c = str(engine)
    code, out, _ = cli(capsys, "bot", "add", str(engine.parent / "dca.toml"), "--config", c)
    assert code == 0 and "added bot btc-dca (dca BTC/USDT, signer key main): running" in out
    assert [(b["name"], b["status"]) for b in bots(capsys, engine)] == [("btc-dca", "running")]
    assert "stopped" in cli(capsys, "bot", "stop", "btc-dca", "--config", c)[1]
    assert "stopped -> running" in cli(capsys, "bot", "start", "btc-dca", "--config", c)[1]
    code, out, _ = cli(capsys, "bot", "status", "btc-dca", "--config", c)
    assert code == 0 and out.startswith("bot btc-dca: running (dca BTC/USDT on binance")
    assert "last denial: none" in out and "realised PnL: 0 USDT over 0 closed deals" in out
    info = json.loads(cli(capsys, "bot", "status", "btc-dca", "--config", c, "--json")[1])
    assert info["status"] == "running" and info["orders"] == {} and info["last_denial"] is None
    assert stat.S_IMODE((engine.parent / "data").stat().st_mode) == 0o700


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("base_order = \"20\"", "base_order = \"-5\""),
         "dca.base_order: '-5' is not allowed; must be a decimal > 0"),
        (("base_order = \"20\"", "base_order = 20.5"),
         "dca.base_order: 20.5 is a float; write it as a quoted decimal string"),
        (('name = "btc-dca"', 'name = "a name with spaces"'),
         "name: 'a name with spaces' is not allowed; must be 1 to 14 characters"),
        (('type = "dca"', 'type = "dca"\nleverage = "10"'),
         "leverage: unknown field (value '10'); refused"),
        (('[dca]', '[dca'), "not valid TOML"),
    ],
)  # fmt: skip
def test_bot_add_refuses_a_bad_file_in_one_line_and_stores_nothing(
    capsys: pytest.CaptureFixture[str], engine: Path, edit: tuple[str, str], expected: str
) -> None:
    bad = engine.parent / "bad.toml"
    bad.write_text(DCA.replace(*edit))
    assert expected in refused(capsys, "bot", "add", str(bad), "--config", str(engine))
    assert bots(capsys, engine) == []


def test_bot_add_refuses_a_missing_file_and_a_taken_name(
    capsys: pytest.CaptureFixture[str], engine: Path
) -> None:
    c = str(engine)
    assert "nope.toml: cannot read" in refused(capsys, "bot", "add", "nope.toml", "--config", c)
    assert cli(capsys, "bot", "add", str(engine.parent / "dca.toml"), "--config", c)[0] == 0
    err = refused(capsys, "bot", "add", str(engine.parent / "dca.toml"), "--config", c)
    assert "name: bot 'btc-dca' already exists" in err
    assert len(bots(capsys, engine)) == 1


@pytest.mark.parametrize("verb", ["start", "stop", "status"])
def test_start_stop_status_refuse_unknown_and_malformed_names(
    capsys: pytest.CaptureFixture[str], engine: Path, verb: str
) -> None:
    c = str(engine)
    assert "NAME: no bot named 'ghost'" in refused(capsys, "bot", verb, "ghost", "--config", c)
    err = refused(capsys, "bot", verb, "../../etc", "--config", c)
    assert "NAME: '../../etc' is not allowed; must be 1 to 14 characters" in err
    assert "bulkhead bot" in refused(capsys, "bot", verb, "--config", c)  # NAME missing


def test_bot_list_refuses_a_missing_or_invalid_engine_config(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert "cannot read" in refused(capsys, "bot", "list", "--config", str(tmp_path / "no.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("poll_interval_s = -1\n")
    err = refused(capsys, "bot", "list", "--config", str(bad))
    assert (
        "poll_interval_s: -1 is not allowed; Input should be greater than or equal to 0.05" in err
    )
    assert "invalid choice: 'frobnicate'" in refused(capsys, "bot", "frobnicate")


def test_identity_new_writes_a_private_key_0600_and_prints_its_public_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    key = tmp_path / "engine.key"
    code, out, _ = cli(capsys, "identity", "new", "--out", str(key), "--json")
    info = json.loads(out)
    seed = bytes.fromhex(key.read_text().strip())
    assert code == 0 and stat.S_IMODE(key.stat().st_mode) == 0o600
    assert info["public_key"] == SigningKey(seed).verify_key.encode().hex()
    assert (tmp_path / "engine.key.pub").read_text().strip() == info["public_key"]
    assert key.read_text().strip() not in out  # the private key is never printed


def test_identity_new_refuses_to_overwrite_or_to_write_into_nowhere(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    key = tmp_path / "engine.key"
    key.write_text("keep me\n")
    assert "exists; refusing to overwrite" in refused(capsys, "identity", "new", "--out", str(key))
    assert key.read_text() == "keep me\n"
    err = refused(capsys, "identity", "new", "--out", str(tmp_path / "no" / "k"))
    assert "directory" in err and "does not exist" in err
    assert "the following arguments are required: --out" in refused(capsys, "identity", "new")


def test_run_refuses_a_config_without_signer_or_with_an_unsafe_identity_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cfg = tmp_path / "engine.toml"
    cfg.write_text('data_dir = "data"\n')
    assert "signer: missing" in refused(capsys, "run", "--config", str(cfg))
    key = tmp_path / "engine.key"
    key.write_text(bytes(SigningKey.generate()).hex())
    key.chmod(0o644)
    cfg.write_text(
        'data_dir = "data"\n[signer]\naddresses = ["unix:///tmp/none.sock"]\n'
        'identity_name = "e1"\nidentity_key = "engine.key"\n'
    )
    err = refused(capsys, "run", "--config", str(cfg))
    assert "signer.identity_key:" in err and "mode 0644; allowed: no access for group" in err
    key.chmod(0o600)
    key.write_text("not a key")
    assert "does not hold a 64-hex-character Ed25519 key" in refused(
        capsys, "run", "--config", str(cfg)
    )
    assert "cannot read" in refused(capsys, "run", "--config", str(tmp_path / "none.toml"))


def test_run_refuses_a_data_dir_another_engine_is_using(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "data").mkdir(mode=0o700)
    cfg = tmp_path / "engine.toml"
    cfg.write_text(
        'data_dir = "data"\n[signer]\naddresses = ["unix:///tmp/none.sock"]\n'
        'identity_name = "e1"\nidentity_key = "engine.key"\n'
    )
    with open(tmp_path / "data" / "engine.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another engine holds it
        err = refused(capsys, "run", "--config", str(cfg))
    assert "is in use by another running engine" in err


def test_the_installed_command_exits_2_with_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "botengine.cli", "bot", "status", "ghost", "--config",
         str(tmp_path / "missing.toml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "missing.toml: cannot read" in done.stderr
