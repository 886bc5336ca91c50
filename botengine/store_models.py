"""The engine's tables (SQLAlchemy 2.0 typed mappings). Money is stored as decimal strings.

bots         one row per bot: its TOML, enabled/status, the last signer denial, and the lease
             (owner, expiry) that lets exactly one engine worker run it at a time
bot_state    the strategy's JSON snapshot, written in the same transaction as the orders it
             implies, so a crash never separates "the strategy decided X" from "order X exists"
orders       every order a strategy asked for, keyed by its deterministic client order id,
             written as "intent" BEFORE the signer is called
fills        one per filled order (the exchanges here fill orders whole)
deals        closed DCA deals / grid round trips, with their realised PnL
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Order lifecycle. "intent": recorded, never sent. "submitted": sent (or being sent); the
# outcome is unknown until the signer answers or a query finds it. "open": resting on the
# exchange. "denied": the signer's policy refused it (sent again after `bot start`).
ORDER_STATES = ("intent", "submitted", "open", "filled", "cancelled", "rejected", "denied")
PENDING_STATES = ("intent", "submitted")
FINAL_STATES = ("filled", "cancelled", "rejected")
BOT_STATUSES = ("running", "paused", "stopped")


class Base(DeclarativeBase):
    """Declarative base for the engine's tables (separate from the signer's: other database)."""


class BotRow(Base):
    __tablename__ = "bots"

    name: Mapped[str] = mapped_column(String(14), primary_key=True)
    bot_type: Mapped[str] = mapped_column(String(8))
    symbol: Mapped[str] = mapped_column(String(41))
    exchange: Mapped[str] = mapped_column(String(16))
    key_id: Mapped[str] = mapped_column(String(64))
    config_toml: Mapped[str] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(String(8))
    denial_rules: Mapped[str | None] = mapped_column(Text)  # JSON list of rule ids
    denial_message: Mapped[str | None] = mapped_column(Text)
    denial_ms: Mapped[int | None] = mapped_column(BigInteger)
    lease_owner: Mapped[str | None] = mapped_column(String(64), index=True)
    lease_expires_at: Mapped[int | None] = mapped_column(BigInteger)  # epoch ms
    created_ms: Mapped[int] = mapped_column(BigInteger)
    updated_ms: Mapped[int] = mapped_column(BigInteger)


class StateRow(Base):
    __tablename__ = "bot_state"

    bot: Mapped[str] = mapped_column(ForeignKey("bots.name"), primary_key=True)
    snapshot: Mapped[str] = mapped_column(Text)  # the strategy's JSON snapshot
    updated_ms: Mapped[int] = mapped_column(BigInteger)


class OrderRow(Base):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    client_order_id: Mapped[str] = mapped_column(String(36), unique=True)
    bot: Mapped[str] = mapped_column(ForeignKey("bots.name"), index=True)
    symbol: Mapped[str] = mapped_column(String(41))
    role: Mapped[str] = mapped_column(String(32))
    side: Mapped[str] = mapped_column(String(4))
    order_type: Mapped[str] = mapped_column(String(6))  # limit / market
    amount: Mapped[str] = mapped_column(String(40))
    price: Mapped[str | None] = mapped_column(String(40))  # None for market orders
    state: Mapped[str] = mapped_column(String(10), index=True)
    exchange_status: Mapped[str | None] = mapped_column(String(10))  # last seen on the exchange
    exchange_order_id: Mapped[str | None] = mapped_column(String(64))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    first_sent_ms: Mapped[int | None] = mapped_column(BigInteger)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    updated_ms: Mapped[int] = mapped_column(BigInteger)


class FillRow(Base):
    __tablename__ = "fills"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    client_order_id: Mapped[str] = mapped_column(ForeignKey("orders.client_order_id"), unique=True)
    bot: Mapped[str] = mapped_column(ForeignKey("bots.name"), index=True)
    side: Mapped[str] = mapped_column(String(4))
    price: Mapped[str] = mapped_column(String(40))  # average
    amount: Mapped[str] = mapped_column(String(40))
    fee: Mapped[str] = mapped_column(String(40))
    fee_asset: Mapped[str] = mapped_column(String(20))
    trade_ids: Mapped[str] = mapped_column(Text)  # JSON list of the exchange's trade ids
    ts_ms: Mapped[int] = mapped_column(BigInteger)


class DealRow(Base):
    __tablename__ = "deals"
    __table_args__ = (UniqueConstraint("bot", "deal_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    bot: Mapped[str] = mapped_column(ForeignKey("bots.name"), index=True)
    deal_id: Mapped[int] = mapped_column(Integer)
    opened_ms: Mapped[int] = mapped_column(BigInteger)
    closed_ms: Mapped[int] = mapped_column(BigInteger)
    bought: Mapped[str] = mapped_column(String(40))
    cost: Mapped[str] = mapped_column(String(40))
    sold: Mapped[str] = mapped_column(String(40))
    proceeds: Mapped[str] = mapped_column(String(40))
    fees_quote: Mapped[str] = mapped_column(String(40))
    pnl: Mapped[str] = mapped_column(String(40))
    safety_orders: Mapped[int] = mapped_column(Integer)
    orders: Mapped[str] = mapped_column(Text)  # JSON list of client order ids
