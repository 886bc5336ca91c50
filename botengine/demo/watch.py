"""The live view: prices, each bot's deals, orders and PnL, the signer's allowed/denied counts.

Bots come from the engine's own store (the same `bot status --json` document); the signer's
counts from its audit log, exported with `bulkhead-signer audit export` in a background thread
(the signer answers no counting RPC; its Admin Status RPC gives the log size and the freeze);
prices and the market clock from the simulator.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from botengine import store as st
from botengine.signer_client import AdminClient, Identity
from botengine.status import bot_status

from .market import BOTS, OPERATOR_ID
from .stack import Stack


def count_decisions(export: Path) -> dict[str, Any]:
    """Allowed and denied order decisions in an audit export, denials by rule id."""
    allowed, denied, rules = 0, 0, Counter[str]()
    for line in export.read_text().splitlines():
        doc = json.loads(line)
        if doc.get("type") != "record":
            continue
        rec = json.loads(doc["record"])
        if rec.get("kind") != "decision":
            continue
        payload = rec.get("payload") or {}
        if payload.get("allowed") is True:
            allowed += 1
        else:
            denied += 1
            rules.update(r["rule_id"] for r in payload.get("reasons") or [])
    return {"allowed": allowed, "denied": denied, "denied_by_rule": dict(rules)}


class Watcher:
    """Reads the three processes' state; `render()` draws it for rich Live."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.store = st.Store(f"sqlite:///{stack.engine_dir / 'engine-data' / 'engine.db'}")
        operator = Identity.from_file(OPERATOR_ID, stack.operator_key)
        self.admin = AdminClient(stack.admin_socket, operator, timeout=10)
        self.counts: dict[str, Any] = {"allowed": 0, "denied": 0, "denied_by_rule": {}}
        self.signer_status: dict[str, Any] = {}
        self.market: dict[str, Any] = {}
        self.bots: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._n = 0
        self.last_export: Path | None = None

    def close(self) -> None:
        self.stop_counting()
        self.store.close()
        self.admin.close()

    # --- signer counts, in the background -----------------------------------------------------

    def refresh_counts(self) -> dict[str, Any]:
        self._n += 1
        export = self.stack.root / f"audit-live-{self._n % 2}.jsonl"
        export.unlink(missing_ok=True)
        self.stack.signer("audit", "export", "--out", str(export))
        self.counts = count_decisions(export)
        self.last_export = export
        return self.counts

    def start_counting(self, every_s: float = 4.0) -> None:
        def loop() -> None:
            while not self._stop.wait(every_s):
                try:
                    self.refresh_counts()
                except Exception:  # noqa: BLE001 - a missed refresh only delays the counter
                    continue

        self._thread = threading.Thread(target=loop, name="audit-counts", daemon=True)
        self._thread.start()

    def stop_counting(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None

    # --- polling ------------------------------------------------------------------------------

    def poll(self) -> None:
        self.market = self.stack.sim_status()
        with self.store.read() as s:
            self.bots = {name: bot_status(s, name) for name in BOTS}
        reply = self.admin.status()
        self.signer_status = {
            "global_frozen": reply.global_frozen,
            "audit_size": reply.audit_size,
        }

    def market_time(self) -> str:
        ms = int(self.market.get("serverTime", 0))
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%a %d %b %Y %H:%M UTC")

    def render(self, title: str) -> Group:
        prices = self.market.get("prices", {})
        head = Text.assemble(
            (f"{title}  ", "bold"),
            (f"market time {self.market_time()}  ", "cyan"),
            "  ".join(f"{k} {_short(Decimal(str(v)))}" for k, v in sorted(prices.items())),
        )
        bots = Table(expand=True)
        for col in ("bot", "status", "deals open/closed", "orders", "fills", "realised PnL"):
            bots.add_column(col)
        for b in self.bots.values():
            orders = ", ".join(f"{k} {v}" for k, v in sorted(b["orders"].items())) or "-"
            status = b["status"]
            if b["last_denial"]:
                status += f" ({', '.join(b['last_denial']['rules'])})"
            bots.add_row(
                f"{b['name']} ({b['type']} {b['symbol']})",
                status,
                f"{len(b['open_deals'])}/{b['closed_deals']}",
                orders,
                str(b["fills"]),
                f"{b['realised_pnl']} {b['quote']}",
            )
        c = self.counts
        rules = ", ".join(f"{k} {v}" for k, v in sorted(c["denied_by_rule"].items()))
        signer = Text(
            f"signer: {c['allowed']} allowed, {c['denied']} denied"
            + (f" ({rules})" if rules else "")
            + f"; audit log {self.signer_status.get('audit_size', '?')} records"
            + ("; GLOBAL FREEZE" if self.signer_status.get("global_frozen") else "")
        )
        return Group(head, bots, signer)


def _short(price: Decimal) -> str:
    return f"{price:.2f}" if price >= 100 else f"{price.normalize()}"
