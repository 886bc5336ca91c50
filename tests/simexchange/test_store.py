"""With a SQLite state file a paper account, its keys, orders and clock survive a restart."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from decimal import Decimal as D
from pathlib import Path

from simexchange import SimExchange
from simexchange.testing import RawClient


def test_paper_account_survives_a_restart(
    make_sim: Callable[..., SimExchange], tmp_path: Path
) -> None:
    state = tmp_path / "paper.sqlite"
    first = make_sim(state_path=state)
    keys = first.add_account({"USDT": "1000"}, name="paper")
    client = RawClient(first.base_url)
    params = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
              "quantity": "0.001", "price": "30000"}  # fmt: skip
    resting = client.signed("POST", "/api/v3/order", keys, params, timestamp=first.now_ms).body
    market = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.002"}
    filled = client.signed("POST", "/api/v3/order", keys, market, timestamp=first.now_ms).body
    first.advance(90)
    stopped_at = first.now_ms
    price_before = first.price("BTCUSDT")
    account_before = client.signed("GET", "/api/v3/account", keys, {}, timestamp=stopped_at).body
    first.stop()
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o600  # it holds the HMAC secrets

    second = make_sim(state_path=state, start_ms=None)  # no start given: resume saved time
    assert second.now_ms == stopped_at
    assert second.price("BTCUSDT") == price_before  # the synthetic path is anchored too
    client = RawClient(second.base_url)
    account_after = client.signed("GET", "/api/v3/account", keys, {}, timestamp=second.now_ms).body
    assert account_after["balances"] == account_before["balances"]
    usdt = next(b for b in account_after["balances"] if b["asset"] == "USDT")
    assert D(usdt["locked"]) == D(30)
    open_orders = client.signed(
        "GET", "/api/v3/openOrders", keys, {"symbol": "BTCUSDT"}, timestamp=second.now_ms
    ).body
    assert [o["orderId"] for o in open_orders] == [resting["orderId"]]
    trades = client.signed(
        "GET", "/api/v3/myTrades", keys, {"symbol": "BTCUSDT"}, timestamp=second.now_ms
    ).body
    assert [t["orderId"] for t in trades] == [filled["orderId"]]
    again = client.signed("POST", "/api/v3/order", keys, market, timestamp=second.now_ms).body
    assert again["orderId"] > filled["orderId"]  # ids continue, never reused


def test_seeded_accounts_are_not_reseeded_on_restart(
    make_sim: Callable[..., SimExchange], tmp_path: Path
) -> None:
    from simexchange import AccountConfig, KeyConfig

    seeded = AccountConfig(
        name="alice",
        balances={"USDT": D(50)},
        keys=(KeyConfig(api_key="A" * 64, secret="s" * 32),),  # type: ignore[arg-type]
    )
    state = tmp_path / "s.sqlite"
    first = make_sim(state_path=state, accounts=(seeded,))
    alice = first.engine.account_by_name("alice")
    assert alice is not None
    first.deposit(alice.account_id, "USDT", "25")
    first.stop()
    second = make_sim(state_path=state, accounts=(seeded,))
    again = second.engine.account_by_name("alice")
    assert again is not None and again.balances["USDT"].free == D(75)
    assert len(second.engine.accounts) == 1
