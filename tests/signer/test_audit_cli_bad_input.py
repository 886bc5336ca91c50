"""Bad input to the auditor's commands (`audit sth|prove|check-proof|consistency|report|verify`):
one clear line naming the flag or file and what is wrong, exit status 2 (1 when a proof or head
is readable but does not verify), and nothing changes: no head stored, no anchor written.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import nacl.signing
import pytest
from sqlalchemy import func, select

from signer.auditlog import AuditTreeHeadRow
from signer.audittreehead import SignedTreeHead
from signer.cli import main
from signer.db import read_session
from tests.signer.stack import Stack, build_stack


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One real signer run (one allowed order through gRPC) and two anchored heads."""
    root = tmp_path_factory.mktemp("badinput")
    stack = build_stack(root)
    try:
        from decimal import Decimal

        price = (stack.price() * Decimal("0.99")).quantize(Decimal("0.01"))
        client = stack.client()
        assert client.submit_order("BTC/USDT", "buy", "limit", "0.01", price, "o-1").decision
        common = ["--data-dir", str(stack.data_dir), "--master-key-file", str(stack.keyfile)]
        main(["audit", "sth", "--out", str(root / "old.json"), *common])
        assert client.submit_order("BTC/USDT", "buy", "limit", "0.01", price, "o-2").decision
        main(["audit", "sth", "--out", str(root / "new.json"), *common])
        main(["audit", "checkpoint", "--out", str(root / "checkpoint.json"), *common])
        main(["audit", "prove", "--order", "o-1", "--out", str(root / "o-1.json"), *common])
        yield {
            "stack": stack,
            "root": root,
            "common": common,
            "pub": str(stack.data_dir / "audit_pubkey.hex"),
            "export": stack.export(root / "audit.jsonl"),
        }
    finally:
        stack.stop()


