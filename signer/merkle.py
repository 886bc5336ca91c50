"""RFC 6962 (Certificate Transparency) Merkle tree over the audit records' exact bytes.

leaf = SHA-256(0x00 || record bytes); interior = SHA-256(0x01 || left || right); a tree of n
leaves splits at the largest power of two below n. Inclusion proofs let a victim prove one
order's records against a signed tree head without the whole log; consistency proofs show a
newer head extends an older one (nothing earlier changed or vanished). Pure: no I/O.

`MerkleTree` keeps every level of the tree as one contiguous byte string (32 bytes a node), so
building it costs n-1 node hashes once and each proof then costs O(log n) lookups; a million
leaves take about 64 MB. `Frontier` is the O(log n) "compact range" the signer keeps to extend
a signed tree head with new records without rereading the old ones. Verification follows
RFC 9162 sections 2.1.3.2 and 2.1.4.2.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

HASH_LEN = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two strictly below n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class MerkleTree:
    """All levels of the tree over `leaf_hashes`; proofs for any size up to `size`.

    Level k holds the roots of the complete subtrees of 2**k leaves, left to right. A tree of
    any smaller size m is a prefix: its complete subtrees are the same nodes.
    """

    def __init__(self, leaf_hashes: Iterable[bytes]) -> None:
        level = b"".join(leaf_hashes)
        if len(level) % HASH_LEN:
            raise ValueError("leaf hashes must be 32 bytes each")
        self.size = len(level) // HASH_LEN
        self._levels = [level]
        while len(level) >= 2 * HASH_LEN:
            view = memoryview(level)
            pairs = len(level) // (2 * HASH_LEN)
            level = b"".join(
                _sha256(b"\x01" + view[i : i + 2 * HASH_LEN]).digest()
                for i in range(0, pairs * 2 * HASH_LEN, 2 * HASH_LEN)
            )
            self._levels.append(level)

    def leaf(self, index: int) -> bytes:
        return self._node(0, index)

    def _node(self, height: int, index: int) -> bytes:
        at = index * HASH_LEN
        return self._levels[height][at : at + HASH_LEN]

    def subtree_root(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]) for the ranges RFC 6962 recursion visits (lo aligned to the range)."""
        n = hi - lo
        if n <= 0:
            return EMPTY_ROOT
        if n & (n - 1) == 0:  # a complete subtree: stored
            height = n.bit_length() - 1
            if lo % n:
                raise ValueError(f"range [{lo}, {hi}) is not a subtree of the log's tree")
            return self._node(height, lo >> height)
        k = _split(n)
        return node_hash(self.subtree_root(lo, lo + k), self.subtree_root(lo + k, hi))

    def root(self, size: int | None = None) -> bytes:
        return self.subtree_root(0, self._size(size))

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 6962 PATH(index, D[0:size]), leaf to root."""
        size = self._size(size)
        if not 0 <= index < size:
            raise ValueError(f"index {index} is not inside a tree of size {size}")
        proof: list[bytes] = []
        lo, hi = 0, size
        while hi - lo > 1:
            k = _split(hi - lo)
            if index < lo + k:
                proof.append(self.subtree_root(lo + k, hi))
                hi = lo + k
            else:
                proof.append(self.subtree_root(lo, lo + k))
                lo = lo + k
        return proof[::-1]

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """RFC 6962 PROOF(old_size, D[0:new_size]); empty when old_size is 0 or equal."""
        new_size = self._size(new_size)
        if not 0 <= old_size <= new_size:
            raise ValueError(f"sizes {old_size} -> {new_size} do not describe a growing tree")
        if old_size in (0, new_size):
            return []
        out: list[bytes] = []
        m, lo, hi, complete = old_size, 0, new_size, True
        while m != hi - lo:  # SUBPROOF(m, D[lo:hi], complete), unrolled; nodes come out reversed
            k = _split(hi - lo)
            if m <= k:
                out.append(self.subtree_root(lo + k, hi))
                hi = lo + k
            else:
                out.append(self.subtree_root(lo, lo + k))
                m, lo, complete = m - k, lo + k, False
        if not complete:
            out.append(self.subtree_root(lo, hi))
        return out[::-1]

    def _size(self, size: int | None) -> int:
        if size is None:
            return self.size
        if not 0 <= size <= self.size:
            raise ValueError(f"tree size {size} is outside 0..{self.size}")
        return size


class Frontier:
    """The roots of the complete subtrees that make up a tree of `size` leaves, largest first.

    Enough to compute the root and to keep appending: what a signer stores beside a signed tree
    head so the next head hashes only the new records (RFC 6962 "compact range" of [0, size)).
    """

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if size < 0 or len(hashes) != bin(size).count("1"):
            raise ValueError(f"a frontier of size {size} has {bin(size).count('1')} hashes")
        if any(len(h) != HASH_LEN for h in hashes):
            raise ValueError("frontier hashes must be 32 bytes each")
        self.size = size
        self.hashes = list(hashes)

    def append(self, leaf: bytes) -> None:
        h, s = leaf, self.size
        while s & 1:
            h = node_hash(self.hashes.pop(), h)
            s >>= 1
        self.hashes.append(h)
        self.size += 1

    def root(self) -> bytes:
        if not self.hashes:
            return EMPTY_ROOT
        r = self.hashes[-1]
        for h in reversed(self.hashes[:-1]):
            r = node_hash(h, r)
        return r

    def copy(self) -> Frontier:
        return Frontier(self.size, self.hashes)


# --- module-level helpers over a list of leaf hashes (tests, small trees) ------------------


def root(leaves: Sequence[bytes]) -> bytes:
    return MerkleTree(leaves).root()


def inclusion_proof(leaves: Sequence[bytes], index: int, size: int | None = None) -> list[bytes]:
    return MerkleTree(leaves).inclusion_proof(index, size)


def consistency_proof(
    leaves: Sequence[bytes], old_size: int, new_size: int | None = None
) -> list[bytes]:
    return MerkleTree(leaves).consistency_proof(old_size, new_size)


# --- verification (what an auditor runs; needs only the hashes) -----------------------------


def root_from_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes | None:
    """The root a valid proof implies, or None when the proof has the wrong shape."""
    if not 0 <= index < size or len(leaf) != HASH_LEN:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0 or len(p) != HASH_LEN:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root_hash: bytes
) -> bool:
    return root_from_inclusion(leaf, index, size, proof) == root_hash


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 2.1.4.2; the empty tree is consistent with every tree (empty proof)."""
    if not 0 <= old_size <= new_size or any(len(p) != HASH_LEN for p in proof):
        return False
    if old_size == new_size:  # first: two empty trees are consistent only with equal roots
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is the first node
        path.insert(0, old_root)
    if not path:
        return False
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root
