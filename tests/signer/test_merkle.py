"""The RFC 6962 tree: published vectors, a brute-force recomputation, and random tree sizes.

Reference data: the 8-leaf tree of certificate-transparency's C++ merkle tree tests, as kept in
github.com/transparency-dev/merkle, file proof/verify_test.go (variables `leaves`, `roots`,
`inclusionProofs`, `consistencyProofs`; the same vectors google/trillian shipped in
merkle/log_verifier_test.go). Leaf numbers there are 1-based; here indices are 0-based.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signer import merkle

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
INCLUSION = [  # (0-based index, tree size, path)
    (0, 1, []),
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
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
CONSISTENCY = [  # (old size, new size, proof)
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]
HASHES = [merkle.leaf_hash(x) for x in LEAVES]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


# --- brute force: RFC 6962 section 2.1, written straight from the text ----------------------


def mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return d[0]
    k = 1
    while k * 2 < len(d):
        k *= 2
    return hashlib.sha256(b"\x01" + mth(d[:k]) + mth(d[k:])).digest()


def path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) <= 1:
        return []
    k = 1
    while k * 2 < len(d):
        k *= 2
    if m < k:
        return path(m, d[:k]) + [mth(d[k:])]
    return path(m - k, d[k:]) + [mth(d[:k])]


def subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return subproof(m, d[:k], b) + [mth(d[k:])]
    return subproof(m - k, d[k:], False) + [mth(d[:k])]


def flip(h: bytes) -> bytes:
    return bytes([h[0] ^ 16]) + h[1:]


# --- the published vectors ----------------------------------------------------------------


def test_reference_roots_for_every_size_and_the_empty_tree() -> None:
    assert merkle.root([]).hex() == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    tree = merkle.MerkleTree(HASHES)
    for n in range(1, 9):
        assert tree.root(n).hex() == ROOTS[n - 1]
        assert merkle.root(HASHES[:n]).hex() == ROOTS[n - 1]


@pytest.mark.parametrize(("index", "size", "expected"), INCLUSION)
def test_reference_inclusion_proofs_are_produced_and_verify(
    index: int, size: int, expected: list[str]
) -> None:
    proof = merkle.MerkleTree(HASHES).inclusion_proof(index, size)
    assert [p.hex() for p in proof] == expected
    assert merkle.verify_inclusion(
        HASHES[index], index, size, proof, bytes.fromhex(ROOTS[size - 1])
    )


@pytest.mark.parametrize(("index", "size", "good"), [v for v in INCLUSION if v[2]])
def test_corrupted_reference_inclusion_proofs_fail(index: int, size: int, good: list[str]) -> None:
    """The probes of transparency-dev's corruptInclusionProof, each must be refused."""
    proof, leaf, top = (
        [bytes.fromhex(h) for h in good],
        HASHES[index],
        bytes.fromhex(ROOTS[size - 1]),
    )
    probes = [
        (index - 1, size, top, leaf, proof),
        (index + 1, size, top, leaf, proof),
        (index ^ 2, size, top, leaf, proof),
        (index, size * 2, top, leaf, proof),
        (index, size // 2, top, leaf, proof),
        (index, size, top, merkle.leaf_hash(b"WrongLeaf"), proof),
        (index, size, merkle.EMPTY_ROOT, leaf, proof),
        (index, size, SOME_HASH, leaf, proof),
        (index, size, top, leaf, [*proof, b""]),
        (index, size, top, leaf, [*proof, top]),
        (index, size, top, leaf, [b"", *proof]),
        (index, size, top, leaf, [top, *proof]),
        (index, size, top, leaf, proof[:-1]),
        (index, size, top, leaf, [proof[0], SOME_HASH, *proof[1:]]),
    ]
    probes += [
        (index, size, top, leaf, [*proof[:i], flip(proof[i]), *proof[i + 1 :]])
        for i in range(len(proof))
    ]
    for i, (idx, sz, rt, lf, pf) in enumerate(probes):
        assert not merkle.verify_inclusion(lf, idx, sz, pf, rt), f"probe {i} verified"


@pytest.mark.parametrize(("old", "new", "expected"), CONSISTENCY)
def test_reference_consistency_proofs_are_produced_and_verify(
    old: int, new: int, expected: list[str]
) -> None:
    proof = merkle.MerkleTree(HASHES).consistency_proof(old, new)
    assert [p.hex() for p in proof] == expected
    r1, r2 = bytes.fromhex(ROOTS[old - 1]), bytes.fromhex(ROOTS[new - 1])
    assert merkle.verify_consistency(old, new, r1, r2, proof)


@pytest.mark.parametrize(("old", "new", "good"), [v for v in CONSISTENCY if v[2]])
def test_corrupted_reference_consistency_proofs_fail(old: int, new: int, good: list[str]) -> None:
    """The probes of transparency-dev's corruptConsistencyProof, each must be refused."""
    proof = [bytes.fromhex(h) for h in good]
    r1, r2 = bytes.fromhex(ROOTS[old - 1]), bytes.fromhex(ROOTS[new - 1])
    wrong = hashlib.sha256(b"WrongRoot").digest()
    probes = [
        (old - 1, new, r1, r2, proof),
        (old + 1, new, r1, r2, proof),
        (old ^ 2, new, r1, r2, proof),
        (old, new * 2, r1, r2, proof),
        (old, new // 2, r1, r2, proof),
        (old, new, wrong, r2, proof),
        (old, new, r1, wrong, proof),
        (old, new, r2, r1, proof),
        (old, new, r1, r2, []),
        (old, new, r1, r2, [*proof, b""]),
        (old, new, r1, r2, [*proof, r1]),
        (old, new, r1, r2, [*proof, r2]),
        (old, new, r1, r2, [b"", *proof]),
        (old, new, r1, r2, [r1, *proof]),
        (old, new, r1, r2, [r2, *proof]),
        (old, new, r1, r2, [proof[0], *proof]),
        (old, new, r1, r2, proof[:-1]),
    ]
    probes += [
        (old, new, r1, r2, [*proof[:i], flip(proof[i]), *proof[i + 1 :]]) for i in range(len(proof))
    ]
    for i, (m, n, a, b, pf) in enumerate(probes):
        assert not merkle.verify_consistency(m, n, a, b, pf), f"probe {i} verified"


def test_the_empty_tree_is_consistent_with_every_tree_only_with_an_empty_proof() -> None:
    r8 = bytes.fromhex(ROOTS[7])
    assert merkle.verify_consistency(0, 8, merkle.EMPTY_ROOT, r8, [])
    assert not merkle.verify_consistency(0, 8, merkle.EMPTY_ROOT, r8, [merkle.EMPTY_ROOT])
    assert not merkle.verify_consistency(2, 1, r8, r8, [])


# --- brute force over every small tree ------------------------------------------------------


def test_every_proof_of_every_tree_up_to_40_leaves_matches_brute_force() -> None:
    leaves = [merkle.leaf_hash(i.to_bytes(2, "big")) for i in range(40)]
    tree = merkle.MerkleTree(leaves)
    for n in range(1, 41):
        d = leaves[:n]
        assert tree.root(n) == mth(d)
        for m in range(n):
            assert tree.inclusion_proof(m, n) == path(m, d)
        for m in range(1, n + 1):
            assert tree.consistency_proof(m, n) == subproof(m, d, True)


# --- random sizes -----------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(size=st.integers(1, 3000), data=st.data())
def test_inclusion_proofs_of_random_trees_match_brute_force_and_any_change_fails(
    size: int, data: st.DataObject
) -> None:
    leaves = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(size)]
    tree = merkle.MerkleTree(leaves)
    top = tree.root()
    assert top == mth(leaves)
    index = data.draw(st.integers(0, size - 1))
    proof = tree.inclusion_proof(index)
    assert proof == path(index, leaves)
    assert len(proof) <= (size - 1).bit_length()
    assert merkle.verify_inclusion(leaves[index], index, size, proof, top)
    assert not merkle.verify_inclusion(merkle.leaf_hash(b"forged"), index, size, proof, top)
    if size > 1:
        other = data.draw(st.integers(0, size - 1).filter(lambda i: i != index))
        assert not merkle.verify_inclusion(leaves[index], other, size, proof, top)
        j = data.draw(st.integers(0, len(proof) - 1))
        assert not merkle.verify_inclusion(
            leaves[index], index, size, [*proof[:j], flip(proof[j]), *proof[j + 1 :]], top
        )


@settings(max_examples=40, deadline=None)
@given(new=st.integers(1, 3000), data=st.data())
def test_consistency_proofs_of_random_trees_verify_and_a_changed_history_fails(
    new: int, data: st.DataObject
) -> None:
    leaves = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(new)]
    tree = merkle.MerkleTree(leaves)
    old = data.draw(st.integers(1, new))
    proof = tree.consistency_proof(old)
    assert proof == subproof(old, leaves, True)
    old_root, new_root = tree.root(old), tree.root()
    assert merkle.verify_consistency(old, new, old_root, new_root, proof)
    # Rewrite, drop or swap one earlier record: the new tree no longer extends the old one.
    victim = data.draw(st.integers(0, old - 1))
    edits = {
        "changed": [*leaves[:victim], merkle.leaf_hash(b"forged"), *leaves[victim + 1 :]],
        "removed": leaves[:victim] + leaves[victim + 1 :] + [merkle.leaf_hash(b"pad")],
        "inserted": [*leaves[:victim], merkle.leaf_hash(b"new"), *leaves[victim:-1]],
    }
    if victim + 1 < new:
        swapped = list(leaves)
        swapped[victim], swapped[victim + 1] = swapped[victim + 1], swapped[victim]
        edits["reordered"] = swapped
    for name, forged in edits.items():
        ftree = merkle.MerkleTree(forged)
        ok = merkle.verify_consistency(
            old, new, old_root, ftree.root(), ftree.consistency_proof(old)
        )
        assert not ok, name


