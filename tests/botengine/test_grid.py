"""Grid strategy on hand-made price paths: levels, start layout, round trips, stops, persistence."""

from __future__ import annotations

from decimal import Decimal

import pytest

from botengine.backtest.engine import run_backtest
from botengine.config import BotConfigError, make_strategy
from botengine.model import Cancel, Fill, Place, Tick
from botengine.strategies.grid import GridStrategy, grid_levels
from tests.botengine.support import BTC, D, candles, fill_of, grid_config, resumed_run


def levels(**params: object) -> list[Decimal]:
    cfg = grid_config(quantity_per_grid="1", **params)
    assert cfg.grid is not None
    return grid_levels(cfg.grid, BTC)


def test_arithmetic_levels_are_equal_steps_rounded_to_the_tick() -> None:
    assert levels(lower="100", upper="200", grids=4) == [D(100), D(125), D(150), D(175), D(200)]
    assert levels(lower="100", upper="200", grids=3) == [D(100), D("133.33"), D("166.67"), D(200)]


def test_geometric_levels_are_equal_ratios_rounded_to_the_tick() -> None:
    got = levels(lower="100", upper="400", grids=4, spacing="geometric")
    assert got == [D(100), D("141.42"), D(200), D("282.84"), D(400)]
    got = levels(lower="1000", upper="8000", grids=3, spacing="geometric")
    assert got == [D(1000), D(2000), D(4000), D(8000)]


def test_levels_that_collapse_at_the_tick_size_are_refused() -> None:
    with pytest.raises(BotConfigError, match=r"grid\.grids: 10 .*collapse"):
        levels(lower="100", upper="100.05", grids=10)


def start(price: str = "160", **params: object) -> tuple[GridStrategy, list[Place]]:
    base: dict[str, object] = {"lower": "100", "upper": "200", "grids": 4}
    base.update(params)
    if "investment" not in base:
        base.setdefault("quantity_per_grid", "1")
    s = make_strategy(grid_config(**base), BTC)
    assert isinstance(s, GridStrategy)
    out = s.on_start(Tick(0, D(price)))
    assert all(isinstance(i, Place) for i in out)
    return s, out  # type: ignore[return-value]


def test_start_buys_below_sells_above_and_leaves_the_nearest_level_empty() -> None:
    s, out = start("160")  # nearest level 150: intervals 0, 1 buy; 2, 3 sell (at 175, 200)
    assert out == [
        Place("g-1-b0", "buy", D(1), D(100), "grid-buy-0"),
        Place("g-2-b1", "buy", D(1), D(125), "grid-buy-1"),
        Place("g-0-init", "buy", D(2), None, "grid-init"),
    ]
    assert s.on_fill(fill_of(out[2], 0, D(160))) == [
        Place("g-3-s2", "sell", D(1), D(175), "grid-sell-2"),
        Place("g-4-s3", "sell", D(1), D(200), "grid-sell-3"),
    ]
    t = s.triggers()
    assert (t.below, t.above, t.at_ms) == (D(125), D(175), None)
    _, out = start("170")  # nearest level 175: interval 2 buys at 150, only interval 3 sells
    assert [(p.side, p.price) for p in out] == [
        ("buy", D(100)), ("buy", D(125)), ("buy", D(150)), ("buy", None)
    ]  # fmt: skip


def test_investment_is_spread_evenly_over_the_buy_levels_and_the_initial_position() -> None:
    _, out = start("160", investment="1000")
    q = D("1.83486")  # 1000 / (100 + 125 + 2 x 160), rounded down to the step
    assert [p.amount for p in out] == [q, q, 2 * q]


