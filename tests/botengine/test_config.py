"""Bot config files: every refusal names the field, the value and the allowed range."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from botengine.config import (
    BotConfigError,
    bot_config_from_mapping,
    bot_config_to_dict,
    load_bot_config,
    make_strategy,
    parse_bot_config,
)
from botengine.model import MarketRules
from botengine.strategies.dca import DcaStrategy
from botengine.strategies.grid import GridStrategy
from tests.botengine.support import BTC

HEAD = 'name = "b1"\nsymbol = "BTC/USDT"\nkey_id = "main"\n'
DCA = HEAD + 'type = "dca"\n[dca]\nbase_order = "20"\nsafety_order = "20"\ntake_profit_pct = "1"\n'
GRID = HEAD + 'type = "grid"\n[grid]\nlower = "1"\nupper = "2"\ngrids = 5\ninvestment = "100"\n'


def refusal(text: str) -> str:
    with pytest.raises(BotConfigError) as e:
        parse_bot_config(text)
    return str(e.value)


def test_valid_files_load_into_frozen_models_with_defaults() -> None:
    cfg = parse_bot_config(DCA)
    assert cfg.dca is not None and cfg.grid is None and cfg.enabled and cfg.exchange == "binance"
    assert cfg.dca.base_order == Decimal("20") and cfg.dca.max_active_deals == 1
    with pytest.raises(Exception, match="frozen"):
        cfg.name = "other"  # type: ignore[misc]
    assert parse_bot_config(GRID).grid.spacing == "arithmetic"  # type: ignore[union-attr]


def test_a_float_for_money_is_refused_with_a_request_to_quote_it() -> None:
    msg = refusal(DCA.replace('base_order = "20"', "base_order = 20.5"))
    assert 'dca.base_order: 20.5 is a float; write it as a quoted decimal string ("20.5")' in msg


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('take_profit_pct = "1"', 'take_profit_pct = "0"',
         "dca.take_profit_pct: '0' is not allowed; must be a decimal > 0 and <= 1000"),
        ('take_profit_pct = "1"', 'take_profit_pct = "1"\nmax_safety_orders = 101',
         "dca.max_safety_orders: 101 is not allowed; must be an integer from 0 to 100"),
        ('take_profit_pct = "1"', 'take_profit_pct = "1"\ntake_profit = "2"',
         "dca.take_profit: unknown field (value '2'); refused"),
        ('take_profit_pct = "1"', 'take_profit_pct = "1"\nrsi_timeframe = "7m"',
         "dca.rsi_timeframe: '7m' is not allowed; must be one of 1m, 3m"),
        ('take_profit_pct = "1"', 'take_profit_pct = "1"\nstart_condition = "price"',
         "dca.start_price_below: missing; start_condition = \"price\" needs"),
        ('take_profit_pct = "1"', 'take_profit_pct = "1"\nmax_safety_orders = 2\n'
         'active_safety_orders = 3', "dca.active_safety_orders: 3 is not allowed; must be <= "
         "max_safety_orders (2)"),
        ('take_profit_pct = "1"', 'take_profit_pct = "1"\nmax_safety_orders = 10\n'
         'safety_deviation_pct = "10"', "dca.safety_step_scale: 1 is not allowed"),
        ('name = "b1"', 'name = "a-name-longer-than-14"', "name: 'a-name-longer-than-14' is not "
         "allowed; must be 1 to 14 characters"),
        ('symbol = "BTC/USDT"', 'symbol = "btcusdt"', "symbol: 'btcusdt' is not allowed"),
        ('key_id = "main"', 'key_id = "main"\nenabled = "yes"', "enabled: 'yes' is not allowed; "
         "must be true or false"),
        ('key_id = "main"', 'key_id = "main"\nexchange = "ftx"', "exchange: 'ftx' is not allowed"),
        ('type = "dca"', 'type = "grid"', 'grid: missing; type = "grid" needs a [grid] table'),
        ('base_order = "20"', 'base_order = "1e999"', "dca.base_order: '1e999' is not allowed"),
        ('base_order = "20"', 'base_order = "NaN"', "dca.base_order: 'NaN' is not allowed"),
    ],
)  # fmt: skip
def test_bad_dca_fields_name_field_value_and_range(old: str, new: str, expected: str) -> None:
    assert old in DCA
    assert expected in refusal(DCA.replace(old, new))


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('upper = "2"', 'upper = "1"', "grid.upper: 1 is not allowed; must be > lower (1)"),
        ('investment = "100"', 'investment = "100"\nquantity_per_grid = "1"',
         "grid.investment: set exactly one of investment (quote) or quantity_per_grid (base)"),
        ('grids = 5', 'grids = 1',
         "grid.grids: 1 is not allowed; must be an integer from 2 to 500"),
        ('grids = 5', 'grids = 5\nstop_loss = "1.5"', "grid.stop_loss: 1.5 is not allowed; must "
         "be < lower (1)"),
        ('grids = 5', 'grids = 5\nspacing = "log"', "grid.spacing: 'log' is not allowed"),
    ],
)  # fmt: skip
def test_bad_grid_fields_name_field_value_and_range(old: str, new: str, expected: str) -> None:
    assert old in GRID
    assert expected in refusal(GRID.replace(old, new))


def test_both_tables_or_broken_toml_are_refused(tmp_path: Path) -> None:
    both = DCA + '[grid]\nlower = "1"\nupper = "2"\ngrids = 2\ninvestment = "9"\n'
    assert 'grid: not allowed with type = "dca"; remove the table' in refusal(both)
    assert "not valid TOML" in refusal("name = ")
    with pytest.raises(BotConfigError, match="cannot read"):
        load_bot_config(tmp_path / "missing.toml")


def test_make_strategy_builds_the_configured_class_for_the_market() -> None:
    assert isinstance(make_strategy(parse_bot_config(DCA), BTC), DcaStrategy)
    grid = parse_bot_config(GRID.replace('symbol = "BTC/USDT"', 'symbol = "DATA/USDT"'))
    rules = MarketRules("DATA/USDT", Decimal("0.0001"), Decimal("0.1"), Decimal("0.1"), Decimal(5))
    assert isinstance(make_strategy(grid, rules), GridStrategy)
    with pytest.raises(BotConfigError, match="does not match the market rules' symbol"):
        make_strategy(grid, BTC)


def test_the_dict_form_loads_back_unchanged() -> None:
    for text in (DCA, GRID):
        cfg = parse_bot_config(text)
        assert bot_config_from_mapping(bot_config_to_dict(cfg)) == cfg
