"""`bulkhead-signer`: the operator's command line on the signer host.

Secrets (exchange secrets, passphrases) are read from a no-echo prompt or standard input only,
never from argv or the environment. Every command prints human output, or JSON with --json;
errors are one clear line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from signer import audit as auditmod
from signer import state
from signer.cli_audit import add_audit_commands
from signer.cli_proposal import add_parsers as add_proposal_commands
from signer.cli_proposal import parse_quorum_flags
from signer.core import now_ms
from signer.db import read_session, write_txn
from signer.errors import ConfigError, SignerError
from signer.hardening import harden_process
from signer.keystore import purge_stale_pages
from signer.prompt import read_secret
from signer.server import (
    AUDIT_PUBKEY_FILE,
    MasterKeySource,
    OpenSigner,
    SignerServer,
    initialize,
    open_signer,
)

DEFAULT_DATA_DIR = Path("signer-data")


def actor() -> str:
    return f"cli:{getpass.getuser()}"


def out(args: argparse.Namespace, human: str, data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True) if args.json else human)


def master_source(args: argparse.Namespace) -> MasterKeySource:
    if args.master_key_file:
        return MasterKeySource(keyfile=Path(args.master_key_file))
    return MasterKeySource(passphrase=read_secret("Master passphrase: ").encode())


def opened(args: argparse.Namespace) -> OpenSigner:
    return open_signer(Path(args.data_dir), master_source(args))


# --- init / identity ------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> None:
    operators = []
    for spec in args.operator or []:
        name, _, path = spec.partition("=")
        operators.append((state.check_id("operator", name), read_pubkey(path)))
    rules = parse_quorum_flags(args.quorum or [], args.time_lock or [], len(operators))
    if args.master_key_file and args.create_key_file:
        from signer.keystore import MasterKey

        MasterKey.generate_keyfile(Path(args.master_key_file))
    source = master_source(args)
    pub = initialize(
        Path(args.data_dir),
        source,
        kdf_profile=args.kdf,
        operators=operators,
        actor=actor(),
    )
    if rules:  # M-of-N per action class, recorded right after the init record
        op = open_signer(Path(args.data_dir), source)
        try:
            op.actions.configure_quorum(actor(), now_ms(), rules)
        finally:
            op.close()
    path = Path(args.data_dir) / AUDIT_PUBKEY_FILE
    out(
        args,
        f"initialised {args.data_dir}\naudit public key: {pub} (also in {path})",
        {"data_dir": args.data_dir, "audit_public_key": pub, "audit_pubkey_file": str(path)},
    )


def read_pubkey(spec: str) -> bytes:
    """An Ed25519 public key given as 64 hex chars or a file holding them."""
    text = spec.strip()
    if len(text) != 64 and Path(text).exists():
        text = Path(text).read_text().strip()
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ConfigError(
            f"public key: {spec[:80]!r} is not 64 hex characters or a file holding them"
        )
    return raw


def cmd_identity_generate(args: argparse.Namespace) -> None:
    """Make an Ed25519 identity (bot or operator): private key file 0600, public key printed."""
    path = Path(args.out)
    if path.exists():
        raise ConfigError(f"--out: {path} exists; refusing to overwrite an identity")
    key = SigningKey.generate()
    path.touch(mode=0o600)
    path.write_text(bytes(key).hex() + "\n")
    pub = key.verify_key.encode().hex()
    Path(str(path) + ".pub").write_text(pub + "\n")
    out(
        args,
        f"private key: {path} (keep it secret)\npublic key:  {pub}",
        {"private_key_file": str(path), "public_key": pub},
    )


# --- keys -----------------------------------------------------------------------------------


def key_json(k: Any) -> dict[str, Any]:
    return {
        "key_id": k.key_id,
        "exchange": k.exchange,
        "kind": k.kind,
        "api_key": k.api_key,
        "fingerprint": k.fingerprint,
        "status": k.status,
        "generation": k.generation,
        "public_key_pem": k.public_key_pem,
    }


def cmd_keys(args: argparse.Namespace) -> None:
    if args.keys_cmd in ("add", "rotate", "generate"):
        harden_process()  # secrets pass through this process: no core dumps, no ptrace
    op = opened(args)
    ks, now = op.keystore, now_ms()
    try:
        if args.keys_cmd == "list":
            with read_session(op.engine) as s:
                keys = ks.list(s)
            lines = [
                f"{k.key_id:20} {k.exchange:10} {k.kind:8} {k.status:8} fp={k.fingerprint}"
                for k in keys
            ] or ["(no keys)"]
            out(args, "\n".join(lines), [key_json(k) for k in keys])
            return
        with write_txn(op.engine) as s:
            if args.keys_cmd == "add":
                secret = read_secret("API secret: ")
                password = read_secret("API passphrase: ") if args.with_password else None
                info = ks.add_hmac(s, args.key_id, args.exchange, args.api_key, secret, password)
            elif args.keys_cmd == "generate":
                info = ks.generate_ed25519(s, args.key_id, args.exchange, args.api_key or "")
            elif args.keys_cmd == "set-api-key":
                info = ks.set_api_key(s, args.key_id, args.api_key)
            elif args.keys_cmd == "rotate":
                secret = None if args.generate else read_secret("New API secret: ")
                password = read_secret("New API passphrase: ") if args.with_password else None
                info = ks.rotate(
                    s,
                    args.key_id,
                    api_key=args.api_key,
                    secret=secret,
                    password=password,
                    generate=args.generate,
                )
            else:  # remove
                info = ks.remove(s, args.key_id)
            held = None  # under a keys quorum new material waits for a proposal (quorum.py)
            if args.keys_cmd != "remove":
                held = op.actions.hold_key_if_needed(
                    s, actor(), now, info.key_id, info.generation, info.fingerprint
                )
                info = ks.get(s, info.key_id) if held else info
            op.audit.append(
                s,
                "admin",
                {
                    "action": f"keys_{args.keys_cmd}".replace("-", "_"),
                    "actor": actor(),
                    "key_id": info.key_id,
                    "exchange": info.exchange,
                    "kind": info.kind,
                    "fingerprint": info.fingerprint,
                    "generation": info.generation,
                },
                now,
            )
        if args.keys_cmd in ("remove", "rotate"):
            purge_stale_pages(op.engine)  # no old ciphertext left behind in the SQLite WAL
        human = (
            f"{args.keys_cmd}: {info.key_id} ({info.exchange}, {info.kind}) "
            f"status={info.status} fp={info.fingerprint}"
        )
        human += f"\n{held}" if held else ""
        if info.public_key_pem and args.keys_cmd in ("generate", "rotate"):
            human += (
                "\nRegister this public key at the exchange, then run "
                f"`bulkhead-signer keys set-api-key {info.key_id} API_KEY`:\n{info.public_key_pem}"
            )
        out(args, human, key_json(info))
    finally:
        op.close()


# --- policy, bots, freeze -----------------------------------------------------------------


def cmd_policy(args: argparse.Namespace) -> None:
    op = opened(args) if args.policy_cmd == "set" else None
    try:
        if op is not None:
            text = Path(args.file).read_text(encoding="utf-8")
            r = op.actions.set_policy(actor(), now_ms(), args.key_id, text, args.expected_version)
            out(
                args,
                r.message,
                {"key_id": args.key_id, "version": r.policy_version, "audit_seq": r.audit_seq},
            )
            return
        from signer.config import load_config
        from signer.db import make_engine
        from signer.server import database_url

        data_dir = Path(args.data_dir)
        engine = make_engine(database_url(data_dir, load_config(data_dir).database_url))
        with read_session(engine) as s:
            cur = state.current_policy(s, args.key_id)
        engine.dispose()
        if cur is None:
            raise ConfigError(f"key_id: {args.key_id!r} has no policy (everything is denied)")
        policy = json.loads(cur.policy_json)
        human = f"key {args.key_id} policy version {cur.version}\n" + json.dumps(
            policy, indent=2, sort_keys=True
        )
        out(args, human, {"key_id": args.key_id, "version": cur.version, "policy": policy})
    finally:
        if op is not None:
            op.close()


def cmd_bots(args: argparse.Namespace) -> None:
    op = opened(args)
    try:
        if args.bots_cmd == "add":
            keys = [k for k in args.keys.split(",") if k]
            r = op.actions.register_bot(
                actor(), now_ms(), args.bot_id, read_pubkey(args.pubkey), keys
            )
            out(args, r.message, {"bot_id": args.bot_id, "key_ids": keys, "audit_seq": r.audit_seq})
        elif args.bots_cmd == "revoke":
            r = op.actions.revoke_bot(actor(), now_ms(), args.bot_id)
            out(args, r.message, {"bot_id": args.bot_id, "audit_seq": r.audit_seq})
        else:
            with read_session(op.engine) as s:
                bots = state.list_bots(s)
            rows = [
                {
                    "bot_id": b.bot_id,
                    "status": b.status,
                    "public_key": b.public_key_hex,
                    "key_ids": list(b.key_ids),
                }
                for b in bots
            ]
            human = (
                "\n".join(
                    f"{b.bot_id:20} {b.status:8} keys={','.join(b.key_ids)} "
                    f"pub={b.public_key_hex[:16]}..."
                    for b in bots
                )
                or "(no bots)"
            )
            out(args, human, rows)
    finally:
        op.close()


def cmd_freeze(args: argparse.Namespace, lift: bool) -> None:
    if bool(args.all) == bool(args.key_id):
        raise ConfigError("give exactly one of KEY_ID or --all")
    op = opened(args)
    try:
        fn = op.actions.unfreeze if lift else op.actions.freeze
        r = fn(actor(), now_ms(), None if args.all else args.key_id, args.reason or "")
        out(args, r.message, {"message": r.message, "audit_seq": r.audit_seq})
    finally:
        op.close()


# --- audit ----------------------------------------------------------------------------------


def cmd_audit(args: argparse.Namespace) -> None:
    if args.audit_cmd == "verify":
        try:
            pub = auditmod.load_public_key(Path(args.pubkey))
        except auditmod.AuditFormatError as e:
            raise ConfigError(f"--pubkey: {e}") from None
        try:
            cps = [auditmod.read_checkpoint_file(Path(p)) for p in args.checkpoint or []]
        except auditmod.AuditFormatError as e:
            raise ConfigError(f"--checkpoint: {e}") from None
        report = auditmod.verify_file(Path(args.export), pub, cps)
        out(
            args,
            str(report),
            {
                "ok": report.ok,
                "records": report.records,
                "first_bad_seq": report.first_bad_seq,
                "first_bad_line": report.first_bad_line,
                "reason": report.reason,
            },
        )
        if not report.ok:
            sys.exit(1)
        return
    op = opened(args)
    try:
        if args.audit_cmd == "export":
            with read_session(op.engine) as s, open(args.out, "w", encoding="utf-8") as fh:
                n = op.audit.export_jsonl(s, fh)
            out(args, f"exported {n} records to {args.out}", {"records": n, "out": args.out})
        else:  # checkpoint
            cp = op.actions.checkpoint(now_ms())
            if args.out:
                Path(args.out).write_text(cp.to_json() + "\n")
            out(
                args,
                f"checkpoint: size {cp.tree_size} head {cp.head_hash}",
                json.loads(cp.to_json()),
            )
    finally:
        op.close()


# --- tls -------------------------------------------------------------------------------------


def cmd_tls(args: argparse.Namespace) -> None:
    """`tls init`: CA, server and client certificates for mutual TLS (see signer/tlsinit.py)."""
    from signer import tlsinit

    bundle = tlsinit.init_tls(
        Path(args.out),
        server_names=args.server_name,
        clients=args.client,
        days=args.days,
        force=args.force,
    )
    out(args, tlsinit.describe(bundle), tlsinit.bundle_json(bundle))


# --- serve ----------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> None:
    report = harden_process()
    op = opened(args)
    server = SignerServer(op, insecure_dev=args.insecure_dev)
    addresses = server.start()
    logging.getLogger("bulkhead.signer").info("hardening: %s", report.summary())
    print(json.dumps({"serving": addresses, "pid": __import__("os").getpid()}), flush=True)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    # Signal handlers run on the main thread only; a timed wait lets it notice them promptly.
    while not done.wait(0.5):
        pass
    server.stop()
    op.close()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bulkhead-signer", description=__doc__.splitlines()[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    common.add_argument(
        "--master-key-file",
        help="32-byte key file outside the data dir "
        "(default: ask for the passphrase on a prompt / stdin)",
    )
    common.add_argument("--json", action="store_true", help="machine-readable output")
    sub = p.add_subparsers(dest="cmd", required=True)

    sp = sub.add_parser("init", parents=[common], help="create data dir, keystore, audit key")
    sp.add_argument("--create-key-file", action="store_true", help="generate --master-key-file")
    sp.add_argument("--kdf", choices=["moderate", "interactive"], default="moderate")
    sp.add_argument("--operator", action="append", metavar="NAME=PUBKEY_FILE")
    sp.add_argument(
        "--quorum",
        action="append",
        metavar="M|CLASS=M",
        help="operator signatures a loosening needs (classes: policy, unfreeze, bots, keys, "
        "operators); default min(2, operators)",
    )
    sp.add_argument("--time-lock", action="append", metavar="CLASS=SECONDS")
    sp.set_defaults(fn=cmd_init)

    sp = sub.add_parser("identity", help="bot/operator Ed25519 identities")
    isub = sp.add_subparsers(dest="identity_cmd", required=True)
    g = isub.add_parser("generate", parents=[common])
    g.add_argument("--out", required=True)
    g.set_defaults(fn=cmd_identity_generate)

    sp = sub.add_parser("keys", help="exchange API keys in the keystore")
    ksub = sp.add_subparsers(dest="keys_cmd", required=True)
    a = ksub.add_parser("add", parents=[common], help="import an HMAC key; secret from stdin")
    a.add_argument("--key-id", required=True)
    a.add_argument("--exchange", required=True)
    a.add_argument("--api-key", required=True, help="the exchange's public API key id")
    a.add_argument("--with-password", action="store_true", help="also read the API passphrase")
    g = ksub.add_parser("generate", parents=[common], help="Ed25519 key born inside the signer")
    g.add_argument("--key-id", required=True)
    g.add_argument("--exchange", required=True)
    g.add_argument("--api-key", default="")
    s = ksub.add_parser("set-api-key", parents=[common])
    s.add_argument("key_id")
    s.add_argument("api_key")
    r = ksub.add_parser("rotate", parents=[common])
    r.add_argument("key_id")
    r.add_argument("--api-key")
    r.add_argument("--generate", action="store_true")
    r.add_argument("--with-password", action="store_true")
    rm = ksub.add_parser("remove", parents=[common])
    rm.add_argument("key_id")
    ksub.add_parser("list", parents=[common])
    sp.set_defaults(fn=cmd_keys)

    sp = sub.add_parser("policy", help="per-key policy (TOML in)")
    psub = sp.add_subparsers(dest="policy_cmd", required=True)
    ps = psub.add_parser("set", parents=[common])
    ps.add_argument("key_id")
    ps.add_argument("file")
    ps.add_argument("--expected-version", type=int, default=0)
    sh = psub.add_parser("show", parents=[common])
    sh.add_argument("key_id")
    sp.set_defaults(fn=cmd_policy)

    sp = sub.add_parser("bots", help="bot identities")
    bsub = sp.add_subparsers(dest="bots_cmd", required=True)
    ba = bsub.add_parser("add", parents=[common])
    ba.add_argument("bot_id")
    ba.add_argument("--pubkey", required=True, help="64 hex chars or a file holding them")
    ba.add_argument("--keys", required=True, help="comma-separated key ids the bot may use")
    br = bsub.add_parser("revoke", parents=[common])
    br.add_argument("bot_id")
    bsub.add_parser("list", parents=[common])
    sp.set_defaults(fn=cmd_bots)

    for name, lift in (("freeze", False), ("unfreeze", True)):
        f = sub.add_parser(name, parents=[common], help=f"{name} one key or --all")
        f.add_argument("key_id", nargs="?")
        f.add_argument("--all", action="store_true")
        f.add_argument("--reason", default="")
        f.set_defaults(fn=lambda a, _lift=lift: cmd_freeze(a, _lift))

    sp = sub.add_parser("serve", parents=[common], help="run the signer")
    sp.add_argument(
        "--insecure-dev", action="store_true", help="allow plain TCP without TLS (development only)"
    )
    sp.set_defaults(fn=cmd_serve)

    sp = sub.add_parser("tls", help="certificates for mutual TLS over TCP")
    tsub = sp.add_subparsers(dest="tls_cmd", required=True)
    ti = tsub.add_parser("init", help="create a CA, a server certificate and client certificates")
    ti.add_argument("--out", required=True, help="new directory for the keys and certificates")
    ti.add_argument(
        "--server-name",
        action="append",
        metavar="NAME",
        help="DNS name or IP the bots dial (repeatable; localhost and 127.0.0.1 always included)",
    )
    ti.add_argument(
        "--client",
        action="append",
        metavar="NAME",
        help="a client certificate to issue (repeatable; default: engine and admin)",
    )
    ti.add_argument("--days", type=int, default=365, help="validity of server/client certs")
    ti.add_argument("--force", action="store_true", help="write into a non-empty --out")
    ti.add_argument("--json", action="store_true", help="machine-readable output")
    sp.set_defaults(fn=cmd_tls)

    sp = sub.add_parser("audit", help="export, verify, checkpoint, proofs, report")
    asub = sp.add_subparsers(dest="audit_cmd", required=True)
    ex = asub.add_parser("export", parents=[common])
    ex.add_argument("--out", required=True)
    v = asub.add_parser("verify", parents=[common])
    v.add_argument("export")
    v.add_argument("--pubkey", required=True)
    v.add_argument("--checkpoint", action="append", help="signed checkpoint file(s) kept elsewhere")
    c = asub.add_parser("checkpoint", parents=[common])
    c.add_argument("--out")
    sp.set_defaults(fn=cmd_audit)
    add_audit_commands(asub, common)  # sth, prove, check-proof, consistency, report
    add_proposal_commands(sub, common)  # operators ..., proposal ... (M-of-N loosening)
    return p


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except SignerError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:
        print(f"error: {e.filename or ''}: {e.strerror}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
