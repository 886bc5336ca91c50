"""`bulkhead-signer audit sth|prove|check-proof|consistency|report`: the auditor's commands.

`sth` and `prove` run on the signer host (they may sign a tree head, so they open the keystore).
`check-proof` needs only the proof file and the public key; `consistency` needs the two heads
and the log (an export with --export, or the signer's database read-only, no master key);
`report` needs only the export, the public key and optionally heads from the anchor.
Exit status: 0 verified, 1 verification failed (the reason is printed), 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from signer import proofs, report
from signer.auditformat import (
    AuditFormatError,
    load_public_key,
)
from signer.auditheads import (
    AuditIntegrityError,
    check_anchor,
    issue_tree_head,
    latest_tree_head,
    log_tree,
    read_tree_head,
)
from signer.audittreehead import SignedTreeHead, read_heads
from signer.core import now_ms
from signer.db import make_engine, read_session
from signer.errors import ConfigError
from signer.merkle import MerkleTree, leaf_hash
from signer.prompt import read_secret
from signer.server import AUDIT_PUBKEY_FILE, MasterKeySource, OpenSigner, database_url, open_signer


def add_audit_commands(asub: Any, common: argparse.ArgumentParser) -> None:
    """Register the subcommands on `bulkhead-signer audit`'s subparsers."""
    st = asub.add_parser("sth", parents=[common], help="sign, store and anchor a tree head now")
    st.add_argument("--out", help="also write the head to this file")
    st.add_argument("--anchor", help="anchor file or directory (default: signer.toml anchor_path)")
    st.set_defaults(fn=cmd_sth)
    pr = asub.add_parser("prove", parents=[common], help="one order's records with proofs")
    pr.add_argument("--order", required=True, metavar="CLIENT_ORDER_ID")
    pr.add_argument("--out", required=True, metavar="PROOF.json")
    pr.add_argument("--head", help="prove against this signed tree head (default: the latest)")
    pr.add_argument("--anchor", help="anchor for a head signed now (default: anchor_path)")
    pr.set_defaults(fn=cmd_prove)
    ck = asub.add_parser("check-proof", parents=[common], help="verify a proof file offline")
    ck.add_argument("proof", metavar="PROOF.json")
    ck.add_argument("--pubkey", required=True, help="the audit public key file (64 hex)")
    ck.set_defaults(fn=cmd_check_proof)
    co = asub.add_parser("consistency", parents=[common], help="NEW_HEAD extends OLD_HEAD")
    co.add_argument("old", metavar="OLD_HEAD")
    co.add_argument("new", metavar="NEW_HEAD")
    co.add_argument("--export", help="compute from this export (default: the signer database)")
    co.add_argument("--pubkey", help="audit public key file (default: DATA/audit_pubkey.hex)")
    co.add_argument("--out", help="write the consistency proof here (check it with check-proof)")
    co.set_defaults(fn=cmd_consistency)
    rp = asub.add_parser("report", parents=[common], help="HTML + CSV report of an export")
    rp.add_argument("export", metavar="EXPORT")
    rp.add_argument("--pubkey", required=True)
    rp.add_argument("--out", required=True, metavar="DIR")
    rp.add_argument(
        "--head",
        action="append",
        help="signed tree head(s) or checkpoint(s) kept outside the signer: a file, an anchor "
        "file or an anchor directory (repeatable); proofs are made against the newest head",
    )
    rp.set_defaults(fn=cmd_report)


def out(args: argparse.Namespace, human: str, data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True) if args.json else human)


def verdict(args: argparse.Namespace, check: proofs.ProofCheck, **extra: Any) -> None:
    human = "\n".join([*check.facts, ("OK: " if check.ok else "FAILED: ") + check.reason])
    out(args, human, {"ok": check.ok, "reason": check.reason, "facts": list(check.facts), **extra})
    if not check.ok:
        sys.exit(1)


def _opened(args: argparse.Namespace) -> OpenSigner:
    if args.master_key_file:
        source = MasterKeySource(keyfile=Path(args.master_key_file))
    else:
        source = MasterKeySource(passphrase=read_secret("Master passphrase: ").encode())
    return open_signer(Path(args.data_dir), source)


def _pubkey(path: str) -> bytes:
    try:
        return load_public_key(Path(path))
    except AuditFormatError as exc:
        raise ConfigError(f"--pubkey: {exc}") from None


def _head_file(flag: str, path: str) -> SignedTreeHead:
    try:
        return read_tree_head(Path(path))
    except AuditFormatError as exc:
        raise ConfigError(f"{flag}: {exc}") from None


def _write(path: str, text: str) -> None:
    Path(path).write_text(text, encoding="utf-8")


def _anchor(args: argparse.Namespace, op: OpenSigner) -> Path | None:
    """--anchor when given, else signer.toml's anchor_path; refused inside the data dir."""
    if args.anchor:
        return check_anchor(Path(args.anchor).absolute(), op.data_dir, "--anchor")
    return check_anchor(op.config.anchor_path, op.data_dir)


def cmd_sth(args: argparse.Namespace) -> None:
    op = _opened(args)
    try:
        anchor = _anchor(args, op)
        try:
            head = issue_tree_head(op.engine, op.audit, now_ms(), anchor)
        except AuditIntegrityError as exc:
            verdict(args, proofs.ProofCheck(False, str(exc)))
            return
        if args.out:
            _write(args.out, head.to_json() + "\n")
        where = f"; anchored in {anchor}" if anchor else "; no anchor configured"
        out(
            args,
            f"signed tree head: size {head.tree_size} root {head.root_hash}{where}",
            {**head.to_obj(), "anchor": str(anchor) if anchor else None},
        )
    finally:
        op.close()


