"""A whole signer stack for end-to-end tests: simexchange on a real socket, an initialised data
directory (SQLite file or a fresh PostgreSQL schema), a funded exchange key loaded into the
keystore, a policy, a registered bot and operator, and the gRPC servers on Unix sockets.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from botengine.signer_client import AdminClient, Identity, SignerClient
from signer.audit import load_public_key, verify_jsonl
from signer.core import now_ms
from signer.db import read_session, write_txn
from signer.keystore import MasterKey
from signer.server import MasterKeySource, OpenSigner, SignerServer, initialize, open_signer
from simexchange.server import AccountKeys, SimExchange
from simexchange.testing import start_test_exchange

KEY_ID = "k1"
BOT_ID = "bot-1"
OPERATOR_ID = "op-1"

POLICY_TOML = """
symbols = ["BTC/USDT", "ETH/USDT"]
sides = ["buy", "sell"]
order_types = ["limit", "market"]
max_order_notional = "5000"
max_notional_24h = "20000"
max_open_orders = 50
orders_per_minute = 600
price_band_pct = "5"
market_slippage_pct = "1"
reference_max_age_s = 30
"""


def pg_schema_url(base_url: str) -> tuple[str, str]:
    """A fresh schema in the shared test database, and a URL whose search_path points at it."""
    schema = "bh_" + secrets.token_hex(6)
    eng = create_engine(base_url)
    with eng.begin() as c:
        c.execute(text(f'CREATE SCHEMA "{schema}"'))
    eng.dispose()
    sep = "&" if "?" in base_url else "?"
    return f"{base_url}{sep}options=-csearch_path%3D{schema}", schema


def drop_pg_schema(base_url: str, schema: str) -> None:
    eng = create_engine(base_url)
    with eng.begin() as c:
        c.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    eng.dispose()


@dataclass
class Stack:
    root: Path
    data_dir: Path
    keyfile: Path
    db_url: str | None
    sim: SimExchange
    account: AccountKeys
    opened: OpenSigner
    server: SignerServer
    bot: Identity
    operator: Identity
    addresses: dict[str, str]
    clients: list[Any] = field(default_factory=list)

    @property
    def source(self) -> MasterKeySource:
        return MasterKeySource(keyfile=self.keyfile)

    def client(self, identity: Identity | None = None, key_id: str = KEY_ID) -> SignerClient:
        c = SignerClient(self.addresses["bot_unix"], identity or self.bot, key_id)
        self.clients.append(c)
        return c

    def admin(self, identity: Identity | None = None) -> AdminClient:
        c = AdminClient(self.addresses["admin_unix"], identity or self.operator)
        self.clients.append(c)
        return c

    def audit_records(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Records as an auditor sees them: exported and parsed."""
        path = self.root / f"export-{secrets.token_hex(4)}.jsonl"
        self.export(path)
        out = []
        for line in path.read_text().splitlines():
            obj = json.loads(line)
            rec = obj.get("record")
            if isinstance(rec, str):  # the export carries the exact signed bytes as text
                rec = json.loads(rec)
            if rec and (kind is None or rec["kind"] == kind):
                out.append(rec)
        return out

    def audit_size(self) -> int:
        with read_session(self.opened.engine) as s:
            return self.opened.audit.head(s)[0]

    def export(self, path: Path) -> Path:
        with read_session(self.opened.engine) as s, open(path, "w", encoding="utf-8") as fh:
            self.opened.audit.export_jsonl(s, fh)
        return path

    def verify(self) -> Any:
        path = self.export(self.root / f"verify-{secrets.token_hex(4)}.jsonl")
        pub = load_public_key(self.data_dir / "audit_pubkey.hex")
        with open(path, encoding="utf-8") as fh:
            return verify_jsonl(fh, pub)

    def price(self, symbol: str = "BTC/USDT") -> Any:
        return self.sim.price(symbol.replace("/", ""))

    def stop(self) -> None:
        for c in self.clients:
            c.close()
        self.server.stop(0)
        self.opened.close()
        self.sim.stop()


def write_config(data_dir: Path, sim_url: str, db_url: str | None, extra: str = "") -> None:
    lines = ["checkpoint_interval_s = 0"]
    if db_url:
        lines.append(f'database_url = "{db_url}"')
    lines.append(extra)
    lines.append(f'[exchanges.binance]\napi_url = "{sim_url}"')
    path = data_dir / "signer.toml"
    path.write_text("\n".join(lines) + "\n")
    os.chmod(path, 0o600)


def init_signer(
    data_dir: Path, keyfile: Path, sim_url: str, db_url: str | None, config_extra: str = ""
) -> tuple[OpenSigner, Identity]:
    """`bulkhead-signer init` with a fresh key file and one operator, then open the signer."""
    MasterKey.generate_keyfile(keyfile)
    write_config(data_dir, sim_url, db_url, config_extra)
    operator = Identity.generate(OPERATOR_ID)
    source = MasterKeySource(keyfile=keyfile)
    initialize(
        data_dir,
        source,
        db_url=db_url,
        kdf_profile="interactive",
        operators=[(OPERATOR_ID, operator.public_key)],
        actor="test",
    )
    return open_signer(data_dir, source), operator


def build_stack(
    root: Path,
    db_url: str | None = None,
    *,
    policy: str = POLICY_TOML,
    config_extra: str = "",
    thin: bool = True,
) -> Stack:
    """Everything an operator would do by hand, done through the same Python APIs the CLI uses."""
    sim, account = start_test_exchange(thin=thin)
    data_dir = root / "signer-data"
    data_dir.mkdir(mode=0o700)
    keyfile = root / "master.key"
    opened, operator = init_signer(data_dir, keyfile, sim.base_url, db_url, config_extra)
    with write_txn(opened.engine) as s:
        opened.keystore.add_hmac(s, KEY_ID, "binance", account.api_key, account.secret)
        opened.audit.append(
            s, "admin", {"action": "keys_add", "actor": "test", "key_id": KEY_ID}, now_ms()
        )
    opened.actions.set_policy("test", now_ms(), KEY_ID, policy)
    bot = Identity.generate(BOT_ID)
    opened.actions.register_bot("test", now_ms(), BOT_ID, bot.public_key, [KEY_ID])
    server = SignerServer(opened)
    addresses = server.start()
    return Stack(
        root, data_dir, keyfile, db_url, sim, account, opened, server, bot, operator, addresses
    )
