"""`audit report`: what an auditor reads -- the verdict first, then per key and per bot what was
allowed, denied (by rule id), how much notional per day, which policy versions were in force and
when they changed, the freezes; and every record, each order linked to its own proof file.

Input is only the export, the public key and (optionally) signed tree heads taken from the
external anchor. Output is a directory: index.html (self-contained: inline CSS, JS and SVG, a
Content-Security-Policy that forbids every fetch), records.csv, summary.csv and proofs/*.json.
Numbers are computed from the records with Decimal and shown as exact decimal strings.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from signer import merkle, proofs
from signer.auditformat import (
    SignedCheckpoint,
)
from signer.auditlog import StoredRecord
from signer.audittreehead import SignedTreeHead
from signer.auditverify import VerifyReport, verify_file

COLUMNS = [
    "seq",
    "time_utc",
    "kind",
    "action",
    "bot_id",
    "key_id",
    "symbol",
    "side",
    "type",
    "amount",
    "limit_price",
    "notional",
    "decision",
    "rule_ids",
    "reasons",
    "policy_version",
    "client_order_id",
    "exchange_order_id",
    "status",
    "proof",
]


@dataclass
class Subject:
    """What the report says about one key or one bot."""

    allowed: int = 0
    denied: int = 0
    refused: int = 0  # refused before policy: authentication or authorisation
    cancels: int = 0
    by_rule: Counter[str] = field(default_factory=Counter)
    notional_by_day: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    policy_versions: Counter[str] = field(default_factory=Counter)  # "key vN" -> decisions
    events: list[tuple[int, str]] = field(default_factory=list)  # (ts_ms, what) for admin acts


@dataclass
class Report:
    verdict: VerifyReport
    heads_checked: int
    proof_head: SignedTreeHead | None
    rows: list[dict[str, str]]
    keys: dict[str, Subject]
    bots: dict[str, Subject]
    policy_history: dict[str, list[dict[str, str]]]  # key -> versions with from/until
    freezes: list[dict[str, str]]
    public_key_hex: str
    export_name: str
    generated_ms: int
    proofs_written: int = 0
    heads_newer: int = 0  # anchored heads signed after the export, not checked


def day_of(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms // 1000, UTC).strftime("%Y-%m-%d")


def time_of(ts_ms: int) -> str:
    ms = ts_ms % 1000
    return datetime.fromtimestamp(ts_ms // 1000, UTC).strftime("%Y-%m-%d %H:%M:%S") + f".{ms:03d}"


def proof_file_name(client_order_id: str) -> str:
    """A file name that is safe, unique per client order id, and readable when it can be."""
    return re.sub(r"[^A-Za-z0-9_-]", lambda m: f"~{ord(m.group()):02X}", client_order_id) + ".json"


def _dec(value: object) -> Decimal | None:
    try:
        return Decimal(str(value)) if isinstance(value, str) and value else None
    except InvalidOperation:
        return None


def read_export(path: Path) -> tuple[list[tuple[StoredRecord, dict[str, Any]]], int | None]:
    """The export's records in file order, and its closing checkpoint's time. Lines that are
    not readable records are skipped (verification names the first of them)."""
    out, closing_ts = [], None
    with open(path, "rb") as fh:
        for raw in fh:
            try:
                line = json.loads(raw)
                if line.get("type") == "checkpoint" and isinstance(line.get("ts_ms"), int):
                    closing_ts = line["ts_ms"]
                if line.get("type") != "record":
                    continue
                text = line["record"]
                obj = json.loads(text)
                if not isinstance(obj.get("payload"), dict):
                    continue
                rec = StoredRecord(
                    int(line["seq"]), text.encode("utf-8"), line["hash"], line["sig"]
                )
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            out.append((rec, obj))
    return out, closing_ts


def build(
    export: Path,
    public_key: bytes,
    out_dir: Path,
    heads: Sequence[SignedCheckpoint | SignedTreeHead] = (),
    now_ms: int = 0,
) -> Report:
    """Verify, aggregate, write proofs, records.csv, summary.csv and index.html into out_dir."""
    from signer.report_html import render  # the template is its own module

    records, closing_ts = read_export(export)
    # Heads signed after the export was made may cover records it cannot hold; every other
    # head must match it (one signed before the export that covers more reveals truncation).
    # A set-aside head must still be validly signed: a forged one is checked, and fails.
    newer = [
        h
        for h in heads
        if closing_ts is not None
        and h.ts_ms > closing_ts
        and h.tree_size > len(records)
        and h.verify(public_key)
    ]
    used = [h for h in heads if all(h is not n for n in newer)]
    verdict = verify_file(export, public_key, used)
    report = aggregate(records, verdict, public_key.hex(), export.name, now_ms)
    report.heads_checked, report.heads_newer = len(used), len(newer)
    out_dir.mkdir(parents=True, exist_ok=True)
    tree_heads = [h for h in used if isinstance(h, SignedTreeHead) and h.verify(public_key)]
    if verdict.ok and tree_heads:
        report.proof_head = max(tree_heads, key=lambda h: (h.tree_size, h.ts_ms))
        report.proofs_written = write_proofs(records, report.proof_head, out_dir / "proofs")
    for row in report.rows:
        coid = row["client_order_id"]
        covered = report.proof_head is not None and int(row["seq"]) <= report.proof_head.tree_size
        row["proof"] = f"proofs/{proof_file_name(coid)}" if coid and covered else ""
    write_csv(out_dir / "records.csv", COLUMNS, report.rows)
    write_csv(out_dir / "summary.csv", *summary_rows(report))
    (out_dir / "index.html").write_text(render(report), encoding="utf-8")
    return report


def write_proofs(
    records: list[tuple[StoredRecord, dict[str, Any]]], head: SignedTreeHead, out: Path
) -> int:
    """One proof per client order id, against `head`, for the records it covers."""
    covered = [(r, o) for r, o in records if r.seq <= head.tree_size]
    tree = merkle.MerkleTree(merkle.leaf_hash(r.record_bytes) for r, _ in covered)
    admin = [(r, o) for r, o in covered if o.get("kind") == "admin"]
    by_order: dict[str, list[tuple[StoredRecord, dict[str, Any]]]] = defaultdict(list)
    for r, o in covered:
        coid = o["payload"].get("client_order_id")
        if o.get("kind") in ("decision", "outcome") and isinstance(coid, str) and coid:
            by_order[coid].append((r, o))
    out.mkdir(parents=True, exist_ok=True)
    for coid, order in by_order.items():
        chosen = [("order", r) for r, _ in order] + proofs.context_records(order, admin)
        doc = proofs.order_proof(tree, head, coid, chosen)
        text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
        (out / proof_file_name(coid)).write_text(text, encoding="utf-8")
    return len(by_order)


def aggregate(
    records: list[tuple[StoredRecord, dict[str, Any]]],
    verdict: VerifyReport,
    public_key_hex: str,
    export_name: str,
    now_ms: int,
) -> Report:
    keys: dict[str, Subject] = defaultdict(Subject)
    bots: dict[str, Subject] = defaultdict(Subject)
    outcomes: dict[int, dict[str, Any]] = {}
    for _rec, obj in records:
        p = obj["payload"]
        if obj.get("kind") == "outcome" and isinstance(p.get("decision_seq"), int):
            outcomes[p["decision_seq"]] = p
    rows, history, freezes = [], defaultdict(list), []
    for rec, obj in records:
        p, kind, ts = obj["payload"], str(obj.get("kind")), int(obj.get("ts_ms", 0))
        row = _row(rec.seq, ts, kind, p, outcomes.get(rec.seq))
        rows.append(row)
        key, bot = str(p.get("key_id") or ""), str(p.get("bot_id") or "")
        if kind == "decision":
            for subject in (keys[key], bots[bot]):
                _count_decision(subject, p, ts)
        elif kind in ("auth_denied", "permission_denied"):
            bot = str(p.get("claimed_identity") or "")
            for subject in ([keys[key]] if key else []) + [bots[bot]]:
                subject.refused += 1
                subject.by_rule[str(p.get("rule_id"))] += 1
        elif kind == "admin":
            _admin_event(p, ts, keys, bots, history, freezes)
    return Report(
        verdict=verdict,
        heads_checked=0,
        proof_head=None,
        rows=rows,
        keys=dict(sorted(keys.items())),
        bots=dict(sorted(bots.items())),
        policy_history={k: _periods(v) for k, v in sorted(history.items())},
        freezes=freezes,
        public_key_hex=public_key_hex,
        export_name=export_name,
        generated_ms=now_ms,
    )


def _count_decision(subject: Subject, p: dict[str, Any], ts: int) -> None:
    subject.policy_versions[f"{p.get('key_id')} v{p.get('policy_version')}"] += 1
    if p.get("action") == "cancel":
        subject.cancels += 1
        return
    if p.get("allowed") is True:
        subject.allowed += 1
        notional = _dec(p.get("notional"))
        if notional is not None:
            subject.notional_by_day[day_of(ts)] += notional
    else:
        subject.denied += 1
        for reason in p.get("reasons") or []:
            subject.by_rule[str(reason.get("rule_id"))] += 1


def _admin_event(
    p: dict[str, Any],
    ts: int,
    keys: dict[str, Subject],
    bots: dict[str, Subject],
    history: dict[str, list[dict[str, str]]],
    freezes: list[dict[str, str]],
) -> None:
    action, actor = str(p.get("action")), str(p.get("actor") or "")
    if action == "set_policy":
        key = str(p.get("key_id"))
        history[key].append(
            {
                "version": str(p.get("version")),
                "from": time_of(ts),
                "actor": actor,
                "loosening": "yes" if p.get("loosening") else "no",
                "seq": "",
            }
        )
        keys[key].events.append((ts, f"policy version {p.get('version')} set by {actor}"))
    elif action in ("freeze", "unfreeze"):
        target = "all keys" if p.get("all") else f"key {p.get('key_id')}"
        freezes.append(
            {
                "time": time_of(ts),
                "action": action,
                "target": target,
                "actor": actor,
                "reason": str(p.get("reason") or ""),
            }
        )
        if not p.get("all"):
            keys.setdefault(str(p.get("key_id")), Subject())  # a card even if it never traded
    elif action in ("register_bot", "revoke_bot"):
        bot = str(p.get("bot_id"))
        grants = ", ".join(p.get("key_ids") or [])
        what = f"registered for keys {grants}" if action == "register_bot" else "revoked"
        bots[bot].events.append((ts, f"{what} by {actor}"))


def _periods(versions: list[dict[str, str]]) -> list[dict[str, str]]:
    """Each version is in force from its own time until the next version's."""
    for i, v in enumerate(versions):
        v["until"] = versions[i + 1]["from"] if i + 1 < len(versions) else "end of export"
    return versions


