"""Properties of the proposal document (pure, offline): one change, one canonical byte string;
an approval covers exactly those bytes and nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from signer import proposal_doc as pdoc
from signer.errors import ConfigError

ids = st.from_regex(r"[A-Za-z0-9_.-]{1,20}", fullmatch=True)
KEYS = [SigningKey.generate() for _ in range(2)]

changes = st.one_of(
    st.builds(
        lambda k, all_, r: {"kind": "unfreeze", "key_id": None if all_ else k, "reason": r},
        ids,
        st.booleans(),
        st.text(max_size=40),
    ),
    st.builds(
        lambda b, keys: {
            "kind": "register_bot",
            "bot_id": b,
            "public_key_hex": KEYS[0].verify_key.encode().hex(),
            "key_ids": keys,
        },
        ids,
        st.lists(ids, max_size=3),
    ),
    st.builds(
        lambda c, m, lock: {"kind": "set_quorum", "target_class": c, "m": m, "time_lock_s": lock},
        st.sampled_from(["policy", "unfreeze", "bots", "keys", "operators"]),
        st.integers(1, 9),
        st.integers(0, 86_400),
    ),
)


def document_of(change: dict[str, object], version: int, created: int) -> bytes:
    c = pdoc.parse_change(change)
    doc = pdoc.ProposalDoc(
        action_class=c.action_class,  # type: ignore[arg-type]
        change=c,
        base=pdoc.BaseVersion(subject=c.subject, version=version),
        created_ms=created,
        expires_ms=created + 60_000,
        nonce="0" * 32,
        proposer="operator:op-1",
    )
    return pdoc.canonical(doc)


@settings(max_examples=60, deadline=None)
@given(changes, st.integers(0, 10**6), st.integers(1, 2**40))
def test_a_document_has_exactly_one_byte_form(
    change: dict[str, object], version: int, created: int
) -> None:
    document = document_of(change, version, created)
    assert pdoc.canonical(pdoc.parse_document(document)) == document
    pretty = json.dumps(json.loads(document), indent=1).encode()
    with pytest.raises(ConfigError, match="canonical"):
        pdoc.parse_document(pretty)


@settings(max_examples=60, deadline=None)
@given(changes, st.integers(0, 10**6), st.data())
def test_an_approval_covers_only_its_exact_bytes(
    change: dict[str, object], version: int, data: st.DataObject
) -> None:
    document = document_of(change, version, 1_700_000_000_000)
    sig = pdoc.sign_document(KEYS[0], document)
    pub0, pub1 = (k.verify_key.encode().hex() for k in KEYS)
    assert pdoc.signature_valid(pub0, document, sig)
    assert not pdoc.signature_valid(pub1, document, sig)
    i = data.draw(st.integers(0, len(document) - 1))
    flipped = document[:i] + bytes([document[i] ^ 0x01]) + document[i + 1 :]
    assert not pdoc.signature_valid(pub0, flipped, sig)


def test_offline_signing_appends_and_refuses_a_second_signature_by_the_same_key(
    tmp_path: Path,
) -> None:
    document = document_of({"kind": "unfreeze", "key_id": "k1"}, 3, 1_700_000_000_000)
    path = tmp_path / "p.json"
    pdoc.write_file(path, document, [])
    pdoc.add_signature(path, KEYS[0], "op-1")
    pdoc.add_signature(path, KEYS[1], "op-2")
    same, sigs = pdoc.read_file(path)
    assert same == document and [s["operator_id"] for s in sigs] == ["op-1", "op-2"]
    with pytest.raises(ConfigError, match="already signed"):
        pdoc.add_signature(path, KEYS[0], "op-1")
    tampered = json.loads(path.read_text())
    tampered["document"] = tampered["document"].replace('"k1"', '"k2"')
    path.write_text(json.dumps(tampered))
    with pytest.raises(ConfigError, match="proposal_id does not match"):
        pdoc.read_file(path)