def heads_stored(stack: Stack) -> int:
    with read_session(stack.opened.engine) as s:
        return int(s.scalar(select(func.count()).select_from(AuditTreeHeadRow)) or 0)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`bulkhead-signer audit ARGS`: (exit status, stdout, stderr)."""
    try:
        main(["audit", *args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def usage_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Exit 2 with exactly one line on stderr, no traceback; returns that line."""
    code, out, err = run(capsys, *args)
    assert code == 2, (code, out, err)
    assert out == "" and err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_sth_with_an_anchor_inside_the_data_dir_or_in_a_missing_directory_changes_nothing(
    signer: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    stack, common = signer["stack"], signer["common"]
    before = heads_stored(stack)
    inside = stack.data_dir / "heads.jsonl"
    err = usage_error(capsys, "sth", "--anchor", str(inside), *common)
    assert f"--anchor: {inside} is inside the data directory" in err
    missing = signer["root"] / "no-such-dir" / "heads.jsonl"
    err = usage_error(capsys, "sth", "--anchor", str(missing), *common)
    assert f"--anchor: {missing} does not exist" in err
    assert not inside.exists() and not missing.parent.exists()
    assert heads_stored(stack) == before


def test_prove_refuses_an_unknown_order_and_heads_it_cannot_use(
    signer: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    stack, root, common = signer["stack"], signer["root"], signer["common"]
    before = heads_stored(stack)
    out = root / "p.json"
    err = usage_error(capsys, "prove", "--order", "nope", "--out", str(out), *common)
    assert "--order: no audit record names client order id 'nope'" in err
    # A chain checkpoint is not a tree head: no root to prove against.
    err = usage_error(
        capsys, "prove", "--order", "o-1", "--out", str(out), "--head",
        str(root / "checkpoint.json"), *common,
    )  # fmt: skip
    assert "holds no signed tree head" in err
    (root / "garbage.json").write_text("{not json")
    err = usage_error(
        capsys, "prove", "--order", "o-1", "--out", str(out), "--head",
        str(root / "garbage.json"), *common,
    )  # fmt: skip
    assert "--head:" in err and "not valid JSON" in err
    # The old head was signed before order o-2 existed: it cannot prove it.
    err = usage_error(
        capsys, "prove", "--order", "o-2", "--out", str(out), "--head", str(root / "old.json"),
        *common,
    )  # fmt: skip
    assert "--head: covers" in err and "audit sth" in err
    # A head signed by some other key.
    head = SignedTreeHead.from_obj(json.loads((root / "new.json").read_text()))
    alien = SignedTreeHead.sign(
        nacl.signing.SigningKey.generate(), head.tree_size, head.root_hash, head.head_hash, 1
    )
    (root / "alien.json").write_text(alien.to_json())
    err = usage_error(
        capsys, "prove", "--order", "o-1", "--out", str(out), "--head", str(root / "alien.json"),
        *common,
    )  # fmt: skip
    assert "--head: not signed by this signer's audit key" in err
    err = usage_error(
        capsys, "prove", "--order", "o-1", "--out", str(out), "--anchor",
        str(stack.data_dir / "a.jsonl"), *common,
    )  # fmt: skip
    assert "inside the data directory" in err
    assert not out.exists() and heads_stored(stack) == before


def test_check_proof_refuses_unreadable_input_and_fails_what_is_not_a_proof(
    signer: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    root, pub = signer["root"], signer["pub"]
    proof = str(root / "o-1.json")
    err = usage_error(capsys, "check-proof", str(root / "absent.json"), "--pubkey", pub)
    assert "absent.json" in err and "No such file" in err
    (root / "short.hex").write_text("abcd\n")
    err = usage_error(capsys, "check-proof", proof, "--pubkey", str(root / "short.hex"))
    assert "--pubkey:" in err and "64 hex characters" in err
    for text, why in (
        ("{not json", "not a proof"),
        ("[1, 2]", "not a proof"),
        ('{"v": 1, "type": "something_else"}', "unknown proof type"),
        ('{"v": 2, "type": "bulkhead_order_proof"}', "version 2 is not 1"),
    ):
        (root / "odd.json").write_text(text)
        code, out, _ = run(capsys, "check-proof", str(root / "odd.json"), "--pubkey", pub, "--json")
        result = json.loads(out)
        assert code == 1 and not result["ok"] and why in result["reason"], (text, result)
    # The genuine proof, checked with another public key, fails on the head's signature.
    (root / "other.hex").write_text(nacl.signing.SigningKey.generate().verify_key.encode().hex())
    code, out, _ = run(capsys, "check-proof", proof, "--pubkey", str(root / "other.hex"), "--json")
    assert code == 1 and "signature does not verify" in json.loads(out)["reason"]
    code, out, _ = run(capsys, "check-proof", proof, "--pubkey", pub, "--json")
    assert code == 0 and json.loads(out)["ok"]


def test_consistency_refuses_bad_head_files_and_fails_heads_that_go_backwards(
    signer: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    root, pub, export = signer["root"], signer["pub"], str(signer["export"])
    old, new = str(root / "old.json"), str(root / "new.json")
    offline = ["--export", export, "--pubkey", pub]
    err = usage_error(capsys, "consistency", str(root / "absent.json"), new, *offline)
    assert err.startswith("error: OLD_HEAD:") and "cannot read" in err
    err = usage_error(capsys, "consistency", old, str(root / "checkpoint.json"), *offline)
    assert err.startswith("error: NEW_HEAD:") and "holds no signed tree head" in err
    (root / "notes.txt").write_text("not an export\n")
    err = usage_error(
        capsys, "consistency", old, new, "--export", str(root / "notes.txt"), "--pubkey", pub
    )
    assert "--export:" in err and "line 1 is not JSON" in err
    err = usage_error(capsys, "consistency", old, new, "--data-dir", str(root / "nowhere"))
    assert "--pubkey:" in err  # no data dir: no public key either
    empty = root / "empty-data"
    empty.mkdir(exist_ok=True)
    err = usage_error(capsys, "consistency", old, new, "--data-dir", str(empty), "--pubkey", pub)
    assert "--data-dir:" in err and "no signer.db" in err
    assert list(empty.iterdir()) == []  # no database file was created
    # Readable heads in the wrong order: a verdict, not a usage error.
    code, out, _ = run(capsys, "consistency", new, old, *offline, "--json")
    assert code == 1 and "larger than the new one" in json.loads(out)["reason"]
    code, out, _ = run(capsys, "consistency", old, new, *offline, "--json")
    assert code == 0 and json.loads(out)["ok"]


def test_report_and_verify_refuse_unreadable_input_and_write_nothing(
    signer: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    root, pub, export = signer["root"], signer["pub"], str(signer["export"])
    out = root / "rep"
    err = usage_error(
        capsys, "report", str(root / "absent.jsonl"), "--pubkey", pub, "--out", str(out)
    )
    assert "absent.jsonl" in err
    err = usage_error(
        capsys, "report", export, "--pubkey", str(root / "absent.hex"), "--out", str(out)
    )
    assert "--pubkey:" in err and "cannot read public key file" in err
    (root / "garbage.json").write_text("{not json")
    err = usage_error(
        capsys, "report", export, "--pubkey", pub, "--out", str(out), "--head",
        str(root / "garbage.json"),
    )  # fmt: skip
    assert "--head:" in err
    assert not out.exists()
    err = usage_error(capsys, "verify", export, "--pubkey", str(root / "absent.hex"))
    assert "--pubkey:" in err and "cannot read public key file" in err
    err = usage_error(
        capsys, "verify", export, "--pubkey", pub, "--checkpoint", str(root / "garbage.json")
    )
    assert "--checkpoint:" in err and "not valid JSON" in err
