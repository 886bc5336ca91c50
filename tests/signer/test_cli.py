"""The operator CLI, through real subprocesses: secrets on stdin only, one-line errors, --json."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.signer.stack import POLICY_TOML

SECRET = "cli-test-" + os.urandom(16).hex()


class Cli:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.key = root / "master.key"

    def __call__(
        self, *args: str, stdin: str = "", key: Path | None = None, data: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "signer.cli",
                *args,
                "--data-dir",
                str(data or self.data),
                "--master-key-file",
                str(key or self.key),
            ],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def ok(self, *args: str, stdin: str = "") -> str:
        done = self(*args, stdin=stdin)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def audit_size(self) -> int:
        with sqlite3.connect(self.data / "signer.db") as db:
            return int(db.execute("SELECT count(*) FROM audit_records").fetchone()[0])


def one_line_error(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    c = Cli(tmp_path_factory.mktemp("cli"))
    out = json.loads(c.ok("init", "--create-key-file", "--kdf", "interactive", "--json"))
    assert len(out["audit_public_key"]) == 64
    assert (c.data.stat().st_mode & 0o077) == 0
    c.ok(
        "keys",
        "add",
        "--key-id",
        "k1",
        "--exchange",
        "binance",
        "--api-key",
        "APIKEY1",
        stdin=SECRET + "\n",
    )
    (c.root / "policy.toml").write_text(POLICY_TOML)
    yield c


def test_keys_list_shows_fingerprints_never_the_secret(cli: Cli) -> None:
    human = cli.ok("keys", "list")
    listed = json.loads(cli.ok("keys", "list", "--json"))
    assert [k["key_id"] for k in listed] == ["k1"] and listed[0]["fingerprint"]
    assert SECRET not in human + json.dumps(listed)
    assert SECRET not in (cli.data / "signer.db").read_bytes().decode("latin-1")


def test_policy_set_bumps_the_version_and_a_bad_file_changes_nothing(cli: Cli) -> None:
    policy = cli.root / "policy.toml"
    first = json.loads(cli.ok("policy", "set", "k1", str(policy), "--json"))["version"]
    second = json.loads(cli.ok("policy", "set", "k1", str(policy), "--json"))["version"]
    assert second == first + 1
    size = cli.audit_size()
    bad = cli.root / "bad.toml"
    bad.write_text(POLICY_TOML.replace('max_order_notional = "5000"', 'max_order_notional = "-5"'))
    one_line_error(cli("policy", "set", "k1", str(bad)), "max_order_notional", "-5", "> 0")
    bad.write_text(POLICY_TOML.replace('price_band_pct = "5"', "price_band_pct = 5.5"))
    one_line_error(cli("policy", "set", "k1", str(bad)), "price_band_pct", "float")
    shown = json.loads(cli.ok("policy", "show", "k1", "--json"))
    assert shown["version"] == second and cli.audit_size() == size
    one_line_error(cli("policy", "show", "nope"), "nope")


def test_bots_freeze_and_unfreeze_are_audited(cli: Cli) -> None:
    ident = cli.root / "bot.key"
    pub = json.loads(cli.ok("identity", "generate", "--out", str(ident), "--json"))["public_key"]
    assert (ident.stat().st_mode & 0o077) == 0
    cli.ok("bots", "add", "bot-a", "--pubkey", str(ident) + ".pub", "--keys", "k1")
    bots = json.loads(cli.ok("bots", "list", "--json"))
    assert bots == [{"bot_id": "bot-a", "status": "active", "public_key": pub, "key_ids": ["k1"]}]
    one_line_error(cli("bots", "add", "bot-b", "--pubkey", "zz", "--keys", "k1"), "public key")
    one_line_error(cli("bots", "add", "bad id!", "--pubkey", pub, "--keys", "k1"), "bot_id")
    cli.ok("freeze", "k1", "--reason", "test")
    cli.ok("freeze", "--all")
    one_line_error(cli("freeze"), "KEY_ID or --all")
    one_line_error(cli("freeze", "k1", "--all"), "KEY_ID or --all")
    cli.ok("unfreeze", "--all")
    one_line_error(cli("unfreeze", "--all"), "not in force")
    cli.ok("unfreeze", "k1")
    cli.ok("bots", "revoke", "bot-a")
    one_line_error(cli("bots", "revoke", "ghost"), "ghost")
    export = cli.root / "bots.jsonl"
    cli.ok("audit", "export", "--out", str(export))
    actions = [
        json.loads(json.loads(line)["record"])["payload"].get("action")
        for line in export.read_text().splitlines()[:-1]
    ]
    for action in ("register_bot", "freeze", "unfreeze", "revoke_bot"):
        assert action in actions


def test_key_lifecycle_and_bad_key_ids(cli: Cli) -> None:
    gen = json.loads(
        cli.ok("keys", "generate", "--key-id", "k2", "--exchange", "binance", "--json")
    )
    assert "PUBLIC KEY" in gen["public_key_pem"] and gen["status"] == "pending"
    assert (
        json.loads(cli.ok("keys", "set-api-key", "k2", "APIKEY2", "--json"))["status"] == "active"
    )
    rotated = json.loads(cli.ok("keys", "rotate", "k1", "--json", stdin=SECRET + "x\n"))
    assert rotated["generation"] == 2
    assert json.loads(cli.ok("keys", "remove", "k2", "--json"))["status"] == "removed"
    size = cli.audit_size()
    one_line_error(cli("keys", "remove", "ghost"), "ghost")
    one_line_error(
        cli(
            "keys",
            "add",
            "--key-id",
            "bad id",
            "--exchange",
            "binance",
            "--api-key",
            "A",
            stdin="s" * 32 + "\n",
        ),
        "key_id",
    )
    one_line_error(
        cli("keys", "add", "--key-id", "k9", "--exchange", "binance", "--api-key", "A", stdin="\n"),
        "secret",
    )
    assert cli.audit_size() == size


def test_audit_verify_passes_then_names_a_tampered_record(cli: Cli) -> None:
    export = cli.root / "audit.jsonl"
    cp = cli.root / "cp.json"
    cli.ok("audit", "checkpoint", "--out", str(cp))
    cli.ok("audit", "export", "--out", str(export))
    pub = str(cli.data / "audit_pubkey.hex")
    verdict = json.loads(
        cli.ok("audit", "verify", str(export), "--pubkey", pub, "--checkpoint", str(cp), "--json")
    )
    assert verdict["ok"] is True
    lines = export.read_text().splitlines()
    tampered = lines[2].replace('\\"actor\\":', '\\"actoR\\":', 1)
    assert tampered != lines[2]
    lines[2] = tampered
    export.write_text("\n".join(lines) + "\n")
    done = cli("audit", "verify", str(export), "--pubkey", pub, "--json")
    assert done.returncode == 1 and json.loads(done.stdout)["first_bad_seq"] == 3


def test_wrong_master_key_and_missing_or_open_data_dirs_are_refused(
    cli: Cli, tmp_path: Path
) -> None:
    other = tmp_path / "other.key"
    other.write_text(os.urandom(32).hex())
    other.chmod(0o600)
    size = cli.audit_size()
    one_line_error(cli("freeze", "--all", key=other), "master key")
    assert cli.audit_size() == size
    one_line_error(cli("keys", "list", data=tmp_path / "missing"), "init")
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o755)
    one_line_error(cli("keys", "list", data=loose), "0755")
    open_key = tmp_path / "open.key"
    open_key.write_text(os.urandom(32).hex())
    open_key.chmod(0o644)
    one_line_error(cli("freeze", "--all", key=open_key), str(open_key))
