"""Optional SQLite persistence, so a paper account survives a restart.

Rows hold Decimal values as strings. The engine writes what one request changed in one
transaction. The file holds the simulator's own copy of HMAC secrets (an exchange must
know them to verify signatures), so it is created with mode 0600.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from dataclasses import asdict
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from simexchange.models import Account, Balance, Order, Trade

if TYPE_CHECKING:
    from simexchange.auth import ApiKey
    from simexchange.engine import Engine

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (account_id INTEGER PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS orders (order_id INTEGER PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trades (trade_id INTEGER PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS withdrawals (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS markets (symbol TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys (api_key TEXT PRIMARY KEY, doc TEXT NOT NULL);
"""

_UPSERT_META = (
    "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value"
)
_ORDER_DECIMALS = ("price", "orig_qty", "orig_quote_qty", "executed_qty", "cum_quote", "locked")
_TRADE_DECIMALS = ("price", "qty", "quote_qty", "commission")


def _dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, default=str, sort_keys=True)


def _decimals(doc: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {k: Decimal(v) if k in names else v for k, v in doc.items()}


class Store:
    """One SQLite file (WAL) holding accounts, keys, orders, trades and the clock."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _rows(self, table: str) -> list[dict[str, Any]]:
        cur = self._db.execute(f"SELECT doc FROM {table}")  # noqa: S608 - fixed table names
        return [json.loads(r[0]) for r in cur.fetchall()]

    def meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._db.execute(_UPSERT_META, (key, value))

    def load_into(self, engine: Engine) -> None:
        """Fill a fresh engine with everything saved."""
        with self._lock:
            for doc in self._rows("accounts"):
                balances = {
                    a: Balance(Decimal(b["free"]), Decimal(b["locked"]))
                    for a, b in doc.pop("balances").items()
                }
                account = Account(
                    doc["account_id"], doc["name"], Decimal(doc["maker_rate"]),
                    Decimal(doc["taker_rate"]), balances, doc["update_time"],
                )  # fmt: skip
                engine.accounts[account.account_id] = account
            for doc in self._rows("orders"):
                order = Order(**_decimals(doc, _ORDER_DECIMALS))
                engine.orders[order.order_id] = order
                if order.is_open and order.symbol in engine.open_by_symbol:
                    engine.open_by_symbol[order.symbol][order.order_id] = order
            for doc in self._rows("trades"):
                trade = Trade(**_decimals(doc, _TRADE_DECIMALS))
                engine.trades[trade.trade_id] = trade
            engine.withdrawals = sorted(self._rows("withdrawals"), key=lambda w: w["time"])
            for doc in self._rows("markets"):
                market = engine.markets.get(doc["symbol"])
                if market is not None:
                    market.impact_m0 = Decimal(doc["m0"])
                    market.impact_t0 = doc["t0"]
            for kind in engine.next_id:
                row = self._db.execute("SELECT value FROM meta WHERE key = ?", (f"next_{kind}",))
                found = row.fetchone()
                if found:
                    engine.next_id[kind] = int(found[0])

    def save(self, engine: Engine, dirty: set[tuple[str, int | str]]) -> None:
        """Write the changed objects in one transaction."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for kind, key in dirty:
                    self._save_one(engine, kind, key)
                self._db.execute(_UPSERT_META, ("sim_time", str(engine.synced_to)))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _put(self, table: str, key_col: str, key: int | str, doc: dict[str, Any]) -> None:
        self._db.execute(
            f"INSERT INTO {table} ({key_col}, doc) VALUES (?, ?) "  # noqa: S608 - fixed names
            f"ON CONFLICT({key_col}) DO UPDATE SET doc = excluded.doc",
            (key, _dumps(doc)),
        )

    def _save_one(self, engine: Engine, kind: str, key: int | str) -> None:
        if kind == "account":
            acc = engine.accounts[int(key)]
            doc = {
                "account_id": acc.account_id, "name": acc.name, "maker_rate": acc.maker_rate,
                "taker_rate": acc.taker_rate, "update_time": acc.update_time,
                "balances": {a: {"free": b.free, "locked": b.locked}
                             for a, b in acc.balances.items()},
            }  # fmt: skip
            self._put("accounts", "account_id", acc.account_id, doc)
        elif kind == "order":
            self._put("orders", "order_id", key, asdict(engine.orders[int(key)]))
        elif kind == "trade":
            self._put("trades", "trade_id", key, asdict(engine.trades[int(key)]))
        elif kind == "withdrawal":
            doc = next(w for w in engine.withdrawals if w["id"] == key)
            self._put("withdrawals", "id", key, doc)
        elif kind == "market":
            m = engine.markets[str(key)]
            self._put(
                "markets", "symbol", key, {"symbol": key, "m0": m.impact_m0, "t0": m.impact_t0}
            )
        elif kind == "meta":
            self._db.execute(_UPSERT_META, (f"next_{key}", str(engine.next_id[str(key)])))

    # --- API keys (written straight away; the key table has no engine session) ----------
    def save_key(self, key: ApiKey) -> None:
        with self._lock:
            self._put("api_keys", "api_key", key.api_key, key.to_doc())

    def delete_key(self, api_key: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM api_keys WHERE api_key = ?", (api_key,))

    def load_keys(self) -> list[dict[str, Any]]:
        with self._lock:
            return self._rows("api_keys")
