"""engine.toml: typed, frozen, validated; every refusal names field, value and allowed range;
no field can carry an exchange secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from botengine.engine_config import EngineConfigError, load_engine_config

GOOD = """
data_dir = "state"
poll_interval_s = 0.5
[signer]
addresses = ["unix:///srv/signer/signer.sock", "10.0.0.5:7443"]
identity_name = "engine-1"
identity_key = "keys/engine.key"
tls = { ca = "ca.pem", cert = "engine.pem", key = "engine-key.pem", server_name = "signer" }
[exchanges.binance]
api_url = "http://127.0.0.1:8765/"
"""


def load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "engine.toml"
    path.write_text(text)
    return load_engine_config(path)


def refusal(tmp_path: Path, text: str) -> str:
    with pytest.raises(EngineConfigError) as e:
        load(tmp_path, text)
    return str(e.value)


def test_a_good_config_loads_frozen_with_paths_relative_to_its_file(tmp_path: Path) -> None:
    cfg = load(tmp_path, GOOD)
    assert cfg.data_dir == tmp_path / "state"  # type: ignore[attr-defined]
    assert cfg.db_url() == f"sqlite:///{tmp_path / 'state' / 'engine.db'}"  # type: ignore[attr-defined]
    signer = cfg.signer  # type: ignore[attr-defined]
    assert signer.identity_key == tmp_path / "keys" / "engine.key"
    assert signer.tls.ca == tmp_path / "ca.pem" and signer.tls.server_name == "signer"
    assert cfg.market("binance").api_url == "http://127.0.0.1:8765"  # type: ignore[attr-defined]
    assert cfg.market("okx").api_url is None  # type: ignore[attr-defined]
    with pytest.raises(Exception, match="frozen"):
        cfg.poll_interval_s = 9  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("poll_interval_s = 0.5", "poll_interval_s = 0",
         "poll_interval_s: 0 is not allowed; Input should be greater than or equal to 0.05"),
        ("poll_interval_s = 0.5", "poll_interval_s = 0.5\nretry_base_s = 5\nretry_cap_s = 1",
         "retry_cap_s: 1.0 is not allowed; must be >= retry_base_s (5.0)"),
        ('"10.0.0.5:7443"', '"10.0.0.5:99999"',
         "signer.addresses: '10.0.0.5:99999' is not allowed; must be unix:///ABSOLUTE/PATH or "
         "HOST:PORT with PORT 1..65535"),
        ('"unix:///srv/signer/signer.sock"', '"unix://relative.sock"',
         "signer.addresses: 'unix://relative.sock' is not allowed; a Unix socket must be "
         "unix:///ABSOLUTE/PATH"),
        ('identity_name = "engine-1"', 'identity_name = "engine 1"',
         "signer.identity_name: 'engine 1' is not allowed; must be 1 to 64 of A-Z a-z 0-9 _ . -"),
        ('[exchanges.binance]', '[exchanges.ftx]',
         "exchanges: 'ftx' is not allowed; must be binance, kucoin or okx"),
        ('api_url = "http://127.0.0.1:8765/"', 'api_url = "ftp://x"',
         "exchanges.binance.api_url: 'ftp://x' is not allowed; must be http(s)://host[:port][/path]"),
        ('data_dir = "state"', 'data_dir = "state"\ncolour = "blue"',
         "colour: unknown field (value 'blue'); refused"),
        ('data_dir = "state"', 'database_url = "mysql://x"',
         "database_url: 'mysql://x' is not allowed; must be sqlite:///PATH or postgresql"),
    ],
)  # fmt: skip
def test_a_bad_value_is_refused_naming_field_value_and_range(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    assert old in GOOD
    assert expected in refusal(tmp_path, GOOD.replace(old, new))


def test_tcp_without_tls_is_refused(tmp_path: Path) -> None:
    text = "\n".join(line for line in GOOD.splitlines() if not line.startswith("tls ="))
    assert "signer.tls: missing; TCP address '10.0.0.5:7443' needs [signer.tls]" in refusal(
        tmp_path, text
    )


@pytest.mark.parametrize("field", ["secret", "api_key", "apiKey", "exchange_secret", "password"])
def test_a_field_that_could_carry_an_exchange_secret_is_refused(tmp_path: Path, field: str) -> None:
    text = GOOD.replace('api_url = "http://127.0.0.1:8765/"', f'{field} = "hunter2hunter2"')
    msg = refusal(tmp_path, text)
    assert f"exchanges.binance.{field}: refused; exchange API keys and secrets never" in msg
    assert "hunter2" not in msg


def test_unreadable_or_broken_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(EngineConfigError, match="cannot read: No such file"):
        load_engine_config(tmp_path / "missing.toml")
    assert "not valid TOML" in refusal(tmp_path, "data_dir = ")
