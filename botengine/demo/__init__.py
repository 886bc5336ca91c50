"""`bulkhead demo`: the whole story in one command, with three real processes.

1. a throw-away data dir; simexchange replaying real June 2021 candles (BTC, ETH and the thin
   DATA/USDT); an exchange account and key; the signer (key from stdin, policy, the engine's
   identity); the engine with a DCA and a grid bot;
2. a simulated week traded at high speed, shown live;
3. the incident: a rogue client with the engine's identity is refused at every turn, the
   balances do not move, and `freeze --all` stops every bot at once;
4. the auditor: export, verify, report. Exit status 0 only if every check held.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from rich.console import Console
from rich.live import Live

from . import auditor
from .attack import Rogue
from .market import BOTS, MAX_DAYS, DemoSetupError, Window, find_data_dir, write_window
from .result import Check, DemoResult
from .stack import Stack, StepFailed, wait_for
from .summary import KEEP_SPEED, keep_note, print_summary
from .watch import Watcher, count_decisions


class Demo:
    def __init__(self, stack: Stack, console: Console, result: DemoResult) -> None:
        self.stack, self.console, self.result = stack, console, result
        self.watcher: Watcher | None = None
        self.window: Window | None = None
        self.t0 = time.monotonic()

    def rule(self, title: str) -> None:
        self.console.rule(f"{title} [dim](at {time.monotonic() - self.t0:.0f} s)[/]")

    def check(self, step: str, name: str, detail: str, ok: bool, **data: object) -> Check:
        c = Check(step, name, detail, ok, dict(data))
        self.result.checks.append(c)
        mark = "[green]held[/]" if ok else "[red]FAILED[/]"
        self.console.print(f"  {mark}  {name}: {detail}")
        return c

    # --- 1 --------------------------------------------------------------------------------

    def setup(self, data: Path | None, days: int) -> int:
        c, s = self.console, self.stack
        self.rule("1. exchange, signer, engine: three processes")
        window = write_window(find_data_dir(data), s.root, days)
        s.open_account()
        s.setup_signer()
        s.setup_engine()
        s.start(window)
        self.result.pids = s.pids()
        self.check(
            "setup",
            "three processes",
            ", ".join(f"{k} pid {v}" for k, v in self.result.pids.items()),
            all(p.popen.poll() is None for p in s.procs.values()),
        )
        c.print(
            f"simexchange {s.sim_url} replays {', '.join(window.files)} from the real "
            f"candles; signer on {s.bot_socket} (key 'main' sealed; BTC/USDT and ETH/USDT "
            f"only); engine runs {', '.join(BOTS)}"
        )
        self.watcher = Watcher(s)
        self.window = window
        return window.end_ms

    # --- 2 --------------------------------------------------------------------------------

    def trade(self, end_ms: int, hours: int, trade_s: float) -> None:
        c, s, w = self.console, self.stack, self.watcher
        assert w is not None
        self.rule(
            f"2. {hours // 24} day{'s' if hours > 24 else ''} of June 2021 traded at "
            f"{hours * 3600 / trade_s:.0f}x real time"
        )

        def started() -> bool:
            w.poll()
            return all(sum(b["orders"].values()) > 0 for b in w.bots.values())

        wait_for(started, 90, "both bots to place their first orders")
        s.set_speed(Decimal(hours * 3600) / Decimal(str(trade_s)))
        w.start_counting()
        deadline = time.monotonic() + trade_s * 3 + 30
        with Live(w.render("trading"), console=c, refresh_per_second=4) as live:
            while int(w.market.get("serverTime", 0)) < end_ms:
                if time.monotonic() > deadline:
                    raise StepFailed("the simulated week did not end in time")
                time.sleep(0.5)
                w.poll()
                live.update(w.render("trading"))
            s.set_speed(Decimal(0))  # the market stands still for the incident
            wait_for(lambda: _settled(w), 30, "the engine to record its last fills")
            w.stop_counting()
            w.refresh_counts()
            live.update(w.render("over"))
        c.print()
        if self.window is not None:
            c.print(f"[dim]the real market over those days:\n{self.window.describe()}[/]")
        self.result.bots = dict(w.bots)
        for name, b in w.bots.items():
            filled = b["orders"].get("filled", 0)
            self.check(
                "trade",
                f"{name} traded",
                f"{filled} orders filled, {b['closed_deals']} deals closed, realised PnL "
                f"{Decimal(b['realised_pnl']).quantize(Decimal('0.01'))} {b['quote']}; "
                f"{b['status']}",
                filled > 0 and b["status"] == "running",
                filled=filled,
            )

    # --- 3 --------------------------------------------------------------------------------

    def incident(self) -> None:
        s, w = self.stack, self.watcher
        assert w is not None
        self.rule("3. the incident: a stolen engine holding the bot's identity")
        before = s.balances()
        rogue = Rogue(s.bot_socket, str(s.engine_key))
        captured = auditor.newest_engine_order(w.last_export) if w.last_export else None
        try:
            data_price, btc = s.public_price("DATAUSDT"), s.public_price("BTCUSDT")
            for name, attempt in (
                ("pump the thin coin", lambda: rogue.pump(data_price)),
                ("exceed the caps", lambda: rogue.over_cap(btc)),
                ("replay a captured intent", lambda: rogue.replay(captured)),
                ("reach a withdrawal", rogue.withdraw),
            ):
                detail, ok, data = attempt()
                self.check("incident", name, detail, ok, **data)
            after = s.balances()
            moved = {k: str(after.get(k, 0) - v) for k, v in before.items() if after.get(k) != v}
            self.check(
                "incident",
                "balances untouched",
                ", ".join(f"{k} {_short(v)}" for k, v in sorted(after.items()) if v)
                + ("" if not moved else f"; MOVED {moved}"),
                before == after,
                before={k: str(v) for k, v in before.items()},
                after={k: str(v) for k, v in after.items()},
            )
            s.signer("freeze", "--all", "--reason", "demo: engine host stolen")
            rules = rogue.after_freeze(btc)
            self.check(
                "incident",
                "freeze --all",
                f"rogue's next order: {'ALLOWED' if rules is None else ', '.join(rules)}",
                rules == ["global_freeze"],
                rules=rules,
            )
        finally:
            rogue.close()
        s.set_speed(Decimal(7200))  # the market moves again: the bots want to trade

        def paused() -> list[str]:
            w.poll()
            return [
                n
                for n, b in w.bots.items()
                if b["status"] == "paused"
                and "global_freeze" in (b["last_denial"] or {}).get("rules", [])
            ]

        try:
            wait_for(lambda: len(paused()) == len(BOTS), 25, "both bots to be paused")
        except StepFailed:
            pass  # a bot whose orders all rest may not ask for another in time
        s.set_speed(Decimal(0))
        got = paused()
        self.result.bots = dict(w.bots)
        self.check(
            "incident",
            "bots paused by the freeze",
            ", ".join(
                f"{n}: {w.bots[n]['status']}" + (" (global_freeze)" if n in got else "")
                for n in BOTS
            ),
            bool(got),
            paused=got,
        )

    # --- 4 --------------------------------------------------------------------------------

    def audit(self) -> None:
        s = self.stack
        self.rule("4. the auditor")
        export = auditor.export(s)
        verdict = auditor.verify(s, export)
        self.check(
            "audit",
            "audit verified",
            f"{verdict.get('records')} records, signed, chained and anchored",
            verdict.get("ok") is True,
        )
        later = auditor.after_freeze(export)
        creates = [p for p in later if p.get("action") == "create"]
        refused = [
            p
            for p in creates
            if not p.get("allowed")
            and [r["rule_id"] for r in p.get("reasons", [])] == ["global_freeze"]
        ]
        self.check(
            "audit",
            "nothing placed after the freeze",
            f"{len(creates)} new orders asked for after it, {len(refused)} refused with "
            f"global_freeze; {len(later) - len(creates)} cancels let through",
            bool(creates) and len(refused) == len(creates),
        )
        self.result.signer_counts = count_decisions(export)
        report = auditor.report(s, export)
        self.result.report = report
        proofs = len(list((report.parent / "proofs").glob("*"))) if report.is_file() else 0
        self.check(
            "audit",
            "auditor report",
            f"{report.relative_to(s.root)} with {proofs} order proofs (path below)",
            report.is_file() and proofs > 0,
        )


def _settled(w: Watcher) -> bool:
    w.poll()
    return not any(b["orders"].get(k) for b in w.bots.values() for k in ("intent", "submitted"))


def _short(v: Decimal) -> str:
    return f"{v.quantize(Decimal('0.0001')).normalize():f}"


def run_demo(
    console: Console,
    *,
    days: int = MAX_DAYS,
    trade_seconds: float = 40.0,
    keep: bool = False,
    data: Path | None = None,
) -> DemoResult:
    """Run the demo; the processes are stopped at the end unless `keep`."""
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="bulkhead-demo-"))
    stack = Stack(root)
    result = DemoResult(root)
    demo = Demo(stack, console, result)
    try:
        end_ms = demo.setup(data, days)
        demo.trade(end_ms, days * 24, trade_seconds)
        demo.incident()
        demo.audit()
    except (StepFailed, DemoSetupError, OSError) as e:
        demo.check("demo", "demo", f"stopped: {e}", False)
    except Exception as e:  # noqa: BLE001 - any other failure still ends in the summary
        demo.check("demo", "demo", f"stopped: {type(e).__name__}: {e}", False)
    finally:
        if demo.watcher is not None:
            demo.watcher.close()
        if keep:
            result.stop = stack.stop
            with contextlib.suppress(OSError):
                stack.set_speed(Decimal(KEEP_SPEED))
        else:
            stack.stop()
    result.wall_s = time.monotonic() - started
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="bulkhead demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--keep", action="store_true", help="leave the processes and data running")
    p.add_argument(
        "--days",
        type=int,
        default=MAX_DAYS,
        metavar="N",
        help=f"simulated days, ending 11 June 2021 (1..{MAX_DAYS})",
    )
    p.add_argument(
        "--trade-seconds",
        type=float,
        default=40.0,
        metavar="S",
        help="wall-clock seconds the simulated days take (5..600)",
    )
    p.add_argument("--data", type=Path, help="candle directory (default ../shared/data)")
    args = p.parse_args(argv)
    if not 1 <= args.days <= MAX_DAYS:
        p.error(f"--days {args.days} is out of range: allowed 1..{MAX_DAYS}")
    if not 5 <= args.trade_seconds <= 600:
        p.error(f"--trade-seconds {args.trade_seconds} is out of range: allowed 5..600")
    try:
        find_data_dir(args.data)
    except DemoSetupError as e:
        print(f"error: --data: {e}", file=sys.stderr)
        return 2
    console = Console()
    result = run_demo(
        console, days=args.days, trade_seconds=args.trade_seconds, keep=args.keep, data=args.data
    )
    print_summary(console, result)
    if args.keep:
        print(keep_note(result), flush=True)
    return 0 if result.ok else 1


__all__ = ["Check", "DemoResult", "main", "run_demo"]
