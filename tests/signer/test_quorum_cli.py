"""The quorum through the operator CLI, as real subprocesses: init with two operators and
M=2; a loosening `policy set` is refused; a proposal file is signed offline (no data dir,
another working directory) by each operator and submitted on the host; a key added under the
keys quorum stays pending until its approval applies; refusals are one line and change nothing.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.signer.stack import POLICY_TOML

SECRET = "quorum-cli-" + "5" * 24


def run(*args: str, cwd: Path | None = None, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "signer.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


class Host:
    """The signer host: every command gets the data dir and the master key file."""

    def __init__(self, root: Path) -> None:
        self.root, self.data, self.key = root, root / "data", root / "master.key"

    def __call__(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        where = ["--data-dir", str(self.data), "--master-key-file", str(self.key)]
        return run(*args, *where, stdin=stdin)

    def ok(self, *args: str, stdin: str = "") -> str:
        done = self(*args, stdin=stdin)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def audit_size(self) -> int:
        with sqlite3.connect(self.data / "signer.db") as db:
            return int(db.execute("SELECT count(*) FROM audit_records").fetchone()[0])


def one_line_error(done: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def laptops(tmp_path: Path) -> dict[str, Path]:
    """Each operator's own machine: an identity made there; no signer data dir anywhere."""
    out = {}
    for name in ("op-1", "op-2"):
        home = tmp_path / f"laptop-{name}"
        home.mkdir()
        done = run("identity", "generate", "--out", str(home / "op.key"), "--json", cwd=home)
        assert done.returncode == 0, done.stderr
        out[name] = home
    return out


def sign_offline(laptop: Path, proposal: Path, name: str) -> None:
    """Copy the file to the laptop, sign it there, copy it back (as an operator would)."""
    local = laptop / proposal.name
    local.write_text(proposal.read_text())
    done = run("proposal", "sign", local.name, "--key", "op.key", "--operator", name, cwd=laptop)
    assert done.returncode == 0, done.stderr
    assert not (laptop / "signer-data").exists()
    proposal.write_text(local.read_text())


def test_a_two_operator_install_needs_both_for_every_loosening(
    tmp_path: Path, laptops: dict[str, Path]
) -> None:
    host = Host(tmp_path)
    ops = [f"{n}={laptops[n] / 'op.key.pub'}" for n in ("op-1", "op-2")]
    quorum_flags = ["--quorum", "2", "--time-lock", "unfreeze=3600"]
    done = host("init", "--create-key-file", "--kdf", "interactive", "--operator", ops[0],
                "--operator", ops[1], "--quorum", "3")  # fmt: skip
    one_line_error(done, "quorum.", "M=3", "1 <= M <= 2")
    assert not host.data.exists(), "a refused init created the data dir"
    host.ok("init", "--create-key-file", "--kdf", "interactive", "--operator", ops[0],
            "--operator", ops[1], *quorum_flags)  # fmt: skip
    listed = json.loads(host.ok("operators", "list", "--json"))
    assert [o["operator_id"] for o in listed["operators"]] == ["op-1", "op-2"]
    assert {(r["action_class"], r["m"], r["time_lock_s"]) for r in listed["quorum"]} >= {
        ("policy", 2, 0),
        ("unfreeze", 2, 3600),
    }

    # An exchange key added under the keys quorum is held (pending) until both approve it.
    out = host.ok("keys", "add", "--key-id", "k1", "--exchange", "binance", "--api-key", "AK1",
                  stdin=SECRET + "\n")  # fmt: skip
    assert "status=pending" in out and "needs a proposal with 2 of 2" in out
    assert SECRET not in out
    key_file = tmp_path / "key.json"
    host.ok("proposal", "new", "key", "k1", "--out", str(key_file))
    sign_offline(laptops["op-1"], key_file, "op-1")
    first = json.loads(host.ok("proposal", "submit", str(key_file), "--json"))
    assert first["status"] == "open" and first["approvers"] == ["op-1"]
    sign_offline(laptops["op-2"], key_file, "op-2")
    applied = json.loads(host.ok("proposal", "submit", str(key_file), "--json"))
    assert applied["status"] == "applied" and applied["approvers"] == ["op-1", "op-2"]
    keys = json.loads(host.ok("keys", "list", "--json"))
    assert [(k["key_id"], k["status"]) for k in keys] == [("k1", "active")]

    # A policy (deny-all -> something is a loosening) needs the same two signatures.
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY_TOML)
    size = host.audit_size()
    refused = one_line_error(host("policy", "set", "k1", str(policy)), "needs a proposal")
    assert "2 of 2 operator signatures" in refused
    assert host.audit_size() == size
    pfile = tmp_path / "policy-proposal.json"
    host.ok("proposal", "new", "policy", "k1", str(policy), "--out", str(pfile))
    sign_offline(laptops["op-2"], pfile, "op-2")
    sign_offline(laptops["op-1"], pfile, "op-1")
    assert json.loads(host.ok("proposal", "submit", str(pfile), "--json"))["status"] == "applied"
    shown = json.loads(host.ok("policy", "show", "k1", "--json"))
    assert shown["version"] == 1 and shown["policy"]["max_order_notional"] == "5000"

    # Operators: `operators add` after init is a proposal; any one operator can veto it.
    third = tmp_path / "op3.pub"
    third.write_text("cd" * 32 + "\n")
    ofile = tmp_path / "op3.json"
    made = json.loads(host.ok("operators", "add", "op-3", "--pubkey", str(third),
                              "--out", str(ofile), "--json"))  # fmt: skip
    assert made["status"] == "open" and made["kind"] == "add_operator"
    vetoed = json.loads(
        host.ok("proposal", "veto", made["proposal_id"], "--reason", "no", "--json")
    )
    assert vetoed["status"] == "vetoed"
    statuses = {p["kind"]: p["status"] for p in json.loads(host.ok("proposal", "list", "--json"))}
    assert statuses == {"approve_key": "applied", "set_policy": "applied", "add_operator": "vetoed"}

    # Refusals: one line naming what is wrong; nothing changes.
    size = host.audit_size()
    one_line_error(host("proposal", "new", "quorum", "policy", "5"), "M=5", "1 <= M <= 2")
    shown = json.loads(host.ok("proposal", "show", applied["proposal_id"], "--json"))
    assert shown["approvers"] == ["op-1", "op-2"] and '"approve_key"' in shown["document"]
    again = run("proposal", "sign", str(key_file), "--key", str(laptops["op-1"] / "op.key"))
    one_line_error(again, "already signed")
    bad_key = tmp_path / "not-a-key"
    bad_key.write_text("hello\n")
    one_line_error(run("proposal", "sign", str(pfile), "--key", str(bad_key)), "--key", "64 hex")
    tampered = json.loads(pfile.read_text())
    tampered["document"] = tampered["document"].replace('"5000"', '"50000"')
    pfile.write_text(json.dumps(tampered))
    one_line_error(host("proposal", "submit", str(pfile)), "proposal_id does not match")
    one_line_error(host("init", "--time-lock", "policy"), "--time-lock", "CLASS=SECONDS")
    assert host.audit_size() == size
