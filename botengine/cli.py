"""The `bulkhead` command. Subcommands delegate to their component's own CLI."""

from __future__ import annotations

import argparse

SUBCOMMANDS = {
    "exchange-sim": "Binance-compatible exchange simulator (simexchange)",
    "demo": "the whole story: exchange, signer, two bots trading a week, the incident, audit",
    "backtest": "backtest a bot's TOML on OHLCV candles (CSV or freqtrade JSON)",
    "bot": "bots: new (template), add, list, start, stop, status",
    "identity": "identity new: the engine's Ed25519 key pair for the signer",
    "run": "run every enabled bot through the signer (live or paper)",
}


def main(argv: list[str] | None = None) -> int:
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "exchange-sim":
        from simexchange.cli import main as exchange_sim_main

        return exchange_sim_main(args[1:])
    if args and args[0] == "demo":
        from botengine.demo import main as demo_main

        return demo_main(args[1:])
    if args and args[0] == "backtest":
        from botengine.backtest.cli import main as backtest_main

        return backtest_main(args[1:])
    if args[:2] == ["bot", "new"]:
        from botengine.backtest.cli import bot_new

        return bot_new(args[2:])
    if args and args[0] in ("bot", "identity", "run"):
        from botengine.cli_bots import main as bots_main

        return bots_main(args)
    parser = argparse.ArgumentParser(prog="bulkhead")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in SUBCOMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)
    parser.parse_args(args)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
