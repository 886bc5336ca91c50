"""A paper-trading session as three real processes: simexchange, the signer, the engine.

Everything is done as an operator and a trader would: the exchange account's HMAC secret is
generated here and reaches the signer only through `bulkhead-signer keys add` on standard
input; the engine gets a config with the signer's socket, its own Ed25519 identity and the
exchange's public URL, nothing else. The test then looks at the exchange with the account's
own key (raw Binance JSON, decimal strings), at the engine's database, and at the signer's
audit export.

The market: one real day of BTC/USDT 1-minute candles from ../shared/data, replayed with each
minute lasting `interval_ms` (20 ms: the day in under 30 s). The simulator's clock stays at
real time (`--speed 1`), so fills follow the candles' own minutes exactly. (A fast simulator
clock also works -- the signer re-measures the exchange's clock on a -1021 refusal, as the demo
shows -- but compressed candles keep this test's timing independent of that retry.)
"""

from __future__ import annotations

import json
import os
import secrets
import select as io_select
import signal
import socket
import string
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import ccxt
from sqlalchemy import select

from botengine import store as st
from botengine.candles import load_candles
from botengine.cli import main as bulkhead_main
from botengine.store_models import FillRow, OrderRow
from signer.core import now_ms
from signer.keystore import MasterKey
from signer.server import MasterKeySource, initialize, open_signer
from simexchange.testing import ccxt_config

DATA = Path("/work/shared/data")
PY = sys.executable
T = TypeVar("T")
KEY_ID = "main"
ENGINE_ID = "engine-1"


def wait_for(cond: Callable[[], T | None], timeout: float, what: str, every: float = 0.2) -> T:
    """Poll `cond` until it returns something truthy; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def alnum(n: int) -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(n))


def write_day(path: Path, day: str, start_ms: int, interval_ms: int, count: int = 1440) -> dict:
    """Write one UTC day of real 1-minute BTC/USDT candles as freqtrade JSON, re-timed to start
    at `start_ms` with `interval_ms` per candle. Returns the day's open, low, high, close."""
    c = load_candles(DATA / "BTCUSDT_1m.csv")
    first = int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() * 1000)
    idx = [i for i in range(len(c)) if first <= int(c.open_ms[i]) < first + 86_400_000][:count]
    rows = []
    for n, i in enumerate(idx):
        o, h, lo, cl = (c.price(x[i]) for x in (c.open, c.high, c.low, c.close))
        rows.append(f"[{start_ms + n * interval_ms},{o},{h},{lo},{cl},1]")
    path.write_text("[" + ",\n".join(rows) + "]\n")
    prices = {
        "open": c.price(c.open[idx[0]]),
        "low": min(c.price(c.low[i]) for i in idx),
        "high": max(c.price(c.high[i]) for i in idx),
        "close": c.price(c.close[idx[-1]]),
        "end_ms": start_ms + len(idx) * interval_ms,
    }
    return prices


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[str]
    log: Path
    banner: str = ""


