"""Backtest reports: a terminal summary and deal table, JSON for machines, a PNG chart.

The numbers come from `metrics` (exact Decimal). Charts convert prices and equity to floats
only to draw them: a picture is not money.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from botengine.backtest.engine import BacktestResult
from botengine.backtest.metrics import Holdings, equity_samples, report_dict

SUMMARY_LABELS = (
    ("realised_pnl", "Realised PnL"),
    ("unrealised_pnl", "Unrealised PnL"),
    ("total_pnl", "Total PnL"),
    ("max_capital_used", "Max capital used"),
    ("return_on_max_capital_pct", "Return on max capital %"),
    ("max_drawdown", "Max drawdown"),
    ("max_drawdown_pct", "Max drawdown % of capital"),
    ("deals_closed", "Deals closed"),
    ("deals_open", "Deals open"),
    ("avg_deal_duration_h", "Avg deal duration (h)"),
    ("safety_orders_used", "Safety orders used"),
    ("max_safety_orders_in_a_deal", "Most safety orders in a deal"),
    ("grid_round_trips", "Grid round trips"),
    ("stopped", "Stopped by"),
    ("fees_paid", "Fees paid"),
    ("fills", "Fills"),
    ("base_held", "Base held at the end"),
    ("last_price", "Last price"),
)
TEXT_COLUMNS = (("deal", "deal"), ("opened", "opened"), ("closed", "closed"),
                ("duration_h", "hours"), ("cost", "cost"), ("pnl", "pnl"), ("pnl_pct", "pnl %"),
                ("safety_orders", "SO"))  # fmt: skip
DEAL_COLUMNS = ("deal", "opened", "closed", "duration_h", "bought", "cost", "proceeds",
                "fees", "pnl", "pnl_pct", "safety_orders")  # fmt: skip


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=False)


def render_text(report: dict[str, Any], *, max_rows: int = 50, console: Any = None) -> None:
    """Print the summary and the deal table (the last `max_rows` deals) with rich."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    s = report["summary"]
    d = s["data"]
    console.print(
        f"[bold]{s['bot']}[/] {s['strategy']} on {s['symbol']}: {d['candles']:,} candles "
        f"{d['first']} .. {d['last']} UTC ({d['source']}; {d['gaps']} gaps, "
        f"{d['missing_candles']} missing candles); {s['mode']} path, "
        f"{s['candles_visited']:,} candles visited in {s['elapsed_s']} s"
    )
    table = Table(show_header=False, box=None)
    for key, label in SUMMARY_LABELS:
        if key in s and s[key] is not None:
            table.add_row(label, str(s[key]))
    console.print(table)
    deals = report["deals"]
    if not deals:
        console.print("no deals")
        return
    shown = deals[-max_rows:]
    more = f", the last {len(shown)} shown" if len(shown) < len(deals) else ""
    cols = [c for c in TEXT_COLUMNS if c[0] != "safety_orders" or "safety_orders_used" in s]
    table = Table(title=f"deals ({len(deals)}{more})", box=box.SIMPLE_HEAD, pad_edge=False)
    for key, head in cols:
        left = key in ("opened", "closed")
        table.add_column(head, justify="left" if left else "right", no_wrap=left)
    for row in shown:
        cells = []
        for key, _ in cols:
            value = row[key]
            if key in ("opened", "closed"):
                value = "open" if value is None else value[2:]  # "24-12-01 10:00"
            elif key in ("cost", "pnl", "pnl_pct"):
                value = f"{Decimal(value):.2f}"
            cells.append("" if value is None else str(value))
        table.add_row(*cells)
    console.print(table)


def _price_line(result: BacktestResult, buckets: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """Close prices thinned to about `buckets` points, keeping each bucket's low and high."""
    c = result.candles
    n = len(c)
    if n <= 2 * buckets:
        return c.end_ms, c.close
    edges = np.linspace(0, n, buckets + 1).astype(np.int64)
    lo_i = np.array([a + int(c.low[a:b].argmin()) for a, b in zip(edges, edges[1:], strict=False)])
    hi_i = np.array([a + int(c.high[a:b].argmax()) for a, b in zip(edges, edges[1:], strict=False)])
    idx = np.unique(np.concatenate((lo_i, hi_i, [n - 1])))
    prices = np.where(np.isin(idx, lo_i), c.low[idx], c.high[idx])
    return c.open_ms[idx], prices


def chart_data(result: BacktestResult) -> dict[str, Any]:
    """Plot-ready series (floats for drawing only)."""
    c = result.candles
    scale = float(c.scale)
    times, prices = _price_line(result)
    eq = equity_samples(result, holdings=Holdings.of(result))
    return {
        "price_t": [int(t) for t in times],
        "price": [int(p) / scale for p in prices],
        "equity_t": [t for t, _ in eq],
        "equity": [float(v) for _, v in eq],
        "fills": [
            {"t": f.ts_ms, "p": float(f.price), "s": f.side, "r": f.role, "a": str(f.amount),
             "id": f.client_order_id}
            for f in result.fills
        ],
    }  # fmt: skip


def write_png(result: BacktestResult, path: Path, data: dict[str, Any] | None = None) -> Path:
    """Equity curve above, price with buy/sell fills below."""
    import matplotlib

    matplotlib.use("Agg")
    from datetime import UTC, datetime

    import matplotlib.pyplot as plt

    data = data or chart_data(result)

    def dates(ms: list[int]) -> list[datetime]:
        return [datetime.fromtimestamp(t / 1000, tz=UTC) for t in ms]

    fig, (ax1, ax2) = plt.subplots(
        2, 1, figsize=(12, 7), sharex=True, gridspec_kw={"height_ratios": [1, 2]}
    )
    ax1.plot(dates(data["equity_t"]), data["equity"], color="#1f77b4", lw=1)
    ax1.axhline(0, color="#888", lw=0.5)
    ax1.set_ylabel(f"equity ({result.symbol.split('/')[1]})")
    ax1.set_title(f"{result.bot}: {result.symbol} backtest ({len(result.candles):,} candles)")
    ax2.plot(dates(data["price_t"]), data["price"], color="#444", lw=0.6)
    for side, color, marker in (("buy", "#2ca02c", "^"), ("sell", "#d62728", "v")):
        pts = [f for f in data["fills"] if f["s"] == side]
        if pts:
            label = f"{side} ({len(pts)})"
            ax2.scatter(dates([f["t"] for f in pts]), [f["p"] for f in pts], s=14,
                        color=color, marker=marker, label=label, zorder=3)  # fmt: skip
    ax2.set_ylabel("price")
    ax2.legend(loc="upper left")
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_reports(
    result: BacktestResult, kind: str, out_dir: Path, *, html: bool = True, png: bool = True
) -> tuple[dict[str, Any], list[Path]]:
    """Write JSON (always), PNG and HTML into `out_dir`; return the report and the paths."""
    from botengine.backtest.html import write_html

    report = report_dict(result, kind)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    path = out_dir / f"{result.bot}.report.json"
    path.write_text(to_json(report) + "\n")
    written.append(path)
    data = chart_data(result) if html or png else None
    if png:
        written.append(write_png(result, out_dir / f"{result.bot}.png", data))
    if html:
        written.append(write_html(report, data or {}, out_dir / f"{result.bot}.html"))
    return report, written