def _row(
    seq: int, ts: int, kind: str, p: dict[str, Any], outcome: dict[str, Any] | None
) -> dict[str, str]:
    def s(value: object) -> str:
        return "" if value is None else str(value)

    reasons = p.get("reasons") or []
    rule_ids = [s(r.get("rule_id")) for r in reasons if isinstance(r, dict)]
    if kind in ("auth_denied", "permission_denied"):
        rule_ids = [s(p.get("rule_id"))]
        messages = s(p.get("message"))
    else:
        messages = "; ".join(
            f"{s(r.get('rule_id'))}: {s(r.get('message'))}" for r in reasons if isinstance(r, dict)
        )
    decision = ""
    if kind == "decision":
        decision = "allowed" if p.get("allowed") is True else "denied"
    elif kind in ("auth_denied", "permission_denied"):
        decision = "refused"
    source = outcome if outcome is not None else p
    return {
        "seq": str(seq),
        "time_utc": time_of(ts),
        "kind": kind,
        "action": s(p.get("action")),
        "bot_id": s(p.get("bot_id") or p.get("claimed_identity")),
        "key_id": s(p.get("key_id")),
        "symbol": s(p.get("symbol")),
        "side": s(p.get("side")),
        "type": s(p.get("type")),
        "amount": s(p.get("amount")),
        "limit_price": s(p.get("limit_price")),
        "notional": s(p.get("notional")),
        "decision": decision,
        "rule_ids": " ".join(rule_ids),
        "reasons": messages,
        "policy_version": s(p.get("policy_version")),
        "client_order_id": s(p.get("client_order_id")),
        "exchange_order_id": s(source.get("exchange_order_id")),
        "status": s(source.get("status")),
        "proof": "",
    }