@settings(max_examples=30, deadline=None)
@given(size=st.integers(0, 2100))
def test_the_frontier_gives_the_root_of_every_prefix(size: int) -> None:
    leaves = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(size)]
    f = merkle.Frontier()
    for leaf in leaves:
        f.append(leaf)
    assert f.root() == mth(leaves)
    assert len(f.hashes) == bin(size).count("1")
    resumed = merkle.Frontier(f.size, f.hashes)
    resumed.append(merkle.leaf_hash(b"next"))
    assert resumed.root() == mth([*leaves, merkle.leaf_hash(b"next")])


def test_bad_sizes_and_shapes_are_refused() -> None:
    tree = merkle.MerkleTree(HASHES)
    with pytest.raises(ValueError, match="index 8"):
        tree.inclusion_proof(8)
    with pytest.raises(ValueError, match="outside"):
        tree.root(9)
    with pytest.raises(ValueError, match="growing"):
        tree.consistency_proof(5, 4)
    with pytest.raises(ValueError, match="32 bytes"):
        merkle.MerkleTree([b"short"])
    with pytest.raises(ValueError, match="hashes"):
        merkle.Frontier(3, [merkle.EMPTY_ROOT])


# --- transparency-dev's edge cases (TestVerifyInclusion, TestVerifyConsistency) -------------

