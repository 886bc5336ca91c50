"""Bot state in SQL: SQLite (WAL) in the engine's data directory by default, PostgreSQL by URL.

`Store` owns the SQLAlchemy engine; every operation below takes a Session, so a caller groups
what must commit together (a fill, the strategy snapshot it produced, and the orders that
snapshot now expects) into one transaction. The engine database holds no key material at all:
orders, fills, deals and strategy state only.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, select
from sqlalchemy.orm import Session

from botengine.config import BotConfig
from botengine.model import Deal, Fill, Place
from botengine.store_models import (
    BOT_STATUSES,
    FINAL_STATES,
    Base,
    BotRow,
    DealRow,
    FillRow,
    OrderRow,
    StateRow,
)


class StoreError(ValueError):
    """A store operation was refused (unknown bot, duplicate name...); nothing changed."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def make_engine(url: str) -> Engine:
    """SQLite: WAL, synchronous=FULL, foreign keys, busy timeout; writers take the lock up
    front (BEGIN IMMEDIATE) so concurrent bot threads queue instead of failing."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=16
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):  # type: ignore[no-untyped-def]
            conn.exec_driver_sql(f"BEGIN {conn.get_execution_options().get('begin', 'DEFERRED')}")

        return engine
    return create_engine(url, pool_size=8, max_overflow=16, pool_pre_ping=True)


class Store:
    """The engine database. `write()` and `read()` hand out sessions; nothing is global."""

    def __init__(self, url: str, data_dir: Path | None = None) -> None:
        if url.startswith("sqlite:///") and data_dir is not None:
            data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(data_dir, 0o700)
        self.url = url
        self.engine = make_engine(url)
        self.sqlite = url.startswith("sqlite")
        Base.metadata.create_all(self.engine)
        if self.sqlite:
            db_path = Path(url.removeprefix("sqlite:///"))
            if db_path.exists():
                os.chmod(db_path, 0o600)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One transaction that commits on success and rolls back on any error."""
        conn = self.engine.connect()
        if self.sqlite:
            conn = conn.execution_options(begin="IMMEDIATE")
        try:
            with Session(bind=conn, expire_on_commit=False) as s:
                try:
                    yield s
                    s.commit()
                except BaseException:
                    s.rollback()
                    raise
        finally:
            conn.close()

    @contextmanager
    def read(self) -> Iterator[Session]:
        with Session(bind=self.engine, expire_on_commit=False) as s:
            yield s  # closing (not rolling back) keeps loaded rows readable afterwards


# --- bots -------------------------------------------------------------------------------------


def add_bot(s: Session, config: BotConfig, toml_text: str, now: int) -> BotRow:
    if s.get(BotRow, config.name) is not None:
        raise StoreError(f"name: bot {config.name!r} already exists; choose another name")
    row = BotRow(
        name=config.name,
        bot_type=config.type,
        symbol=config.symbol,
        exchange=config.exchange,
        key_id=config.key_id,
        config_toml=toml_text,
        enabled=config.enabled,
        status="running" if config.enabled else "stopped",
        created_ms=now,
        updated_ms=now,
    )
    s.add(row)
    s.flush()
    return row


def get_bot(s: Session, name: str) -> BotRow:
    row = s.get(BotRow, name)
    if row is None:
        raise StoreError(f"NAME: no bot named {name!r}; see `bulkhead bot list`")
    return row


def list_bots(s: Session) -> list[BotRow]:
    return list(s.scalars(select(BotRow).order_by(BotRow.name)))


def set_status(s: Session, name: str, status: str, now: int) -> BotRow:
    """running (and enabled) / stopped (and disabled) / paused (enabled, waiting for a human)."""
    if status not in BOT_STATUSES:
        raise StoreError(f"status: {status!r} is not allowed; must be one of {BOT_STATUSES}")
    row = get_bot(s, name)
    row.status = status
    row.enabled = status != "stopped"
    row.updated_ms = now
    return row


def record_denial(s: Session, name: str, rules: Sequence[str], message: str, now: int) -> None:
    """Pause the bot and keep why (the signer's rule ids and message) for `bot status`."""
    row = get_bot(s, name)
    row.status = "paused"
    row.denial_rules = json.dumps(list(rules))
    row.denial_message = message
    row.denial_ms = now
    row.updated_ms = now


def denial_of(row: BotRow) -> dict[str, Any] | None:
    if row.denial_ms is None:
        return None
    return {
        "rules": json.loads(row.denial_rules or "[]"),
        "message": row.denial_message or "",
        "at_ms": row.denial_ms,
    }


