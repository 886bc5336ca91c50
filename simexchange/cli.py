"""`bulkhead exchange-sim serve | account new`."""

from __future__ import annotations

import argparse
import json
import os
import signal
import stat
import sys
import threading
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

from simexchange.auth import normalize_ed25519_public_key, random_token
from simexchange.config import (
    FileSource,
    SimConfig,
    SymbolConfig,
    SyntheticSource,
    load_accounts,
    symbol_config,
    symbol_from_filename,
)
from simexchange.server import SimExchange

DEFAULT_SYNTHETIC = ("BTCUSDT=60000", "ETHUSDT=3000", "DATAUSDT=0.07")


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not a decimal number") from None
    if not value.is_finite():
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _amount(text: str, what: str) -> Decimal:
    try:
        return _decimal(text)
    except argparse.ArgumentTypeError as exc:
        raise ValueError(f"{what}: {exc}") from None


def _start_ms(text: str) -> int:
    if text.isdigit():
        return int(text)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--start {text!r}: use epoch ms or ISO-8601") from None
    return int(dt.replace(tzinfo=dt.tzinfo or UTC).timestamp() * 1000)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bulkhead exchange-sim", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the simulator until interrupted")
    s.add_argument(
        "--data",
        nargs="+",
        action="extend",
        default=[],
        metavar="[SYMBOL=]FILE",
        help="replay candles (freqtrade JSON or CSV); symbol from the file name if omitted",
    )
    s.add_argument(
        "--synthetic",
        action="append",
        default=[],
        metavar="SYMBOL=PRICE",
        help="a seeded synthetic market (default when no --data: BTC, ETH, DATA)",
    )
    s.add_argument("--seed", type=int, default=7)
    s.add_argument("--speed", type=_decimal, default=Decimal(1), help="N x real time (0 = frozen)")
    s.add_argument("--port", type=int, default=8765)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--start", type=_start_ms, help="simulated start (epoch ms or ISO-8601)")
    s.add_argument("--accounts", type=Path, help="ACCOUNTS.toml to seed accounts and keys")
    s.add_argument("--state", type=Path, help="SQLite file so accounts survive a restart")
    s.add_argument("--admin", action="store_true", help="enable the /_sim/ admin endpoints")
    s.add_argument("--maker-fee", type=_decimal, default=Decimal("0.001"))
    s.add_argument("--taker-fee", type=_decimal, default=Decimal("0.001"))
    s.add_argument("--slippage-bps", type=_decimal, default=Decimal(0))
    a = sub.add_parser("account", help="manage ACCOUNTS.toml")
    asub = a.add_subparsers(dest="account_command", required=True)
    n = asub.add_parser("new", help="add an account with a new key; prints the HMAC secret once")
    n.add_argument("--accounts", type=Path, required=True, help="ACCOUNTS.toml (created 0600)")
    n.add_argument("--name", help="account name (default: generated)")
    n.add_argument("--balance", action="append", default=[], metavar="ASSET=AMOUNT")
    n.add_argument(
        "--ed25519-public-key",
        type=Path,
        metavar="PEM",
        help="register this Ed25519 public key instead of generating an HMAC secret",
    )
    n.add_argument("--can-withdraw", action="store_true")
    n.add_argument("--no-trade", action="store_true")
    n.add_argument("--ip", action="append", default=[], metavar="CIDR", help="IP allow-list")
    return p  # fmt: skip


def _symbols(args: argparse.Namespace) -> tuple[SymbolConfig, ...]:
    out: list[SymbolConfig] = []
    for item in args.data:
        symbol, sep, path = item.partition("=")
        file = Path(path if sep else item)
        out.append(
            symbol_config(symbol if sep else symbol_from_filename(file), FileSource(path=file))
        )
    synthetic = args.synthetic or ([] if args.data else list(DEFAULT_SYNTHETIC))
    for i, item in enumerate(synthetic):
        symbol, sep, price = item.partition("=")
        if not sep:
            raise ValueError(f"--synthetic {item!r}: use SYMBOL=PRICE")
        source = SyntheticSource(start_price=_amount(price, item), seed=args.seed + i)
        out.append(symbol_config(symbol, source))
    return tuple(out)


def serve(args: argparse.Namespace) -> int:
    config = SimConfig(
        symbols=_symbols(args), host=args.host, port=args.port, speed=args.speed,
        start_ms=args.start, admin=args.admin, maker_fee=args.maker_fee,
        taker_fee=args.taker_fee, slippage_bps=args.slippage_bps, state_path=args.state,
        accounts=load_accounts(args.accounts) if args.accounts else (),
    )  # fmt: skip
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    sim = SimExchange(config).start()
    names = ", ".join(s.symbol for s in config.symbols)
    print(f"simexchange serving {sim.base_url} (speed {config.speed}; {names})", flush=True)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        sim.stop()
    return 0


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def account_new(args: argparse.Namespace) -> int:
    path: Path = args.accounts
    existing = load_accounts(path) if path.exists() else ()
    name = args.name or f"account-{random_token(8)}"
    if any(a.name == name for a in existing):
        raise ValueError(f"{path}: account {name!r} already exists")
    balances = []
    for item in args.balance:
        asset, sep, amount = item.partition("=")
        if not sep or not asset.isalnum():
            raise ValueError(f"--balance {item!r}: use ASSET=AMOUNT")
        balances.append(f"{asset.upper()} = {_toml_str(str(_amount(amount, item)))}")
    api_key, secret = random_token(64), None
    lines = ["", "[[accounts]]", f"name = {_toml_str(name)}", "", "[accounts.balances]", *balances]
    lines += ["", "[[accounts.keys]]", f"api_key = {_toml_str(api_key)}"]
    if args.ed25519_public_key:
        pem = normalize_ed25519_public_key(args.ed25519_public_key.read_text())
        lines += ['type = "ED25519"', f"public_key = {_toml_str(pem)}"]
    else:
        secret = random_token(64)
        lines += ['type = "HMAC"', f"secret = {_toml_str(secret)}"]
    lines += [
        f"can_trade = {str(not args.no_trade).lower()}",
        f"can_withdraw = {str(args.can_withdraw).lower()}",
        f"ip_allow = [{', '.join(_toml_str(ip) for ip in args.ip)}]",
    ]
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as fh:
        fh.write("\n".join(lines) + "\n")
    if os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        print(f"warning: {path} is readable by group/others; chmod 600 it", file=sys.stderr)
    print(f"account: {name}")
    print(f"api_key: {api_key}")
    if secret is not None:
        print(f"secret: {secret}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return serve(args)
        return account_new(args)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
