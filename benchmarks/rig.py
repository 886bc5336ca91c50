"""A real signer for the benchmarks: its own data dir, a real `bulkhead-signer serve` process.

Set up the way an operator would (through the signer's own Python APIs, as tests/signer/stack.py
does): simexchange on a loopback port for markets and reference prices, a data dir on SQLite or
a fresh PostgreSQL schema, keys, policies and bot identities, mutual-TLS material generated at
run time. The signer runs in `sign-only` mode (signer.toml `default_mode`), so the exchange is
out of the measured path. Nothing secret is written outside the temporary root.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from loadgen import bot_seed  # noqa: E402
from sqlalchemy import create_engine, insert, text  # noqa: E402

from signer import state  # noqa: E402
from signer.core import now_ms  # noqa: E402
from signer.db import write_txn  # noqa: E402
from signer.keystore import ExchangeKey, MasterKey  # noqa: E402
from signer.policy import parse_policy_toml, policy_to_json  # noqa: E402
from signer.server import MasterKeySource, OpenSigner, initialize, open_signer  # noqa: E402
from simexchange.server import AccountKeys, SimExchange  # noqa: E402
from simexchange.testing import start_test_exchange  # noqa: E402
from tests.signer.stack import drop_pg_schema, pg_schema_url  # noqa: E402
from tests.support.certs import TlsFiles, write_tls_files  # noqa: E402

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SERVER_NAME = "localhost"  # the generated server certificate's SAN; we dial 127.0.0.1
SYMBOL = "BTC/USDT"
AMOUNT = "0.001"

# Caps high enough that a benchmark run is never refused by a limit; every rule still runs.
BENCH_POLICY = """
symbols = ["BTC/USDT", "ETH/USDT"]
sides = ["buy", "sell"]
order_types = ["limit"]
max_order_notional = "1000000"
max_notional_24h = "10000000000000"
max_open_orders = 100000
orders_per_minute = 100000
orders_burst = 100000
price_band_pct = "10"
reference_max_age_s = 30
"""


@dataclass(frozen=True)
class BotKey:
    """One bot identity and the key it uses. The seed is generated at run time, never stored."""

    bot_id: str
    seed: bytes
    key_id: str


def machine_info() -> dict[str, object]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
    except (OSError, IndexError, ValueError):
        mem_kb = 0
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gb": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def pg_base_url() -> tuple[str | None, str]:
    """The PostgreSQL to use (BULKHEAD_TEST_PG_URL, else the local test db), or None and why."""
    url = os.environ.get("BULKHEAD_TEST_PG_URL") or DEFAULT_PG_URL
    try:
        eng = create_engine(url)
        with eng.connect() as c:
            c.execute(text("SELECT 1"))
        eng.dispose()
    except Exception as e:  # noqa: BLE001 - any failure means "no PostgreSQL here"
        return None, f"PostgreSQL at {url.split('@')[-1]} unreachable ({type(e).__name__})"
    return url, ""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    """VmRSS of a live process, in kB (0 if it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return int(status.split("VmRSS:")[1].split()[0])


@dataclass
class SignerRig:
    root: Path
    db: str  # "sqlite" | "postgresql"
    pg_base: str | None = None
    sim: SimExchange | None = None
    account: AccountKeys | None = None
    tls: TlsFiles | None = None
    db_url: str | None = None
    pg_schema: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    addresses: dict[str, str] = field(default_factory=dict)
    opened: OpenSigner | None = None
    pairs: list[BotKey] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.root / "signer-data"

    @property
    def keyfile(self) -> Path:
        return self.root / "master.key"  # outside the data dir, as an operator keeps it

    @property
    def source(self) -> MasterKeySource:
        return MasterKeySource(keyfile=self.keyfile)

    def client_tls(self) -> tuple[bytes, bytes, bytes]:
        assert self.tls is not None
        return (self.tls.ca_pem, self.tls.client.key, self.tls.client.cert)

    # --- set-up -------------------------------------------------------------------------------

    def init(self) -> None:
        """Exchange, data dir, keystore, audit key, signer.toml (sign-only, Unix + mTLS TCP)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.sim, self.account = start_test_exchange()
        if self.db == "postgresql":
            assert self.pg_base is not None
            self.db_url, self.pg_schema = pg_schema_url(self.pg_base)
        self.tls = write_tls_files(self.root / "tls")
        self.data_dir.mkdir(mode=0o700)
        MasterKey.generate_keyfile(self.keyfile)
        lines = [
            'default_mode = "sign-only"',
            'tcp = "127.0.0.1:0"',
            f'database_url = "{self.db_url}"' if self.db_url else "",
            f'[tls]\ncert = "{self.tls.server_cert}"\nkey = "{self.tls.server_key}"',
            f'client_ca = "{self.tls.ca}"',
            f'[exchanges.binance]\napi_url = "{self.sim.base_url}"',
        ]
        cfg = self.data_dir / "signer.toml"
        cfg.write_text("\n".join(line for line in lines if line) + "\n")
        os.chmod(cfg, 0o600)
        initialize(self.data_dir, self.source, db_url=self.db_url, actor="bench")
        self.opened = open_signer(self.data_dir, self.source)

    def add_pairs(self, count: int, run_secret: bytes) -> list[BotKey]:
        """`count` keys (imported HMAC), each with the policy and its own bot: the CLI's path."""
        op = self.opened
        assert op is not None and self.account is not None
        pairs = []
        for i in range(count):
            key_id, bot_id = f"lat{i:03d}", f"latbot{i:03d}"
            with write_txn(op.engine) as s:
                op.keystore.add_hmac(
                    s, key_id, "binance", self.account.api_key, self.account.secret
                )
                op.audit.append(
                    s, "admin", {"action": "keys_add", "actor": "bench", "key_id": key_id}, now_ms()
                )
            op.actions.set_policy("bench", now_ms(), key_id, BENCH_POLICY)
            seed = bot_seed(run_secret, 1_000_000 + i)
            pub = _public_key(seed)
            op.actions.register_bot("bench", now_ms(), bot_id, pub, [key_id])
            pairs.append(BotKey(bot_id, seed, key_id))
        self.pairs += pairs
        return pairs

    def bulk_load(self, n_keys: int, n_bots: int, run_secret: bytes, batch: int = 20_000) -> None:
        """A platform's worth of keys, fast: sealed by the keystore's own code, bulk-inserted.

        Key k{i} gets the bench policy (version 1); bot b{j} may use keys j*K..j*K+K-1 where
        K = n_keys // n_bots. Every key imports the simulator account's HMAC key (sealed under
        its own key id and generation), so sign-only requests carry real signatures. One audit
        record per batch says what was loaded (the per-key CLI path would write one per key;
        nothing at start-up reads them).
        """
        op = self.opened
        assert op is not None and self.account is not None
        per_bot = n_keys // n_bots
        policy_json = policy_to_json(parse_policy_toml(BENCH_POLICY))
        cols = [c.key for c in ExchangeKey.__table__.columns]
        now = now_ms()
        for lo in range(0, n_keys, batch):
            ids = [f"k{i:06d}" for i in range(lo, min(n_keys, lo + batch))]
            rows = []
            for key_id in ids:
                row = ExchangeKey(key_id=key_id, exchange="binance", kind="hmac")
                row.api_key, row.status, row.created_ms = self.account.api_key, "active", now
                row.rotated_ms, row.generation = None, 1
                # The keystore's own sealing (what add_hmac does), without a flush per key.
                op.keystore._fill_hmac(row, self.account.secret, None)
                rows.append({c: getattr(row, c) for c in cols})
            policies = [
                {"key_id": k, "version": 1, "policy_json": policy_json, "created_ms": now}
                | {"actor": "bench", "audit_seq": None}
                for k in ids
            ]
            with write_txn(op.engine) as s:
                s.execute(insert(ExchangeKey), rows)
                s.execute(insert(state.PolicyVersionRow), policies)
                op.audit.append(
                    s,
                    "admin",
                    {"action": "bench_bulk_keys", "actor": "bench", "first": ids[0]}
                    | {"last": ids[-1], "count": len(ids)},
                    now,
                )
        for lo in range(0, n_bots, batch):
            bots, grants = [], []
            for j in range(lo, min(n_bots, lo + batch)):
                pub = _public_key(bot_seed(run_secret, j)).hex()
                bots.append({"bot_id": f"b{j:05d}", "public_key_hex": pub, "status": "active"})
                bots[-1] |= {"created_ms": now, "revoked_ms": None}
                grants += [
                    {"bot_id": f"b{j:05d}", "key_id": f"k{j * per_bot + m:06d}"}
                    for m in range(per_bot)
                ]
            with write_txn(op.engine) as s:
                s.execute(insert(state.BotRow), bots)
                s.execute(insert(state.BotGrantRow), grants)
                op.audit.append(
                    s,
                    "admin",
                    {"action": "bench_bulk_bots", "actor": "bench", "count": len(bots)},
                    now,
                )

    # --- the signer process -------------------------------------------------------------------

    def start(self, timeout_s: float = 60.0) -> float:
        """Start `bulkhead-signer serve`; seconds from process start to health SERVING."""
        if self.opened is not None:
            self.opened.engine.dispose()  # hold no idle connections while the signer serves
        out = open(self.root / "serve.out", "wb")  # noqa: SIM115 - closed with the process
        err = open(self.root / "serve.err", "wb")  # noqa: SIM115
        cmd = [sys.executable, "-m", "signer.cli", "serve", "--data-dir", str(self.data_dir)]
        cmd += ["--master-key-file", str(self.keyfile)]
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=err
        )
        out.close()
        err.close()
        sock = f"unix://{self.data_dir / 'signer.sock'}"
        deadline = started + timeout_s
        # gRPC's default reconnect back-off (1 s, growing) would be measured as start-up time.
        fast = [(f"grpc.{k}_reconnect_backoff_ms", 5) for k in ("initial", "min", "max")]
        with grpc.insecure_channel(sock, options=fast) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"signer exited: {self._tail('serve.err')}")
                try:
                    status = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    pass
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"signer not SERVING after {timeout_s} s")
                time.sleep(0.002)  # poll interval of the readiness probe
        startup = time.perf_counter() - started
        self.addresses = self._read_addresses(deadline)
        return startup

    def _read_addresses(self, deadline: float) -> dict[str, str]:
        path = self.root / "serve.out"
        while time.perf_counter() < deadline:
            line = path.read_text().split("\n", 1)[0]
            if line.endswith("}"):
                return dict(json.loads(line)["serving"])
            time.sleep(0.01)
        raise RuntimeError("signer printed no addresses")

    def _tail(self, name: str) -> str:
        return (self.root / name).read_text()[-2000:]

    def rss_mb(self) -> float:
        assert self.proc is not None
        return round(rss_kb(self.proc.pid) / 1024, 1)

    def freeze_all(self) -> float:
        """`bulkhead-signer freeze --all` as an operator types it; wall time when it returned."""
        cmd = [sys.executable, "-m", "signer.cli", "freeze", "--all", "--reason", "bench"]
        cmd += ["--data-dir", str(self.data_dir), "--master-key-file", str(self.keyfile)]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
        returned = time.time()
        if done.returncode != 0:
            raise RuntimeError(f"freeze --all failed: {done.stderr.strip()}")
        return returned

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def close(self) -> None:
        self.stop()
        if self.opened is not None:
            self.opened.close()
        if self.sim is not None:
            self.sim.stop()
        if self.pg_schema and self.pg_base:
            drop_pg_schema(self.pg_base, self.pg_schema)
        shutil.rmtree(self.root, ignore_errors=True)  # keys and databases live only for the run


def _public_key(seed: bytes) -> bytes:
    from nacl.signing import SigningKey

    return SigningKey(seed).verify_key.encode()
