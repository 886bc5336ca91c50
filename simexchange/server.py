"""`SimExchange`: builds the markets, engine and key table, and serves them over HTTP/1.1.

    with SimExchange(config).start() as sim:
        keys = sim.add_account({"USDT": "10000"})
        ... point ccxt at sim.base_url (see simexchange.testing.ccxt_config) ...
        sim.advance(60)  # step the simulated clock

Binds 127.0.0.1 by default. Never logs query strings, bodies, signatures or secrets.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from simexchange.admin import AdminApi
from simexchange.api import BinanceApi, Request
from simexchange.auth import ApiKey, KeyTable, generate_ed25519_pem_pair, random_token
from simexchange.candles import CandleSeries, SyntheticSeries, load_candles
from simexchange.clock import SimClock
from simexchange.config import AccountConfig, FileSource, SimConfig, SymbolConfig
from simexchange.engine import Engine
from simexchange.market import Market, SymbolSpec
from simexchange.prices import PricePath
from simexchange.store import Store

log = logging.getLogger("simexchange")
MAX_BODY = 1 << 20


@dataclass(frozen=True)
class AccountKeys:
    """An account and one of its API keys. `secret` is the HMAC secret, or the Ed25519
    private key PEM when the simulator generated the pair; `repr` never shows it."""

    account_id: int
    name: str
    api_key: str
    key_type: str
    secret: str = field(default="", repr=False)


def _series(cfg: SymbolConfig, files: dict[str, CandleSeries], origin_ms: int) -> CandleSeries:
    """Replayed candles, or a synthetic path anchored at `origin_ms` (stable across restarts)."""
    src = cfg.source
    if isinstance(src, FileSource):
        return files[cfg.symbol]
    return SyntheticSeries(
        start_price=src.start_price, start_ms=origin_ms, tick=cfg.tick_size,
        interval_ms=src.interval_s * 1000, volatility=src.volatility, drift=src.drift,
        seed=src.seed, history=src.history,
    )  # fmt: skip


def _build_market(cfg: SymbolConfig, series: CandleSeries) -> Market:
    spec = SymbolSpec(
        symbol=cfg.symbol, base=cfg.base, quote=cfg.quote, tick_size=cfg.tick_size,
        step_size=cfg.step_size, min_qty=cfg.min_qty or cfg.step_size, max_qty=cfg.max_qty,
        min_notional=cfg.min_notional, notional_filter=cfg.notional_filter,
    )  # fmt: skip
    return Market(
        spec,
        PricePath(series, cfg.tick_size),
        depth_quote_per_pct=cfg.depth_quote_per_pct,
        price_impact=cfg.price_impact,
        impact_half_life_ms=cfg.impact_half_life_s * 1000,
    )


class SimExchange:
    """A running (after `start()`) Binance-compatible simulator."""

    def __init__(self, config: SimConfig, *, clock: SimClock | None = None) -> None:
        self.config = config
        self.store = Store(config.state_path) if config.state_path else None
        files = {
            c.symbol: load_candles(c.source.path) for c in config.symbols if c.source.kind == "file"
        }
        start = self._start_time(config, files, clock)
        origin = int(self.store.meta("origin_ms") or start) if self.store else start
        if self.store is not None:
            self.store.set_meta("origin_ms", str(origin))
        markets = {c.symbol: _build_market(c, _series(c, files, origin)) for c in config.symbols}
        self.clock = clock or SimClock(start, config.speed)
        self.engine = Engine(
            markets, self.clock, slippage=config.slippage_bps / 10_000, store=self.store
        )
        self.keys = KeyTable(self.store)
        admin = AdminApi(self) if config.admin else None
        self.api = BinanceApi(self.engine, self.keys, admin)
        for account in config.accounts:
            self._seed(account)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def _start_time(
        self, config: SimConfig, files: dict[str, CandleSeries], clock: SimClock | None
    ) -> int:
        if clock is not None:
            return clock.now_ms()
        if config.start_ms is not None:
            return config.start_ms
        saved = self.store.meta("sim_time") if self.store else None
        if saved is not None:
            return int(saved)
        if files:
            return max(s.first_time for s in files.values())
        return time.time_ns() // 1_000_000

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> SimExchange:
        """Bind and serve in a daemon thread; returns self with `base_url` set."""
        self._server = _Server((self.config.host, self.config.port), self.api)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="simexchange-http", daemon=True
        )
        self._thread.start()
        return self

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("SimExchange is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        """Stop serving, close every connection, and close the store."""
        if self._server is not None:
            self._server.shutdown()
            self._server.close_connections()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=10)
            self._server = None
        if self.store is not None:
            with self.engine.session():
                pass
            self.engine.flush(force=True)
            self.store.close()
            self.store = None
            self.engine.store = None

    def __enter__(self) -> SimExchange:
        if self._server is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- clock --------------------------------------------------------------------------
    @property
    def now_ms(self) -> int:
        return self.clock.now_ms()

    def advance(self, seconds: Decimal | int | str) -> int:
        """Step the simulated clock forward and process the fills on the way."""
        ms = int(Decimal(seconds) * 1000)
        self.clock.advance(ms)
        with self.engine.session() as now:
            return now

    def set_speed(self, speed: Decimal | int | str) -> None:
        self.clock.set_speed(speed)

    def price(self, symbol: str) -> Decimal:
        with self.engine.session() as now:
            return self.engine.markets[symbol].price(now)

    # --- accounts -----------------------------------------------------------------------
    def add_account(
        self,
        balances: dict[str, Decimal | str | int] | None = None,
        *,
        name: str | None = None,
        key_type: str = "HMAC",
        public_key_pem: str | None = None,
        maker_commission: Decimal | None = None,
        taker_commission: Decimal | None = None,
        **permissions: Any,
    ) -> AccountKeys:
        """Create a funded account with one new API key (permissions: can_trade=True,
        can_withdraw=False, can_read=True, ip_allow=())."""
        account = self.engine.create_account(
            name or f"account{random_token(8)}",
            {a: Decimal(v) for a, v in (balances or {}).items()},
            maker_commission if maker_commission is not None else self.config.maker_fee,
            taker_commission if taker_commission is not None else self.config.taker_fee,
        )
        return self.add_key(account.account_id, key_type, public_key_pem, **permissions)

    def add_key(
        self,
        account_id: int,
        key_type: str = "HMAC",
        public_key_pem: str | None = None,
        *,
        can_trade: bool = True,
        can_withdraw: bool = False,
        can_read: bool = True,
        ip_allow: tuple[str, ...] | list[str] = (),
        api_key: str | None = None,
        secret: str | None = None,
    ) -> AccountKeys:
        """Register a key for an account. HMAC: generates the secret unless given.
        ED25519: registers `public_key_pem`, or generates a pair and returns its private PEM."""
        account = self.engine.accounts[account_id]
        private_pem = ""
        if key_type == "HMAC":
            secret = secret or random_token(64)
            public_key_pem = None
        else:
            secret = None
            if public_key_pem is None:
                private_pem, public_key_pem = generate_ed25519_pem_pair()
        key = ApiKey(
            api_key or random_token(64), account_id, key_type, secret=secret,
            public_key_pem=public_key_pem, can_read=can_read, can_trade=can_trade,
            can_withdraw=can_withdraw, ip_allow=tuple(ip_allow),
        )  # fmt: skip
        self.keys.add(key)
        return AccountKeys(account_id, account.name, key.api_key, key_type, secret or private_pem)

    def deposit(self, account_id: int, asset: str, amount: Decimal | str | int) -> None:
        self.engine.deposit(account_id, asset, Decimal(amount))

    def _seed(self, cfg: AccountConfig) -> None:
        """Create a configured account (once: a restarted store keeps its balances)."""
        existing = self.engine.account_by_name(cfg.name)
        if existing is None:
            existing = self.engine.create_account(
                cfg.name,
                dict(cfg.balances),
                cfg.maker_commission if cfg.maker_commission is not None else self.config.maker_fee,
                cfg.taker_commission if cfg.taker_commission is not None else self.config.taker_fee,
            )
        for k in cfg.keys:
            if self.keys.get(k.api_key) is not None:
                continue
            self.keys.add(
                ApiKey(
                    k.api_key,
                    existing.account_id,
                    k.type,
                    k.secret.get_secret_value() if k.secret else None,
                    k.public_key,
                    k.can_read,
                    k.can_trade,
                    k.can_withdraw,
                    k.ip_allow,
                )  # fmt: skip
            )


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "simexchange"
    sys_version = ""
    timeout = 120
    server: _Server

    def setup(self) -> None:
        super().setup()
        # headers and body go out in two writes; without this, Nagle + delayed ACK add 40 ms
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _serve(self) -> None:
        path, _, query = self.path.partition("?")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self._send(400, {"code": -1000, "msg": "Malformed Content-Length."}, close=True)
            return
        if length > MAX_BODY:
            self._send(413, {"code": -1000, "msg": "Request body too large."}, close=True)
            return
        body = self.rfile.read(length) if length > 0 else b""
        json_body = None
        if path.startswith("/_sim/") and body:
            try:
                json_body = json.loads(body)
            except ValueError:
                json_body = None
        req = Request(
            self.command, path, query.encode("latin-1"), body,
            self.headers.get("X-MBX-APIKEY"), self.client_address[0], json_body,
        )  # fmt: skip
        try:
            resp = self.server.api.handle(req)
        except Exception:  # a bug must not kill the connection handler or leak internals
            log.exception("internal error on %s %s", self.command, path)
            self._send(
                500,
                {"code": -1000, "msg": "An unknown error occurred while processing the request."},
            )
            return
        self._send(resp.status, resp.body)

    def _send(self, status: int, body: object, close: bool = False) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PUT = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Log method and path only: the query string carries signatures."""
        log.debug("%s %s", self.command, (self.path or "").partition("?")[0])


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], api: BinanceApi) -> None:
        self.api = api
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A broken connection is not worth a traceback on stderr."""
        log.debug("connection error from %s", client_address[0], exc_info=True)

    def close_connections(self) -> None:
        """Unblock keep-alive handler threads so nothing outlives stop()."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
