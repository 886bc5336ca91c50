"""The auditor's step: export the log, verify it with only the public key and the anchored
heads, write the report. Offline commands, run as an auditor would run them."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from .attack import Captured
from .market import ENGINE_ID
from .stack import Stack


def export(stack: Stack) -> Path:
    """Anchor a fresh signed tree head, then export (the head is covered by the export)."""
    stack.signer("audit", "sth")
    out = stack.root / "audit.jsonl"
    out.unlink(missing_ok=True)
    stack.signer("audit", "export", "--out", str(out))
    return out


def verify(stack: Stack, export_path: Path) -> dict[str, Any]:
    pubkey = stack.signer_dir / "audit_pubkey.hex"
    out = stack.run(
        "signer.cli",
        "audit",
        "verify",
        str(export_path),
        "--pubkey",
        str(pubkey),
        "--checkpoint",
        str(stack.anchor),
        "--json",
    )
    return dict(json.loads(out))


def report(stack: Stack, export_path: Path) -> Path:
    pubkey = stack.signer_dir / "audit_pubkey.hex"
    out_dir = stack.root / "report"
    stack.run(
        "signer.cli",
        "audit",
        "report",
        str(export_path),
        "--pubkey",
        str(pubkey),
        "--head",
        str(stack.anchor),
        "--out",
        str(out_dir),
    )
    return out_dir / "index.html"


def records(export_path: Path) -> list[dict[str, Any]]:
    out = []
    for line in export_path.read_text().splitlines():
        doc = json.loads(line)
        if doc.get("type") == "record":
            out.append(json.loads(doc["record"]))
    return out


def after_freeze(export_path: Path) -> list[dict[str, Any]]:
    """The decisions recorded after the global freeze (cancels included: a freeze never
    blocks taking an order off the book)."""
    recs = records(export_path)
    seqs = [
        r["seq"]
        for r in recs
        if r.get("kind") == "admin" and (r.get("payload") or {}).get("action") == "freeze"
    ]
    if not seqs:
        return []
    return [r["payload"] for r in recs if r["seq"] > seqs[0] and r.get("kind") == "decision"]


def newest_engine_order(export_path: Path) -> Captured | None:
    """The last order the engine sent that the signer allowed, as the log recorded it."""
    for rec in reversed(records(export_path)):
        p = rec.get("payload") or {}
        if (
            rec.get("kind") == "decision"
            and p.get("action") == "create"
            and p.get("allowed") is True
            and p.get("bot_id") == ENGINE_ID
            and p.get("body_b64")
        ):
            return Captured(
                base64.b64decode(p["body_b64"]),
                base64.b64decode(p["signature_b64"]),
                str(p.get("client_order_id")),
                int(rec["ts_ms"]),
            )
    return None
