"""Shared helpers for the botengine tests: market rules, configs, fills, resumable runs."""

from __future__ import annotations

import json
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

from botengine.backtest.engine import Backtest, BacktestResult
from botengine.candles import Candles, load_candles
from botengine.config import BotConfig, bot_config_from_mapping, make_strategy
from botengine.model import Fill, MarketRules, Place

DATA = Path("/work/shared/data")
BTC = MarketRules("BTC/USDT", Decimal("0.01"), Decimal("0.00001"), Decimal("0.00001"), Decimal(5))


def D(x: str | int) -> Decimal:
    return Decimal(x)


def dca_config(name: str = "t", symbol: str = "BTC/USDT", **params: Any) -> BotConfig:
    base: dict[str, Any] = {"base_order": "100", "safety_order": "50", "take_profit_pct": "1"}
    base.update(params)
    return bot_config_from_mapping(
        {"name": name, "type": "dca", "symbol": symbol, "key_id": "k", "dca": base}
    )


def grid_config(name: str = "g", symbol: str = "BTC/USDT", **params: Any) -> BotConfig:
    return bot_config_from_mapping(
        {"name": name, "type": "grid", "symbol": symbol, "key_id": "k", "grid": params}
    )


def fill_of(place: Place, ts_ms: int, price: Decimal | None = None, fee: str = "0") -> Fill:
    """The fill an exchange would report for `place` (at its limit price unless given)."""
    p = price if price is not None else place.price
    assert p is not None
    return Fill(place.client_order_id, place.side, p, place.amount, D(fee), "USDT", ts_ms)


@cache
def candles(name: str) -> Candles:
    return load_candles(DATA / name)


def resumed_run(
    config: BotConfig, data: Candles, rules: MarketRules, at: int
) -> tuple[BacktestResult, dict[str, Any], dict[str, Any]]:
    """Run to candle `at`, persist the strategy as JSON, restore it into a fresh object and
    finish the run with it. Returns the result, the saved state and the restored object's own
    snapshot taken right after `restore`."""
    first = make_strategy(config, rules)
    bt = Backtest(first, data, rules)
    bt.run("reference", until=at)
    saved = json.loads(json.dumps(first.snapshot()))
    second = make_strategy(config, rules)
    second.restore(saved)
    restored = json.loads(json.dumps(second.snapshot()))
    bt.strategy = second
    return bt.run("reference"), saved, restored
