"""ccxt's own binance class, pointed at the simulator by URL, over a real socket."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import ccxt
import pytest

from simexchange.server import AccountKeys, SimExchange
from simexchange.testing import ccxt_config, start_test_exchange


@pytest.fixture(params=["HMAC", "ED25519"])
def running(request: pytest.FixtureRequest) -> Iterator[tuple[SimExchange, AccountKeys]]:
    sim, keys = start_test_exchange(key_type=request.param)
    yield sim, keys
    sim.stop()


def test_ccxt_binance_round_trip_with_both_key_types(
    running: tuple[SimExchange, AccountKeys],
) -> None:
    sim, keys = running
    if keys.key_type == "ED25519":
        assert "PRIVATE KEY" in keys.secret and len(keys.secret) <= 120  # ccxt then signs EdDSA
    ex = ccxt.binance(ccxt_config(sim.base_url, keys.api_key, keys.secret))

    markets = ex.load_markets()
    assert {"BTC/USDT", "ETH/USDT"} <= set(markets)
    btc = markets["BTC/USDT"]
    assert btc["spot"] and btc["active"]
    assert btc["precision"]["price"] == 0.01 and btc["precision"]["amount"] == 0.00001
    assert btc["limits"]["cost"]["min"] == 5

    ticker = ex.fetch_ticker("BTC/USDT")
    assert ticker["last"] > 0 and ticker["bid"] < ticker["ask"]

    candles = ex.fetch_ohlcv("BTC/USDT", "1m", limit=5)
    assert len(candles) == 5
    assert all(c[3] <= min(c[1], c[4]) and c[2] >= max(c[1], c[4]) for c in candles)

    resting = ex.create_order("BTC/USDT", "limit", "buy", 0.001, 30000)
    assert resting["status"] == "open" and resting["clientOrderId"]
    assert ex.fetch_order(resting["id"], "BTC/USDT")["status"] == "open"
    assert [o["id"] for o in ex.fetch_open_orders("BTC/USDT")] == [resting["id"]]
    assert ex.fetch_balance()["USDT"]["used"] == 30.0
    assert ex.cancel_order(resting["id"], "BTC/USDT")["status"] == "canceled"
    assert ex.fetch_open_orders("BTC/USDT") == []

    bought = ex.create_order("BTC/USDT", "market", "buy", 0.002)
    assert bought["status"] == "closed" and bought["filled"] == 0.002
    trades = ex.fetch_my_trades("BTC/USDT")
    assert [t["order"] for t in trades] == [bought["id"]]
    assert trades[0]["fee"] == {"currency": "BTC", "cost": 0.000002}

    balance = ex.fetch_balance()
    assert balance["USDT"]["used"] == 0.0
    assert balance["BTC"]["total"] == 1.001998  # 1 + 0.002 - 0.1 % taker fee
    cost = Decimal(str(trades[0]["info"]["quoteQty"]))
    assert Decimal(str(balance["USDT"]["total"])) == Decimal(100000) - cost


def test_ccxt_config_sends_nothing_to_the_real_exchange() -> None:
    config = ccxt_config("http://127.0.0.1:9", "k", "s")
    urls = config["urls"]["api"]
    assert urls["public"] == urls["private"] == "http://127.0.0.1:9/api/v3"
    assert urls["sapi"] == "http://127.0.0.1:9/sapi/v1"
    assert all(u.startswith("http://127.0.0.1:9/") for u in urls.values())
    assert config["options"]["fetchMarkets"] == {"types": ["spot"]}
    assert config["options"]["fetchCurrencies"] is False


def test_ccxt_maps_the_simulators_binance_errors_to_its_exceptions() -> None:
    sim, keys = start_test_exchange()
    try:
        forged = ccxt.binance(ccxt_config(sim.base_url, keys.api_key, "x" * 64))
        with pytest.raises(ccxt.AuthenticationError, match="-1022"):
            forged.fetch_balance()
        ex = ccxt.binance(ccxt_config(sim.base_url, keys.api_key, keys.secret))
        with pytest.raises(ccxt.InvalidOrder, match="LOT_SIZE"):
            ex.create_order("BTC/USDT", "limit", "buy", 1, 30000, {"quantity": "0.000001"})
        with pytest.raises(ccxt.InsufficientFunds):
            ex.create_order("BTC/USDT", "limit", "buy", 100, 30000)
        with pytest.raises(ccxt.OrderNotFound, match="-2013"):
            ex.fetch_order("999", "BTC/USDT")
        with pytest.raises(ccxt.OrderNotFound, match="-2011"):
            ex.cancel_order("999", "BTC/USDT")
        with pytest.raises(ccxt.AuthenticationError, match="-1002"):
            ex.withdraw("USDT", 10, "TXattacker")  # a trade-only key, correctly signed by ccxt
    finally:
        sim.stop()
