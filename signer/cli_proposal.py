"""`bulkhead-signer operators ...` and `proposal ...`: M-of-N approval of loosening changes.

On the signer host: `proposal new` records a proposal and writes a proposal file; `proposal
submit FILE` records the signatures the file collected and applies the change once M distinct
operators signed (and any time lock passed); `list`, `show`, `veto`. Anywhere, with no data
dir: `proposal sign FILE --key OPERATOR_KEY` appends an operator's signature to the file, so
operator keys never need to live on the signer host.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from signer import proposal_doc as pdoc
from signer import quorum, state
from signer.core import now_ms
from signer.db import read_session
from signer.errors import ConfigError
from signer.proposal_changes import approve_key_change
from signer.proposals import Proposals, ProposalView, check_proposal_id


def view_json(v: ProposalView) -> dict[str, Any]:
    return {
        "proposal_id": v.proposal_id,
        "status": v.status,
        "action_class": v.action_class,
        "kind": v.kind,
        "required": v.required,
        "operators": v.operators,
        "approvers": [a.operator_id for a in v.approvers],
        "expires_ms": v.expires_ms,
        "apply_after_ms": v.apply_after_ms,
        "summary": v.summary,
        "message": v.message,
        "audit_seq": v.audit_seq,
    }


def view_text(v: ProposalView) -> str:
    who = ", ".join(a.operator_id for a in v.approvers) or "nobody yet"
    signed = f"{len(v.approvers)} of {v.required} signed ({who})"
    lines = [
        f"proposal {v.proposal_id}  [{v.status}]  {signed}",
        f"  {v.summary}",
    ]
    if v.apply_after_ms and v.status == "approved":
        lines.append(f"  time lock until {v.apply_after_ms} (epoch ms); any operator may veto")
    if v.message:
        lines.append(f"  {v.message}")
    return "\n".join(lines)


def read_signing_key(path: str) -> SigningKey:
    """An operator's private key file as `identity generate` writes it (64 hex characters)."""
    try:
        raw = bytes.fromhex(Path(path).read_text(encoding="ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ConfigError(f"--key: {path} is not an Ed25519 private key file (64 hex characters)")
    return SigningKey(raw)


def default_out(pid: str) -> Path:
    return Path(f"proposal-{pid[:12]}.json")


# --- commands ----------------------------------------------------------------------------


def change_from_args(args: argparse.Namespace, opened: Any) -> pdoc.AnyChange:
    from signer.cli import read_pubkey  # the CLI's own reader: hex or a file holding it

    what = args.what
    if what == "policy":
        text = Path(args.file).read_text(encoding="utf-8")
        return pdoc.policy_change(args.key_id, text)
    if what == "key":
        state.check_id("key_id", args.key_id)
        with read_session(opened.engine) as s:
            return approve_key_change(s, args.key_id)
    fields: dict[str, object] = {}
    if what == "unfreeze":
        if bool(args.all) == bool(args.key_id):
            raise ConfigError("give exactly one of KEY_ID or --all")
        fields = {"kind": "unfreeze", "key_id": args.key_id or None, "reason": args.reason}
    elif what == "bot":
        keys = [k for k in args.keys.split(",") if k]
        fields = {"kind": "register_bot", "bot_id": args.bot_id, "key_ids": keys}
        fields["public_key_hex"] = read_pubkey(args.pubkey).hex()
    elif what == "grant":
        keys = [k for k in args.keys.split(",") if k]
        fields = {"kind": "grant_keys", "bot_id": args.bot_id, "key_ids": keys}
    elif what == "operator-add":
        fields = {"kind": "add_operator", "operator_id": args.name}
        fields["public_key_hex"] = read_pubkey(args.pubkey).hex()
    elif what == "operator-remove":
        fields = {"kind": "remove_operator", "operator_id": args.name}
    else:  # quorum
        fields = {"kind": "set_quorum", "target_class": args.action_class, "m": args.m}
        fields["time_lock_s"] = args.time_lock
    return pdoc.parse_change(fields)


def new_proposal(args: argparse.Namespace, change_of: Callable[[Any], pdoc.AnyChange]) -> None:
    from signer.cli import actor, opened, out

    op = opened(args)
    try:
        v = Proposals(op.engine, op.audit, op.actions).propose(
            actor(), now_ms(), change_of(op), args.expires_in
        )
    finally:
        op.close()
    path = Path(args.out) if args.out else default_out(v.proposal_id)
    pdoc.write_file(path, v.document, [])
    hint = f"have operators run `bulkhead-signer proposal sign {path} --key KEY`"
    human = f"{view_text(v)}\nwrote {path}: {hint}"
    out(args, human, {**view_json(v), "file": str(path)})


def cmd_proposal(args: argparse.Namespace) -> None:
    from signer.cli import actor, opened, out

    if args.proposal_cmd == "new":
        new_proposal(args, lambda op: change_from_args(args, op))
        return
    if args.proposal_cmd == "sign":  # offline: no data dir, no master key
        path = Path(args.file)
        entry = pdoc.add_signature(path, read_signing_key(args.key), args.operator or "")
        document, sigs = pdoc.read_file(path)
        doc = pdoc.parse_document(document)
        human = (
            f"signed {pdoc.proposal_id(document)[:12]} with key {entry['public_key_hex'][:16]}... "
            f"({len(sigs)} signature(s) in {path})\n  {pdoc.describe(doc)}"
        )
        out(args, human, {"file": str(path), "signatures": len(sigs), **entry})
        return
    op = opened(args)
    try:
        props = Proposals(op.engine, op.audit, op.actions)
        if args.proposal_cmd == "submit":
            pid, sigs = submission(args.target)
            v = props.submit(actor(), now_ms(), pid, sigs)
            out(args, view_text(v), view_json(v))
        elif args.proposal_cmd == "veto":
            v = props.veto(actor(), now_ms(), args.proposal_id, args.reason)
            out(args, view_text(v), view_json(v))
        elif args.proposal_cmd == "show":
            (v,) = props.list(now_ms(), pid=args.proposal_id)
            if args.out:
                sigs = [
                    {"operator_id": a.operator_id, "public_key_hex": a.public_key_hex}
                    | {"signature_hex": a.signature_hex}
                    for a in v.approvers
                ]
                pdoc.write_file(Path(args.out), v.document, sigs)
            out(args, view_text(v), {**view_json(v), "document": v.document.decode("ascii")})
        else:  # list
            views = props.list(now_ms(), args.status or "")
            human = "\n".join(view_text(v) for v in views) or "(no proposals)"
            out(args, human, [view_json(v) for v in views])
    finally:
        op.close()


def submission(target: str) -> tuple[str, list[tuple[str, bytes]]]:
    """A proposal file (its signatures), or a bare proposal id (apply once the lock is over)."""
    path = Path(target)
    if not path.exists() and len(target) == 64:
        return check_proposal_id(target), []
    document, sigs = pdoc.read_file(path)
    out = []
    for i, s in enumerate(sigs):
        try:
            out.append((s["public_key_hex"], bytes.fromhex(s["signature_hex"])))
        except ValueError:
            raise ConfigError(f"{path}: signatures[{i}].signature_hex is not hex") from None
    return pdoc.proposal_id(document), out


def cmd_operators(args: argparse.Namespace) -> None:
    from signer.cli import actor, opened, out, read_pubkey

    if args.operators_cmd == "list":
        op = opened(args)
        try:
            with read_session(op.engine) as s:
                rows = [
                    {
                        "operator_id": o.operator_id,
                        "status": o.status,
                        "public_key": o.public_key_hex,
                    }
                    for o in state.list_operators(s)
                ]
                rules = quorum.rules(s)
        finally:
            op.close()
        rule_rows = [
            {"action_class": r.action_class, "m": r.m, "n": r.n, "time_lock_s": r.time_lock_s}
            for r in rules
        ]
        human = "\n".join(
            [f"{o['operator_id']:20} {o['status']:8} pub={o['public_key'][:16]}..." for o in rows]
            or ["(no operators: administered from the signer host only)"]
        )
        human += "\nquorum: " + ", ".join(
            f"{r.action_class} {r.m}-of-{r.n}"
            + (f" +{r.time_lock_s}s lock" if r.time_lock_s else "")
            for r in rules
        )
        out(args, human, {"operators": rows, "quorum": rule_rows})
        return
    if args.operators_cmd == "add":
        pub = read_pubkey(args.pubkey).hex()
        op = opened(args)
        try:
            with read_session(op.engine) as s:
                bootstrap = quorum.active_operators(s) == 0
            if bootstrap:  # nobody could sign a proposal yet: the host adds the first one
                r = op.actions.add_operator(actor(), now_ms(), args.name, pub)
                out(args, r.message, {"operator_id": args.name, "audit_seq": r.audit_seq})
                return
        finally:
            op.close()
        fields = {"kind": "add_operator", "operator_id": args.name, "public_key_hex": pub}
    else:  # remove
        fields = {"kind": "remove_operator", "operator_id": args.name}
    change = pdoc.parse_change(fields)
    new_proposal(args, lambda _op: change)


# --- parsers -------------------------------------------------------------------------------


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    bare = argparse.ArgumentParser(add_help=False)
    bare.add_argument("--json", action="store_true", help="machine-readable output")
    newp = argparse.ArgumentParser(add_help=False, parents=[common])
    newp.add_argument(
        "--expires-in",
        type=int,
        default=pdoc.DEFAULT_TTL_S,
        metavar="SECONDS",
        help="the proposal expires this long from now (default 7 days; at most 30)",
    )
    newp.add_argument("--out", help="proposal file to write (default proposal-<id>.json)")

    sp = sub.add_parser("operators", help="operator identities and the quorum rules")
    osub = sp.add_subparsers(dest="operators_cmd", required=True)
    osub.add_parser("list", parents=[common])
    a = osub.add_parser("add", parents=[newp], help="a proposal (direct only for the first)")
    a.add_argument("name")
    a.add_argument("--pubkey", required=True, help="64 hex chars or a file holding them")
    r = osub.add_parser("remove", parents=[newp], help="a proposal")
    r.add_argument("name")
    sp.set_defaults(fn=cmd_operators)

    sp = sub.add_parser("proposal", help="M-of-N operator approval of loosening changes")
    psub = sp.add_subparsers(dest="proposal_cmd", required=True)
    n = psub.add_parser("new", help="propose a loosening change")
    nsub = n.add_subparsers(dest="what", required=True)
    x = nsub.add_parser("policy", parents=[newp], help="a key's new policy (policy set's TOML)")
    x.add_argument("key_id")
    x.add_argument("file")
    x = nsub.add_parser("unfreeze", parents=[newp], help="lift one key's freeze or --all")
    x.add_argument("key_id", nargs="?")
    x.add_argument("--all", action="store_true")
    x.add_argument("--reason", default="")
    x = nsub.add_parser("bot", parents=[newp], help="register a bot identity with its keys")
    x.add_argument("bot_id")
    x.add_argument("--pubkey", required=True)
    x.add_argument("--keys", required=True, help="comma-separated key ids")
    x = nsub.add_parser("grant", parents=[newp], help="let a registered bot use more keys")
    x.add_argument("bot_id")
    x.add_argument("--keys", required=True)
    x = nsub.add_parser("key", parents=[newp], help="activate a held (added/rotated) key")
    x.add_argument("key_id")
    x = nsub.add_parser("operator-add", parents=[newp])
    x.add_argument("name")
    x.add_argument("--pubkey", required=True)
    x = nsub.add_parser("operator-remove", parents=[newp])
    x.add_argument("name")
    x = nsub.add_parser("quorum", parents=[newp], help="M (and a time lock) for a class")
    x.add_argument("action_class", choices=quorum.ACTION_CLASSES)
    x.add_argument("m", type=int)
    x.add_argument("--time-lock", type=int, default=0, metavar="SECONDS")
    s = psub.add_parser("sign", parents=[bare], help="offline: append your signature to FILE")
    s.add_argument("file")
    s.add_argument("--key", required=True, help="your operator private key file")
    s.add_argument("--operator", default="", help="your operator name (informational)")
    s = psub.add_parser("submit", parents=[common], help="record FILE's signatures; apply")
    s.add_argument("target", metavar="FILE_OR_ID")
    s = psub.add_parser("veto", parents=[common], help="stop a proposal before it applies")
    s.add_argument("proposal_id")
    s.add_argument("--reason", default="")
    s = psub.add_parser("show", parents=[common])
    s.add_argument("proposal_id")
    s.add_argument("--out", help="also write the proposal file with its recorded signatures")
    s = psub.add_parser("list", parents=[common])
    s.add_argument("--status", default="")
    sp.set_defaults(fn=cmd_proposal)


def parse_quorum_flags(
    quorum_specs: list[str], lock_specs: list[str], n: int
) -> dict[str, tuple[int, int]]:
    """`--quorum M` / `--quorum CLASS=M` and `--time-lock CLASS=SECONDS`, checked before init."""
    m_of: dict[str, int] = {}
    locks: dict[str, int] = {}
    for spec in quorum_specs:
        cls, sep, value = spec.rpartition("=")
        classes = [quorum.check_class(cls)] if sep else list(quorum.ACTION_CLASSES)
        m = _int_flag("--quorum", spec, value)
        m_of |= dict.fromkeys(classes, m)
    for spec in lock_specs:
        cls, sep, value = spec.rpartition("=")
        if not sep:
            raise ConfigError(f"--time-lock: {spec[:40]!r} must be CLASS=SECONDS")
        locks[quorum.check_class(cls)] = _int_flag("--time-lock", spec, value)
    rules = {}
    for cls in sorted(set(m_of) | set(locks)):
        m, lock = m_of.get(cls, min(2, n)), locks.get(cls, 0)
        quorum.check_rule(cls, m, lock, n)
        rules[cls] = (m, lock)
    return rules


def _int_flag(flag: str, spec: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{flag}: {spec[:40]!r} needs a whole number") from None
