"""Order proofs and consistency proofs on a log written by a real signer run through gRPC.

The happy path runs the installed CLI in a subprocess (`python -m signer.cli`); the tampering
matrix runs the same `main()` in-process to stay fast. Every tampering of the log (a record
altered, removed, reordered or inserted) and of a proof file must make verification fail.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signer.audittreehead import SignedTreeHead
from signer.cli import main
from signer.core import now_ms
from signer.db import write_txn
from signer.proofs import check_proof
from tests.signer.stack import BOT_ID, KEY_ID, Stack


def cli(stack: Stack, *args: str) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "signer.cli", "audit", *args, *_where(stack.data_dir, stack)],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def run(capsys: pytest.CaptureFixture[str], data_dir: Path, stack: Stack, *args: str) -> Any:
    """The same CLI entry point in-process: (exit status, parsed --json output)."""
    try:
        main(["audit", *args, *_where(data_dir, stack)])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if captured.out.strip() else captured.err)


def _where(data_dir: Path, stack: Stack) -> list[str]:
    return ["--data-dir", str(data_dir), "--master-key-file", str(stack.keyfile), "--json"]


def place_orders(stack: Stack, prefix: str, n_allowed: int = 1) -> Decimal:
    client = stack.client()
    price = (stack.price() * Decimal("0.99")).quantize(Decimal("0.01"))
    for i in range(n_allowed):
        reply = client.submit_order("BTC/USDT", "buy", "limit", "0.01", price, f"{prefix}-{i}")
        assert reply.decision.allowed
    assert not client.submit_order(
        "DATA/USDT", "buy", "limit", "10", "0.5", f"{prefix}-thin"
    ).decision.allowed
    return price


def copy_data_dir(stack: Stack, dest: Path) -> Path:
    """A consistent copy of the live signer's data directory (SQLite online backup)."""
    dest.mkdir(mode=0o700)
    for name in ("signer.toml", "audit_pubkey.hex"):
        shutil.copy2(stack.data_dir / name, dest / name)
    src = sqlite3.connect(stack.data_dir / "signer.db")
    dst = sqlite3.connect(dest / "signer.db")
    src.backup(dst)
    src.close()
    dst.close()
    os.chmod(dest / "signer.db", 0o600)
    return dest


