"""The RFC 6962 tree: published vectors, brute force, and properties over random sizes."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from signer import merkle

# The 8-leaf reference tree of certificate-transparency (cpp/merkletree/merkle_tree_test.cc),
# also used by google/trillian and transparency-dev/merkle test data.
LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
INCLUSION = [  # (index, tree size, path) from the same test data
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]
HASHES = [merkle.leaf_hash(x) for x in LEAVES]


def brute_root(leaves: list[bytes]) -> bytes:
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return merkle.node_hash(brute_root(leaves[:k]), brute_root(leaves[k:]))


def test_reference_roots_for_every_size() -> None:
    assert merkle.root([]) == bytes.fromhex(
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    for n in range(1, 9):
        assert merkle.root(HASHES[:n]).hex() == ROOTS[n - 1]


def test_reference_inclusion_proofs() -> None:
    for index, size, path in INCLUSION:
        proof = merkle.inclusion_proof(HASHES, index, size)
        assert [p.hex() for p in proof] == path
        assert merkle.verify_inclusion(
            HASHES[index], index, size, proof, bytes.fromhex(ROOTS[size - 1])
        )


sizes = st.integers(min_value=1, max_value=120)


@settings(max_examples=60, deadline=None)
@given(size=sizes, data=st.data())
def test_inclusion_proofs_verify_and_any_change_fails(size: int, data: st.DataObject) -> None:
    leaves = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(size)]
    top = merkle.root(leaves)
    assert top == brute_root(leaves)
    index = data.draw(st.integers(0, size - 1))
    proof = merkle.inclusion_proof(leaves, index)
    assert merkle.verify_inclusion(leaves[index], index, size, proof, top)
    bigger = leaves + [merkle.leaf_hash(b"later")]
    assert not merkle.verify_inclusion(leaves[index], index, size + 1, proof, merkle.root(bigger))
    if size > 1:
        other = (index + 1) % size
        assert not merkle.verify_inclusion(leaves[index], other, size, proof, top)
        assert not merkle.verify_inclusion(leaves[other], index, size, proof, top)
        j = data.draw(st.integers(0, len(proof) - 1))
        bad = list(proof)
        bad[j] = bytes([bad[j][0] ^ 1]) + bad[j][1:]
        assert not merkle.verify_inclusion(leaves[index], index, size, bad, top)


@settings(max_examples=60, deadline=None)
@given(new=sizes, data=st.data())
def test_consistency_proofs_verify_and_a_changed_history_fails(
    new: int, data: st.DataObject
) -> None:
    leaves = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(new)]
    old = data.draw(st.integers(1, new))
    proof = merkle.consistency_proof(leaves, old)
    old_root, new_root = merkle.root(leaves[:old]), merkle.root(leaves)
    assert merkle.verify_consistency(old, new, old_root, new_root, proof)
    # Rewrite one earlier record: the new tree no longer extends the old one.
    changed = list(leaves)
    victim = data.draw(st.integers(0, old - 1))
    changed[victim] = merkle.leaf_hash(b"forged")
    forged_root = merkle.root(changed)
    forged_proof = merkle.consistency_proof(changed, old)
    assert not merkle.verify_consistency(old, new, old_root, forged_root, forged_proof)
    if proof:
        bad = list(proof)
        bad[0] = bytes([bad[0][0] ^ 1]) + bad[0][1:]
        assert not merkle.verify_consistency(old, new, old_root, new_root, bad)
