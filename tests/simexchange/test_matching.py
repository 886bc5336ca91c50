"""Matching, fees and balance locking, exact to the last decimal (engine level)."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simexchange.candles import Candle, CandleSeries, SyntheticSeries
from simexchange.clock import SimClock
from simexchange.engine import Engine
from simexchange.errors import BinanceError
from simexchange.market import Market, SymbolSpec
from simexchange.prices import PricePath

MIN = 60_000
# one candle: open 100, high 101 (nearer, so visited first at +20 s), low 95 at +40 s, close 98
CANDLES = [
    Candle(0, D(100), D(101), D(95), D(98), D(10)),
    Candle(MIN, D(98), D(99), D(97), D(99), D(5)),
]


def make_engine(
    series: CandleSeries | None = None, *, slippage: str = "0"
) -> tuple[Engine, SimClock, int]:
    series = series or CandleSeries(list(CANDLES), MIN)
    spec = SymbolSpec("BTCUSDT", "BTC", "USDT", D("0.01"), D("0.001"), D("0.001"), D(1000), D(1))
    market = Market(spec, PricePath(series, D("0.01")), depth_quote_per_pct=D(1_000_000))
    clock = SimClock(series.first_time, 0)
    engine = Engine({"BTCUSDT": market}, clock, slippage=D(slippage))
    account = engine.create_account("t", {"USDT": D(1000), "BTC": D(1)}, D("0.001"), D("0.002"))
    return engine, clock, account.account_id


def bal(engine: Engine, account_id: int, asset: str) -> tuple[D, D]:
    b = engine.accounts[account_id].balances[asset]
    return b.free, b.locked


def step(engine: Engine, clock: SimClock, to_ms: int) -> None:
    clock.advance_to(to_ms)
    with engine.session():
        pass


def test_resting_limit_buy_fills_when_the_path_trades_through_it() -> None:
    engine, clock, acc = make_engine()
    order, fills = engine.new_order(acc, "BTCUSDT", "BUY", "LIMIT", quantity=D("0.5"), price=D(97))
    assert fills == [] and order.status == "NEW"
    assert bal(engine, acc, "USDT") == (D("951.5"), D("48.5"))

    step(engine, clock, 30_000)  # the path is at 98 on its way from 101 down to 95
    assert order.status == "NEW"
    step(engine, clock, 40_000)
    assert order.status == "FILLED"
    (trade,) = engine.my_trades(acc, "BTCUSDT")
    assert (trade.price, trade.qty, trade.quote_qty) == (D(97), D("0.5"), D("48.5"))
    assert trade.is_maker and trade.commission == D("0.0005") and trade.commission_asset == "BTC"
    assert trade.time == 33_334  # 101 -> 95 over 20 s passes 97 two thirds of the way in
    assert bal(engine, acc, "USDT") == (D("951.5"), D(0))
    assert bal(engine, acc, "BTC") == (D("1.4995"), D(0))


def test_a_limit_at_the_low_is_touched_not_traded_through() -> None:
    engine, clock, acc = make_engine()
    at_low, _ = engine.new_order(acc, "BTCUSDT", "BUY", "LIMIT", quantity=D("0.1"), price=D(95))
    above, _ = engine.new_order(acc, "BTCUSDT", "BUY", "LIMIT", quantity=D("0.1"), price=D("95.01"))
    step(engine, clock, MIN - 1)
    assert (at_low.status, above.status) == ("NEW", "FILLED")
    assert engine.trades[above.trade_ids[0]].time == 39_967


def test_resting_sell_fills_when_the_path_rises_through_it_and_fee_comes_from_quote() -> None:
    engine, clock, acc = make_engine()
    order, _ = engine.new_order(
        acc, "BTCUSDT", "SELL", "LIMIT", quantity=D("0.3"), price=D("100.5")
    )
    assert bal(engine, acc, "BTC") == (D("0.7"), D("0.3"))
    step(engine, clock, 15_000)
    assert order.status == "FILLED" and order.cum_quote == D("30.15")
    assert bal(engine, acc, "BTC") == (D("0.7"), D(0))
    assert bal(engine, acc, "USDT") == (D("1030.11985"), D(0))  # 30.15 - 0.1 % maker fee


def test_market_orders_fill_at_the_book_plus_slippage_with_taker_fees() -> None:
    engine, _, acc = make_engine(slippage="0.001")
    buy, (fill,) = engine.new_order(acc, "BTCUSDT", "BUY", "MARKET", quantity=D(1))
    assert fill.price == D("100.12")  # ask 100.01 * 1.001 = 100.11001, rounded up to the tick
    assert not fill.is_maker and fill.commission == D("0.002")
    assert bal(engine, acc, "USDT") == (D("899.88"), D(0))
    assert bal(engine, acc, "BTC") == (D("1.998"), D(0))
    sell, (fill,) = engine.new_order(acc, "BTCUSDT", "SELL", "MARKET", quantity=D("0.5"))
    assert fill.price == D("99.9")  # bid 100 * 0.999, rounded down
    assert fill.commission == D("0.0999")
    assert bal(engine, acc, "USDT") == (D("899.88") + D("49.95") - D("0.0999"), D(0))


def test_market_buy_by_quote_amount_spends_at_most_that_amount() -> None:
    engine, _, acc = make_engine()
    order, (fill,) = engine.new_order(acc, "BTCUSDT", "BUY", "MARKET", quote_qty=D(50))
    assert fill.qty == D("0.499") and fill.quote_qty == D("49.90499") <= 50
    assert order.orig_quote_qty == D(50)


def test_marketable_limit_fills_at_once_at_the_book_price() -> None:
    engine, _, acc = make_engine()
    order, (fill,) = engine.new_order(
        acc, "BTCUSDT", "BUY", "LIMIT", quantity=D("0.1"), price=D(105)
    )
    assert order.status == "FILLED" and fill.price == D("100.01") and not fill.is_maker
    assert bal(engine, acc, "USDT") == (D(1000) - D("10.001"), D(0))


def test_cancel_releases_exactly_what_was_locked() -> None:
    engine, _, acc = make_engine()
    order, _ = engine.new_order(
        acc, "BTCUSDT", "BUY", "LIMIT", quantity=D("0.123"), price=D("90.07")
    )
    assert bal(engine, acc, "USDT") == (D(1000) - D("11.07861"), D("11.07861"))
    engine.cancel(order)
    assert order.status == "CANCELED" and bal(engine, acc, "USDT") == (D(1000), D(0))
    with pytest.raises(BinanceError) as err:
        engine.cancel(order)
    assert err.value.code == -2011


def test_ioc_that_cannot_fill_expires_and_limit_maker_that_would_take_is_rejected() -> None:
    engine, _, acc = make_engine()
    ioc, _ = engine.new_order(
        acc, "BTCUSDT", "BUY", "LIMIT", quantity=D("0.1"), price=D(90), time_in_force="IOC"
    )
    assert ioc.status == "EXPIRED" and bal(engine, acc, "USDT") == (D(1000), D(0))
    with pytest.raises(BinanceError) as err:
        engine.new_order(acc, "BTCUSDT", "BUY", "LIMIT_MAKER", quantity=D("0.1"), price=D(101))
    assert (err.value.code, err.value.msg) == (-2010, "Order would immediately match and take.")


def test_locked_funds_cannot_be_spent_twice() -> None:
    engine, _, acc = make_engine()
    engine.new_order(acc, "BTCUSDT", "BUY", "LIMIT", quantity=D(10), price=D(90))  # locks 900
    with pytest.raises(BinanceError) as err:
        engine.new_order(acc, "BTCUSDT", "BUY", "LIMIT", quantity=D("1.2"), price=D(90))
    assert err.value.code == -2010


# --- property: whatever happens, balances are exact and consistent ------------------------
ops = st.lists(
    st.one_of(
        st.tuples(st.just("limit"), st.sampled_from(["BUY", "SELL"]),
                  st.integers(-300, 300), st.integers(1, 3000)),
        st.tuples(st.just("market"), st.sampled_from(["BUY", "SELL"]), st.integers(1, 2000)),
        st.tuples(st.just("cancel"), st.integers(0, 30)),
        st.tuples(st.just("advance"), st.integers(1, 600)),
    ),
    max_size=30,
)  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(ops)
def test_balances_stay_exact_and_consistent_under_any_order_flow(
    flow: list[tuple[object, ...]],
) -> None:
    series = SyntheticSeries(
        start_price=D(100), start_ms=0, tick=D("0.01"), seed=11, history=0, volatility=D(2)
    )
    engine, clock, acc = make_engine(series)
    initial = {"USDT": D(1000), "BTC": D(1)}
    for op in flow:
        try:
            if op[0] == "limit":
                _, side, offset, qty = op
                price = D(100) + D(offset) / 100
                engine.new_order(acc, "BTCUSDT", str(side), "LIMIT", quantity=D(qty) / 1000,
                                 price=price, time_in_force="GTC")  # fmt: skip
            elif op[0] == "market":
                engine.new_order(acc, "BTCUSDT", str(op[1]), "MARKET", quantity=D(op[2]) / 1000)
            elif op[0] == "cancel":
                open_now = engine.open_orders(acc, "BTCUSDT")
                if open_now:
                    engine.cancel(open_now[int(op[1]) % len(open_now)])  # type: ignore[call-overload]
            else:
                step(engine, clock, clock.now_ms() + int(op[1]) * 1000)  # type: ignore[call-overload]
        except BinanceError:
            pass
    expected = dict(initial)
    for t in engine.trades.values():
        sign = 1 if t.is_buyer else -1
        expected["BTC"] += sign * t.qty - (t.commission if t.commission_asset == "BTC" else 0)
        expected["USDT"] -= sign * t.quote_qty + (
            t.commission if t.commission_asset == "USDT" else 0
        )
    for asset in ("USDT", "BTC"):
        free, locked = bal(engine, acc, asset)
        assert free >= 0 and locked >= 0
        assert locked == sum(
            (o.locked for o in engine.open_orders(acc, None) if o.locked_asset == asset), D(0)
        )
        assert free + locked == expected[asset]