def cmd_prove(args: argparse.Namespace) -> None:
    op = _opened(args)
    try:
        anchor = _anchor(args, op)  # checked even when no new head turns out to be needed
        with read_session(op.engine) as s:
            try:
                records = proofs.order_records(s, args.order)
            except ValueError as exc:  # a stored record that is not JSON: someone edited it
                verdict(args, proofs.ProofCheck(False, f"the stored log is damaged: {exc}"))
                return
            head = _head_file("--head", args.head) if args.head else latest_tree_head(s)
        if not any(role == "order" for role, _ in records):
            raise ConfigError(f"--order: no audit record names client order id {args.order!r}")
        need = max(r.seq for _, r in records)
        if head is not None and head.tree_size < need and args.head:
            raise ConfigError(
                f"--head: covers {head.tree_size} records but the order's last record is "
                f"{need}; sign a newer head with `bulkhead-signer audit sth`"
            )
        if head is None or head.tree_size < need:
            try:
                head = issue_tree_head(op.engine, op.audit, now_ms(), anchor)
            except AuditIntegrityError as exc:
                verdict(args, proofs.ProofCheck(False, str(exc)))
                return
        if not head.verify(op.audit.public_key):
            where = "--head" if args.head else "the latest stored tree head"
            raise ConfigError(f"{where}: not signed by this signer's audit key")
        with read_session(op.engine) as s:
            tree = log_tree(s, head.tree_size)
        if tree.size < head.tree_size or tree.root().hex() != head.root_hash:
            reason = (
                f"the stored log's first {head.tree_size} records no longer hash to the signed "
                "tree head's root: records were altered, removed, reordered or inserted after "
                "it was signed (run `bulkhead-signer audit verify`)"
            )
            verdict(args, proofs.ProofCheck(False, reason))
            return
        doc = proofs.order_proof(tree, head, args.order, records)
        _write(args.out, json.dumps(doc, indent=2, sort_keys=True) + "\n")
        check = proofs.check_proof(doc, op.audit.public_key)
        verdict(args, check, out=args.out, records=len(doc["records"]))
    finally:
        op.close()


def cmd_check_proof(args: argparse.Namespace) -> None:
    pub = _pubkey(args.pubkey)
    doc = proofs.load_proof(Path(args.proof).read_text(encoding="utf-8", errors="replace"))
    verdict(args, proofs.check_proof(doc, pub))


def cmd_consistency(args: argparse.Namespace) -> None:
    data_dir = Path(args.data_dir)
    pub = _pubkey(args.pubkey or str(data_dir / AUDIT_PUBKEY_FILE))
    old, new = _head_file("OLD_HEAD", args.old), _head_file("NEW_HEAD", args.new)
    for name, head in (("old", old), ("new", new)):
        if not head.verify(pub):
            reason = f"the {name} tree head's signature does not verify with this public key"
            verdict(args, proofs.ProofCheck(False, reason))
    tree = (
        _export_tree(Path(args.export), new.tree_size) if args.export else _db_tree(data_dir, new)
    )
    check, doc = proofs.consistency_proof(tree, old, new)
    if doc is not None and args.out:
        _write(args.out, json.dumps(doc, indent=2, sort_keys=True) + "\n")
    verdict(args, check, out=args.out if doc is not None else None)


def _export_tree(path: Path, size: int) -> MerkleTree:
    """Leaves from the export's record lines, in file order (a reordered export shows)."""
    leaves = []
    with open(path, "rb") as fh:
        for raw in fh:
            if len(leaves) >= size:
                break
            try:
                line = json.loads(raw)
            except ValueError:
                raise ConfigError(f"--export: {path} line {len(leaves) + 1} is not JSON") from None
            if isinstance(line, dict) and line.get("type") == "record":
                leaves.append(leaf_hash(str(line.get("record")).encode("utf-8")))
    return MerkleTree(leaves)


def _db_tree(data_dir: Path, new: SignedTreeHead) -> MerkleTree:
    from signer.config import load_config

    if not data_dir.is_dir():
        raise ConfigError(f"--data-dir: {data_dir} does not exist (or give --export)")
    url = database_url(data_dir, load_config(data_dir).database_url)
    if url.startswith("sqlite") and not (data_dir / "signer.db").is_file():
        raise ConfigError(f"--data-dir: {data_dir} holds no signer.db (or give --export)")
    engine = make_engine(url)
    try:
        with read_session(engine) as s:
            return log_tree(s, new.tree_size)
    finally:
        engine.dispose()


def cmd_report(args: argparse.Namespace) -> None:
    pub = _pubkey(args.pubkey)
    heads: list[Any] = []
    for spec in args.head or []:
        try:
            heads.extend(read_heads(Path(spec)))
        except AuditFormatError as exc:
            raise ConfigError(f"--head: {exc}") from None
    rep = report.build(Path(args.export), pub, Path(args.out), heads, now_ms())
    check = proofs.ProofCheck(
        rep.verdict.ok,
        f"{rep.verdict.reason} Report written to {args.out}/index.html "
        f"({len(rep.rows)} records, {rep.proofs_written} order proofs).",
    )
    verdict(args, check, out=args.out, records=len(rep.rows), proofs=rep.proofs_written)