def summary_rows(report: Report) -> tuple[list[str], list[dict[str, str]]]:
    cols = ["subject", "id", "metric", "value"]
    rows: list[dict[str, str]] = []
    for kind, group in (("key", report.keys), ("bot", report.bots)):
        for ident, sub in group.items():
            for metric, value in (
                ("allowed", sub.allowed),
                ("denied", sub.denied),
                ("refused", sub.refused),
                ("cancels", sub.cancels),
            ):
                rows.append({"subject": kind, "id": ident, "metric": metric, "value": str(value)})
            for rule, n in sorted(sub.by_rule.items()):
                rows.append(
                    {"subject": kind, "id": ident, "metric": f"denied:{rule}", "value": str(n)}
                )
            for day, total in sorted(sub.notional_by_day.items()):
                rows.append(
                    {"subject": kind, "id": ident, "metric": f"notional:{day}", "value": str(total)}
                )
    return cols, rows


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def spreadsheet_safe(cell: str) -> str:
    """A cell a spreadsheet will show as text, never run as a formula (OWASP CSV injection):
    text starting with = + - @ tab or CR gets a leading apostrophe; plain numbers such as a
    negative amount are left as they are."""
    if cell.startswith(_FORMULA_START) and not _NUMBER.fullmatch(cell):
        return "'" + cell
    return cell


def write_csv(path: Path, columns: list[str], rows: list[dict[str, str]]) -> None:
    """Write `rows` for auditors' spreadsheets: every cell through `spreadsheet_safe`."""
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(
            {k: spreadsheet_safe(v) if isinstance(v, str) else v for k, v in row.items()}
            for row in rows
        )
