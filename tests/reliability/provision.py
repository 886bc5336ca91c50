"""An operator's set-up of a signer home, and an auditor's view of its log.

`provision` does what `bulkhead-signer init / keys add / policy set / bots add` do, through the
same Python APIs the CLI calls (as tests/signer/stack.py does), so a scenario can start the real
`serve` process seconds later. `Auditor` exports and verifies the log the way `audit export` and
`audit verify` do, and can run those two commands for real.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botengine.signer_client import AdminClient, Identity, SignerClient
from signer.audit import load_public_key, verify_jsonl
from signer.auditverify import VerifyReport
from signer.core import now_ms
from signer.db import read_session, write_txn
from signer.server import MasterKeySource, OpenSigner, open_signer
from tests.reliability.processes import ROOT, SIGNER_MAIN, SignerProcess, SimProcess, child_env
from tests.signer.stack import init_signer

OPERATOR_ID = "op-1"
# Wide limits: the crash, soak and fuzz scenarios test the plumbing, not the caps.
ROOMY_POLICY = """
symbols = ["BTC/USDT", "ETH/USDT"]
sides = ["buy", "sell"]
order_types = ["limit", "market"]
max_order_notional = "100000"
max_notional_24h = "1000000000"
max_open_orders = 100000
orders_per_minute = 100000
price_band_pct = "5"
market_slippage_pct = "1"
reference_max_age_s = 30
"""


@dataclass
class Home:
    """A provisioned signer: its files, the exchange key ids, the bots and the operator."""

    root: Path
    data_dir: Path
    keyfile: Path
    db_url: str | None
    key_ids: tuple[str, ...]
    bots: dict[str, Identity]
    operator: Identity
    grants: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def process(self, name: str = "signer", *, debug: bool = False) -> SignerProcess:
        return SignerProcess(self.data_dir, self.keyfile, self.root / f"{name}.log", debug=debug)

    def open(self) -> OpenSigner:
        return open_signer(self.data_dir, MasterKeySource(keyfile=self.keyfile))


def provision(
    root: Path,
    sim: SimProcess,
    *,
    db_url: str | None = None,
    key_ids: tuple[str, ...] = ("k1",),
    bots: int = 4,
    policy: str = ROOMY_POLICY,
    config_extra: str = "",
    data_dir: Path | None = None,
    grant_all: bool = False,
) -> Home:
    """Initialise a data dir, load the exchange key under each key id, set the policy on each,
    register `bots` bot identities (bot-i may use key_ids[i % len(key_ids)], or every key with
    `grant_all`) and one operator."""
    data_dir = data_dir or root / "signer-data"
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    keyfile = root / "master.key"
    opened, operator = init_signer(data_dir, keyfile, sim.base_url, db_url, config_extra)
    identities: dict[str, Identity] = {}
    grants: dict[str, tuple[str, ...]] = {}
    try:
        for key_id in key_ids:
            with write_txn(opened.engine) as s:
                opened.keystore.add_hmac(s, key_id, "binance", sim.api_key, sim.secret)
                opened.audit.append(
                    s, "admin", {"action": "keys_add", "actor": "test", "key_id": key_id}, now_ms()
                )
            opened.actions.set_policy("test", now_ms(), key_id, policy)
        for i in range(bots):
            bot = Identity.generate(f"bot-{i}")
            grant = key_ids if grant_all else (key_ids[i % len(key_ids)],)
            opened.actions.register_bot("test", now_ms(), bot.name, bot.public_key, list(grant))
            identities[bot.name], grants[bot.name] = bot, grant
    finally:
        opened.close()
    return Home(root, data_dir, keyfile, db_url, key_ids, identities, operator, grants)


def bot_client(home: Home, address: str, bot: str, key_id: str | None = None) -> SignerClient:
    return SignerClient(address, home.bots[bot], key_id or home.grants[bot][0], timeout=20)


def admin_client(home: Home, address: str) -> AdminClient:
    return AdminClient(address, home.operator, timeout=20)


class Auditor:
    """Reads the signer's log as an auditor does: an export, verified with the public key."""

    def __init__(self, home: Home) -> None:
        self.home = home
        self.opened = home.open()
        self.pubkey = load_public_key(home.data_dir / "audit_pubkey.hex")

    def close(self) -> None:
        self.opened.close()

    def export(self, path: Path | None = None) -> Path:
        """`audit export`, in this process (the same code path, without a process start)."""
        path = path or self.home.root / f"export-{secrets.token_hex(4)}.jsonl"
        with read_session(self.opened.engine) as s, open(path, "w", encoding="utf-8") as fh:
            self.opened.audit.export_jsonl(s, fh)
        return path

    def records(self, path: Path | None = None) -> list[dict[str, Any]]:
        """Every record of an export (a fresh one, deleted after reading, by default), parsed."""
        own = path is None
        path = path or self.export()
        try:
            lines = path.read_text().splitlines()
        finally:
            if own:
                path.unlink()
        out = []
        for line in lines:
            obj = json.loads(line)
            if obj.get("type") == "record":
                out.append(json.loads(obj["record"]))
        return out

    def snapshot(self) -> tuple[VerifyReport, list[dict[str, Any]]]:
        """One fresh export: its verification and its records (the file is deleted)."""
        path = self.export()
        try:
            return self.verify(path), self.records(path)
        finally:
            path.unlink()

    def verify(self, path: Path) -> VerifyReport:
        with open(path, encoding="utf-8") as fh:
            return verify_jsonl(fh, self.pubkey)

    def cli_export_and_verify(self) -> tuple[bool, str]:
        """The real `bulkhead-signer audit export` then `audit verify --json`."""
        export = self.home.root / f"cli-export-{secrets.token_hex(4)}.jsonl"
        common = [
            "--data-dir",
            str(self.home.data_dir),
            "--master-key-file",
            str(self.home.keyfile),
        ]
        done = subprocess.run(
            [sys.executable, "-c", SIGNER_MAIN, "audit", "export", "--out", str(export), *common],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
            env=child_env(),
        )
        if done.returncode != 0:
            return False, f"audit export exited {done.returncode}: {done.stderr.strip()}"
        pub = str(self.home.data_dir / "audit_pubkey.hex")
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                SIGNER_MAIN,
                "audit",
                "verify",
                str(export),
                "--pubkey",
                pub,
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
            env=child_env(),
        )
        export.unlink(missing_ok=True)
        try:
            report = json.loads(done.stdout)
        except ValueError:
            return False, f"audit verify exited {done.returncode}: {done.stderr.strip()}"
        return done.returncode == 0 and bool(report.get("ok")), json.dumps(report)