@dataclass
class PaperSession:
    root: Path
    policy: str
    bots: list[str]  # bot TOML texts
    poll_interval_s: str = "0.2"
    secret: str = field(default_factory=lambda: alnum(64))
    api_key: str = field(default_factory=lambda: alnum(64))
    procs: dict[str, Proc] = field(default_factory=dict)
    sim_url: str = ""
    balances: dict[str, str] = field(default_factory=lambda: {"USDT": "50000"})

    def __post_init__(self) -> None:
        self.root.chmod(0o700)
        self.signer_dir = self.root / "signer-data"
        self.master_key = self.root / "master.key"
        self.engine_dir = self.root / "engine"
        self.engine_dir.mkdir(mode=0o700)
        self.engine_config = self.engine_dir / "engine.toml"
        self.engine_data = self.engine_dir / "engine-data"
        self.port = free_port()
        self.sim_url = f"http://127.0.0.1:{self.port}"
        self.transcript: list[str] = []  # every command line and output, for the secret scan

    # --- running commands -----------------------------------------------------------------

    def run(self, *args: str, stdin: str | None = None, ok: bool = True) -> str:
        done = subprocess.run(
            [PY, "-m", *args], input=stdin, capture_output=True, text=True, timeout=120,
            cwd=self.root,
        )  # fmt: skip
        self.transcript += [" ".join(args), done.stdout, done.stderr]
        assert (done.returncode == 0) == ok, f"{args[:3]}: {done.returncode} {done.stderr}"
        return done.stdout

    def signer(self, *args: str, stdin: str | None = None) -> str:
        return self.run("signer.cli", *args, "--data-dir", str(self.signer_dir),
                        "--master-key-file", str(self.master_key), stdin=stdin)  # fmt: skip

    def bulkhead(self, *args: str, ok: bool = True) -> str:
        return self.run("botengine.cli", *args, ok=ok)

    def spawn(self, name: str, *args: str, banner_timeout: float = 60) -> Proc:
        log = self.root / f"{name}.log"
        n = 1
        while log.exists():  # a restarted process keeps the earlier log
            n += 1
            log = self.root / f"{name}-{n}.log"
        popen = subprocess.Popen(
            [PY, "-m", *args], stdout=subprocess.PIPE, stderr=open(log, "w"),  # noqa: SIM115
            stdin=subprocess.DEVNULL, text=True, cwd=self.root,
        )  # fmt: skip
        proc = Proc(name, popen, log)
        self.procs[name] = proc
        assert popen.stdout is not None
        ready, _, _ = io_select.select([popen.stdout], [], [], banner_timeout)
        line = popen.stdout.readline() if ready else ""
        if not line:
            raise AssertionError(f"{name} did not start: {log.read_text()[-2000:]}")
        proc.banner = line.strip()
        return proc

    # --- the three processes --------------------------------------------------------------

    def setup_signer(self) -> None:
        """Operator steps. The secret goes only through `keys add` on stdin (a real CLI
        process); init, policy and bot registration use the same Python APIs as the CLI, in
        this process, because each signer CLI start costs seconds on a busy 2-core machine."""
        MasterKey.generate_keyfile(self.master_key)
        source = MasterKeySource(keyfile=self.master_key)
        initialize(self.signer_dir, source, kdf_profile="interactive", actor="test")
        toml = f'checkpoint_interval_s = 0\n[exchanges.binance]\napi_url = "{self.sim_url}"\n'
        (self.signer_dir / "signer.toml").write_text(toml)
        os.chmod(self.signer_dir / "signer.toml", 0o600)
        self.signer("keys", "add", "--key-id", KEY_ID, "--exchange", "binance",
                    "--api-key", self.api_key, stdin=self.secret + "\n")  # fmt: skip
        key = self.engine_dir / "engine.key"
        self.bulkhead_inproc("identity", "new", "--out", str(key))
        pub = bytes.fromhex((self.engine_dir / "engine.key.pub").read_text().strip())
        opened = open_signer(self.signer_dir, source)
        try:
            opened.actions.set_policy("test", now_ms(), KEY_ID, self.policy)
            opened.actions.register_bot("test", now_ms(), ENGINE_ID, pub, [KEY_ID])
        finally:
            opened.close()
        proc = self.spawn("signer", "signer.cli", "serve", "--data-dir", str(self.signer_dir),
                          "--master-key-file", str(self.master_key))  # fmt: skip
        self.signer_socket = json.loads(proc.banner)["serving"]["bot_unix"]

    def bulkhead_inproc(self, *args: str) -> None:
        """`bulkhead ...` through its public entry point, without a process start."""
        code = bulkhead_main(list(args))
        assert code == 0, f"bulkhead {args}: exit {code}"

    def start_sim(self, candles: Path, start_ms: int) -> None:
        accounts = self.root / "accounts.toml"
        balances = "\n".join(f'{k} = "{v}"' for k, v in self.balances.items())
        accounts.write_text(
            f'[[accounts]]\nname = "trader"\n[accounts.balances]\n{balances}\n'
            f'[[accounts.keys]]\napi_key = "{self.api_key}"\ntype = "HMAC"\n'
            f'secret = "{self.secret}"\n'
        )
        os.chmod(accounts, 0o600)
        self.spawn("simexchange", "botengine.cli", "exchange-sim", "serve", "--port",
                   str(self.port), "--accounts", str(accounts), "--start", str(start_ms),
                   "--data", f"BTCUSDT={candles}")  # fmt: skip

    def configure_engine(self) -> None:
        self.engine_config.write_text(
            f'data_dir = "engine-data"\npoll_interval_s = {self.poll_interval_s}\n'
            f"lease_ttl_s = 10\nretry_base_s = 0.1\nretry_cap_s = 1.0\n"
            f'[signer]\naddresses = ["{self.signer_socket}"]\n'
            f'identity_name = "{ENGINE_ID}"\nidentity_key = "engine.key"\n'
            f'[exchanges.binance]\napi_url = "{self.sim_url}"\n'
        )
        for i, text in enumerate(self.bots):
            path = self.engine_dir / f"bot{i}.toml"
            path.write_text(text)
            self.bulkhead_inproc("bot", "add", str(path), "--config", str(self.engine_config))

    def start_engine(self) -> Proc:
        self.procs.pop("engine", None)
        return self.spawn("engine", "botengine.cli", "run", "--config", str(self.engine_config))

    @property
    def engine_pid(self) -> int:
        return self.procs["engine"].popen.pid

    def kill_engine(self) -> None:
        """kill -9: no chance to finish a step, flush a write or say goodbye."""
        p = self.procs["engine"].popen
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=30)

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

    # --- looking at the exchange (the account's own key, raw Binance JSON) -----------------

    def exchange(self) -> Any:
        ex = ccxt.binance(ccxt_config(self.sim_url, self.api_key, self.secret))
        ex.load_time_difference()
        return ex

    def exchange_orders(self) -> list[dict[str, Any]]:
        ex, out, start = self.exchange(), [], 0
        while True:
            page = ex.privateGetAllOrders({"symbol": "BTCUSDT", "orderId": start, "limit": 1000})
            out += page
            if len(page) < 1000:
                return out
            start = int(page[-1]["orderId"]) + 1

    def exchange_trades(self) -> list[dict[str, Any]]:
        ex, out, start = self.exchange(), [], 0
        while True:
            page = ex.privateGetMyTrades({"symbol": "BTCUSDT", "fromId": start, "limit": 1000})
            out += page
            if len(page) < 1000:
                return out
            start = int(page[-1]["id"]) + 1

    def exchange_balances(self) -> dict[str, Decimal]:
        raw = self.exchange().privateGetAccount()
        return {b["asset"]: Decimal(b["free"]) + Decimal(b["locked"]) for b in raw["balances"]}

    # --- looking at the engine --------------------------------------------------------------

    def engine_store(self) -> st.Store:
        return st.Store(f"sqlite:///{self.engine_data / 'engine.db'}")

    def engine_orders(self) -> list[Any]:
        store = self.engine_store()
        try:
            with store.read() as s:
                return list(s.scalars(select(OrderRow)))
        finally:
            store.close()

    def engine_fills(self) -> list[Any]:
        store = self.engine_store()
        try:
            with store.read() as s:
                return list(s.scalars(select(FillRow)))
        finally:
            store.close()

    def settled(self) -> bool:
        """The engine has no order in flight and has recorded every fill the exchange made."""
        store = self.engine_store()
        try:
            with store.read() as s:
                paused = [
                    (b.name, st.denial_of(b)) for b in st.list_bots(s) if b.status != "running"
                ]
        finally:
            store.close()
        assert not paused, f"a bot stopped trading: {paused}"
        pending = [o for o in self.engine_orders() if o.state in ("intent", "submitted")]
        if pending:
            return False
        filled = {o["clientOrderId"] for o in self.exchange_orders() if o["status"] == "FILLED"}
        return filled <= {f.client_order_id for f in self.engine_fills()}

    def wait_settled(self, timeout: float = 30) -> None:
        def twice() -> bool:
            if not self.settled():
                return False
            time.sleep(0.6)
            return self.settled()

        wait_for(twice, timeout, "the engine to record every fill and settle every order")

    # --- the auditor ------------------------------------------------------------------------

    def audit_export(self) -> tuple[Path, dict[str, Any]]:
        export = self.root / f"audit-{secrets.token_hex(3)}.jsonl"
        self.signer("audit", "export", "--out", str(export))
        report = json.loads(
            self.run(
                "signer.cli",
                "audit",
                "verify",
                str(export),
                "--pubkey",
                str(self.signer_dir / "audit_pubkey.hex"),
                "--json",
            )  # fmt: skip
        )
        return export, report
