"""`bulkhead run`: run every enabled bot, live or on paper, each in its own thread.

The supervisor claims bots through leases (one worker per bot, see leases.py), starts a
BotRunner for each bot it holds, renews the leases, picks up `bot start` / `bot stop` / `bot
add` made while it runs, and stops every runner cleanly on SIGTERM/SIGINT. Orders go only
through the signer with this engine's Ed25519 identity; market data comes from the exchange's
public API with no key. The engine holds no exchange secret, anywhere.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import stat
import sys
import threading
from dataclasses import dataclass
from typing import IO

from botengine import leases
from botengine import store as st
from botengine.botrunner import BotRunner, RunnerSettings
from botengine.engine_config import EngineConfig, EngineConfigError, SignerSettings
from botengine.marketdata import MarketData
from botengine.orders import SignerGateway
from botengine.signer_client import Identity, SignerClient

log = logging.getLogger("bulkhead.engine")


def load_identity(settings: SignerSettings) -> Identity:
    """The engine's Ed25519 identity; a key file others can read is refused."""
    path = settings.identity_key
    try:
        mode = path.stat().st_mode
    except OSError as e:
        raise EngineConfigError(f"signer.identity_key: {path}: {e.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise EngineConfigError(
            f"signer.identity_key: {path} has mode {stat.S_IMODE(mode):04o}; allowed: no access "
            f"for group or others (chmod 600 {path})"
        )
    try:
        return Identity.from_file(settings.identity_name, path)
    except (ValueError, OSError):
        raise EngineConfigError(
            f"signer.identity_key: {path} does not hold a 64-hex-character Ed25519 key "
            "(make one with `bulkhead identity new`)"
        ) from None


def tls_material(settings: SignerSettings) -> tuple[bytes, bytes, bytes] | None:
    if settings.tls is None:
        return None
    files = settings.tls
    try:
        return files.ca.read_bytes(), files.key.read_bytes(), files.cert.read_bytes()
    except OSError as e:
        raise EngineConfigError(f"signer.tls: {e.filename}: {e.strerror}") from None


@dataclass
class _Running:
    runner: BotRunner
    thread: threading.Thread
    stop: threading.Event
    client: SignerClient
    market: MarketData


class Runtime:
    """The supervisor. `run(stop)` blocks until `stop` is set."""

    def __init__(self, config: EngineConfig, store: st.Store | None = None) -> None:
        if config.signer is None:
            raise EngineConfigError(
                "signer: missing; `bulkhead run` needs [signer] addresses, identity_name and "
                "identity_key"
            )
        self.config = config
        self.signer_settings: SignerSettings = config.signer
        self.identity = load_identity(config.signer)
        self.tls = tls_material(config.signer)
        self.store = store or st.Store(config.db_url(), config.data_dir)
        self.settings = RunnerSettings(
            poll_interval_s=config.poll_interval_s,
            retry_base_s=config.retry_base_s,
            retry_cap_s=config.retry_cap_s,
            lost_order_grace_ms=config.lost_order_grace_s * 1000,
        )
        self.running: dict[str, _Running] = {}
        self.ttl_ms = config.lease_ttl_s * 1000

    def _start_bot(self, name: str) -> None:
        with self.store.read() as s:
            row = st.get_bot(s, name)
            key_id, symbol, exchange = row.key_id, row.symbol, row.exchange
        ss = self.signer_settings
        client = SignerClient(
            ss.addresses,
            self.identity,
            key_id,
            exchange,
            tls=self.tls,
            server_name=ss.tls.server_name if ss.tls else None,
            timeout=ss.timeout_s,
        )
        md = self.config.market(exchange)
        try:
            market = MarketData(exchange, md.api_url, md.timeout_s)
        except Exception as e:
            client.close()
            with self.store.write() as s:
                st.record_denial(s, name, ("market_data",), str(e), st.now_ms())
            return
        stop = threading.Event()
        runner = BotRunner(
            name, self.store, SignerGateway(client), market, self.settings, stop,
            worker_id=self.config.worker_id,
        )  # fmt: skip
        thread = threading.Thread(target=runner.run, name=f"bot-{name}", daemon=True)
        self.running[name] = _Running(runner, thread, stop, client, market)
        thread.start()
        log.info("started %s (%s)", name, symbol)

    def _reap(self) -> None:
        for name, r in list(self.running.items()):
            if not r.thread.is_alive():
                r.client.close()
                r.market.close()
                del self.running[name]

    def cycle(self) -> None:
        """Claim/renew leases, start runners for newly held bots, stop those no longer held."""
        self._reap()
        with self.store.write() as s:
            held = set(leases.acquire(s, self.config.worker_id, st.now_ms(), self.ttl_ms))
        for name in sorted(held - set(self.running)):
            self._start_bot(name)
        for name in set(self.running) - held:
            self.running[name].stop.set()

    def run(self, stop: threading.Event, banner: IO[str] | None = None) -> None:
        self.cycle()
        if banner is not None:
            info = {"engine": "running", "pid": os.getpid(), "worker_id": self.config.worker_id,
                    "bots": sorted(self.running)}  # fmt: skip
            print(json.dumps(info), file=banner, flush=True)
        interval = min(1.0, self.config.lease_ttl_s / 3)
        while not stop.wait(interval):
            try:
                self.cycle()
            except Exception:  # noqa: BLE001 - a database hiccup must not end the engine
                log.exception("supervisor cycle failed; retrying")
        self.shutdown()

    def shutdown(self) -> None:
        for r in self.running.values():
            r.stop.set()
        for r in self.running.values():
            r.thread.join(timeout=30)
        names = list(self.running)
        self._reap()
        with self.store.write() as s:
            leases.release(s, self.config.worker_id, names)
        self.store.close()


def lock_data_dir(config: EngineConfig) -> IO[str] | None:
    """One engine per SQLite data directory (the kernel drops the lock if the process dies)."""
    if config.database_url is not None:
        return None
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fh = open(config.data_dir / "engine.lock", "w")  # noqa: SIM115 - held for the process life
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise EngineConfigError(
            f"data_dir: {config.data_dir} is in use by another running engine; allowed: one "
            "engine per SQLite data directory (use PostgreSQL for several workers)"
        ) from None
    return fh


def setup_logging(config: EngineConfig) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if config.log_file is not None:
        config.log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(config.log_file))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        handlers=handlers,
        force=True,
    )
    logging.getLogger("urllib3").setLevel(logging.WARNING)


def run_engine(config: EngineConfig) -> int:
    """The `bulkhead run` process: lock, log, serve until SIGTERM/SIGINT."""
    os.umask(0o077)
    lock = lock_data_dir(config)
    setup_logging(config)
    runtime = Runtime(config)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        runtime.run(stop, banner=sys.stdout)
    finally:
        if lock is not None:
            lock.close()
    return 0