EMPTY_TREE = bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")


@pytest.mark.parametrize(("index", "size"), [(0, 0), (0, 1), (1, 0), (2, 1)])
def test_an_empty_inclusion_proof_never_verifies_a_wrong_leaf_root_or_size(
    index: int, size: int
) -> None:
    assert not merkle.verify_inclusion(SOME_HASH, index, size, [], b"")
    assert not merkle.verify_inclusion(b"", index, size, [], EMPTY_TREE)
    assert not merkle.verify_inclusion(SOME_HASH, index, size, [], EMPTY_TREE)


def test_a_single_entry_tree_needs_the_exact_leaf_and_root() -> None:
    leaf = merkle.leaf_hash(b"data")
    assert merkle.verify_inclusion(leaf, 0, 1, [], leaf)
    for root, candidate in ((leaf, b""), (b"", leaf), (b"", b"")):
        assert not merkle.verify_inclusion(candidate, 0, 1, [], root)


@pytest.mark.parametrize(
    ("old", "new", "old_root", "new_root", "proof", "ok"),
    [
        (0, 0, b"don't care 1", b"don't care 2", [], False),
        (1, 1, b"don't care 1", b"don't care 2", [], False),
        (0, 0, b"don't care 1", b"don't care 1", [], True),
        (0, 1, b"don't care 1", b"don't care 2", [], True),
        (1, 1, b"don't care 2", b"don't care 2", [], True),
        (1, 0, b"don't care 1", b"don't care 2", [], False),  # time travel to the past
        (2, 1, b"don't care 1", b"don't care 2", [], False),
        (1, 2, b"don't care 1", b"don't care 2", [], False),  # an empty proof
        (0, 0, EMPTY_TREE, b"don't care 2", [], False),  # roots differ
        (1, 1, EMPTY_TREE, b"don't care 2", [], False),
        (0, 0, EMPTY_TREE, EMPTY_TREE, [EMPTY_TREE], False),  # roots match, proof not empty
        (0, 1, EMPTY_TREE, EMPTY_TREE, [EMPTY_TREE], False),
        (1, 1, EMPTY_TREE, EMPTY_TREE, [EMPTY_TREE], False),
    ],
)
def test_trivial_consistency_cases_match_the_reference_table(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: list[bytes], ok: bool
) -> None:
    assert merkle.verify_consistency(old, new, old_root, new_root, proof) is ok
