"""Fixtures for the scale-out tests: several signer replicas, or several engine workers, as real
processes on one PostgreSQL. Every test here needs PostgreSQL and is skipped only when
BULKHEAD_TEST_PG_URL is unset (it is set in CI)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.scaleout.replicas import ReplicaSet, start_replica_set
from tests.signer.stack import drop_pg_schema, pg_schema_url

PG_URL = os.environ.get("BULKHEAD_TEST_PG_URL")


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A URL whose search_path is a fresh schema of the shared test database (dropped after)."""
    if not PG_URL:
        pytest.skip("BULKHEAD_TEST_PG_URL is not set")
    url, schema = pg_schema_url(PG_URL)
    try:
        yield url
    finally:
        drop_pg_schema(PG_URL, schema)


@pytest.fixture
def replicas(tmp_path: Path, pg_schema: str) -> Iterator[ReplicaSet]:
    """Three `bulkhead-signer serve` replicas on one PostgreSQL schema, one simexchange."""
    rs = start_replica_set(tmp_path, pg_schema, count=3)
    try:
        yield rs
    finally:
        rs.stop()