def test_a_filled_buy_places_the_sell_one_level_up_and_vice_versa() -> None:
    s, out = start("160")
    s.on_fill(fill_of(out[2], 0, D(160)))
    (sell,) = s.on_fill(fill_of(out[1], 1_000, fee="0.125"))
    assert sell == Place("g-2-s1", "sell", D(1), D(150), "grid-sell-1")
    (buy,) = s.on_fill(fill_of(sell, 2_000, fee="0.15"))
    assert buy == Place("g-5-b1", "buy", D(1), D(125), "grid-buy-1")
    (trip,) = s.take_closed_deals()
    assert (trip.deal_id, trip.opened_ms, trip.closed_ms) == (2, 1_000, 2_000)
    assert trip.realised_pnl == D(150) - D("0.15") - D(125) - D("0.125")
    assert s.round_trips == 1
    (rebuy,) = s.on_fill(fill_of(Place("g-3-s2", "sell", D(1), D(175)), 3_000))
    assert rebuy == Place("g-6-b2", "buy", D(1), D(150), "grid-buy-2")
    (initial_trip,) = s.take_closed_deals()
    assert initial_trip.cost == D(160) and initial_trip.proceeds == D(175)


def test_stop_loss_cancels_everything_and_sells_the_base_held() -> None:
    s, out = start("160", stop_loss="90")
    s.on_fill(fill_of(out[2], 0, D(160)))
    assert s.triggers().below == D(125)
    assert s.on_price(Tick(1, D("90.01"))) == []
    stop = s.on_price(Tick(2, D(90)))
    assert stop == [
        Cancel("g-1-b0"), Cancel("g-2-b1"), Cancel("g-3-s2"), Cancel("g-4-s3"),
        Place("g-0-stop", "sell", D(2), None, "grid-stop_loss"),
    ]  # fmt: skip
    assert s.on_fill(fill_of(stop[-1], 2, D(90))) == []  # type: ignore[arg-type]
    trips = s.take_closed_deals()
    assert [t.realised_pnl for t in trips] == [D(-70), D(-70)]
    assert s.stopped == "stop_loss" and s.triggers().below is None
    assert s.on_price(Tick(3, D(50))) == [] and s.open_deals() == []


def test_take_profit_with_the_stop_action_keeps_the_base() -> None:
    s, out = start("160", take_profit="210", take_profit_action="stop")
    s.on_fill(fill_of(out[2], 0, D(160)))
    assert s.on_price(Tick(1, D(210))) == [
        Cancel("g-1-b0"), Cancel("g-2-b1"), Cancel("g-3-s2"), Cancel("g-4-s3")
    ]  # fmt: skip
    assert s.stopped == "take_profit" and len(s.open_deals()) == 2


def test_sizes_below_the_exchange_minimums_are_refused_in_the_config() -> None:
    with pytest.raises(BotConfigError, match=r"grid\.quantity_per_grid: 0\.00001 .*minimum"):
        start(quantity_per_grid="0.00001")
    with pytest.raises(BotConfigError, match=r"grid\.quantity_per_grid: 0\.000001 .*step size"):
        start(quantity_per_grid="0.000001")
    with pytest.raises(BotConfigError, match=r"grid\.investment: 10 .*minimum"):
        start(investment="10")


def test_a_grid_restored_mid_run_continues_identically() -> None:
    data = candles("BTCUSDT_1m.csv").slice(0, 15_000)
    cfg = grid_config(lower="92000", upper="100000", grids=16, investment="3000", stop_loss="91000")
    whole = run_backtest(make_strategy(cfg, BTC), data, BTC, mode="reference")
    assert len(whole.deals) > 20
    at = whole.fills[len(whole.fills) // 2].candle + 1
    resumed, saved, restored = resumed_run(cfg, data, BTC, at)
    assert restored == saved and saved["open"]
    assert resumed.fills == whole.fills
    assert resumed.deals == whole.deals
    assert resumed.open_deals == whole.open_deals


def test_a_base_asset_fee_on_a_buy_shrinks_the_sell_one_level_up() -> None:
    s, out = start("160")
    buy = out[1]
    (sell,) = s.on_fill(Fill(buy.client_order_id, "buy", D(125), D(1), D("0.001"), "BTC", 1))
    assert sell == Place("g-2-s1", "sell", D("0.999"), D(150), "grid-sell-1")
    (buy_again,) = s.on_fill(fill_of(sell, 2))
    assert buy_again.amount == D(1)  # type: ignore[union-attr]
