"""Reports: JSON numbers agree with the deal table and a brute-force equity curve; PNG and HTML
are written and self-contained; the `bulkhead backtest` and `bot new` commands."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

import pytest

from botengine.backtest import metrics
from botengine.backtest.cli import default_rules
from botengine.backtest.engine import BacktestResult, run_backtest
from botengine.backtest.metrics import max_drawdown, report_dict
from botengine.backtest.report import write_reports
from botengine.cli import main as bulkhead
from botengine.config import load_bot_config, make_strategy
from tests.botengine.support import DATA, D, candles, dca_config, grid_config

ETH = DATA / "ETH_USDT-1h.json"


def eth_dca() -> BacktestResult:
    data = candles("ETH_USDT-1h.json")
    cfg = dca_config(symbol="ETH/USDT", base_order="50", safety_order="50", max_safety_orders=4,
                     active_safety_orders=2, safety_deviation_pct="3", safety_volume_scale="1.5",
                     take_profit_pct="2.5")  # fmt: skip
    rules = default_rules("ETH/USDT", data)
    return run_backtest(make_strategy(cfg, rules), data, rules)


def eth_grid() -> BacktestResult:
    data = candles("ETH_USDT-1h.json").slice(0, 1_500)
    cfg = grid_config(symbol="ETH/USDT", lower="700", upper="1500", grids=16, investment="4000")
    rules = default_rules("ETH/USDT", data)
    return run_backtest(make_strategy(cfg, rules), data, rules)


def brute_force_drawdown(result: BacktestResult) -> Decimal:
    """Equity at every candle close, one candle at a time, with a running peak."""
    c = result.candles
    quote = base = peak = worst = Decimal(0)
    k = 0
    for i in range(len(c)):
        while k < len(result.fills) and result.fills[k].candle <= i:
            f = result.fills[k]
            sign = 1 if f.side == "buy" else -1
            quote -= sign * f.price * f.amount + f.fee
            base += sign * f.amount
            k += 1
        equity = quote + base * c.price(c.close[i])
        peak = max(peak, equity)
        worst = max(worst, peak - equity)
    return worst


@pytest.mark.parametrize("make", [eth_dca, eth_grid])
def test_max_drawdown_equals_a_brute_force_walk_over_every_close(
    make: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = make()  # type: ignore[operator]
    assert result.fills
    expected = brute_force_drawdown(result)
    assert max_drawdown(result) == expected > 0
    monkeypatch.setattr(metrics, "OFFSET_LIMIT", 0)  # the per-stretch fallback agrees too
    assert max_drawdown(result) == expected


def test_json_summary_numbers_agree_with_the_deal_table_and_the_fills() -> None:
    result = eth_dca()
    report = json.loads(json.dumps(report_dict(result, "dca")))
    s, rows = report["summary"], report["deals"]
    closed = [r for r in rows if r["status"] == "closed"]
    assert s["deals_closed"] == len(closed) == len(result.deals) > 10
    assert s["deals_open"] == len(rows) - len(closed)
    exact = sum((d.realised_pnl for d in result.deals), Decimal(0))
    assert D(s["realised_pnl"]) == exact.quantize(D("1e-8"))
    assert abs(sum(D(r["pnl"]) for r in closed) - exact) <= D("1e-8") * len(closed)
    assert abs(D(s["total_pnl"]) - D(s["realised_pnl"]) - D(s["unrealised_pnl"])) <= D("2e-8")
    assert D(s["fees_paid"]) == sum(f.fee for f in result.fills)
    assert D(s["fees_paid"]) == sum(D(r["fees"]) for r in rows)
    assert s["safety_orders_used"] == sum(r["safety_orders"] for r in rows)
    assert s["safety_orders_used"] == sum(f.role.startswith("safety") for f in result.fills)
    assert s["fills"] == len(result.fills) and s["strategy"] == "dca"
    expected = D(s["total_pnl"]) / D(s["max_capital_used"]) * 100
    assert abs(D(s["return_on_max_capital_pct"]) - expected) < D("1e-6")
    hours = [(d.closed_ms - d.opened_ms) / 3_600_000 for d in result.deals if d.closed_ms]
    assert abs(float(s["avg_deal_duration_h"]) - sum(hours) / len(hours)) < 0.01
    assert s["data"]["gaps"] == 4 and s["data"]["missing_candles"] == 7


def test_png_and_a_self_contained_html_page_are_written(tmp_path: Path) -> None:
    result = eth_grid()
    report, paths = write_reports(result, "grid", tmp_path)
    names = sorted(p.name for p in paths)
    assert names == ["g.html", "g.png", "g.report.json"]
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "g.html").read_text()
    assert not re.search(r"https?://|<script\s+src|<link|@import|url\(", page)
    data = json.loads(re.search(r'id="data">(.*?)</script>', page, re.S)[1])  # type: ignore[index]
    assert len(data["fills"]) == len(result.fills) and data["price"] and data["equity"]
    assert report["summary"]["grid_round_trips"] == result.extra["round_trips"] > 0
    assert json.loads((tmp_path / "g.report.json").read_text()) == report


def write_config(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "bot.toml"
    p.write_text('name = "eth"\nsymbol = "ETH/USDT"\nkey_id = "k"\n' + body)
    return p


DCA_TOML = """type = "dca"
[dca]
base_order = "40"
safety_order = "40"
max_safety_orders = 3
safety_deviation_pct = "2"
take_profit_pct = "2"
"""


def test_backtest_command_prints_json_checks_both_paths_and_writes_charts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(tmp_path, DCA_TOML)
    out = tmp_path / "out"
    code = bulkhead(["backtest", str(cfg), "--data", str(ETH), "--json", "--check",
                     "--out", str(out), "--maker-fee", "0.00075"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)
    assert report["summary"]["deals_closed"] > 10 and report["summary"]["bot"] == "eth"
    assert "fast and reference paths: identical" in captured.err
    assert {p.name for p in out.iterdir()} == {"eth.html", "eth.png", "eth.report.json"}


def test_backtest_command_refuses_a_float_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(tmp_path, DCA_TOML.replace('take_profit_pct = "2"', "take_profit_pct = 2.0"))
    code = bulkhead(["backtest", str(cfg), "--data", str(ETH), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "dca.take_profit_pct: 2.0 is a float; write it as a quoted decimal string" in err


def test_backtest_command_reports_a_bad_candle_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(tmp_path, DCA_TOML)
    bad = tmp_path / "c.csv"
    bad.write_text("open,high,low,close\n1,1,1,1\n")
    assert bulkhead(["backtest", str(cfg), "--data", str(bad)]) == 2
    assert "no time column" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["dca", "grid"])
def test_bot_new_writes_a_template_that_loads(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / f"{kind}.toml"
    args = ["bot", "new", kind, "--name", "mybot", "--symbol", "ETH/USDT", "-o", str(path)]
    assert bulkhead(args) == 0
    config = load_bot_config(path)
    assert (config.name, config.type, config.symbol) == ("mybot", kind, "ETH/USDT")
    assert path.read_text().count("#") > 10  # commented
    assert bulkhead(args) == 2 and "exists" in capsys.readouterr().err
    assert bulkhead([*args, "--force"]) == 0


def test_the_progress_bar_appears_only_after_a_second() -> None:
    from botengine.backtest.cli import _LazyProgress

    bar = _LazyProgress("x")
    bar(10, 100)
    assert bar.bar is None  # a short run stays silent
    bar.started -= 2.0  # as if the run had started two seconds ago
    bar(20, 100)
    assert bar.bar is not None and bar.bar.tasks[0].completed == 20
    bar.close()
