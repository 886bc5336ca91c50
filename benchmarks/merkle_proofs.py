"""Proof size and proof time for audit logs of 10^3..10^6 records (JSON on stdout).

Run: `.venv/bin/python benchmarks/merkle_proofs.py` (about half a minute; not part of
`make test`). Records are synthetic 200-byte blobs, hashed as RFC 6962 leaves exactly as the
signer hashes its records. For each size it reports:
- build_s: building every level of the tree once (what `audit prove` and `audit report` do
  after reading the records); then each proof is O(log n) lookups;
- head_us_per_record: extending a signed tree head's frontier by one record (what the
  periodic tree head pays per new record);
- inclusion: hashes per proof (max and mean over sampled leaves), bytes of the proof as it
  appears in a proof file (hex strings in JSON), median time to produce and to verify;
- consistency: the same for a proof from a random older size to n;
- from_sqlite (10^5 and 10^6): `audit prove`'s real cost on the signer host -- read every
  stored record from a SQLite audit table, hash the leaves, build the tree, prove one record.
"""

from __future__ import annotations

import json
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from signer import merkle  # noqa: E402
from signer.auditheads import log_tree  # noqa: E402
from signer.auditlog import AUDIT_TABLES  # noqa: E402
from signer.db import Base, make_engine, read_session, sqlite_url  # noqa: E402

SAMPLES = 200


def _json_bytes(proof: list[bytes]) -> int:
    return len(json.dumps([p.hex() for p in proof]))


def _us(seconds: list[float]) -> float:
    return round(statistics.median(seconds) * 1e6, 1)


def measure(n: int, rng: random.Random) -> dict[str, object]:
    pad = b"r" * 192
    leaves = [merkle.leaf_hash(i.to_bytes(8, "big") + pad) for i in range(n)]
    t = time.perf_counter()
    tree = merkle.MerkleTree(leaves)
    build = time.perf_counter() - t
    top = tree.root()

    t = time.perf_counter()
    frontier = merkle.Frontier()
    for leaf in leaves[: min(n, 100_000)]:
        frontier.append(leaf)
    per_record = (time.perf_counter() - t) / min(n, 100_000)

    gen, ver, sizes, nbytes = [], [], [], []
    for index in [0, n - 1, *(rng.randrange(n) for _ in range(SAMPLES - 2))]:
        t = time.perf_counter()
        proof = tree.inclusion_proof(index)
        gen.append(time.perf_counter() - t)
        t = time.perf_counter()
        ok = merkle.verify_inclusion(leaves[index], index, n, proof, top)
        ver.append(time.perf_counter() - t)
        assert ok
        sizes.append(len(proof))
        nbytes.append(_json_bytes(proof))

    cgen, cver, csizes, cbytes = [], [], [], []
    for _ in range(SAMPLES // 4):
        old = rng.randrange(1, n + 1)
        t = time.perf_counter()
        proof = tree.consistency_proof(old)
        cgen.append(time.perf_counter() - t)
        t = time.perf_counter()
        ok = merkle.verify_consistency(old, n, tree.root(old), top, proof)
        cver.append(time.perf_counter() - t)
        assert ok
        csizes.append(len(proof))
        cbytes.append(_json_bytes(proof))

    return {
        "records": n,
        "log2_records": round(math.log2(n), 2),
        "build_s": round(build, 3),
        "head_us_per_record": round(per_record * 1e6, 2),
        "inclusion": {
            "hashes_max": max(sizes),
            "hashes_mean": round(statistics.mean(sizes), 2),
            "proof_json_bytes_max": max(nbytes),
            "prove_us_median": _us(gen),
            "verify_us_median": _us(ver),
        },
        "consistency": {
            "hashes_max": max(csizes),
            "proof_json_bytes_max": max(cbytes),
            "prove_us_median": _us(cgen),
            "verify_us_median": _us(cver),
        },
    }


def from_sqlite(n: int) -> dict[str, object]:
    """Rows shaped like real audit rows (about 700 bytes of record text), inserted directly."""
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(sqlite_url(tmp))
        Base.metadata.create_all(engine, tables=AUDIT_TABLES)
        body = "x" * 600
        with engine.begin() as c:
            c.exec_driver_sql(
                "INSERT INTO audit_records (seq, ts_ms, kind, record, hash, sig) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (i, i, "decision", f'{{"seq":{i},"payload":"{body}"}}', "0" * 64, "0" * 128)
                    for i in range(1, n + 1)
                ],
            )
        t = time.perf_counter()
        with read_session(engine) as s:
            tree = log_tree(s)
        read_and_build = time.perf_counter() - t
        t = time.perf_counter()
        tree.inclusion_proof(n // 2)
        prove = time.perf_counter() - t
        engine.dispose()
    return {
        "records": n,
        "read_hash_build_s": round(read_and_build, 2),
        "prove_us": round(prove * 1e6, 1),
    }


def main() -> None:
    rng = random.Random(6962)
    started = time.perf_counter()
    rows = [measure(10**exp, rng) for exp in (3, 4, 5, 6)]
    db_rows = [from_sqlite(10**exp) for exp in (5, 6)]
    print(
        json.dumps(
            {
                "benchmark": "merkle_proofs",
                "python": sys.version.split()[0],
                "samples_per_size": SAMPLES,
                "total_s": round(time.perf_counter() - started, 1),
                "results": rows,
                "from_sqlite": db_rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
