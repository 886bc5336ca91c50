"""The matching engine: balances, locking, orders, fills and fees, all in Decimal.

Resting limit orders fill (fully, at their own price, as makers) when the market's path
trades through them; market orders and marketable limits fill at once as takers at the
book price plus slippage (and price impact on thin markets). Fees are taken from the asset
received, as Binance does, rounded up to 8 decimals. Every public method runs under one
lock and, with a store attached, writes what it changed in one transaction.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import ROUND_UP, Decimal

from simexchange import errors
from simexchange.clock import SimClock
from simexchange.market import EIGHT, MAX_NUM_ORDERS, Market, floor_to
from simexchange.models import ZERO, Account, Order, Trade
from simexchange.prices import first_cross
from simexchange.store import Store


class Engine:
    """All accounts and orders of one simulated exchange."""

    def __init__(
        self,
        markets: dict[str, Market],
        clock: SimClock,
        *,
        slippage: Decimal = ZERO,
        store: Store | None = None,
    ) -> None:
        self.markets = markets
        self.clock = clock
        self.slippage = slippage
        self.store = store
        self.lock = threading.RLock()
        self.accounts: dict[int, Account] = {}
        self.orders: dict[int, Order] = {}
        self.open_by_symbol: dict[str, dict[int, Order]] = {s: {} for s in markets}
        self.trades: dict[int, Trade] = {}
        self.withdrawals: list[dict[str, str | int]] = []
        self.next_id = {"account": 1, "order": 1, "trade": 1}
        self.synced_to = clock.now_ms()
        self._saved_time = self.synced_to
        self._depth = 0
        self._dirty: set[tuple[str, int | str]] = set()
        if store is not None:
            store.load_into(self)

    # --- sessions and persistence -------------------------------------------------------
    @contextmanager
    def session(self) -> Iterator[int]:
        """Lock, bring fills up to now, yield now; on the way out persist what changed."""
        with self.lock:
            self._depth += 1
            try:
                now = self.clock.now_ms()
                self.sync(now)
                yield now
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self.flush()

    def flush(self, *, force: bool = False) -> None:
        """Persist what changed (and the clock, at most once per simulated second)."""
        with self.lock:
            if self.store is None:
                return
            clock_moved = self.synced_to - self._saved_time >= 1000 or force
            if self._dirty or clock_moved:
                dirty, self._dirty = self._dirty, set()
                self.store.save(self, dirty)
                self._saved_time = self.synced_to

    def _touch(self, kind: str, key: int | str) -> None:
        self._dirty.add((kind, key))

    def _new_id(self, kind: str) -> int:
        value = self.next_id[kind]
        self.next_id[kind] = value + 1
        self._touch("meta", kind)
        return value

    # --- accounts -----------------------------------------------------------------------
    def create_account(
        self, name: str, balances: dict[str, Decimal], maker_rate: Decimal, taker_rate: Decimal
    ) -> Account:
        with self.session() as now:
            account = Account(self._new_id("account"), name, maker_rate, taker_rate)
            account.update_time = now
            for asset, amount in balances.items():
                if amount < 0:
                    raise ValueError(f"balance {asset}={amount} is out of range: allowed >= 0")
                account.balance(asset).free += amount
            self.accounts[account.account_id] = account
            self._touch("account", account.account_id)
            return account

    def account_by_name(self, name: str) -> Account | None:
        return next((a for a in self.accounts.values() if a.name == name), None)

    def deposit(self, account_id: int, asset: str, amount: Decimal) -> None:
        if amount <= 0:
            raise ValueError(f"deposit amount={amount} is out of range: allowed > 0")
        with self.session() as now:
            account = self.accounts[account_id]
            account.balance(asset).free += amount
            account.update_time = now
            self._touch("account", account_id)

    # --- matching -----------------------------------------------------------------------
    def sync(self, now: int) -> None:
        """Fill every resting order the path traded through since the last sync."""
        with self.lock:
            start = self.synced_to
            if now <= start:
                return
            for symbol, book in self.open_by_symbol.items():
                if not book:
                    continue
                market = self.markets[symbol]
                pts = market.points(start, now)
                low = min(p for _, p in pts)
                high = max(p for _, p in pts)
                due: list[tuple[int, int, Order]] = []
                for order in book.values():
                    crossed = low < order.price if order.side == "BUY" else high > order.price
                    if crossed:
                        t = first_cross(pts, order.price, below=order.side == "BUY")
                        if t is not None:
                            due.append((max(t, order.time), order.order_id, order))
                for t, _, order in sorted(due, key=lambda d: (d[0], d[1])):
                    self._fill(order, order.price, t, maker=True)
            self.synced_to = now

    def _fill(self, order: Order, price: Decimal, t: int, *, maker: bool) -> Trade:
        """Execute the whole order at `price`, moving balances and charging the fee."""
        market = self.markets[order.symbol]
        account = self.accounts[order.account_id]
        base, quote = market.spec.base, market.spec.quote
        qty = order.orig_qty
        cost = qty * price
        rate = account.maker_rate if maker else account.taker_rate
        if order.side == "BUY":
            self._spend(account, order, quote, cost)
            fee = (qty * rate).quantize(EIGHT, ROUND_UP)
            account.balance(base).free += qty - fee
            fee_asset = base
        else:
            self._spend(account, order, base, qty)
            fee = (cost * rate).quantize(EIGHT, ROUND_UP)
            account.balance(quote).free += cost - fee
            fee_asset = quote
        trade = Trade(
            self._new_id("trade"), order.order_id, order.symbol, account.account_id, price,
            qty, cost, fee, fee_asset, t, order.side == "BUY", maker,
        )  # fmt: skip
        self.trades[trade.trade_id] = trade
        order.executed_qty, order.cum_quote = qty, cost
        order.status, order.update_time = "FILLED", t
        order.trade_ids.append(trade.trade_id)
        self.open_by_symbol[order.symbol].pop(order.order_id, None)
        account.update_time = t
        if not maker:
            market.apply_impact(order.side, qty * market.price(t), t)
            self._touch("market", order.symbol)
        self._touch("order", order.order_id)
        self._touch("trade", trade.trade_id)
        self._touch("account", account.account_id)
        return trade

    def _spend(self, account: Account, order: Order, asset: str, amount: Decimal) -> None:
        """Take `amount` of `asset`: first the order's lock, the rest from free balance."""
        bal = account.balance(asset)
        from_lock = min(order.locked, amount)
        bal.locked -= order.locked
        bal.free += order.locked - from_lock
        bal.free -= amount - from_lock
        order.locked = ZERO
        if bal.free < 0:  # guarded by the balance checks before any fill
            raise AssertionError(f"negative {asset} balance for account {account.account_id}")

    # --- orders -------------------------------------------------------------------------
    def new_order(
        self,
        account_id: int,
        symbol: str,
        side: str,
        order_type: str,
        *,
        quantity: Decimal | None = None,
        quote_qty: Decimal | None = None,
        price: Decimal | None = None,
        time_in_force: str | None = None,
        client_order_id: str | None = None,
        test_only: bool = False,
    ) -> tuple[Order, list[Trade]]:
        """Validate, lock and place an order; returns it with the fills it made at once."""
        with self.session() as now:
            market = self.markets.get(symbol)
            if market is None:
                raise errors.bad_symbol()
            account = self.accounts[account_id]
            spec = market.spec
            cid = client_order_id or f"sim{secrets.token_hex(10)}"
            bid, ask = market.bid_ask(now)
            last = market.price(now)
            if order_type == "MARKET":
                if quantity is not None:
                    spec.check_qty(quantity, market_order=True)
                    spec.check_notional(quantity * last, market_order=True)
                    fill_price = market.taker_price(side, quantity * last, now, self.slippage)
                    qty = quantity
                else:
                    assert quote_qty is not None
                    spec.check_notional(quote_qty, market_order=True)
                    fill_price = market.taker_price(side, quote_qty, now, self.slippage)
                    qty = floor_to(quote_qty / fill_price, spec.step_size)
                    spec.check_qty(qty, market_order=True)
                limit = ZERO
                marketable = True
            else:
                assert price is not None and quantity is not None
                spec.check_price(price)
                spec.check_qty(quantity, market_order=False)
                spec.check_notional(price * quantity, market_order=False)
                qty, limit = quantity, price
                marketable = price >= ask if side == "BUY" else price <= bid
                fill_price = ZERO
                if marketable:
                    taker = market.taker_price(side, qty * last, now, self.slippage)
                    fill_price = min(taker, price) if side == "BUY" else max(taker, price)
            book = self.open_by_symbol[symbol]
            mine = [o for o in book.values() if o.account_id == account_id]
            if len(mine) >= MAX_NUM_ORDERS:
                raise errors.filter_failure("MAX_NUM_ORDERS")
            if any(o.client_order_id == cid for o in mine):
                raise errors.order_rejected("Duplicate order sent.")
            if order_type == "LIMIT_MAKER" and marketable:
                raise errors.order_rejected("Order would immediately match and take.")
            tif = time_in_force or "GTC"
            order = Order(
                0, symbol, account_id, cid, side, order_type, tif, limit, qty,
                quote_qty or ZERO, now, update_time=now,
            )  # fmt: skip
            if test_only:  # like POST /api/v3/order/test: validated, never matched
                return order, []
            if side == "BUY":
                need_asset, need = spec.quote, qty * (limit if limit else fill_price)
            else:
                need_asset, need = spec.base, qty
            if account.balance(need_asset).free < need:
                raise errors.insufficient_balance()
            order.order_id = self._new_id("order")
            self.orders[order.order_id] = order
            self._touch("order", order.order_id)
            if marketable:
                return order, [self._fill(order, fill_price, now, maker=False)]
            if tif in ("IOC", "FOK"):
                order.status = "EXPIRED"
                return order, []
            bal = account.balance(need_asset)
            bal.free -= need
            bal.locked += need
            order.locked_asset, order.locked = need_asset, need
            book[order.order_id] = order
            account.update_time = now
            self._touch("account", account_id)
            return order, []

    def find_order(
        self, account_id: int, symbol: str, order_id: int | None, client_id: str | None
    ) -> Order | None:
        """By orderId, else the newest order with that clientOrderId."""
        with self.lock:
            if order_id is not None:
                o = self.orders.get(order_id)
                ok = o is not None and o.account_id == account_id and o.symbol == symbol
                if not ok or (client_id is not None and o.client_order_id != client_id):
                    return None
                return o
            found = [
                o
                for o in self.orders.values()
                if o.account_id == account_id and o.symbol == symbol
                and o.client_order_id == client_id
            ]  # fmt: skip
            return max(found, key=lambda o: o.order_id) if found else None

    def cancel(self, order: Order) -> None:
        """Cancel an open order and release its lock."""
        with self.session() as now:
            if not order.is_open:
                raise errors.cancel_unknown()
            account = self.accounts[order.account_id]
            bal = account.balance(order.locked_asset)
            bal.locked -= order.locked
            bal.free += order.locked
            order.locked = ZERO
            order.status, order.update_time = "CANCELED", now
            account.update_time = now
            self.open_by_symbol[order.symbol].pop(order.order_id, None)
            self._touch("order", order.order_id)
            self._touch("account", account.account_id)

    def open_orders(self, account_id: int, symbol: str | None) -> list[Order]:
        with self.lock:
            books = [self.open_by_symbol[symbol]] if symbol else self.open_by_symbol.values()
            found = [o for b in books for o in b.values() if o.account_id == account_id]
            return sorted(found, key=lambda o: o.order_id)

    def all_orders(self, account_id: int, symbol: str) -> list[Order]:
        with self.lock:
            return [
                o for o in self.orders.values() if o.account_id == account_id and o.symbol == symbol
            ]

    def my_trades(self, account_id: int, symbol: str) -> list[Trade]:
        with self.lock:
            return [
                t for t in self.trades.values() if t.account_id == account_id and t.symbol == symbol
            ]

    def withdraw(self, account_id: int, coin: str, amount: Decimal, address: str) -> str:
        """Debit a withdrawal (it goes nowhere); only keys with withdraw permission get here."""
        with self.session() as now:
            account = self.accounts[account_id]
            bal = account.balance(coin)
            if amount <= 0 or bal.free < amount:
                raise errors.withdraw_insufficient()
            bal.free -= amount
            account.update_time = now
            wid = secrets.token_hex(16)
            self.withdrawals.append(
                {"id": wid, "account_id": account_id, "coin": coin, "amount": str(amount),
                 "address": address, "time": now}
            )  # fmt: skip
            self._touch("account", account_id)
            self._touch("withdrawal", wid)
            return wid