def test_a_victim_proves_one_order_and_the_newer_head_extends_the_older(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    """On SQLite and on PostgreSQL: the CLI reads whichever database signer.toml names."""
    root = stack.root
    pub = str(stack.data_dir / "audit_pubkey.hex")
    anchor = root / "anchor"
    anchor.mkdir()
    place_orders(stack, "v", 2)
    assert stack.client().cancel_order("BTC/USDT", "v-0").decision.allowed

    code, head = cli(stack, "sth", "--out", str(root / "old.json"), "--anchor", str(anchor))
    assert code == 0 and head["anchor"] == str(anchor)
    assert [p.name for p in anchor.iterdir()] == [
        f"sth-{head['tree_size']:012d}-{head['ts_ms']}.json"
    ]
    code, proved = cli(stack, "prove", "--order", "v-0", "--out", str(root / "v-0.json"))
    assert code == 0, proved
    doc = json.loads((root / "v-0.json").read_text())
    kinds = [(e["role"], json.loads(e["record"])["kind"]) for e in doc["records"]]
    assert kinds.count(("order", "decision")) == 2 and kinds.count(("order", "outcome")) == 2
    assert {"bot_registration", "policy"} <= {role for role, _ in kinds}
    assert doc["tree_head"] == {k: v for k, v in head.items() if k != "anchor"}  # the latest head

    code, checked = cli(stack, "check-proof", str(root / "v-0.json"), "--pubkey", pub)
    assert code == 0 and checked["ok"], checked
    facts = "\n".join(checked["facts"])
    assert "requested by bot bot-1" in facts and "policy v1 of key k1" in facts
    assert "create buy 0.01 BTC/USDT limit" in facts and "cancel" in facts

    # More trading; the newer head provably extends the older one, and the consistency proof
    # file checks offline; the anchor directory now holds both heads.
    place_orders(stack, "w")
    new = ["sth", "--out", str(root / "new.json"), "--anchor", str(anchor)]
    assert run(capsys, stack.data_dir, stack, *new)[0] == 0
    assert len(list(anchor.iterdir())) == 2
    code, result = cli(
        stack,
        "consistency",
        str(root / "old.json"),
        str(root / "new.json"),
        "--out",
        str(root / "consistency.json"),
    )
    assert code == 0, result
    check = ["check-proof", str(root / "consistency.json"), "--pubkey", pub]
    code, checked = run(capsys, stack.data_dir, stack, *check)
    assert code == 0 and "extends the tree of size" in checked["reason"]

    # The same from the export alone, as an auditor runs it off the signer host.
    export = stack.export(root / "audit.jsonl")
    offline = ["--export", str(export), "--pubkey", pub]
    code, result = run(
        capsys,
        root / "nowhere",
        stack,
        "consistency",
        str(root / "old.json"),
        str(root / "new.json"),
        *offline,
    )
    assert code == 0 and result["ok"], result

    # A head whose signature is wrong (re-timed after signing) fails, and says so.
    forged = json.loads((root / "new.json").read_text())
    forged["ts_ms"] += 1
    (root / "forged.json").write_text(json.dumps(forged))
    code, result = run(
        capsys,
        root / "nowhere",
        stack,
        "consistency",
        str(root / "old.json"),
        str(root / "forged.json"),
        *offline,
    )
    assert code == 1 and "new tree head's signature does not verify" in result["reason"]


@pytest.fixture
def proven(sqlite_stack: Stack, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """A log with an old and a new anchored head, and a proof of order t-0."""
    stack, root = sqlite_stack, sqlite_stack.root
    place_orders(stack, "t", 2)
    assert stack.client().cancel_order("BTC/USDT", "t-1").decision.allowed
    assert run(capsys, stack.data_dir, stack, "sth", "--out", str(root / "old.json"))[0] == 0
    place_orders(stack, "u")
    assert run(capsys, stack.data_dir, stack, "sth", "--out", str(root / "new.json"))[0] == 0
    code, _ = run(
        capsys, stack.data_dir, stack, "prove", "--order", "t-0", "--out", str(root / "p.json")
    )
    assert code == 0
    return json.loads((root / "p.json").read_text())


def _flip_hex(h: str) -> str:
    return ("0" if h[0] != "0" else "1") + h[1:]


PROOF_TAMPERING: dict[str, Callable[[dict[str, Any], dict[str, Any]], None]] = {
    "altered record": lambda d, o: d["records"][2].update(
        record=d["records"][2]["record"].replace('"amount":"0.01"', '"amount":"1.00"')
    ),
    "record removed (the bot's registration)": lambda d, o: d["records"].pop(0),
    "records reordered": lambda d, o: d["records"].reverse(),
    "record inserted from another order": lambda d, o: d["records"].append(
        next(e for e in o["records"] if e["role"] == "order")
    ),
    "record renumbered": lambda d, o: d["records"][-1].update(seq=d["records"][-1]["seq"] + 1),
    "inclusion path edited": lambda d, o: d["records"][-1]["inclusion_proof"].__setitem__(
        0, _flip_hex(d["records"][-1]["inclusion_proof"][0])
    ),
    "head re-timed (signature now wrong)": lambda d, o: d["tree_head"].update(
        ts_ms=d["tree_head"]["ts_ms"] + 1
    ),
    "head of another size": lambda d, o: d["tree_head"].update(
        {k: o["old_head"][k] for k in ("tree_size", "root_hash", "head_hash", "ts_ms", "sig")}
    ),
    "outcome relabelled as context (hidden from the order)": lambda d, o: next(
        e for e in d["records"] if '"kind":"outcome"' in e["record"]
    ).update(role="policy"),
}


@pytest.mark.parametrize("how", list(PROOF_TAMPERING))
def test_a_tampered_proof_file_fails_check_proof(
    proven: dict[str, Any], sqlite_stack: Stack, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    stack, root = sqlite_stack, sqlite_stack.root
    pub = stack.opened.audit.public_key
    assert check_proof(proven, pub).ok
    code, _ = run(
        capsys, stack.data_dir, stack, "prove", "--order", "u-0", "--out", str(root / "o.json")
    )
    other = json.loads((root / "o.json").read_text())
    other["old_head"] = json.loads((root / "old.json").read_text())
    assert code == 0 and other["old_head"]["root_hash"] != proven["tree_head"]["root_hash"]
    doc = json.loads(json.dumps(proven))
    PROOF_TAMPERING[how](doc, other)
    (root / "bad.json").write_text(json.dumps(doc))
    code, result = run(
        capsys,
        stack.data_dir,
        stack,
        "check-proof",
        str(root / "bad.json"),
        "--pubkey",
        str(stack.data_dir / "audit_pubkey.hex"),
    )
    assert code == 1 and not result["ok"], result


def test_a_head_signed_by_another_key_fails(proven: dict[str, Any], sqlite_stack: Stack) -> None:
    head = SignedTreeHead.from_obj(proven["tree_head"])
    forged = SignedTreeHead.sign(
        nacl.signing.SigningKey.generate(),
        head.tree_size,
        head.root_hash,
        head.head_hash,
        head.ts_ms,
    )
    result = check_proof(
        {**proven, "tree_head": forged.to_obj()}, sqlite_stack.opened.audit.public_key
    )
    assert not result.ok and "signature does not verify" in result.reason
    assert not check_proof(
        {"type": "bulkhead_order_proof"}, sqlite_stack.opened.audit.public_key
    ).ok
    assert not check_proof("garbage", sqlite_stack.opened.audit.public_key).ok


def _rows(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as c:
        return c.execute(
            "SELECT seq, ts_ms, kind, record, hash, sig, client_order_id FROM audit_records "
            "ORDER BY seq"
        ).fetchall()


def _rewrite(db: Path, rows: list[tuple[Any, ...]]) -> None:
    """Replace the table's rows with `rows` renumbered 1..n: what an insider with the
    database (but not the audit key) can do."""
    with sqlite3.connect(db) as c:
        c.execute("DELETE FROM audit_records")
        c.executemany(
            "INSERT INTO audit_records (seq, ts_ms, kind, record, hash, sig, client_order_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(i + 1, *r[1:]) for i, r in enumerate(rows)],
        )


def _alter(rows: list[tuple[Any, ...]], k: int) -> list[tuple[Any, ...]]:
    seq, ts, kind, record, h, sig, coid = rows[k]
    return (
        rows[:k]
        + [(seq, ts, kind, record.replace('"allowed":false', '"allowed":true'), h, sig, coid)]
        + rows[k + 1 :]
    )


LOG_TAMPERING: dict[str, Callable[[list[tuple[Any, ...]], int], list[tuple[Any, ...]]]] = {
    "altered": _alter,
    "removed": lambda rows, k: rows[:k] + rows[k + 1 :],
    "reordered": lambda rows, k: rows[:k] + [rows[k + 1], rows[k]] + rows[k + 2 :],
    "inserted": lambda rows, k: rows[:k] + [rows[k - 1]] + rows[k:],
}


@pytest.mark.parametrize("how", list(LOG_TAMPERING))
def test_a_tampered_log_cannot_be_proven_and_breaks_consistency(
    proven: dict[str, Any], sqlite_stack: Stack, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    stack, root = sqlite_stack, sqlite_stack.root
    copy = copy_data_dir(stack, root / "copy")
    rows = _rows(copy / "signer.db")
    old_size = json.loads((root / "old.json").read_text())["tree_size"]
    k = next(i for i, r in enumerate(rows) if r[6] == "t-thin")  # the denial, under the old head
    assert k + 1 < old_size
    if how == "altered":
        assert '"allowed":false' in rows[k][3]
    _rewrite(copy / "signer.db", LOG_TAMPERING[how](rows, k))

    # 1. A proof against the head the auditor kept cannot be produced from this log.
    code, result = run(
        capsys,
        copy,
        stack,
        "prove",
        "--order",
        "t-0",
        "--out",
        str(root / "x.json"),
        "--head",
        str(root / "new.json"),
    )
    assert code == 1 and "no longer hash" in result["reason"], result
    # 2. The kept heads are no longer consistent with the log.
    code, result = run(
        capsys, copy, stack, "consistency", str(root / "old.json"), str(root / "new.json")
    )
    assert code == 1 and not result["ok"], result
    # 3. With its stored heads wiped, the signer either refuses to sign (broken chain) or signs a
    #    head that does not extend the old one.
    with sqlite3.connect(copy / "signer.db") as c:
        c.execute("DELETE FROM audit_tree_heads")
    code, result = run(capsys, copy, stack, "sth", "--out", str(root / "after.json"))
    if how == "altered":
        assert code == 0
        code, result = run(
            capsys, copy, stack, "consistency", str(root / "old.json"), str(root / "after.json")
        )
        assert code == 1 and "no longer hash to the old head's root" in result["reason"], result
    else:
        assert code == 1 and "no tree head was signed" in result["reason"], result
    # The proof made before the tampering still verifies: it carries its own evidence.
    assert check_proof(proven, stack.opened.audit.public_key).ok


def test_a_proof_carries_a_later_key_grant_and_fails_when_the_log_grants_no_such_key(
    sqlite_stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    """The grant records are appended with the audit writer the admin actions use, without the
    matching state change (the signer still lets bot-1 use k1): a log whose grants disagree with
    its decisions, which only a faulty or subverted signer could write."""
    stack, root = sqlite_stack, sqlite_stack.root
    op, pub_hex = stack.opened, stack.bot.public_key.hex()
    registration = {"action": "register_bot", "actor": "t", "bot_id": BOT_ID, "key_ids": []}
    registration["public_key_hex"] = pub_hex
    grant = {"action": "grant_keys", "actor": "t", "bot_id": BOT_ID, "key_ids": [KEY_ID]}
    with write_txn(op.engine) as s:
        op.audit.append(s, "admin", registration, now_ms())
        grant_seq = op.audit.append(s, "admin", {**grant, "granted": [KEY_ID]}, now_ms()).seq
    place_orders(stack, "g")
    code, result = run(
        capsys, stack.data_dir, stack, "prove", "--order", "g-0", "--out", str(root / "g.json")
    )
    assert code == 0 and result["ok"], result
    roles = {e["role"]: e["seq"] for e in json.loads((root / "g.json").read_text())["records"]}
    assert roles["bot_grant"] == grant_seq and roles["bot_registration"] == grant_seq - 1
    assert f"key k1 granted at record {grant_seq}" in "\n".join(result["facts"])

    with write_txn(op.engine) as s:  # registered again, for no key; no grant follows
        op.audit.append(s, "admin", registration, now_ms())
    place_orders(stack, "h")
    code, result = run(
        capsys, stack.data_dir, stack, "prove", "--order", "h-0", "--out", str(root / "h.json")
    )
    assert code == 1 and "bot 'bot-1' was not granted that key" in result["reason"], result


def test_proving_an_unknown_order_is_a_usage_error(
    sqlite_stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run(
        capsys,
        sqlite_stack.data_dir,
        sqlite_stack,
        "prove",
        "--order",
        "nope",
        "--out",
        str(sqlite_stack.root / "x.json"),
    )
    assert code == 2 and "no audit record names client order id 'nope'" in err


def _leaves(obj: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in _leaves(v, (*path, k))]
    if isinstance(obj, list):
        return [p for i, v in enumerate(obj) for p in _leaves(v, (*path, i))]
    return [path]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_single_changed_value_in_a_proof_fails_and_never_crashes(
    proven: dict[str, Any], sqlite_stack: Stack, data: st.DataObject
) -> None:
    pub = sqlite_stack.opened.audit.public_key
    paths = _leaves(proven)
    path = data.draw(st.sampled_from(paths))
    doc = json.loads(json.dumps(proven))
    holder = doc
    for step in path[:-1]:
        holder = holder[step]
    old = holder[path[-1]]
    new = data.draw(
        st.one_of(
            st.integers(-2, 2**40),
            st.booleans(),
            st.none(),
            st.text(max_size=70),
            st.just(str(old).upper()),
            st.just(str(old)[:-1] + ("0" if str(old)[-1:] != "0" else "1")),
        ).filter(lambda v: v != old or type(v) is not type(old))
    )
    holder[path[-1]] = new
    result = check_proof(doc, pub)
    assert not result.ok, (path, old, new)
