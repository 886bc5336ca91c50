"""Everything one decision reads under the write lock, in two statements instead of eleven.

A decision checks the bot (identity, status, grant, nonce) and then the key (policy version,
freezes, routing facts, client order id, open orders, token bucket). Each is a separate concept
with its own module and table, but read one at a time they cost a round trip each -- on
PostgreSQL a network round trip plus the driver's per-statement work -- so they are read here
together, as plain SQL over those modules' tables, inside the decision's transaction. The
24-hour notional window is read by `signer.limits` as before.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from signer import fastsql
from signer.keystore import KeyStatus
from signer.limits import KeyCounters, bucket_of
from signer.state import GLOBAL_FREEZE, CurrentPolicy

_BOT_SQL = (
    "SELECT b.public_key_hex, b.status,"
    " (SELECT 1 FROM bot_grants g WHERE g.bot_id = ? AND g.key_id = ?),"
    " (SELECT 1 FROM nonces n WHERE n.principal = ? AND n.nonce = ?)"
    " FROM (SELECT 1 AS one) AS x LEFT OUTER JOIN bots b ON b.bot_id = ?"
)

_KEY_SQL = (
    "SELECT p.version, p.policy_json,"
    " (SELECT enabled FROM controls WHERE name = ?),"
    " (SELECT frozen FROM key_freezes WHERE key_id = ?),"
    " k.exchange, k.kind, k.status, k.generation,"
    " (SELECT 1 FROM limit_orders o WHERE o.key_id = ? AND o.client_order_id = ?),"
    " (SELECT count(*) FROM limit_orders o WHERE o.key_id = ? AND o.is_open = ?),"
    " t.units, t.updated_ms, t.rate_per_minute, t.capacity"
    " FROM (SELECT 1 AS one) AS x"
    " LEFT OUTER JOIN (SELECT version, policy_json FROM key_policies WHERE key_id = ?"
    " ORDER BY version DESC LIMIT 1) AS p ON 1 = 1"
    " LEFT OUTER JOIN exchange_keys k ON k.key_id = ?"
    " LEFT OUTER JOIN limit_token_buckets t ON t.key_id = ?"
)


@dataclass(frozen=True)
class BotFacts:
    public_key_hex: str | None  # None: no such bot
    active: bool
    granted: bool  # may use the key the request names
    nonce_seen: bool


@dataclass(frozen=True)
class KeyFacts:
    policy: CurrentPolicy | None
    global_frozen: bool
    key_frozen: bool
    key: KeyStatus | None  # None: no such key
    order_exists: bool  # the client order id was already used on this key
    counters: KeyCounters


def bot_facts(s: Session, bot_id: str, key_id: str, principal: str, nonce: str) -> BotFacts:
    row = fastsql.run(s, _BOT_SQL, (bot_id, key_id, principal, nonce, bot_id)).one()
    return BotFacts(row[0], row[1] == "active", row[2] is not None, row[3] is not None)


def key_facts(s: Session, key_id: str, client_order_id: str) -> KeyFacts:
    params = (GLOBAL_FREEZE, key_id, key_id, client_order_id, key_id, True, key_id, key_id, key_id)
    row = fastsql.run(s, _KEY_SQL, params).one()
    policy = None if row[0] is None else CurrentPolicy(key_id, int(row[0]), row[1])
    key = None if row[4] is None else KeyStatus(key_id, row[4], row[5], row[6], int(row[7]))
    return KeyFacts(
        policy=policy,
        global_frozen=bool(row[2]),
        key_frozen=bool(row[3]),
        key=key,
        order_exists=row[8] is not None,
        counters=KeyCounters(int(row[9]), bucket_of(*row[10:14])),
    )
