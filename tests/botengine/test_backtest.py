"""The backtester: fill rules on hand-made candles, and fast path == reference path everywhere."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from botengine.backtest.cli import default_rules
from botengine.backtest.engine import BacktestError, Fees, run_backtest
from botengine.candles import Candles
from botengine.config import BotConfig, make_strategy
from botengine.model import Fill, Intent, Place, Tick, Triggers
from tests.botengine.support import BTC, D, candles, dca_config, grid_config

T0 = 1_700_000_040_000
M = 60_000


def both(cfg: BotConfig, data: Candles, rules: Any = BTC, **kw: Any) -> tuple[Any, Any]:
    fast = run_backtest(make_strategy(cfg, rules), data, rules, mode="fast", **kw)
    ref = run_backtest(make_strategy(cfg, rules), data, rules, mode="reference", **kw)
    return fast, ref


def assert_same(fast: Any, ref: Any) -> None:
    assert fast.fills == ref.fills
    assert fast.deals == ref.deals
    assert fast.open_deals == ref.open_deals
    assert (fast.base_balance, fast.quote_balance) == (ref.base_balance, ref.quote_balance)
    assert fast.max_capital == ref.max_capital


def test_fills_follow_the_intra_candle_path_with_maker_and_taker_fees() -> None:
    data = Candles.from_rows([
        (T0, "100", "100.5", "100", "100"),
        (T0 + M, "100", "101.5", "98.5", "100"),  # tie: the high comes first
    ])  # fmt: skip
    cfg = dca_config(base_order="100", safety_order="100", max_safety_orders=2,
                     active_safety_orders=2, safety_deviation_pct="1")  # fmt: skip
    fast, ref = both(cfg, data, fees=Fees(maker=D("0.001"), taker=D("0.002")))
    assert_same(fast, ref)
    got = [(f.ts_ms - T0, f.role, f.side, f.price, f.amount, f.fee, f.liquidity) for f in ref.fills]
    assert got == [
        (0, "base", "buy", D(100), D(1), D("0.2"), "taker"),
        (M + 20_000, "take-profit", "sell", D(101), D(1), D("0.101"), "maker"),
        (M + 20_000, "base", "buy", D("101.5"), D("0.98522"), D("0.19999966"), "taker"),
        (M + 40_000, "safety-1", "buy", D("100.48"), D("0.99522"), D("0.09999971"), "maker"),
        (M + 40_000, "safety-2", "buy", D("99.47"), D("1.00532"), D("0.09999918"), "maker"),
    ]  # taker 0.2 % and maker 0.1 % of the notional, rounded to 10^-8
    (deal,) = ref.deals
    assert deal.realised_pnl == D(101) - D("0.101") - D(100) - D("0.2")


def test_the_nearer_extreme_comes_first_and_each_move_fills_in_path_order() -> None:
    data = Candles.from_rows([(T0, "100", "103", "98.5", "101")], interval_ms=M)  # low nearer
    cfg = grid_config(lower="98", upper="104", grids=6, quantity_per_grid="1")
    res = run_backtest(make_strategy(cfg, BTC), data, BTC, mode="reference")
    assert [(f.ts_ms - T0, f.side, f.price, f.amount) for f in res.fills] == [
        (0, "buy", D(100), D(4)),  # the initial position for the sells at 101..104
        (20_000, "buy", D(99), D(1)),  # down to the low first
        (40_000, "sell", D(100), D(1)),  # then up to the high: the sell one level up, ...
        (40_000, "sell", D(101), D(1)),
        (40_000, "sell", D(102), D(1)),
        (40_000, "sell", D(103), D(1)),
        (59_999, "buy", D(102), D(1)),  # ... and down to the close: highest buy first
        (59_999, "buy", D(101), D(1)),
    ]
    assert res.extra["round_trips"] == 4


def test_a_limit_buy_crossed_by_a_gap_fills_at_its_own_price_when_trading_resumes() -> None:
    data = Candles.from_rows([
        (T0, "100", "100", "100", "100"),
        (T0 + 10 * M, "95", "96", "94", "96"),  # nine candles missing, opens below the order
    ])  # fmt: skip
    cfg = dca_config(max_safety_orders=1, safety_deviation_pct="2")
    fast, ref = both(cfg, data)
    assert_same(fast, ref)
    safety = ref.fills[1]
    assert (safety.role, safety.price, safety.ts_ms, safety.liquidity) == (
        "safety-1", D(98), T0 + 10 * M, "maker"
    )  # fmt: skip


class _OffTick:
    """A broken strategy: its buy price is not a multiple of the tick size."""

    name, symbol = "bad", "BTC/USDT"

    def on_start(self, tick: Tick) -> list[Intent]:
        return [Place("bad-1-x", "buy", D("0.001"), D("99.999"))]

    def on_price(self, tick: Tick) -> list[Intent]:
        return []

    def on_fill(self, fill: Fill) -> list[Intent]:
        return []

    def triggers(self) -> Triggers:
        return Triggers()

    def snapshot(self) -> dict[str, Any]:
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        return None


def test_an_order_the_exchange_would_reject_stops_the_backtest() -> None:
    data = Candles.from_rows([(T0, "100", "100", "100", "100")], interval_ms=M)
    with pytest.raises(BacktestError, match="bad-1-x: buy 0.001 at 99.999 breaks the rules"):
        run_backtest(_OffTick(), data, BTC)


def test_the_fast_path_skips_quiet_candles() -> None:
    data = candles("BTCUSDT_1m.csv")
    cfg = dca_config(max_safety_orders=3, safety_deviation_pct="1.5", take_profit_pct="1.5")
    fast = run_backtest(make_strategy(cfg, BTC), data, BTC, mode="fast")
    assert fast.deals and fast.candles_visited < len(data) // 100


DCA_VARIANTS: dict[str, dict[str, Any]] = {
    "plain": dict(max_safety_orders=5, active_safety_orders=2, safety_deviation_pct="1.5",
                  safety_volume_scale="1.4", safety_step_scale="1.3", take_profit_pct="1.5"),
    "stop-loss-trailing": dict(  # after both safety orders fill only the stop loss is below
        max_safety_orders=2, active_safety_orders=2, safety_deviation_pct="2",
        take_profit_pct="3", trailing_deviation_pct="0.5", stop_loss_pct="5", cooldown_s=3600),
    "rsi-multi": dict(
        max_safety_orders=3, active_safety_orders=3, safety_deviation_pct="2",
        take_profit_pct="2", stop_loss_pct="9", start_condition="rsi", rsi_timeframe="4h",
        rsi_below="45", max_active_deals=2, cooldown_s=3600),
}  # fmt: skip
FILES = ["BTCUSDT_1m.csv", "BTC_USDT-1h.json", "ETH_USDT-1h.json", "DATA_USDT-1h.json",
         "PERL_USDT-1h.json"]  # fmt: skip


def _symbol(name: str) -> str:
    return name.split("-")[0].replace("BTCUSDT_1m.csv", "BTC_USDT").replace("_", "/")


@pytest.mark.parametrize("variant", sorted(DCA_VARIANTS))
@pytest.mark.parametrize("name", FILES)
def test_fast_and_reference_paths_give_identical_dca_deals_on_real_candles(
    name: str, variant: str
) -> None:
    data, symbol = candles(name), _symbol(name)
    if variant != "plain" and name in ("DATA_USDT-1h.json", "PERL_USDT-1h.json"):
        data = data.slice(0, 2_000)  # keep the suite fast; the full files run in "plain"
    rules = default_rules(symbol, data)
    cfg = dca_config(symbol=symbol, base_order="50", safety_order="50", **DCA_VARIANTS[variant])
    fast, ref = both(cfg, data, rules)
    assert ref.deals, "the scenario must trade"
    assert_same(fast, ref)


@pytest.mark.parametrize("spacing", ["arithmetic", "geometric"])
@pytest.mark.parametrize("name", FILES)
def test_fast_and_reference_paths_give_identical_grid_trips_on_real_candles(
    name: str, spacing: str
) -> None:
    data, symbol = candles(name), _symbol(name)
    rules = default_rules(symbol, data)
    first = data.price(data.open[0])
    down, up = (D("0.8"), D("1.25")) if spacing == "arithmetic" else (D("0.5"), D(2))
    lower = rules.price_down(first * down)
    cfg = grid_config(symbol=symbol, spacing=spacing, grids=24, investment="5000",
                      lower=str(lower), upper=str(rules.price_up(first * up)),
                      stop_loss=str(rules.price_down(lower * D("0.97"))))  # fmt: skip
    fast, ref = both(cfg, data, rules)
    assert ref.deals
    assert_same(fast, ref)
    held = sum((d.bought - d.sold for d in ref.open_deals), Decimal(0))
    assert ref.base_balance == held + ref.extra["orphan_base"]


@st.composite
def walks(draw: st.DrawFn) -> Candles:
    """A random candle walk around 100 with ticks of 0.01 and occasional gaps."""
    rows, t, price = [], T0, 10_000
    for _ in range(draw(st.integers(2, 120))):
        t += M * draw(st.sampled_from([1, 1, 1, 1, 1, 1, 3]))
        o = max(100, price + draw(st.integers(-30, 30)))
        c = max(100, o + draw(st.integers(-300, 300)))
        h = max(o, c) + draw(st.integers(0, 200))
        lo = max(1, min(o, c) - draw(st.integers(0, 200)))
        rows.append((t, *(f"{v / 100:.2f}" for v in (o, h, lo, c))))
        price = c
    return Candles.from_rows(rows, interval_ms=M)


@settings(max_examples=40, deadline=None)
@given(
    data=walks(),
    kind=st.sampled_from(["dca", "dca-trail", "grid"]),
    knob=st.integers(1, 4),
)
def test_fast_and_reference_paths_agree_on_random_walks(
    data: Candles, kind: str, knob: int
) -> None:
    if kind.startswith("dca"):
        extra = dict(trailing_deviation_pct="0.3", stop_loss_pct="4") if kind == "dca-trail" else {}
        cfg = dca_config(max_safety_orders=knob + 1, active_safety_orders=knob,
                         safety_deviation_pct=str(knob), take_profit_pct="0.5",
                         max_active_deals=knob, cooldown_s=60 * (knob - 1), **extra)  # fmt: skip
    else:
        cfg = grid_config(lower="90", upper="110", grids=4 * knob, quantity_per_grid="0.5",
                          spacing="geometric" if knob % 2 else "arithmetic",
                          stop_loss="80", take_profit="125")  # fmt: skip
    fast, ref = both(cfg, data)
    assert_same(fast, ref)
