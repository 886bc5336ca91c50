"""HTTP-independent routing of Binance's REST paths, with Binance's JSON and errors."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import TypeVar

from simexchange import errors
from simexchange.auth import ApiKey, KeyTable, authenticate, parse_params
from simexchange.engine import Engine
from simexchange.errors import BinanceError
from simexchange.market import ORDER_TYPES
from simexchange.marketdata import MarketData
from simexchange.models import Order
from simexchange.params import Params, boolean, client_id, decimal, integer, limit, not_sent, text

_UNSUPPORTED_TYPES = {
    "STOP_LOSS": "Stop loss orders are not supported for this symbol.",
    "STOP_LOSS_LIMIT": "Stop loss limit orders are not supported for this symbol.",
    "TAKE_PROFIT": "Take profit orders are not supported for this symbol.",
    "TAKE_PROFIT_LIMIT": "Take profit limit orders are not supported for this symbol.",
}


@dataclass(frozen=True, slots=True)
class Request:
    """What the HTTP layer hands over: raw query and body bytes, exactly as received."""

    method: str
    path: str
    query: bytes
    body: bytes
    api_key: str | None
    client_ip: str
    json_body: object = None


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: object


Handler = Callable[[Params, ApiKey | None, int], object]
AdminHandler = Callable[[Request], Response]
T = TypeVar("T")


class BinanceApi:
    """Maps (method, path) to handlers; SIGNED routes authenticate first."""

    def __init__(self, engine: Engine, keys: KeyTable, admin: AdminHandler | None = None) -> None:
        self.engine = engine
        self.keys = keys
        self.admin = admin
        md = MarketData(engine.markets)
        self.md = md

        def public(fn: Callable[[Params, int], object]) -> tuple[Handler, str]:
            return (lambda p, _k, now: fn(p, now)), "NONE"

        v3 = "/api/v3/"
        self.routes: dict[tuple[str, str], tuple[Handler, str]] = {
            ("GET", v3 + "ping"): public(md.ping),
            ("GET", v3 + "time"): public(md.time),
            ("GET", v3 + "exchangeInfo"): public(md.exchange_info),
            ("GET", v3 + "ticker/price"): public(md.ticker_price),
            ("GET", v3 + "ticker/bookTicker"): public(md.book_ticker),
            ("GET", v3 + "ticker/24hr"): public(md.ticker_24hr),
            ("GET", v3 + "klines"): public(md.klines),
            ("GET", v3 + "uiKlines"): public(md.klines),
            ("GET", v3 + "depth"): public(md.depth),
            ("POST", v3 + "order"): (self.new_order, "TRADE"),
            ("POST", v3 + "order/test"): (self.test_order, "TRADE"),
            ("DELETE", v3 + "order"): (self.cancel_order, "TRADE"),
            ("DELETE", v3 + "openOrders"): (self.cancel_all, "TRADE"),
            ("GET", v3 + "order"): (self.query_order, "USER_DATA"),
            ("GET", v3 + "openOrders"): (self.open_orders, "USER_DATA"),
            ("GET", v3 + "allOrders"): (self.all_orders, "USER_DATA"),
            ("GET", v3 + "account"): (self.account, "USER_DATA"),
            ("GET", v3 + "myTrades"): (self.my_trades, "USER_DATA"),
            ("POST", "/sapi/v1/capital/withdraw/apply"): (self.withdraw, "WITHDRAW"),
        }

    def handle(self, req: Request) -> Response:
        """Answer one request; every failure becomes Binance's error JSON."""
        try:
            if req.path.startswith("/_sim/"):
                if self.admin is None:
                    raise errors.unknown_endpoint()
                return self.admin(req)
            route = self.routes.get((req.method, req.path))
            if route is None:
                raise errors.unknown_endpoint()
            fn, security = route
            params = parse_params(req.query, req.body)
            with self.engine.session() as now:
                key = None
                if security != "NONE":
                    scale = max(Decimal(1), self.engine.clock.speed)
                    key = authenticate(
                        self.keys,
                        req.api_key,
                        req.client_ip,
                        req.query,
                        req.body,
                        params,
                        now,
                        scale,
                    )
                    _permit(key, security)
                return Response(200, fn(params, key, now))
        except BinanceError as exc:
            return Response(exc.http_status, exc.body())

    # --- TRADE ----------------------------------------------------------------------------
    def new_order(self, params: Params, key: ApiKey | None, now: int) -> object:
        return self._place(params, key, test_only=False)

    def test_order(self, params: Params, key: ApiKey | None, now: int) -> object:
        self._place(params, key, test_only=True)
        return {}

    def _place(self, params: Params, key: ApiKey | None, *, test_only: bool) -> object:
        assert key is not None
        market = self.md.market(params)
        assert market is not None
        side = text(params, "side", required=True)
        if side not in ("BUY", "SELL"):
            raise errors.invalid_side()
        order_type = text(params, "type", required=True) or ""
        if order_type in _UNSUPPORTED_TYPES:
            raise errors.order_rejected(_UNSUPPORTED_TYPES[order_type])
        if order_type not in ORDER_TYPES:
            raise errors.invalid_order_type()
        default_resp = "FULL" if order_type in ("LIMIT", "MARKET") else "ACK"
        resp_type = text(params, "newOrderRespType") or default_resp
        if resp_type not in ("ACK", "RESULT", "FULL"):
            raise errors.invalid_resp_type()
        cid = client_id(params, "newClientOrderId")
        if params.get("icebergQty") not in (None, "", "0"):
            raise errors.order_rejected("Iceberg orders are not supported for this symbol.")
        not_sent(params, "stopPrice", "trailingDelta")
        tif = text(params, "timeInForce")
        quote_qty = None
        if order_type == "LIMIT":
            tif = text(params, "timeInForce", required=True)
            if tif not in ("GTC", "IOC", "FOK"):
                raise errors.invalid_tif()
            not_sent(params, "quoteOrderQty")
        elif order_type == "LIMIT_MAKER":
            not_sent(params, "timeInForce", "quoteOrderQty")
        else:
            not_sent(params, "timeInForce", "price")
        quantity = decimal(params, "quantity", required=order_type != "MARKET")
        price = decimal(params, "price", required=order_type != "MARKET")
        if order_type == "MARKET":
            quote_qty = decimal(params, "quoteOrderQty")
            if quantity is None and quote_qty is None:
                raise errors.one_of_mandatory("quantity", "quoteOrderQty")
            if quantity is not None and quote_qty is not None:
                raise errors.not_required("quoteOrderQty")
        order, fills = self.engine.new_order(
            key.account_id, market.spec.symbol, side, order_type, quantity=quantity,
            quote_qty=quote_qty, price=price, time_in_force=tif, client_order_id=cid,
            test_only=test_only,
        )  # fmt: skip
        return order.new_order_json(resp_type, fills)

    def _find(self, params: Params, key: ApiKey | None) -> Order | None:
        assert key is not None
        market = self.md.market(params)
        assert market is not None
        order_id = integer(params, "orderId")
        orig = text(params, "origClientOrderId")
        if order_id is None and orig is None:
            raise errors.one_of_mandatory("origClientOrderId", "orderId")
        return self.engine.find_order(key.account_id, market.spec.symbol, order_id, orig)

    def cancel_order(self, params: Params, key: ApiKey | None, now: int) -> object:
        order = self._find(params, key)
        if order is None or not order.is_open:
            raise errors.cancel_unknown()
        cancel_id = client_id(params, "newClientOrderId") or _cancel_id()
        self.engine.cancel(order)
        return order.cancel_json(cancel_id, now)

    def cancel_all(self, params: Params, key: ApiKey | None, now: int) -> object:
        assert key is not None
        market = self.md.market(params)
        assert market is not None
        orders = self.engine.open_orders(key.account_id, market.spec.symbol)
        if not orders:
            raise errors.cancel_unknown()
        out = []
        for order in orders:
            self.engine.cancel(order)
            out.append(order.cancel_json(_cancel_id(), now))
        return out

    # --- USER_DATA ------------------------------------------------------------------------
    def query_order(self, params: Params, key: ApiKey | None, now: int) -> object:
        order = self._find(params, key)
        if order is None:
            raise errors.no_such_order()
        return order.to_json()

    def open_orders(self, params: Params, key: ApiKey | None, now: int) -> object:
        assert key is not None
        market = self.md.market(params, required=False)
        symbol = market.spec.symbol if market else None
        return [o.to_json() for o in self.engine.open_orders(key.account_id, symbol)]

    def all_orders(self, params: Params, key: ApiKey | None, now: int) -> object:
        assert key is not None
        market = self.md.market(params)
        assert market is not None
        orders = sorted(
            self.engine.all_orders(key.account_id, market.spec.symbol), key=lambda o: o.order_id
        )
        from_id = integer(params, "orderId")
        rows = _window(orders, lambda o: o.order_id, lambda o: o.time, from_id, params)
        return [o.to_json() for o in rows]

    def account(self, params: Params, key: ApiKey | None, now: int) -> object:
        assert key is not None
        account = self.engine.accounts[key.account_id]
        assets = sorted(
            {a for m in self.engine.markets.values() for a in (m.spec.base, m.spec.quote)}
        )
        body = account.to_json(assets, boolean(params, "omitZeroBalances"))
        body["canTrade"], body["canWithdraw"] = key.can_trade, key.can_withdraw
        return body

    def my_trades(self, params: Params, key: ApiKey | None, now: int) -> object:
        assert key is not None
        market = self.md.market(params)
        assert market is not None
        trades = sorted(
            self.engine.my_trades(key.account_id, market.spec.symbol), key=lambda t: t.trade_id
        )
        order_id = integer(params, "orderId")
        if order_id is not None:
            trades = [t for t in trades if t.order_id == order_id]
        from_id = integer(params, "fromId")
        rows = _window(trades, lambda t: t.trade_id, lambda t: t.time, from_id, params)
        return [t.to_json() for t in rows]

    # --- wallet ---------------------------------------------------------------------------
    def withdraw(self, params: Params, key: ApiKey | None, now: int) -> object:
        assert key is not None
        coin = text(params, "coin", required=True) or ""
        address = text(params, "address", required=True) or ""
        amount = decimal(params, "amount", required=True)
        assert amount is not None
        return {"id": self.engine.withdraw(key.account_id, coin, amount, address)}


def _permit(key: ApiKey, security: str) -> None:
    """Key permissions: trading needs can_trade; withdrawals answer -1002 without the right."""
    if security == "TRADE" and not key.can_trade:
        raise errors.rejected_key()
    if security == "USER_DATA" and not key.can_read:
        raise errors.rejected_key()
    if security == "WITHDRAW" and not key.can_withdraw:
        raise errors.unauthorized()


def _cancel_id() -> str:
    return f"cancel{secrets.token_hex(8)}"


def _window(
    rows: list[T],
    ident: Callable[[T], int],
    when: Callable[[T], int],
    from_id: int | None,
    params: Params,
) -> list[T]:
    """Binance list semantics: from an id forward, else the newest `limit` in a time range."""
    count = limit(params, 500, 1000)
    if from_id is not None:
        return [r for r in rows if ident(r) >= from_id][:count]
    start = integer(params, "startTime")
    end = integer(params, "endTime")
    if start is not None:
        rows = [r for r in rows if when(r) >= start]
    if end is not None:
        rows = [r for r in rows if when(r) <= end]
    if start is not None:
        return rows[:count]
    return rows[-count:]
