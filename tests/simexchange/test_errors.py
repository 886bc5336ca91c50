"""Bad requests get Binance's error codes, messages and HTTP statuses."""

from __future__ import annotations

from typing import Any

import pytest

from simexchange import SimExchange
from simexchange.server import AccountKeys
from simexchange.testing import RawClient


@pytest.fixture
def trader(sim: SimExchange) -> AccountKeys:
    return sim.add_account({"USDT": "1000", "BTC": "0.01", "DATA": "500"})


def _order(sim: SimExchange, keys: AccountKeys, **params: Any) -> tuple[int, dict[str, Any]]:
    reply = RawClient(sim.base_url).signed(
        "POST", "/api/v3/order", keys, params, timestamp=sim.now_ms
    )
    return reply.status, reply.body


LIMIT = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC"}


@pytest.mark.parametrize(
    ("params", "code", "msg"),
    [
        ({**LIMIT, "symbol": "NOPEUSDT", "quantity": "0.001", "price": "100"}, -1121,
         "Invalid symbol."),
        ({**LIMIT, "quantity": "0.001", "price": "100.001"}, -1013, "Filter failure: PRICE_FILTER"),
        ({**LIMIT, "quantity": "0.000015", "price": "1000"}, -1013, "Filter failure: LOT_SIZE"),
        ({**LIMIT, "quantity": "0.00001", "price": "1000"}, -1013, "Filter failure: NOTIONAL"),
        ({**LIMIT, "symbol": "DATAUSDT", "side": "SELL", "quantity": "100", "price": "0.09"},
         -1013, "Filter failure: MIN_NOTIONAL"),
        ({**LIMIT, "symbol": "DATAUSDT", "quantity": "1.5", "price": "0.07"}, -1013,
         "Filter failure: LOT_SIZE"),
        ({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.000001"}, -1013,
         "Filter failure: MARKET_LOT_SIZE"),
        ({**LIMIT, "quantity": "1", "price": "50000"}, -2010,
         "Account has insufficient balance for requested action."),
        ({**LIMIT, "side": "SELL", "quantity": "0.02", "price": "90000"}, -2010,
         "Account has insufficient balance for requested action."),
        ({**LIMIT, "side": "HOLD", "quantity": "0.001", "price": "100"}, -1117, "Invalid side."),
        ({**LIMIT, "type": "FANCY", "quantity": "0.001", "price": "100"}, -1116,
         "Invalid orderType."),
        ({**LIMIT, "type": "STOP_LOSS", "quantity": "0.001"}, -2010,
         "Stop loss orders are not supported for this symbol."),
        ({**LIMIT, "timeInForce": "GTD", "quantity": "0.001", "price": "100"}, -1115,
         "Invalid timeInForce."),
        ({**LIMIT, "quantity": "0.001"}, -1102,
         "Mandatory parameter 'price' was not sent, was empty/null, or malformed."),
        ({**LIMIT, "quantity": "-1", "price": "100"}, -1100,
         "Illegal characters found in parameter 'quantity'; legal range is "
         "'^([0-9]{1,20})(\\.[0-9]{1,20})?$'."),
        ({**LIMIT, "quantity": "0.000000001", "price": "100"}, -1111,
         "Parameter 'quantity' has too much precision."),
        ({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET"}, -1102,
         "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!"),
        ({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.001",
          "timeInForce": "GTC"}, -1106, "Parameter 'timeInForce' sent when not required."),
        ({**LIMIT, "quantity": "0.001", "price": "100", "newClientOrderId": "bad id!"}, -1100,
         "Illegal characters found in parameter 'newClientOrderId'; legal range is "
         "'^[\\.A-Z\\:/a-z0-9_-]{1,36}$'."),
    ],
)  # fmt: skip
def test_new_order_errors_match_binance(
    sim: SimExchange, trader: AccountKeys, params: dict[str, str], code: int, msg: str
) -> None:
    status, body = _order(sim, trader, **params)
    assert (status, body) == (400, {"code": code, "msg": msg})


def test_rejected_orders_change_no_balance(sim: SimExchange, trader: AccountKeys) -> None:
    before = sim.engine.accounts[trader.account_id].balances.copy()
    _order(sim, trader, **LIMIT, quantity="1", price="50000")
    _order(sim, trader, **LIMIT, quantity="0.000015", price="1000")
    assert sim.engine.accounts[trader.account_id].balances == before
    assert sim.engine.orders == {}


def test_duplicate_open_client_order_id_is_rejected(sim: SimExchange, trader: AccountKeys) -> None:
    first = _order(sim, trader, **LIMIT, quantity="0.01", price="1000", newClientOrderId="dca-1")
    assert first[0] == 200
    dup = _order(sim, trader, **LIMIT, quantity="0.01", price="1000", newClientOrderId="dca-1")
    assert dup == (400, {"code": -2010, "msg": "Duplicate order sent."})


def test_unknown_order_is_2013_to_query_and_2011_to_cancel(
    sim: SimExchange, trader: AccountKeys
) -> None:
    client = RawClient(sim.base_url)
    query = client.signed(
        "GET", "/api/v3/order", trader, {"symbol": "BTCUSDT", "orderId": 999}, timestamp=sim.now_ms
    )
    assert (query.status, query.body) == (400, {"code": -2013, "msg": "Order does not exist."})
    cancel = client.signed(
        "DELETE",
        "/api/v3/order",
        trader,
        {"symbol": "BTCUSDT", "orderId": 999},
        timestamp=sim.now_ms,
    )
    assert (cancel.status, cancel.body) == (400, {"code": -2011, "msg": "Unknown order sent."})
    neither = client.signed(
        "GET", "/api/v3/order", trader, {"symbol": "BTCUSDT"}, timestamp=sim.now_ms
    )
    assert neither.body == {
        "code": -1102,
        "msg": "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!",
    }


def test_cancelling_a_filled_order_is_unknown_order(sim: SimExchange, trader: AccountKeys) -> None:
    status, filled = _order(
        sim, trader, symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.001"
    )
    assert status == 200 and filled["status"] == "FILLED"
    reply = RawClient(sim.base_url).signed(
        "DELETE", "/api/v3/order", trader,
        {"symbol": "BTCUSDT", "orderId": filled["orderId"]}, timestamp=sim.now_ms,
    )  # fmt: skip
    assert reply.body == {"code": -2011, "msg": "Unknown order sent."}


def test_another_accounts_order_is_invisible(sim: SimExchange, trader: AccountKeys) -> None:
    status, order = _order(sim, trader, **LIMIT, quantity="0.01", price="1000")
    assert status == 200
    other = sim.add_account({"USDT": "10"})
    reply = RawClient(sim.base_url).signed(
        "DELETE", "/api/v3/order", other,
        {"symbol": "BTCUSDT", "orderId": order["orderId"]}, timestamp=sim.now_ms,
    )  # fmt: skip
    assert reply.body["code"] == -2011


def test_trade_only_key_cannot_withdraw_even_with_a_valid_signature(
    sim: SimExchange, trader: AccountKeys
) -> None:
    client = RawClient(sim.base_url)
    params = {"coin": "USDT", "address": "TXattacker", "amount": "999", "network": "TRX"}
    reply = client.signed(
        "POST", "/sapi/v1/capital/withdraw/apply", trader, params, timestamp=sim.now_ms
    )
    assert (reply.status, reply.body) == (
        401,
        {"code": -1002, "msg": "You are not authorized to execute this request."},
    )
    assert sim.engine.accounts[trader.account_id].balances["USDT"].free == 1000
    assert sim.engine.withdrawals == []


def test_withdraw_key_can_withdraw(sim: SimExchange) -> None:
    keys = sim.add_account({"USDT": "100"}, can_withdraw=True)
    reply = RawClient(sim.base_url).signed(
        "POST", "/sapi/v1/capital/withdraw/apply", keys,
        {"coin": "USDT", "address": "Tmine", "amount": "40"}, timestamp=sim.now_ms,
    )  # fmt: skip
    assert reply.status == 200 and len(reply.body["id"]) == 32
    assert sim.engine.accounts[keys.account_id].balances["USDT"].free == 60


def test_read_only_key_cannot_trade(sim: SimExchange) -> None:
    keys = sim.add_account({"USDT": "100"}, can_trade=False)
    status, body = _order(sim, keys, **LIMIT, quantity="0.01", price="1000")
    assert (status, body["code"]) == (401, -2015)
    reply = RawClient(sim.base_url).signed("GET", "/api/v3/account", keys, {}, timestamp=sim.now_ms)
    assert reply.status == 200 and reply.body["canTrade"] is False


def test_public_endpoint_errors(sim: SimExchange) -> None:
    client = RawClient(sim.base_url)
    assert client.get("/api/v3/ticker/price", symbol="NOPE").body == {
        "code": -1121,
        "msg": "Invalid symbol.",
    }
    bad = client.get("/api/v3/klines", symbol="BTCUSDT", interval="7m")
    assert (bad.status, bad.body) == (400, {"code": -1120, "msg": "Invalid interval."})
    missing = client.get("/api/v3/klines", symbol="BTCUSDT")
    assert missing.body["code"] == -1102
    unknown = client.get("/api/v3/nothing")
    assert unknown.status == 404 and unknown.body["code"] == -1000


def test_duplicate_parameter_is_1101(sim: SimExchange) -> None:
    reply = RawClient(sim.base_url).send("GET", "/api/v3/depth", "symbol=BTCUSDT&symbol=ETHUSDT")
    assert reply.body == {"code": -1101, "msg": "Duplicate values for a parameter detected."}
