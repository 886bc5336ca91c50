"""SIGNED request checks: Binance's published HMAC examples, Ed25519, timing, keys, IPs.

The examples use the key and secret Binance publishes in "SIGNED Endpoint security"
(illustrative test vectors, not anyone's credentials), with the simulated clock frozen at
the examples' timestamp 1499827319559.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest

from simexchange import SimConfig, SimExchange, SyntheticSource, symbol_config
from simexchange.server import AccountKeys
from simexchange.testing import RawClient, sign

DOC_API_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
DOC_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
DOC_TS = 1499827319559
ASCII_QUERY = (
    "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1"
    "&recvWindow=5000&timestamp=1499827319559"
)
ASCII_SIG = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
UNICODE_QUERY = (
    "symbol=%EF%BC%91%EF%BC%92%EF%BC%93%EF%BC%94%EF%BC%95%EF%BC%96&side=BUY&type=LIMIT"
    "&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
)
UNICODE_SIG = "e1353ec6b14d888f1164ae9af8228a3dbd508bc82eb867db8ab6046442f33ef3"
MIXED_SIG = "0fd168b8ddb4876a0358a8d14d0c9f3da0e9b20c5d52b2a00fcf7d1c602f9a77"  # query + body


@pytest.fixture
def doc_sim() -> Iterator[SimExchange]:
    """LTCBTC listed (price 0.2, so the example's 0.1 bid rests), clock frozen at DOC_TS."""
    ltc = symbol_config(
        "LTCBTC",
        SyntheticSource(start_price=Decimal("0.2"), seed=5),
        tick_size="0.000001",
        step_size="0.01",  # tick x step must stay within 8 decimals
        min_notional="0.0001",
    )
    sim = SimExchange(SimConfig(symbols=(ltc,), speed=0, start_ms=DOC_TS)).start()
    account = sim.add_account({"BTC": "1"}, name="doc")
    sim.add_key(account.account_id, api_key=DOC_API_KEY, secret=DOC_SECRET)
    yield sim
    sim.stop()


def _post(sim: SimExchange, query: str = "", body: bytes = b"") -> tuple[int, dict]:
    reply = RawClient(sim.base_url).send(
        "POST", "/api/v3/order", query, body, {"X-MBX-APIKEY": DOC_API_KEY}
    )
    return reply.status, reply.body


def test_binance_documented_ascii_example_is_accepted(doc_sim: SimExchange) -> None:
    status, body = _post(doc_sim, f"{ASCII_QUERY}&signature={ASCII_SIG}")
    assert status == 200, body
    assert body["symbol"] == "LTCBTC" and body["status"] == "NEW"
    assert body["price"] == "0.10000000" and body["origQty"] == "1.00000000"
    assert body["transactTime"] == DOC_TS


def test_binance_documented_example_in_body_and_mixed_is_accepted(doc_sim: SimExchange) -> None:
    status, body = _post(doc_sim, body=f"{ASCII_QUERY}&signature={ASCII_SIG}".encode())
    assert status == 200, body
    head, tail = ASCII_QUERY.split("&quantity=")
    status, body = _post(doc_sim, head, f"quantity={tail}&signature={MIXED_SIG}".encode())
    assert status == 200, body


def test_binance_documented_non_ascii_example_passes_signature_then_fails_symbol(
    doc_sim: SimExchange,
) -> None:
    status, body = _post(doc_sim, f"{UNICODE_QUERY}&signature={UNICODE_SIG}")
    assert (status, body) == (400, {"code": -1121, "msg": "Invalid symbol."})
    raw_utf8 = UNICODE_QUERY.replace(
        "%EF%BC%91%EF%BC%92%EF%BC%93%EF%BC%94%EF%BC%95%EF%BC%96", "１２３４５６"
    )
    status, body = _post(doc_sim, body=f"{raw_utf8}&signature={UNICODE_SIG}".encode())
    assert body["code"] == -1121  # non-ASCII bytes are percent-encoded before verifying


def test_hmac_signature_is_case_insensitive(doc_sim: SimExchange) -> None:
    status, body = _post(doc_sim, f"{ASCII_QUERY}&signature={ASCII_SIG.upper()}")
    assert status == 200, body


@pytest.mark.parametrize(
    "query",
    [
        f"{ASCII_QUERY}&signature={'0' * 64}",
        f"{ASCII_QUERY.replace('quantity=1', 'quantity=2')}&signature={ASCII_SIG}",
        f"{UNICODE_QUERY}&signature={ASCII_SIG}",
    ],
)
def test_tampered_request_is_refused_with_1022(doc_sim: SimExchange, query: str) -> None:
    status, body = _post(doc_sim, query)
    assert (status, body) == (
        400,
        {"code": -1022, "msg": "Signature for this request is not valid."},
    )


def test_missing_signature_and_duplicate_signature(doc_sim: SimExchange) -> None:
    assert _post(doc_sim, ASCII_QUERY)[1]["code"] == -1102
    doubled = f"{ASCII_QUERY}&signature={ASCII_SIG}"
    assert _post(doc_sim, doubled, f"signature={ASCII_SIG}".encode())[1]["code"] == -1101


def test_ed25519_key_verifies_base64_signature_case_sensitively(sim: SimExchange) -> None:
    keys = sim.add_account({"USDT": "100"}, key_type="ED25519")
    client = RawClient(sim.base_url)
    ok = client.signed("GET", "/api/v3/account", keys, {}, timestamp=sim.now_ms)
    assert ok.status == 200, ok.body
    good = sign(keys, f"timestamp={sim.now_ms}")
    flipped = good.swapcase()
    bad = client.signed("GET", "/api/v3/account", keys, {}, timestamp=sim.now_ms, signature=flipped)
    assert bad.body["code"] == -1022


def test_ed25519_key_registered_by_public_key_only(sim: SimExchange) -> None:
    """The private key never reaches the simulator: only the public PEM is registered."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    registered = sim.add_account({"USDT": "5"}, key_type="ED25519", public_key_pem=pem.decode())
    assert registered.secret == ""
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    keys = AccountKeys(registered.account_id, "x", registered.api_key, "ED25519", private_pem)
    reply = RawClient(sim.base_url).signed("GET", "/api/v3/account", keys, {}, timestamp=sim.now_ms)
    assert reply.status == 200 and reply.body["balances"]


@pytest.mark.parametrize(
    ("offset_ms", "window", "code", "msg"),
    [
        (-5001, None, -1021, "Timestamp for this request is outside of the recvWindow."),
        (-60_001, "60000", -1021, "Timestamp for this request is outside of the recvWindow."),
        (1000, None, -1021, "Timestamp for this request was 1000ms ahead of the server's time."),
        (0, "60001", -1131, "recvWindow must be less than 60000"),
    ],
)
def test_timestamp_and_recv_window_rules(
    sim: SimExchange, offset_ms: int, window: str | None, code: int, msg: str
) -> None:
    keys = sim.add_account({"USDT": "1"})
    params = {"recvWindow": window} if window else {}
    reply = RawClient(sim.base_url).signed(
        "GET", "/api/v3/account", keys, params, timestamp=sim.now_ms + offset_ms
    )
    assert (reply.status, reply.body) == (400, {"code": code, "msg": msg})


@pytest.mark.parametrize(
    ("offset_ms", "window"), [(-5000, None), (999, None), (-59_999, "60000"), (-2500, "2500.5")]
)
def test_timestamps_inside_the_window_are_accepted(
    sim: SimExchange, offset_ms: int, window: str | None
) -> None:
    keys = sim.add_account({"USDT": "1"})
    params = {"recvWindow": window} if window else {}
    reply = RawClient(sim.base_url).signed(
        "GET", "/api/v3/account", keys, params, timestamp=sim.now_ms + offset_ms
    )
    assert reply.status == 200, reply.body


def test_microsecond_timestamps_are_understood(sim: SimExchange) -> None:
    keys = sim.add_account({"USDT": "1"})
    client = RawClient(sim.base_url)
    fresh = client.signed("GET", "/api/v3/account", keys, {}, timestamp=sim.now_ms * 1000 + 999)
    assert fresh.status == 200
    stale = client.signed("GET", "/api/v3/account", keys, {}, timestamp=(sim.now_ms - 5001) * 1000)
    assert stale.body["code"] == -1021


def test_timestamps_follow_the_simulated_clock_not_the_wall_clock(sim: SimExchange) -> None:
    keys = sim.add_account({"USDT": "1"})
    client = RawClient(sim.base_url)
    before = sim.now_ms
    sim.advance(10)
    assert client.signed("GET", "/api/v3/account", keys, {}, timestamp=before).body["code"] == -1021
    assert client.signed("GET", "/api/v3/account", keys, {}, timestamp=sim.now_ms).status == 200


def test_key_problems_answer_2014_and_2015(sim: SimExchange) -> None:
    keys = sim.add_account({"USDT": "1"})
    client = RawClient(sim.base_url)
    query = f"timestamp={sim.now_ms}"
    query += f"&signature={sign(keys, query)}"
    missing = client.send("GET", "/api/v3/account", query)
    assert (missing.status, missing.body["code"]) == (401, -2014)
    malformed = client.send("GET", "/api/v3/account", query, headers={"X-MBX-APIKEY": "bad key!"})
    assert malformed.body["code"] == -2014
    unknown = client.send("GET", "/api/v3/account", query, headers={"X-MBX-APIKEY": "A" * 64})
    assert (unknown.status, unknown.body) == (
        401,
        {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."},
    )


def test_ip_allow_list_refuses_other_addresses(sim: SimExchange) -> None:
    elsewhere = sim.add_account({"USDT": "1"}, ip_allow=["10.1.2.0/24"])
    local = sim.add_account({"USDT": "1"}, ip_allow=["127.0.0.1"])
    client = RawClient(sim.base_url)
    refused = client.signed("GET", "/api/v3/account", elsewhere, {}, timestamp=sim.now_ms)
    assert (refused.status, refused.body["code"]) == (401, -2015)
    assert client.signed("GET", "/api/v3/account", local, {}, timestamp=sim.now_ms).status == 200


def test_faster_clocks_stretch_the_tolerances_by_the_speed(
    make_sim: Callable[..., SimExchange],
) -> None:
    fast = make_sim(speed=10)
    keys = fast.add_account({"USDT": "1"})
    client = RawClient(fast.base_url)
    within = client.signed("GET", "/api/v3/account", keys, {}, timestamp=fast.now_ms - 20_000)
    assert within.status == 200, within.body  # 20 s of simulated time is 2 s of wall time
    stale = client.signed("GET", "/api/v3/account", keys, {}, timestamp=fast.now_ms - 60_000)
    assert stale.body["code"] == -1021
