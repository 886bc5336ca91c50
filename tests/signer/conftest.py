"""Shared fixtures for the signer's end-to-end tests (real gRPC over Unix sockets)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.signer.stack import Stack, build_stack, drop_pg_schema, pg_schema_url

PG_URL = os.environ.get("BULKHEAD_TEST_PG_URL")


@pytest.fixture
def pg_url() -> str:
    if not PG_URL:
        pytest.skip("BULKHEAD_TEST_PG_URL is not set")
    return PG_URL


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None = SQLite in the data dir; otherwise a fresh PostgreSQL schema for this test."""
    if request.param == "sqlite":
        yield None
        return
    if not PG_URL:
        pytest.skip("BULKHEAD_TEST_PG_URL is not set")
    url, schema = pg_schema_url(PG_URL)
    try:
        yield url
    finally:
        drop_pg_schema(PG_URL, schema)


@pytest.fixture
def stack(tmp_path: Path, db_url: str | None) -> Iterator[Stack]:
    s = build_stack(tmp_path, db_url)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def sqlite_stack(tmp_path: Path) -> Iterator[Stack]:
    s = build_stack(tmp_path, None)
    try:
        yield s
    finally:
        s.stop()
