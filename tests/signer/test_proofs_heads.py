"""Signed tree heads: incremental issuing, storage, the external anchor, the periodic thread, and
heads used as checkpoints by `audit verify` (SQLite and PostgreSQL)."""

from __future__ import annotations

import io
import json
import time
from decimal import Decimal

import nacl.signing
import pytest
from sqlalchemy import text

from signer.auditformat import (
    read_checkpoint_file,
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
from signer.auditverify import verify_jsonl, verify_session
from signer.config import parse_config
from signer.db import read_session
from signer.errors import ConfigError
from signer.proofs import check_proof, order_proof, order_records
from signer.server import OpenSigner, SignerServer
from tests.signer.stack import Stack


def trade(stack: Stack, coid: str) -> None:
    price = (stack.price() * Decimal("0.99")).quantize(Decimal("0.01"))
    assert stack.client().submit_order("BTC/USDT", "buy", "limit", "0.01", price, coid)


def export_lines(stack: Stack) -> list[str]:
    buf = io.StringIO()
    with read_session(stack.opened.engine) as s:
        stack.opened.audit.export_jsonl(s, buf)
    return buf.getvalue().splitlines()


def test_incremental_heads_match_the_full_tree_and_act_as_checkpoints(stack: Stack) -> None:
    op, pub = stack.opened, stack.opened.audit.public_key
    heads = []
    for i in range(3):
        trade(stack, f"h-{i}")
        heads.append(issue_tree_head(op.engine, op.audit, 1_000 + i))
    with read_session(op.engine) as s:
        assert latest_tree_head(s) == heads[-1]
        for head in heads:  # each resumed from the previous frontier, equal to a full rebuild
            assert head.verify(pub)
            assert log_tree(s, head.tree_size).root().hex() == head.root_hash
        assert (heads[-1].tree_size, heads[-1].head_hash) == op.audit.head(s)
        assert verify_session(s, pub).ok
        records = order_records(s, "h-1")
        tree = log_tree(s, heads[-1].tree_size)
    assert check_proof(order_proof(tree, heads[-1], "h-1", records), pub).ok
    lines = export_lines(stack)
    assert verify_jsonl(lines, pub, heads).ok

    # A head whose root is not the tree of the records it names fails as a checkpoint, even
    # though its chain head hash matches: it was signed over different records.
    wrong = op.audit.sign_tree_head(
        heads[0].tree_size, heads[1].root_hash, heads[0].head_hash, heads[0].ts_ms
    )
    report = verify_jsonl(lines, pub, [wrong])
    assert not report.ok and "Merkle root" in report.reason, report.summary
    alien = SignedTreeHead.sign(
        nacl.signing.SigningKey.generate(), 1, heads[0].root_hash, heads[0].head_hash, 5
    )
    assert "not validly signed" in verify_jsonl(lines, pub, [alien]).reason


def test_the_signer_refuses_to_sign_a_head_over_a_broken_chain(stack: Stack) -> None:
    op = stack.opened
    trade(stack, "b-1")
    first = issue_tree_head(op.engine, op.audit, 1)
    trade(stack, "b-2")
    with op.engine.begin() as c:  # an insider deletes a record appended after the last head
        c.execute(text("DELETE FROM audit_records WHERE seq = :s"), {"s": first.tree_size + 1})
    with pytest.raises(AuditIntegrityError, match=f"record {first.tree_size + 1} is missing"):
        issue_tree_head(op.engine, op.audit, 2)
    with read_session(op.engine) as s:
        assert latest_tree_head(s) == first  # nothing new was stored
        assert not verify_session(s, op.audit.public_key).ok


def test_heads_are_appended_to_an_anchor_file_or_directory(stack: Stack) -> None:
    op, root = stack.opened, stack.root
    (root / "dir").mkdir()
    issued = []
    for i in range(3):
        trade(stack, f"a-{i}")
        issued.append(issue_tree_head(op.engine, op.audit, 10 + i, root / "heads.jsonl"))
        issue_tree_head(op.engine, op.audit, 10 + i, root / "dir")
    assert read_heads(root / "heads.jsonl") == issued  # one canonical line per head
    assert [h.tree_size for h in read_heads(root / "dir")] == [h.tree_size for h in issued]
    assert (
        read_tree_head(root / "heads.jsonl")
        == issued[-1]
        == read_checkpoint_file(root / "heads.jsonl")
    )
    assert read_tree_head(root / "dir").tree_size == issued[-1].tree_size
    # `audit verify --checkpoint ANCHOR` takes the newest head of an anchor file.
    assert verify_jsonl(
        export_lines(stack), op.audit.public_key, [read_checkpoint_file(root / "heads.jsonl")]
    ).ok


def test_an_anchor_inside_the_data_dir_or_relative_is_refused(stack: Stack) -> None:
    for inside in (
        stack.data_dir,
        stack.data_dir / "heads.jsonl",
        stack.data_dir / "a" / ".." / "b",
    ):
        with pytest.raises(ConfigError, match="inside the data directory"):
            check_anchor(inside, stack.data_dir)
    assert check_anchor(stack.root / "heads", stack.data_dir) == stack.root / "heads"
    with pytest.raises(ConfigError, match="anchor_path: 'heads' is not allowed; .*absolute"):
        parse_config('anchor_path = "heads"')
    cfg = stack.opened.config.model_copy(update={"anchor_path": stack.data_dir / "heads"})
    op = OpenSigner(
        stack.data_dir, stack.opened.engine, stack.opened.keystore, stack.opened.audit, cfg
    )
    with pytest.raises(ConfigError, match="anchor_path"):
        SignerServer(op).start()  # refused before any socket is bound
    missing = stack.root / "not-mounted" / "heads.jsonl"
    with pytest.raises(ConfigError, match="anchor_path: .* does not exist"):
        check_anchor(missing, stack.data_dir)
    cfg = cfg.model_copy(update={"anchor_path": missing, "socket": stack.root / "m.sock"})
    op = OpenSigner(
        stack.data_dir, stack.opened.engine, stack.opened.keystore, stack.opened.audit, cfg
    )
    with pytest.raises(ConfigError, match="anchor_path"):
        SignerServer(op).start()
    assert not (stack.root / "m.sock").exists()


def test_the_periodic_thread_signs_stores_and_anchors_heads(stack: Stack) -> None:
    anchor = stack.root / "anchor.jsonl"
    cfg = stack.opened.config.model_copy(
        update={
            "checkpoint_interval_s": 1,
            "anchor_path": anchor,
            "socket": stack.root / "s2.sock",
            "admin_socket": stack.root / "a2.sock",
            "reconcile_interval_s": 0,
        }
    )
    o = stack.opened
    server = SignerServer(OpenSigner(stack.data_dir, o.engine, o.keystore, o.audit, cfg))
    server.start()
    try:
        trade(stack, "p-1")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # waits for the thread's second tick, not a guess
            if anchor.exists() and len(anchor.read_text().splitlines()) >= 2:
                break
            time.sleep(0.05)
    finally:
        server.stop(0)
    heads = read_heads(anchor)
    assert len(heads) >= 2 and all(h.verify(o.audit.public_key) for h in heads)
    assert all(isinstance(h, SignedTreeHead) for h in heads)
    with read_session(o.engine) as s:
        stored = s.execute(text("SELECT tree_size, root_hash FROM audit_tree_heads")).all()
    assert {(h.tree_size, h.root_hash) for h in heads} <= {tuple(r) for r in stored}
    assert json.loads(anchor.read_text().splitlines()[0])["type"] == "tree_head"


def test_cli_anchor_inside_the_data_dir_is_a_usage_error(
    sqlite_stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    from signer.cli import main

    args = ["audit", "sth", "--anchor", str(sqlite_stack.data_dir / "x.jsonl")]
    args += [
        "--data-dir",
        str(sqlite_stack.data_dir),
        "--master-key-file",
        str(sqlite_stack.keyfile),
    ]
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2 and "inside the data directory" in capsys.readouterr().err
    assert not (sqlite_stack.data_dir / "x.jsonl").exists()
