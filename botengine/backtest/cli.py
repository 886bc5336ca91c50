"""`bulkhead backtest BOT.toml --data CANDLES` and `bulkhead bot new dca|grid`.

Exit codes: 0 done; 1 the fast and reference paths disagreed (--check); 2 bad input (the
message names the field or file).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from botengine.backtest.templates import TEMPLATES
from botengine.candles import CandleError, Candles, load_candles, symbol_hint
from botengine.config import BotConfig, BotConfigError, load_bot_config, make_strategy
from botengine.model import MarketRules

# Binance spot filters for the sample markets (PRICE_FILTER, LOT_SIZE, NOTIONAL)
KNOWN_RULES: dict[str, tuple[str, str, str, str]] = {
    "BTC/USDT": ("0.01", "0.00001", "0.00001", "5"),
    "ETH/USDT": ("0.01", "0.0001", "0.0001", "5"),
}
STABLE_QUOTES = ("USDT", "USDC", "FDUSD", "BUSD", "TUSD")


def default_rules(symbol: str, candles: Candles) -> MarketRules:
    """Market rules for a backtest: Binance's for known markets, else derived from the data
    (tick = the data's price precision; step so one step is worth <= 0.01 quote at the top)."""
    if symbol in KNOWN_RULES:
        tick, step, min_amount, notional = (Decimal(x) for x in KNOWN_RULES[symbol])
        if candles.decimals <= -tick.as_tuple().exponent:  # type: ignore[operator]
            return MarketRules(symbol, tick, step, min_amount, notional)
    tick = Decimal(1).scaleb(-candles.decimals)
    top = candles.price(candles.high.max())
    exp = int((Decimal("0.01") / top).log10().to_integral_value(ROUND_FLOOR))
    step = Decimal(1).scaleb(min(exp, 0))
    notional = Decimal(5) if symbol.split("/")[1] in STABLE_QUOTES else Decimal(0)
    return MarketRules(symbol, tick, step, step, notional)


def _decimal_arg(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not a decimal") from None
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; must be a decimal >= 0")
    return value


def _date_arg(text: str) -> int:
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2024-12-01") from None
    return int((dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp() * 1000)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bulkhead backtest",
        description="Backtest one bot on OHLCV candles (CSV or freqtrade JSON).",
    )
    p.add_argument("config", type=Path, help="the bot's TOML file")
    p.add_argument("--data", type=Path, required=True, help="candle file (.csv, .json, .gz)")
    p.add_argument("--json", action="store_true", help="print the JSON report on stdout")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("backtests"),
        help="directory for the JSON report, PNG and HTML (default: backtests)",
    )
    p.add_argument("--no-charts", action="store_true", help="skip the PNG and HTML")
    p.add_argument("--path", choices=("fast", "reference"), default="fast",
                   help="fast (jump-ahead, default) or reference (every candle)")  # fmt: skip
    p.add_argument(
        "--check",
        action="store_true",
        help="also run the other path; fail unless fills and deals are identical",
    )
    p.add_argument("--maker-fee", type=_decimal_arg, default=Decimal("0.001"),
                   help="maker fee as a fraction (default 0.001 = 0.1%%)")  # fmt: skip
    p.add_argument("--taker-fee", type=_decimal_arg, default=Decimal("0.001"))
    p.add_argument("--tick-size", type=_decimal_arg)
    p.add_argument("--step-size", type=_decimal_arg)
    p.add_argument("--min-amount", type=_decimal_arg)
    p.add_argument("--min-notional", type=_decimal_arg)
    p.add_argument("--start", type=_date_arg, help="first candle to use (UTC date or time)")
    p.add_argument("--end", type=_date_arg, help="candles before this time (UTC) only")
    p.add_argument("--rows", type=int, default=50, help="deal rows to print (default 50)")
    return p


def _rules(args: argparse.Namespace, config: BotConfig, candles: Candles) -> MarketRules:
    base = default_rules(config.symbol, candles)
    rules = MarketRules(
        config.symbol,
        args.tick_size or base.tick_size,
        args.step_size or base.step_size,
        base.min_amount if args.min_amount is None else args.min_amount,
        base.min_notional if args.min_notional is None else args.min_notional,
    )
    if rules.tick_size <= 0 or rules.step_size <= 0:
        raise BotConfigError("--tick-size and --step-size must be > 0")
    return rules


def _select(candles: Candles, start: int | None, end: int | None) -> Candles:
    import numpy as np

    a = 0 if start is None else int(np.searchsorted(candles.open_ms, start, side="left"))
    b = len(candles) if end is None else int(np.searchsorted(candles.open_ms, end, side="left"))
    if b <= a:
        raise CandleError(f"{candles.source}: no candles between --start and --end")
    return candles if (a, b) == (0, len(candles)) else candles.slice(a, b)


class _LazyProgress:
    """A rich progress bar on stderr that appears only once a run has taken a second."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.started = time.perf_counter()
        self.bar: Any = None
        self.task: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            if time.perf_counter() - self.started < 1.0:
                return
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            counts = TextColumn("{task.completed:,}/{task.total:,} candles")
            self.bar = Progress(
                TextColumn(self.label), BarColumn(), counts, TimeElapsedColumn(),
                console=Console(stderr=True), transient=True,
            )  # fmt: skip
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=total)
        self.bar.update(self.task, completed=done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _run(config: BotConfig, candles: Candles, rules: MarketRules, args: argparse.Namespace,
         mode: str, progress: Callable[[int, int], None] | None) -> Any:  # fmt: skip
    from botengine.backtest.engine import Fees, run_backtest

    fees = Fees(maker=args.maker_fee, taker=args.taker_fee)
    strategy = make_strategy(config, rules)
    return run_backtest(strategy, candles, rules, mode=mode, fees=fees, progress=progress)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    err = sys.stderr
    try:
        config = load_bot_config(args.config)
        candles = _select(load_candles(args.data), args.start, args.end)
        rules = _rules(args, config, candles)
        hint = symbol_hint(args.data)
        if hint is not None and hint != config.symbol:
            print(f"warning: {args.data.name} looks like {hint} data but the bot trades "
                  f"{config.symbol}", file=err)  # fmt: skip
        progress = _LazyProgress(f"backtest {config.name}")
        try:
            result = _run(config, candles, rules, args, args.path, progress)
        finally:
            progress.close()
        if args.check:
            other = "reference" if args.path == "fast" else "fast"
            check = _run(config, candles, rules, args, other, None)
            same = check.fills == result.fills and check.deals == result.deals
            print(f"{args.path} and {other} paths: {'identical' if same else 'DIFFERENT'} "
                  f"({len(result.fills)} fills, {len(result.deals)} deals)", file=err)  # fmt: skip
            if not same:
                return 1
    except (BotConfigError, CandleError) as e:
        print(f"error: {e}", file=err)
        return 2
    from botengine.backtest.report import render_text, to_json, write_reports

    kind = config.type
    report, written = write_reports(
        result, kind, args.out, html=not args.no_charts, png=not args.no_charts
    )
    if args.json:
        print(to_json(report))
    else:
        render_text(report, max_rows=args.rows)
        for path in written:
            print(f"wrote {path}")
    return 0


def bot_new(argv: list[str] | None = None) -> int:
    """`bulkhead bot new dca|grid`: write a commented TOML template for a new bot."""
    p = argparse.ArgumentParser(prog="bulkhead bot new", description=bot_new.__doc__)
    p.add_argument("kind", choices=sorted(TEMPLATES))
    p.add_argument("--name", default=None, help="bot name (1-14 of A-Z a-z 0-9 _ -)")
    p.add_argument("--symbol", default="BTC/USDT")
    p.add_argument("--key-id", default="main", help="the signer key id the bot trades through")
    p.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    args = p.parse_args(argv)
    name = args.name or f"my-{args.kind}"
    text = (
        TEMPLATES[args.kind]
        .replace("{name}", name)
        .replace("{symbol}", args.symbol)
        .replace("{key_id}", args.key_id)
    )
    from botengine.config import parse_bot_config

    try:
        parse_bot_config(text, "template")
    except BotConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.output is None:
        sys.stdout.write(text)
        return 0
    if args.output.exists() and not args.force:
        print(f"error: {args.output} exists; pass --force to overwrite", file=sys.stderr)
        return 2
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}", file=sys.stderr)
    return 0
