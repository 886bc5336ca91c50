"""Reference prices against a real local HTTP ticker endpoint (no mocks): caching, refetch by
age, failures that never raise, and one in-flight fetch per symbol however many callers wait."""

from __future__ import annotations

import json
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from signer.marketdata import ReferencePrices
from signer.policy import RefPrice

D = Decimal
T0 = 1_767_225_600_000


@dataclass
class Ticker:
    """What the local endpoint serves; tests change it between calls."""

    prices: dict[str, str] = field(default_factory=lambda: {"BTC/USDT": "50000.12"})
    status: int = 200
    requests: int = 0
    arrived: threading.Event = field(default_factory=threading.Event)
    gate: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def ticker() -> Iterator[tuple[Ticker, str]]:
    state = Ticker()
    state.gate.set()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
            with state.lock:
                state.requests += 1
            state.arrived.set()
            state.gate.wait(10)
            symbol = query.get("symbol", [""])[0]
            body = json.dumps({"symbol": symbol, "price": state.prices.get(symbol)}).encode()
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}"
    state.gate.set()
    server.shutdown()
    server.server_close()


def http_fetch(base_url: str, parse_float: Callable[[str], Any] = D) -> Callable[[str, str], D]:
    """A public-ticker fetch like the gateway's: GET, price parsed from the raw string."""

    def fetch(exchange: str, symbol: str) -> D:
        query = urllib.parse.urlencode({"exchange": exchange, "symbol": symbol})
        with urllib.request.urlopen(f"{base_url}/ticker?{query}", timeout=5) as resp:
            data = json.loads(resp.read())
        return parse_float(data["price"])

    return fetch


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


def test_a_price_is_cached_while_fresh_and_refetched_when_older_than_the_bound(
    ticker: tuple[Ticker, str],
) -> None:
    state, url = ticker
    clock = Clock()
    refs = ReferencePrices(http_fetch(url), clock, max_age_ms=60_000)
    assert refs.get("binance", "BTC/USDT", 30) == RefPrice(D("50000.12"), T0)
    state.prices["BTC/USDT"] = "50001"
    clock.now = T0 + 30_000
    assert refs.get("binance", "BTC/USDT", 30) == RefPrice(D("50000.12"), T0)
    assert state.requests == 1
    clock.now = T0 + 30_001
    assert refs.get("binance", "BTC/USDT", 30) == RefPrice(D("50001"), T0 + 30_001)
    assert state.requests == 2


def test_the_cache_bound_caps_what_callers_may_ask_for(ticker: tuple[Ticker, str]) -> None:
    state, url = ticker
    clock = Clock()
    refs = ReferencePrices(http_fetch(url), clock, max_age_ms=5_000)
    refs.get("binance", "BTC/USDT", 3600)
    clock.now = T0 + 5_001
    assert refs.get("binance", "BTC/USDT", 3600) == RefPrice(D("50000.12"), T0 + 5_001)
    assert state.requests == 2


def test_symbols_and_exchanges_are_cached_separately(ticker: tuple[Ticker, str]) -> None:
    state, url = ticker
    state.prices["ETH/USDT"] = "3000.5"
    refs = ReferencePrices(http_fetch(url), Clock())
    assert refs.get("binance", "ETH/USDT", 30).price == D("3000.5")  # type: ignore[union-attr]
    assert refs.get("binance", "BTC/USDT", 30).price == D("50000.12")  # type: ignore[union-attr]
    assert refs.get("kraken", "BTC/USDT", 30) is not None
    assert state.requests == 3


@pytest.mark.parametrize(
    ("status", "price"),
    [(500, "50000"), (200, "NaN"), (200, "-1"), (200, "0"), (200, "lots"), (200, None),
     (200, "1E+30"), (200, "0.0000000000000000000001")],
)  # fmt: skip
def test_a_bad_answer_gives_no_reference_and_never_raises(
    ticker: tuple[Ticker, str], status: int, price: str | None
) -> None:
    state, url = ticker
    state.status, state.prices["BTC/USDT"] = status, price  # type: ignore[assignment]
    refs = ReferencePrices(http_fetch(url), Clock())
    assert refs.get("binance", "BTC/USDT", 30) is None
    assert state.requests == 1


def test_a_float_from_the_fetch_is_refused(ticker: tuple[Ticker, str]) -> None:
    _, url = ticker
    refs = ReferencePrices(http_fetch(url, parse_float=float), Clock())
    assert refs.get("binance", "BTC/USDT", 30) is None


def test_an_unreachable_endpoint_gives_no_reference(ticker: tuple[Ticker, str]) -> None:
    _, url = ticker
    dead = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    dead_url = f"http://127.0.0.1:{dead.server_address[1]}"
    dead.server_close()  # nothing listens there any more
    assert ReferencePrices(http_fetch(dead_url), Clock()).get("binance", "BTC/USDT", 30) is None


def test_after_a_failure_the_stale_price_is_not_served_and_retries_back_off(
    ticker: tuple[Ticker, str],
) -> None:
    state, url = ticker
    clock = Clock()
    refs = ReferencePrices(http_fetch(url), clock, failure_backoff_ms=1_000)
    assert refs.get("binance", "BTC/USDT", 10) is not None
    state.status = 503
    clock.now = T0 + 10_001
    assert refs.get("binance", "BTC/USDT", 10) is None  # the old price is too old to use
    clock.now = T0 + 10_500
    assert refs.get("binance", "BTC/USDT", 10) is None
    assert state.requests == 2  # backing off: no request while the endpoint just failed
    state.status = 200
    clock.now = T0 + 11_001
    assert refs.get("binance", "BTC/USDT", 10) == RefPrice(D("50000.12"), T0 + 11_001)
    assert state.requests == 3


def test_concurrent_callers_share_one_in_flight_fetch(ticker: tuple[Ticker, str]) -> None:
    state, url = ticker
    state.gate.clear()  # the endpoint holds every answer until released
    refs = ReferencePrices(http_fetch(url), Clock())
    calling = threading.Semaphore(0)
    results: list[RefPrice | None] = []

    def caller() -> None:
        calling.release()
        results.append(refs.get("binance", "BTC/USDT", 30))

    threads = [threading.Thread(target=caller) for _ in range(20)]
    for t in threads:
        t.start()
    for _ in threads:
        assert calling.acquire(timeout=10)
    assert state.arrived.wait(10)
    state.gate.set()
    for t in threads:
        t.join(10)
    assert state.requests == 1
    assert results == [RefPrice(D("50000.12"), T0)] * 20


def test_a_caller_waits_a_bounded_time_for_a_hung_fetch(ticker: tuple[Ticker, str]) -> None:
    state, url = ticker
    state.gate.clear()
    refs = ReferencePrices(http_fetch(url), Clock(), wait_s=0.2)
    leader = threading.Thread(target=refs.get, args=("binance", "BTC/USDT", 30))
    leader.start()
    assert state.arrived.wait(10)
    assert refs.get("binance", "BTC/USDT", 30) is None  # gave up waiting; did not fetch again
    assert state.requests == 1
    state.gate.set()
    leader.join(10)
    assert refs.get("binance", "BTC/USDT", 30) == RefPrice(D("50000.12"), T0)
