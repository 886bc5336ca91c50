"""Inclusion-proof size and time for audit logs of 10^3..10^6 records (JSON on stdout).

Records are synthetic 200-byte blobs. Proof generation here recomputes subtree roots from the
leaf hashes (O(n) per proof); a stored tree of subtree roots would make it O(log n) -- the
proof SIZE is what the auditor receives, and it grows with log2(n).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from signer import merkle  # noqa: E402


def main() -> None:
    rows = []
    for exp in (3, 4, 5, 6):
        n = 10**exp
        leaves = [merkle.leaf_hash(os.urandom(200)) for _ in range(n)]
        top = merkle.root(leaves)
        gen, ver, lengths = [], [], []
        for index in (0, n // 3, n - 1):
            t = time.perf_counter()
            proof = merkle.inclusion_proof(leaves, index)
            gen.append(time.perf_counter() - t)
            lengths.append(len(proof))
            t = time.perf_counter()
            ok = merkle.verify_inclusion(leaves[index], index, n, proof, top)
            ver.append(time.perf_counter() - t)
            assert ok
        rows.append(
            {
                "records": n,
                "proof_hashes_max": max(lengths),
                "proof_bytes_max": 32 * max(lengths),
                "proof_ms": round(statistics.median(gen) * 1000, 3),
                "verify_ms": round(statistics.median(ver) * 1000, 4),
            }
        )
    print(json.dumps({"benchmark": "merkle_inclusion_proofs", "results": rows}, indent=2))


if __name__ == "__main__":
    main()