# --- strategy state ---------------------------------------------------------------------------


def load_snapshot(s: Session, bot: str) -> dict[str, Any] | None:
    row = s.get(StateRow, bot)
    return None if row is None else json.loads(row.snapshot)  # type: ignore[no-any-return]


def save_snapshot(s: Session, bot: str, snapshot: dict[str, Any], now: int) -> None:
    text = json.dumps(snapshot, sort_keys=True)
    row = s.get(StateRow, bot)
    if row is None:
        s.add(StateRow(bot=bot, snapshot=text, updated_ms=now))
    elif row.snapshot != text:
        row.snapshot, row.updated_ms = text, now


# --- orders -----------------------------------------------------------------------------------


def add_order(s: Session, bot: str, symbol: str, place: Place, now: int) -> OrderRow:
    """Record a strategy's Place as an "intent" (before anything is sent). A client order id
    already recorded is the same deterministic order re-derived: the existing row is kept."""
    row = order_by_coid(s, place.client_order_id)
    if row is not None:
        if row.bot != bot or row.side != place.side or Decimal(row.amount) != place.amount:
            raise StoreError(
                f"client_order_id {place.client_order_id!r} is already used by a different order"
            )
        return row
    row = OrderRow(
        client_order_id=place.client_order_id,
        bot=bot,
        symbol=symbol,
        role=place.role,
        side=place.side,
        order_type="market" if place.price is None else "limit",
        amount=str(place.amount),
        price=None if place.price is None else str(place.price),
        state="intent",
        cancel_requested=False,
        attempts=0,
        created_ms=now,
        updated_ms=now,
    )
    s.add(row)
    s.flush()
    return row


def request_cancel(s: Session, coid: str, now: int) -> OrderRow | None:
    row = order_by_coid(s, coid)
    if row is not None and row.state not in FINAL_STATES:
        row.cancel_requested = True
        row.updated_ms = now
    return row


def order_by_coid(s: Session, coid: str) -> OrderRow | None:
    return s.scalars(select(OrderRow).where(OrderRow.client_order_id == coid)).first()


def orders_of(s: Session, bot: str, states: Iterable[str] | None = None) -> list[OrderRow]:
    q = select(OrderRow).where(OrderRow.bot == bot)
    if states is not None:
        q = q.where(OrderRow.state.in_(list(states)))
    return list(s.scalars(q.order_by(OrderRow.id)))


def update_order(s: Session, coid: str, now: int, **fields: Any) -> OrderRow:
    row = order_by_coid(s, coid)
    if row is None:
        raise StoreError(f"client_order_id {coid!r} is not a recorded order")
    for k, v in fields.items():
        setattr(row, k, v)
    row.updated_ms = now
    return row


# --- fills and deals --------------------------------------------------------------------------


def record_fill(s: Session, bot: str, fill: Fill, trade_ids: Sequence[str], now: int) -> None:
    s.add(
        FillRow(
            client_order_id=fill.client_order_id,
            bot=bot,
            side=fill.side,
            price=str(fill.price),
            amount=str(fill.amount),
            fee=str(fill.fee),
            fee_asset=fill.fee_asset,
            trade_ids=json.dumps(list(trade_ids)),
            ts_ms=fill.ts_ms,
        )
    )
    update_order(s, fill.client_order_id, now, state="filled", exchange_status="closed")


def fills_of(s: Session, bot: str) -> list[FillRow]:
    return list(s.scalars(select(FillRow).where(FillRow.bot == bot).order_by(FillRow.id)))


def add_deals(s: Session, bot: str, deals: Iterable[Deal]) -> None:
    for d in deals:
        if d.closed_ms is None:
            continue
        s.add(
            DealRow(
                bot=bot,
                deal_id=d.deal_id,
                opened_ms=d.opened_ms,
                closed_ms=d.closed_ms,
                bought=str(d.bought),
                cost=str(d.cost),
                sold=str(d.sold),
                proceeds=str(d.proceeds),
                fees_quote=str(d.fees_quote),
                pnl=str(d.realised_pnl),
                safety_orders=d.safety_orders,
                orders=json.dumps(d.orders),
            )
        )


def deals_of(s: Session, bot: str) -> list[DealRow]:
    return list(s.scalars(select(DealRow).where(DealRow.bot == bot).order_by(DealRow.closed_ms)))
