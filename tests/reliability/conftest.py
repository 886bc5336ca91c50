"""Fixtures for the reliability scenarios: the scale (short in `make test`, long with
BULKHEAD_RELIABILITY=long) and the optional PostgreSQL URL."""

from __future__ import annotations

import os

import pytest

from tests.reliability.result import Scale, current_scale


@pytest.fixture(scope="session")
def scale() -> Scale:
    return current_scale()


@pytest.fixture(scope="session")
def pg_url() -> str | None:
    """PostgreSQL for the two-replica race; None runs that scenario on SQLite only."""
    return os.environ.get("BULKHEAD_TEST_PG_URL")
