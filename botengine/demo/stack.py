"""The three processes of the demo and the operator's steps that set them up.

Everything goes through the products' own command lines, as an operator and a trader would:
`bulkhead exchange-sim account new` opens the exchange account, `bulkhead-signer` (run as
`python -m signer.cli`, since the engine side never imports the signer) initialises the signer,
seals the key read from standard input, sets the policy and registers the engine's identity made
by `bulkhead identity new`. The exchange secret exists only in this process's memory (it plays
the account owner, who reads balances with it) and in the signer's sealed keystore.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import select
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import ccxt

from botengine.cli import main as bulkhead_main
from simexchange.testing import ccxt_config

from .market import BALANCES, BOTS, ENGINE_ID, KEY_ID, OPERATOR_ID, POLICY, Window

PY = sys.executable
T = TypeVar("T")


class StepFailed(RuntimeError):
    """A command or process of the demo did not do its part; the message says which and why."""


def wait_for(cond: Callable[[], T | None], timeout: float, what: str, every: float = 0.2) -> T:
    """Poll `cond` until it returns something truthy; raise naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise StepFailed(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[str]
    log: Path
    banner: str = ""


@dataclass
class Stack:
    """simexchange, the signer and the engine, in `root` (a throw-away directory, 0700)."""

    root: Path
    procs: dict[str, Proc] = field(default_factory=dict)
    api_key: str = ""
    _secret: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        self.root.chmod(0o700)
        self.signer_dir = self.root / "signer-data"
        self.master_key = self.root / "master.key"  # outside the signer's data dir
        self.anchor = self.root / "anchor"  # signed tree heads, kept outside the signer too
        self.engine_dir = self.root / "engine"
        self.engine_config = self.engine_dir / "engine.toml"
        self.engine_key = self.engine_dir / "engine.key"
        self.operator_key = self.root / "operator.key"
        self.port = free_port()
        self.sim_url = f"http://127.0.0.1:{self.port}"
        self.bot_socket = f"unix://{self.signer_dir / 'signer.sock'}"
        self.admin_socket = f"unix://{self.signer_dir / 'admin.sock'}"

    # --- commands -------------------------------------------------------------------------

    def run(self, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [PY, "-m", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=180,
            cwd=self.root,
        )
        if done.returncode != 0:
            err = done.stderr.strip().splitlines()
            raise StepFailed(f"{' '.join(args[:3])}: exit {done.returncode}: {err[-1:]}")
        return done.stdout

    def signer(self, *args: str, stdin: str | None = None) -> str:
        """`bulkhead-signer ARGS` against the demo's signer data dir."""
        return self.run(
            "signer.cli",
            *args,
            "--data-dir",
            str(self.signer_dir),
            "--master-key-file",
            str(self.master_key),
            stdin=stdin,
        )

    def bulkhead(self, *args: str) -> str:
        """`bulkhead ARGS` through its entry point, in this process (a process start costs
        seconds on a busy machine); returns what it printed."""
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = bulkhead_main(list(args))
        if code != 0:
            raise StepFailed(f"bulkhead {' '.join(args[:3])}: exit {code}")
        return out.getvalue()

    def spawn(self, name: str, *args: str) -> Proc:
        log = self.root / f"{name}.log"
        popen = subprocess.Popen(
            [PY, "-m", *args],
            stdout=subprocess.PIPE,
            stderr=open(log, "w"),  # noqa: SIM115
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=self.root,
            start_new_session=True,
        )
        proc = Proc(name, popen, log)
        self.procs[name] = proc
        return proc

    def banner(self, proc: Proc, timeout: float = 90) -> str:
        assert proc.popen.stdout is not None
        ready, _, _ = select.select([proc.popen.stdout], [], [], timeout)
        line = proc.popen.stdout.readline() if ready else ""
        if not line:
            tail = proc.log.read_text()[-600:] if proc.log.exists() else ""
            raise StepFailed(f"{proc.name} did not start (log {proc.log}): {tail}")
        proc.banner = line.strip()
        return proc.banner

    # --- operator and trader steps ----------------------------------------------------------

    def open_account(self) -> None:
        accounts = self.root / "accounts.toml"
        balances = [a for k, v in BALANCES.items() for a in ("--balance", f"{k}={v}")]
        out = self.bulkhead(
            "exchange-sim",
            "account",
            "new",
            "--accounts",
            str(accounts),
            "--name",
            "trader",
            *balances,
        )
        fields = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
        self.api_key, self._secret = fields["api_key"], fields["secret"]

    def setup_signer(self) -> None:
        """init (with one operator, for the Admin Status RPC), key from stdin, policy, bot."""
        self.anchor.mkdir(mode=0o700)
        self.engine_dir.mkdir(mode=0o700)
        self.bulkhead("identity", "new", "--out", str(self.engine_key))
        self.bulkhead("identity", "new", "--out", str(self.operator_key))
        self.signer(
            "init",
            "--create-key-file",
            "--kdf",
            "interactive",
            "--operator",
            f"{OPERATOR_ID}={self.operator_key}.pub",
        )
        toml = self.signer_dir / "signer.toml"
        toml.write_text(
            f'checkpoint_interval_s = 5\nanchor_path = "{self.anchor}"\n'
            f'[exchanges.binance]\napi_url = "{self.sim_url}"\n'
        )
        os.chmod(toml, 0o600)
        # The secret travels through a pipe into the signer, is sealed at once, never in argv.
        self.signer(
            "keys",
            "add",
            "--key-id",
            KEY_ID,
            "--exchange",
            "binance",
            "--api-key",
            self.api_key,
            stdin=self._secret + "\n",
        )
        policy = self.root / "policy.toml"
        policy.write_text(POLICY)
        self.signer("policy", "set", KEY_ID, str(policy))
        self.signer(
            "bots", "add", ENGINE_ID, "--pubkey", f"{self.engine_key}.pub", "--keys", KEY_ID
        )

    def setup_engine(self) -> None:
        self.engine_config.write_text(
            'data_dir = "engine-data"\npoll_interval_s = 0.2\nlease_ttl_s = 10\n'
            "retry_base_s = 0.1\nretry_cap_s = 1.0\n"
            f'[signer]\naddresses = ["{self.bot_socket}"]\n'
            f'identity_name = "{ENGINE_ID}"\nidentity_key = "engine.key"\n'
            f'[exchanges.binance]\napi_url = "{self.sim_url}"\n'
        )
        for name, text in BOTS.items():
            path = self.engine_dir / f"{name}.toml"
            path.write_text(text)
            self.bulkhead("bot", "add", str(path), "--config", str(self.engine_config))

    def start(self, window: Window) -> None:
        """All three at once; the simulator's clock stands still at the window's start until
        `set_speed`, so the week begins only when the bots are trading."""
        data = [f"{m}={p}" for m, p in window.files.items()]
        sim = self.spawn(
            "simexchange",
            "botengine.cli",
            "exchange-sim",
            "serve",
            "--port",
            str(self.port),
            "--accounts",
            str(self.root / "accounts.toml"),
            "--start",
            str(window.start_ms),
            "--speed",
            "0",
            "--admin",
            "--data",
            *data,
        )
        signer = self.spawn(
            "signer",
            "signer.cli",
            "serve",
            "--data-dir",
            str(self.signer_dir),
            "--master-key-file",
            str(self.master_key),
        )
        self.banner(sim)
        served = json.loads(self.banner(signer))["serving"]
        if served.get("bot_unix") != self.bot_socket:
            raise StepFailed(f"signer serves {served}, expected {self.bot_socket}")
        self.banner(
            self.spawn("engine", "botengine.cli", "run", "--config", str(self.engine_config))
        )

    def pids(self) -> dict[str, int]:
        return {name: p.popen.pid for name, p in self.procs.items()}

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            if proc.popen.poll() is None:
                proc.popen.terminate()
        for proc in self.procs.values():
            try:
                proc.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait(timeout=10)
            if proc.popen.stdout is not None:
                proc.popen.stdout.close()

    # --- the exchange -----------------------------------------------------------------------

    def sim_admin(self, method: str, path: str, doc: dict[str, Any] | None = None) -> Any:
        data = None if doc is None else json.dumps(doc).encode()
        req = urllib.request.Request(f"{self.sim_url}{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read(), parse_float=Decimal)

    def sim_status(self) -> dict[str, Any]:
        """Server time and last prices (the simulator's admin endpoint)."""
        return dict(self.sim_admin("GET", "/_sim/status"))

    def set_speed(self, speed: Decimal) -> None:
        self.sim_admin("POST", "/_sim/speed", {"speed": str(speed)})

    def public_price(self, market_id: str) -> Decimal:
        """The exchange's public ticker: no key needed."""
        url = f"{self.sim_url}/api/v3/ticker/price?symbol={market_id}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            return Decimal(json.loads(resp.read())["price"])

    def balances(self) -> dict[str, Decimal]:
        """free + locked per asset, read with the account's own key (raw Binance JSON)."""
        ex = ccxt.binance(ccxt_config(self.sim_url, self.api_key, self._secret))
        ex.load_time_difference()
        raw = ex.privateGetAccount()
        return {b["asset"]: Decimal(b["free"]) + Decimal(b["locked"]) for b in raw["balances"]}
