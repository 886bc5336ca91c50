"""Helpers for other components' tests: start a simulator, point ccxt at it.

`ccxt_config(base_url, api_key, secret)` is THE way to point `ccxt.binance` at a simulator:

    sim, keys = start_test_exchange()
    exchange = ccxt.binance(ccxt_config(sim.base_url, keys.api_key, keys.secret))
    exchange.load_markets()
    ...
    sim.stop()

Every API URL ccxt knows for binance is rewritten to the simulator, so nothing can reach the
real exchange; endpoints the simulator does not serve answer 404.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from simexchange.config import SimConfig, SymbolConfig, SyntheticSource, symbol_config
from simexchange.server import AccountKeys, SimExchange

DEFAULT_BALANCES = {"USDT": "100000", "BTC": "1", "ETH": "10", "DATA": "0"}


@cache
def _binance_api_urls() -> tuple[tuple[str, str], ...]:
    import ccxt  # only the tests and the signer's side need ccxt

    urls = ccxt.binance().urls["api"]
    return tuple((name, urlsplit(url).path) for name, url in urls.items() if isinstance(url, str))


def ccxt_config(base_url: str, api_key: str, secret: str, **options: Any) -> dict[str, Any]:
    """Constructor options for `ccxt.binance(...)` talking to the simulator at `base_url`.

    Spot markets only, no currency or margin-pair fetch (so `load_markets` asks only for
    server time and exchangeInfo), and
    `adjustForTimeDifference` so ccxt's timestamps follow the simulated clock. An Ed25519
    key works by passing its private key PEM as `secret` (ccxt signs with Ed25519 then).
    Extra keyword arguments are merged into `options`.
    """
    base = base_url.rstrip("/")
    return {
        "apiKey": api_key,
        "secret": secret,
        "enableRateLimit": False,
        "urls": {"api": {name: base + path for name, path in _binance_api_urls()}},
        "options": {
            "defaultType": "spot",
            "fetchMarkets": {"types": ["spot"]},
            "fetchCurrencies": False,
            "fetchMargins": False,
            "adjustForTimeDifference": True,
            **options,
        },
    }


def synthetic_symbols(seed: int = 7, *, thin: bool = False) -> tuple[SymbolConfig, ...]:
    """Synthetic BTC/USDT and ETH/USDT (and the thin DATA/USDT when `thin`)."""
    symbols = [
        symbol_config("BTCUSDT", SyntheticSource(start_price=Decimal(60000), seed=seed)),
        symbol_config("ETHUSDT", SyntheticSource(start_price=Decimal(3000), seed=seed + 1)),
    ]
    if thin:
        data = SyntheticSource(start_price=Decimal("0.07"), seed=seed + 2, volatility=Decimal(1))
        symbols.append(symbol_config("DATAUSDT", data))
    return tuple(symbols)


def start_test_exchange(
    balances: dict[str, str | int | Decimal] | None = None,
    *,
    key_type: str = "HMAC",
    seed: int = 7,
    speed: Decimal | int | str = 1,
    admin: bool = True,
    thin: bool = False,
    **key_permissions: Any,
) -> tuple[SimExchange, AccountKeys]:
    """Start a simulator on a free 127.0.0.1 port with synthetic markets and one funded
    account; returns it (call `.stop()`) and the account's key. The clock starts at the
    current wall time and runs at `speed` (1 = real time, so ccxt's clock agrees)."""
    config = SimConfig(
        symbols=synthetic_symbols(seed, thin=thin), speed=Decimal(speed), admin=admin
    )
    sim = SimExchange(config).start()
    try:
        keys = sim.add_account(
            dict(balances if balances is not None else DEFAULT_BALANCES),
            name="trader",
            key_type=key_type,
            **key_permissions,
        )
    except BaseException:
        sim.stop()
        raise
    return sim, keys


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]


class RawClient:
    """Plain HTTP/1.1 against the simulator, signing as Binance documents (query, then
    body), so error paths can be checked byte for byte without going through ccxt."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80

    def send(
        self,
        method: str,
        path: str,
        query: str = "",
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> Reply:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            hdrs = dict(headers or {})
            if body:
                hdrs.setdefault("Content-Type", "application/x-www-form-urlencoded")
            conn.request(method, path + ("?" + query if query else ""), body=body, headers=hdrs)
            resp = conn.getresponse()
            raw = resp.read()
            return Reply(resp.status, json.loads(raw) if raw else None, dict(resp.getheaders()))
        finally:
            conn.close()

    def get(self, path: str, **params: Any) -> Reply:
        return self.send("GET", path, urlencode(params))

    def signed(
        self,
        method: str,
        path: str,
        keys: AccountKeys,
        params: dict[str, Any],
        *,
        timestamp: int,
        in_body: bool | None = None,
        signature: str | None = None,
    ) -> Reply:
        """Sign `params` + timestamp with the key's HMAC secret or Ed25519 private PEM."""
        payload = urlencode({**params, "timestamp": timestamp})
        sig = signature if signature is not None else sign(keys, payload)
        signed = payload + "&signature=" + quote(sig, safe="")
        use_body = method == "POST" if in_body is None else in_body
        headers = {"X-MBX-APIKEY": keys.api_key}
        if use_body:
            return self.send(method, path, body=signed.encode(), headers=headers)
        return self.send(method, path, signed, headers=headers)


def sign(keys: AccountKeys, payload: str) -> str:
    """Binance's signature of `payload`: HMAC-SHA256 hex, or Ed25519 base64."""
    if keys.key_type == "HMAC":
        return hmac.new(keys.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
    private = load_pem_private_key(keys.secret.encode(), None)
    if not isinstance(private, Ed25519PrivateKey):
        raise ValueError("an ED25519 key's secret must be its private key PEM")
    return base64.b64encode(private.sign(payload.encode())).decode()
