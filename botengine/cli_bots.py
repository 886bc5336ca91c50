"""`bulkhead bot add|list|start|stop|status`, `bulkhead identity new` and `bulkhead run`.

Every command takes `--config engine.toml` (default: ./engine.toml, or ./engine-data when that
file does not exist) and prints human output, or JSON with `--json`. Bad input is one line on
stderr naming the field, the value and the allowed range, exit status 2, and changes nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from nacl.signing import SigningKey

from botengine import store as st
from botengine.config import NAME_RE, BotConfigError, load_bot_config
from botengine.configfields import show
from botengine.engine_config import (
    CONFIG_FILENAME,
    EngineConfig,
    EngineConfigError,
    load_engine_config,
)
from botengine.status import bot_status, format_status


class UsageError(Exception):
    """Bad input: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def _one_line(text: str) -> str:
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _config(args: argparse.Namespace, *, need_file: bool = False) -> EngineConfig:
    path = Path(args.config) if args.config else Path(CONFIG_FILENAME)
    if args.config or path.exists() or need_file:
        return load_engine_config(path)
    return EngineConfig()  # no engine.toml here: the default data dir ./engine-data


def _store(args: argparse.Namespace) -> st.Store:
    cfg = _config(args)
    return st.Store(cfg.db_url(), cfg.data_dir)


def _name(value: str) -> str:
    if not NAME_RE.match(value):
        raise UsageError(
            f"NAME: {show(value)} is not allowed; must be 1 to 14 characters A-Z a-z 0-9 _ - "
            "(starting with a letter or digit)"
        )
    return value


def _out(args: argparse.Namespace, text: str, data: Any) -> None:
    print(json.dumps(data, sort_keys=True) if args.json else text)


# --- commands -------------------------------------------------------------------------------


def cmd_add(args: argparse.Namespace) -> None:
    path = Path(args.file)
    config = load_bot_config(path)  # validates every field before anything is stored
    text = path.read_text(encoding="utf-8")
    store = _store(args)
    try:
        with store.write() as s:
            row = st.add_bot(s, config, text, st.now_ms())
            status = row.status
    finally:
        store.close()
    _out(
        args,
        f"added bot {config.name} ({config.type} {config.symbol}, signer key {config.key_id}): "
        f"{status}",
        {"name": config.name, "type": config.type, "symbol": config.symbol, "status": status},
    )


def cmd_list(args: argparse.Namespace) -> None:
    store = _store(args)
    try:
        with store.read() as s:
            rows = [
                {
                    "name": r.name,
                    "type": r.bot_type,
                    "symbol": r.symbol,
                    "key_id": r.key_id,
                    "status": r.status,
                    "last_denial": st.denial_of(r),
                }
                for r in st.list_bots(s)
            ]
    finally:
        store.close()
    lines = [f"{'NAME':<15}{'TYPE':<6}{'SYMBOL':<14}{'KEY':<12}STATUS"]
    for r in rows:
        denial = r["last_denial"]
        why = f" ({', '.join(denial['rules'])})" if denial and r["status"] == "paused" else ""
        lines.append(
            f"{r['name']:<15}{r['type']:<6}{r['symbol']:<14}{r['key_id']:<12}{r['status']}{why}"
        )
    _out(args, "\n".join(lines) if rows else "no bots yet (bulkhead bot add FILE)", rows)


def _set(args: argparse.Namespace, status: str) -> None:
    name = _name(args.name)
    store = _store(args)
    try:
        with store.write() as s:
            before = st.get_bot(s, name).status
            st.set_status(s, name, status, st.now_ms())
            active = len(st.orders_of(s, name, ["open", "submitted"]))
    finally:
        store.close()
    note = ""
    if status == "stopped" and active:
        note = f"; its {active} open orders stay on the exchange"
    if status == "running" and before == "paused":
        note = "; orders the signer denied will be sent again"
    _out(args, f"bot {name}: {before} -> {status}{note}", {"name": name, "status": status})


def cmd_status(args: argparse.Namespace) -> None:
    name = _name(args.name)
    store = _store(args)
    try:
        with store.read() as s:
            info = bot_status(s, name)
    finally:
        store.close()
    _out(args, format_status(info), info)


def cmd_identity_new(args: argparse.Namespace) -> None:
    path = Path(args.out)
    pub_path = Path(str(path) + ".pub")
    if path.exists() or pub_path.exists():
        raise UsageError(f"--out: {path} exists; refusing to overwrite an identity")
    if not path.parent.is_dir():
        raise UsageError(f"--out: directory {path.parent} does not exist")
    key = SigningKey.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(bytes(key).hex() + "\n")
    pub = key.verify_key.encode().hex()
    pub_path.write_text(pub + "\n")
    _out(
        args,
        f"private key: {path} (mode 0600; keep it on the engine host)\npublic key:  {pub}\n"
        f"register it on the signer host:  bulkhead-signer bots add NAME --pubkey {pub} "
        "--keys KEY_ID",
        {"private_key_file": str(path), "public_key_file": str(pub_path), "public_key": pub},
    )


def cmd_run(args: argparse.Namespace) -> int:
    from botengine.runtime import run_engine

    return run_engine(_config(args, need_file=True))


# --- parser ---------------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser, json_flag: bool = True) -> None:
    p.add_argument("--config", help=f"engine config (default ./{CONFIG_FILENAME})")
    if json_flag:
        p.add_argument("--json", action="store_true", help="machine-readable output")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="bulkhead", description="Bulkhead bots: live and paper trading")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    bot = sub.add_parser("bot", help="manage bots in the engine database")
    bsub = bot.add_subparsers(dest="bot_command", required=True, parser_class=_Parser)
    a = bsub.add_parser("add", help="validate a bot's TOML and add it")
    a.add_argument("file")
    a.set_defaults(fn=cmd_add)
    ls = bsub.add_parser("list", help="every bot and its status")
    ls.set_defaults(fn=cmd_list)
    for verb, status in (("start", "running"), ("stop", "stopped")):
        sp = bsub.add_parser(verb, help=f"{verb} a bot (a running engine picks it up)")
        sp.add_argument("name")
        sp.set_defaults(fn=lambda args, status=status: _set(args, status))
    sp = bsub.add_parser("status", help="open deal, orders, PnL, last denial")
    sp.add_argument("name")
    sp.set_defaults(fn=cmd_status)
    for sp in (a, ls, *[bsub.choices[v] for v in ("start", "stop", "status")]):
        _common(sp)
    ident = sub.add_parser("identity", help="the engine's Ed25519 identity")
    isub = ident.add_subparsers(dest="identity_command", required=True, parser_class=_Parser)
    new = isub.add_parser("new", help="write a key pair (0600); print the public key")
    new.add_argument("--out", required=True, help="private key file to create")
    new.add_argument("--json", action="store_true")
    new.set_defaults(fn=cmd_identity_new)
    run = sub.add_parser("run", help="run every enabled bot until SIGTERM/SIGINT")
    _common(run, json_flag=False)
    run.set_defaults(fn=cmd_run)
    return p


def main(argv: list[str]) -> int:
    try:
        args = build_parser().parse_args(argv)
        result = args.fn(args)
    except (UsageError, BotConfigError, EngineConfigError, st.StoreError) as e:
        print(f"error: {_one_line(str(e))}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e.filename or ''}: {e.strerror}", file=sys.stderr)
        return 2
    return int(result or 0)
