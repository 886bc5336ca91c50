"""Two `bulkhead run` workers on one PostgreSQL engine database: the paper session of
tests/e2e (simexchange, signer and engines as real processes), with the engine side doubled.

Each worker has its own `worker_id` and its own Ed25519 identity registered at the signer
(`engine-1`, `engine-2`), so every decision in the signer's audit log names the worker that
asked for it: that is how the test sees which worker sent each bot's orders.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from botengine import store as st
from signer.core import now_ms
from signer.server import MasterKeySource, open_signer
from tests.e2e.conftest import DCA, GRID
from tests.e2e.paper import ENGINE_ID, KEY_ID, PaperSession, Proc

WORKERS = {"worker-a": ENGINE_ID, "worker-b": "engine-2"}  # worker_id -> its signer identity
LEASE_TTL_S = 5  # the shortest engine_config allows; the default is asserted separately

# Four bots: two grids and two DCA bots without safety orders (as tests/e2e/test_restart.py,
# so a dead worker's blind spot cannot race a take profit against its replacement).
_DCA = DCA.replace("max_safety_orders = 4\nactive_safety_orders = 2\n", "")
BOTS = [
    _DCA,
    _DCA.replace('name = "btc-dca"', 'name = "btc-dca-2"').replace('"200"', '"150"'),
    GRID,
    GRID.replace('name = "btc-grid"', 'name = "btc-grid-2"').replace("grids = 12", "grids = 8"),
]


@dataclass
class WorkersSession(PaperSession):
    """A PaperSession whose engine is two workers sharing the PostgreSQL `db_url`."""

    db_url: str = ""
    configs: dict[str, Path] = field(default_factory=dict)

    def engine_store(self) -> st.Store:
        return st.Store(self.db_url)

    def configure_engine(self) -> None:
        """Both workers' engine.toml, the second identity registered, the four bots added."""
        second = self.engine_dir / "engine-2.key"
        self.bulkhead_inproc("identity", "new", "--out", str(second))
        pub = bytes.fromhex((self.engine_dir / "engine-2.key.pub").read_text().strip())
        opened = open_signer(self.signer_dir, MasterKeySource(keyfile=self.master_key))
        try:
            opened.actions.register_bot("test", now_ms(), WORKERS["worker-b"], pub, [KEY_ID])
        finally:
            opened.close()
        keys = {"worker-a": "engine.key", "worker-b": "engine-2.key"}
        for worker, identity in WORKERS.items():
            path = self.engine_dir / f"{worker}.toml"
            path.write_text(
                f'database_url = "{self.db_url}"\nworker_id = "{worker}"\n'
                f"poll_interval_s = {self.poll_interval_s}\nlease_ttl_s = {LEASE_TTL_S}\n"
                f"retry_base_s = 0.1\nretry_cap_s = 1.0\n"
                f'[signer]\naddresses = ["{self.signer_socket}"]\n'
                f'identity_name = "{identity}"\nidentity_key = "{keys[worker]}"\n'
                f'[exchanges.binance]\napi_url = "{self.sim_url}"\n'
            )
            self.configs[worker] = path
        self.engine_config = self.configs["worker-a"]
        for i, text in enumerate(self.bots):
            bot = self.engine_dir / f"bot{i}.toml"
            bot.write_text(text)
            self.bulkhead_inproc("bot", "add", str(bot), "--config", str(self.engine_config))

    def start_engine(self) -> Proc:
        """Both workers at once: neither gets a head start on the bots."""
        errors: list[BaseException] = []

        def start(worker: str) -> None:
            try:
                self.spawn(worker, "botengine.cli", "run", "--config", str(self.configs[worker]))
            except BaseException as e:  # noqa: BLE001 - re-raised in the test's thread
                errors.append(e)

        threads = [threading.Thread(target=start, args=(w,)) for w in WORKERS]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        if errors:
            raise errors[0]
        return self.procs["worker-a"]

    def leases(self) -> dict[str, tuple[str | None, int | None]]:
        """Each bot's lease as the store holds it: (owner, expires_at epoch ms)."""
        store = self.engine_store()
        try:
            with store.read() as s:
                return {b.name: (b.lease_owner, b.lease_expires_at) for b in st.list_bots(s)}
        finally:
            store.close()


@dataclass
class LeaseWatch:
    """Samples the bots' lease columns every 0.1 s while the workers run."""

    session: WorkersSession
    samples: list[tuple[int, dict[str, tuple[str | None, int | None]]]] = field(
        default_factory=list
    )
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def __enter__(self) -> LeaseWatch:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.thread is not None
        self.thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            taken = now_ms()
            self.samples.append((taken, self.session.leases()))
            if self.stop.wait(0.1):
                return
