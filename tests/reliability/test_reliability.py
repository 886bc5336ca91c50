"""The short form of the reliability scenarios (`make test`); `make reliability` runs the same
functions at the long scale and prints the table (tests/reliability/run_long.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability import (
    authz,
    contention,
    crash,
    engine_crash,
    fuzz,
    secrets_scan,
    soak,
    storage,
)
from tests.reliability.result import Result, Scale, held
from tests.reliability.volumes import VolumeUnavailable


def test_signer_killed_mid_burst_loses_no_order_and_counts_exactly(
    tmp_path: Path, scale: Scale
) -> None:
    result = crash.run(tmp_path, scale.crash_trials, cli_every=scale.crash_trials)
    assert result.trials == scale.crash_trials
    assert held(result), result.explain()


def test_engine_killed_mid_trading_places_no_duplicate_loses_no_fill_and_matches_the_book(
    tmp_path: Path, scale: Scale
) -> None:
    kills = engine_crash.kills_for(scale)
    result = engine_crash.run(tmp_path, kills)
    assert result.faults == kills and result.trials == kills
    assert int(result.figures["fills"]) > 0  # the bots really traded around the kills
    assert held(result), result.explain()


def test_failing_audit_store_refuses_every_intent_and_the_signer_recovers(
    tmp_path: Path, scale: Scale
) -> None:
    try:
        result = storage.run(tmp_path, scale.store_trials)
    except VolumeUnavailable as e:  # needs root and mount(2): say so rather than pretend
        pytest.skip(str(e))
    assert result.faults == scale.store_trials
    assert held(result), result.explain()


def test_64_clients_never_pass_a_notional_cap_on_sqlite_or_two_pg_signers(
    tmp_path: Path, scale: Scale, pg_url: str | None
) -> None:
    result = contention.run(tmp_path, scale.contention_rounds, pg_url)
    assert result.trials == scale.contention_rounds * (2 if pg_url else 1)
    assert result.faults > 0  # the cap was really contended: some intents were denied at it
    assert held(result), result.explain()


def test_soak_at_max_rate_has_no_error_but_policy_denials(tmp_path: Path, scale: Scale) -> None:
    result = soak.run(tmp_path, scale.soak_seconds, scale.soak_warmup_seconds, scale.strict_rss)
    assert result.trials > 0 and result.faults > 0
    assert held(result), result.explain()


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory, scale: Scale) -> tuple[Result, Result]:
    """One signer process serves both fuzz tests (hostile input changes nothing)."""
    return fuzz.run(tmp_path_factory.mktemp("fuzz"), scale.fuzz_examples)


def test_hostile_values_on_every_rpc_are_refused_clearly_and_change_nothing(
    fuzzed: tuple[Result, Result],
) -> None:
    result = fuzzed[0]
    assert result.trials > 0
    assert held(result), result.explain()


def test_corrupt_wire_bytes_on_every_method_are_invalid_argument(
    fuzzed: tuple[Result, Result],
) -> None:
    result = fuzzed[1]
    assert result.trials > 0
    assert held(result), result.explain()


def test_authn_z_holds_for_os_users_cas_keys_admin_replays_across_restarts_and_skew(
    tmp_path: Path,
) -> None:
    result = authz.run(tmp_path)
    assert result.faults >= 12
    assert held(result), result.explain()


def test_no_secret_at_debug_in_logs_db_exports_errors_process_files_or_cores(
    tmp_path: Path,
) -> None:
    result = secrets_scan.run(tmp_path)
    assert held(result), result.explain()
