"""DCA strategy on hand-made price paths: exact orders, prices, sizes, exits, persistence."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from botengine.backtest.engine import run_backtest
from botengine.config import BotConfigError, make_strategy
from botengine.model import Cancel, Fill, Place, Tick
from botengine.strategies.dca import DcaStrategy
from tests.botengine.support import BTC, D, candles, dca_config, fill_of, resumed_run

LADDER = dict(
    max_safety_orders=4,
    active_safety_orders=2,
    safety_deviation_pct="1",
    safety_step_scale="2",
    safety_volume_scale="1.5",
)


def started(**params: object) -> tuple[DcaStrategy, Place]:
    s = make_strategy(dca_config(**params), BTC)
    assert isinstance(s, DcaStrategy)
    (base,) = s.on_start(Tick(1_000, D("20000")))
    assert isinstance(base, Place)
    return s, base


def test_base_order_is_a_market_buy_of_the_quote_size() -> None:
    _, base = started(**LADDER)
    assert base == Place("t-1-base", "buy", D("0.005"), None, "base")


def test_safety_order_prices_and_sizes_follow_the_martingale_coefficients() -> None:
    # deviation n = 1 * (1 + 2 + ... + 2^(n-1)) = 1, 3, 7, 15 %; size n = 50 * 1.5^(n-1)
    s, base = started(**{**LADDER, "active_safety_orders": 4})
    intents = s.on_fill(fill_of(base, 1_000, D("20000")))
    assert intents == [
        Place("t-1-so1", "buy", D("0.00252"), D("19800.00"), "safety-1"),  # 50 / 19800
        Place("t-1-so2", "buy", D("0.00386"), D("19400.00"), "safety-2"),  # 75 / 19400
        Place("t-1-so3", "buy", D("0.00604"), D("18600.00"), "safety-3"),  # 112.5 / 18600
        Place("t-1-so4", "buy", D("0.00992"), D("17000.00"), "safety-4"),  # 168.75 / 17000
        Place("t-1-tp0", "sell", D("0.005"), D("20200.00"), "take-profit"),
    ]
    assert s.params.safety_deviations() == [D(1), D(3), D(7), D(15)]
    assert s.params.safety_sizes() == [D(50), D("75"), D("112.5"), D("168.75")]


def test_safety_fill_places_the_next_one_and_moves_the_take_profit_to_the_new_average() -> None:
    s, base = started(**LADDER)
    so1, so2, tp0 = s.on_fill(fill_of(base, 1_000, D("20000")))
    assert isinstance(so1, Place) and isinstance(so2, Place)
    intents = s.on_fill(fill_of(so1, 2_000))
    # average = (100 + 0.00252 * 19800) / 0.00752 = 19932.9787...; x 1.01 rounded up to the tick
    assert intents == [
        Place("t-1-so3", "buy", D("0.00604"), D("18600.00"), "safety-3"),
        Cancel("t-1-tp0"),
        Place("t-1-tp1", "sell", D("0.00752"), D("20132.31"), "take-profit"),
    ]


def test_take_profit_fill_closes_the_deal_and_cancels_the_resting_safety_orders() -> None:
    s, base = started(**LADDER)
    so1, _, _ = s.on_fill(fill_of(base, 1_000, D("20000"), fee="0.1"))
    assert isinstance(so1, Place)
    _, _, tp1 = s.on_fill(fill_of(so1, 2_000, fee="0.05"))
    assert isinstance(tp1, Place)
    assert s.on_fill(fill_of(tp1, 3_000, fee="0.15")) == [Cancel("t-1-so2"), Cancel("t-1-so3")]
    (deal,) = s.take_closed_deals()
    assert (deal.deal_id, deal.opened_ms, deal.closed_ms, deal.safety_orders) == (
        1,
        1_000,
        3_000,
        1,
    )
    assert deal.cost == D("100") + D("0.1") + D("49.896") + D("0.05")
    assert deal.proceeds == D("0.00752") * D("20132.31") - D("0.15")
    assert deal.realised_pnl == deal.proceeds - deal.cost
    assert deal.orders == ["t-1-base", "t-1-so1", "t-1-tp1"]
    assert s.open_deals() == [] and s.take_closed_deals() == []


def test_stop_loss_sells_everything_at_market_below_the_average_entry() -> None:
    s, base = started(max_safety_orders=0, stop_loss_pct="10")
    (tp,) = s.on_fill(fill_of(base, 1_000, D("20000")))
    assert s.triggers().below == D("18000")
    assert s.on_price(Tick(2_000, D("18000.01"))) == []
    intents = s.on_price(Tick(3_000, D("17999")))
    assert intents == [Cancel("t-1-tp0"), Place("t-1-sl", "sell", D("0.005"), None, "stop-loss")]
    exit_place = intents[1]
    assert isinstance(exit_place, Place)
    assert s.on_fill(fill_of(exit_place, 3_000, D("17999"))) == []
    (deal,) = s.take_closed_deals()
    assert deal.realised_pnl == D("0.005") * (D("17999") - D("20000"))


def test_trailing_take_profit_sells_after_the_price_falls_the_deviation_from_its_peak() -> None:
    s, base = started(max_safety_orders=0, trailing_deviation_pct="0.5")
    assert s.on_fill(fill_of(base, 1_000, D("20000"))) == []  # nothing rests: the bot trails
    assert s.triggers().above == D("20200")
    for ts, price in ((2, "20199.99"), (3, "20200"), (4, "20500"), (5, "20397.51")):
        assert s.on_price(Tick(ts * 1000, D(price))) == []
    assert s.triggers().below == D("20397.500")  # 20500 x 0.995
    assert s.on_price(Tick(6_000, D("20397.50"))) == [
        Place("t-1-trail", "sell", D("0.005"), None, "trailing-take-profit")
    ]


def test_cooldown_delays_the_next_deal() -> None:
    s, base = started(max_safety_orders=0, cooldown_s=60)
    (tp,) = s.on_fill(fill_of(base, 1_000, D("20000")))
    assert isinstance(tp, Place)
    assert s.on_fill(fill_of(tp, 5_000)) == []
    assert s.triggers().at_ms == 65_000
    assert s.on_price(Tick(64_999, D("20000"))) == []
    assert s.on_price(Tick(65_000, D("20000"))) == [
        Place("t-2-base", "buy", D("0.005"), None, "base")
    ]


def test_rsi_start_condition_waits_for_an_oversold_reading() -> None:
    cfg = dict(start_condition="rsi", rsi_timeframe="1m", rsi_period=2, rsi_below="30")
    s = make_strategy(dca_config(**cfg), BTC)
    assert s.on_start(Tick(0, D("100"))) == []  # first sample, no RSI yet
    assert s.triggers().at_ms == 60_000
    assert s.on_price(Tick(30_000, D("50"))) == []  # between samples: ignored
    assert s.on_price(Tick(60_000, D("99"))) == []  # one change: still warming up
    assert s.on_price(Tick(120_000, D("98"))) == [
        Place("t-1-base", "buy", D("1.02040"), None, "base")
    ]


def test_rsi_start_condition_does_not_open_while_prices_rise() -> None:
    cfg = dict(start_condition="rsi", rsi_timeframe="1m", rsi_period=2, rsi_below="30")
    s = make_strategy(dca_config(**cfg), BTC)
    s.on_start(Tick(0, D("100")))
    assert all(s.on_price(Tick(m * 60_000, D(100 + m))) == [] for m in range(1, 20))


def test_price_start_condition_opens_at_the_threshold() -> None:
    s = make_strategy(dca_config(start_condition="price", start_price_below="19000"), BTC)
    assert s.on_start(Tick(0, D("20000"))) == []
    assert s.triggers().below == D("19000")
    assert s.on_price(Tick(1, D("19000.01"))) == []
    assert s.on_price(Tick(2, D("19000"))) == [Place("t-1-base", "buy", D("0.00526"), None, "base")]


def test_orders_below_the_minimum_notional_are_refused_in_the_config() -> None:
    with pytest.raises(BotConfigError, match=r"dca\.safety_order: 4 .*minimum notional 5"):
        make_strategy(dca_config(safety_order="4", max_safety_orders=2), BTC)
    with pytest.raises(BotConfigError, match=r"dca\.base_order: 4\.99 .*minimum notional 5"):
        make_strategy(dca_config(base_order="4.99"), BTC)
    shrinking = dict(safety_order="12", max_safety_orders=3, safety_volume_scale="0.5")
    with pytest.raises(BotConfigError, match=r"safety_volume_scale: 0\.5 .*order 3 would spend 3"):
        make_strategy(dca_config(**shrinking), BTC)


@settings(max_examples=60, deadline=None)
@given(
    dev=st.decimals("0.1", "5", places=2),
    step=st.decimals("0.5", "2", places=2),
    vol=st.decimals("0.5", "3", places=2),
    count=st.integers(1, 8),
    entry=st.decimals("100", "100000", places=2),
    size=st.decimals("6", "1000", places=2),
)
def test_every_emitted_order_passes_the_market_rules(
    dev: Decimal, step: Decimal, vol: Decimal, count: int, entry: Decimal, size: Decimal
) -> None:
    assume(dev * sum(step**i for i in range(count)) < 99)
    cfg = dca_config(
        base_order=str(size), safety_order=str(size), max_safety_orders=count,
        active_safety_orders=count, safety_deviation_pct=str(dev), safety_step_scale=str(step),
        safety_volume_scale=str(vol), stop_loss_pct="50",
    )  # fmt: skip
    assert cfg.dca is not None
    assume(min(cfg.dca.safety_sizes()) >= 5)
    s = make_strategy(cfg, BTC)
    (base,) = s.on_start(Tick(0, entry))
    assert isinstance(base, Place) and BTC.accepts(base.amount, BTC.price_up(entry))
    orders = [i for i in s.on_fill(fill_of(base, 0, entry)) if isinstance(i, Place)]
    prices = [o.price for o in orders if o.side == "buy"]
    assert all(o.price is not None and BTC.accepts(o.amount, o.price) for o in orders)
    assert prices == sorted(prices, reverse=True) and len(prices) == count


@settings(max_examples=50, deadline=None)
@given(st.lists(st.decimals("19800.01", "20199.99", places=2), min_size=1, max_size=20))
def test_prices_strictly_inside_the_triggers_change_nothing(prices: list[Decimal]) -> None:
    s, base = started(**LADDER)
    s.on_fill(fill_of(base, 1_000, D("20000")))
    t = s.triggers()
    assert (t.below, t.above, t.at_ms) == (D("19800.00"), D("20200.00"), None)
    before = json.dumps(s.snapshot())
    assert all(s.on_price(Tick(2_000 + i, p)) == [] for i, p in enumerate(prices))
    assert json.dumps(s.snapshot()) == before


def test_a_strategy_restored_mid_deal_continues_identically() -> None:
    data = candles("BTCUSDT_1m.csv").slice(0, 12_000)
    cfg = dca_config(**LADDER, trailing_deviation_pct="0.3", stop_loss_pct="8", cooldown_s=600)
    whole = run_backtest(make_strategy(cfg, BTC), data, BTC, mode="reference")
    safety = next(f for f in whole.fills if f.role.startswith("safety"))
    at = safety.candle + 1  # a deal is open with a safety order filled and others resting
    resumed, saved, restored = resumed_run(cfg, data, BTC, at)
    assert saved["deals"] and saved["deals"][0]["rec"]["safety_orders"] >= 1
    assert restored == saved
    assert resumed.fills == whole.fills
    assert resumed.deals == whole.deals
    assert resumed.open_deals == whole.open_deals


def test_fees_paid_in_the_base_asset_shrink_the_take_profit_to_what_is_held() -> None:
    s, base = started(max_safety_orders=0)
    fill = Fill(base.client_order_id, "buy", D("20000"), D("0.005"), D("0.000005"), "BTC", 1_000)
    assert s.on_fill(fill) == [Place("t-1-tp0", "sell", D("0.00499"), D("20200.00"), "take-profit")]
    (deal,) = s.open_deals()
    assert deal.cost == D(100) and deal.fees_quote == D("0.1")  # 0.000005 BTC at 20000


def test_a_fill_for_an_unknown_order_is_kept_apart_and_changes_no_deal() -> None:
    s, base = started(max_safety_orders=0)
    s.on_fill(fill_of(base, 1_000, D("20000")))
    before = s.open_deals()
    assert s.on_fill(Fill("t-9-so1", "buy", D("1"), D("0.5"), D(0), "USDT", 2_000)) == []
    assert s.orphan_base == D("0.5") and s.open_deals() == before
