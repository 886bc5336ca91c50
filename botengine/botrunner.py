"""One bot, live or on paper: strategy state machine + engine database + signer, crash-safe.

Each step: carry out pending orders (cancels first, then places), learn from the exchange
(through the signer) which orders filled, feed each fill to the strategy, then feed it the
current price. Whatever the strategy decides is committed -- new orders as "intent", cancel
requests, closed deals and its snapshot -- in ONE transaction before anything is sent. So a
crash at any point leaves either nothing (the strategy re-derives the same deterministic
client order ids from its previous snapshot) or intents that the next start resolves: an order
the exchange has is adopted, one it never got is sent again with the same client order id, and
the signer refuses a second use of an id (`duplicate_client_order_id`), so no order is doubled.

The strategy classes are the backtester's, unchanged: only where intents go differs.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.exc import OperationalError

from botengine import store as st
from botengine.backoff import Backoff
from botengine.config import BotConfigError, make_strategy, parse_bot_config
from botengine.marketdata import MarketData, MarketDataError
from botengine.model import Cancel, Fill, Intent, Place, Strategy, Tick
from botengine.orders import (
    Denied,
    Duplicate,
    ExchangeRefused,
    OrderView,
    Placed,
    SignerGateway,
    SignerRefused,
    SignerUnreachable,
    fill_from_trades,
    fill_from_view,
)
from botengine.store_models import OrderRow

log = logging.getLogger("bulkhead.engine")


class Paused(Exception):
    """Stop this bot and show why in `bulkhead bot status` (rule ids + message)."""

    def __init__(self, rules: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.rules = rules
        self.message = message


@dataclass(frozen=True)
class RunnerSettings:
    poll_interval_s: float = 2.0
    retry_base_s: float = 0.5
    retry_cap_s: float = 30.0
    lost_order_grace_ms: int = 120_000


class BotRunner:
    """Runs one bot until it is stopped, paused, or its lease is lost (`stop` set)."""

    def __init__(
        self,
        name: str,
        store: st.Store,
        signer: SignerGateway,
        market: MarketData,
        settings: RunnerSettings,
        stop: threading.Event,
        clock: Callable[[], int] = st.now_ms,
        worker_id: str | None = None,
    ) -> None:
        self.name = name
        self.worker_id = worker_id
        self.store = store
        self.signer = signer
        self.market = market
        self.settings = settings
        self.stop = stop
        self.clock = clock
        self.strategy: Strategy | None = None
        self.symbol = ""
        self.started = False
        self.recovering = True
        self.saved = ""
        self.views: dict[str, OrderView] = {}  # create answers of this process, for market fills
        self.backoff = Backoff(settings.retry_base_s, settings.retry_cap_s)

    # --- the loop ----------------------------------------------------------------------------

    def run(self) -> None:
        while not self.stop.is_set():
            wait = self._attempt()
            if wait is None:
                return
            self.stop.wait(wait)

    def _attempt(self) -> float | None:
        """One step; the delay before the next one, or None when this bot must stop."""
        try:
            if not self._wanted():
                return None
            if self.strategy is None:
                self.prepare()
            self.step()
            self.backoff.reset()
            return self.settings.poll_interval_s
        except Exception as e:  # noqa: BLE001 - sorted below; nothing may kill the engine
            # the strategy in memory may be ahead of what was committed: reload it from the
            # database before the next try, so no fill is ever fed to it twice
            self.strategy = None
            return self._failed(e)

    def _failed(self, e: Exception) -> float | None:
        if isinstance(e, SignerUnreachable | TransientMarket | OperationalError) or (
            isinstance(e, MarketDataError) and e.transient
        ):
            wait = self.backoff.next_delay()
            log.warning("%s: %s; retrying in %.2f s", self.name, e, wait)
            return wait
        if isinstance(e, Paused):
            rules, message = e.rules, e.message
        elif isinstance(e, SignerRefused):
            rules, message = (e.rule_id,), e.message
        elif isinstance(e, MarketDataError):
            rules, message = ("market_data",), str(e)
        else:  # a bug must stop this bot visibly, not the engine
            log.error("%s: unexpected error", self.name, exc_info=e)
            rules, message = ("engine_error",), f"{type(e).__name__}: {e}"[:500]
        try:
            self._pause(rules, message)
        except Exception:  # noqa: BLE001 - the database is down: the supervisor restarts us
            log.exception("%s: could not record the pause", self.name)
        return None

    def _wanted(self) -> bool:
        """Still running, and (under a supervisor) our lease has not run out: a worker that
        cannot renew its lease stops before another worker may take the bot over."""
        with self.store.read() as s:
            row = s.get(st.BotRow, self.name)
            if row is None or not row.enabled or row.status != "running":
                return False
            if self.worker_id is None:
                return True
            return row.lease_owner == self.worker_id and (row.lease_expires_at or 0) > self.clock()

    def _pause(self, rules: tuple[str, ...], message: str) -> None:
        log.warning("%s paused: %s: %s", self.name, ",".join(rules), message)
        with self.store.write() as s:
            st.record_denial(s, self.name, rules, message, self.clock())

    # --- start / resume ----------------------------------------------------------------------

    def prepare(self) -> None:
        with self.store.read() as s:
            row = st.get_bot(s, self.name)
            toml_text = row.config_toml
            snapshot = st.load_snapshot(s, self.name)
        try:
            config = parse_bot_config(toml_text, f"bot {self.name}")
            strategy = make_strategy(config, self.market.rules(config.symbol))
        except BotConfigError as e:
            raise Paused(("config_error",), " ".join(str(e).split())) from None
        if snapshot is not None:
            strategy.restore(snapshot)
        with self.store.write() as s:  # resumed after a denial: those orders are tried again
            for o in st.orders_of(s, self.name, ["denied"]):
                o.state, o.error, o.updated_ms = "intent", None, self.clock()
        self.symbol = config.symbol
        self.strategy = strategy
        self.started = snapshot is not None
        self.recovering = True
        log.info("%s: %s on %s, %s", self.name, config.type, config.symbol,
                 "resumed" if self.started else "new")  # fmt: skip

    # --- one step ----------------------------------------------------------------------------

    def step(self) -> None:
        assert self.strategy is not None
        self.flush()
        self.recovering = False
        self.sync()
        self.flush()
        tick = self._tick()
        if not self.started:
            intents = self.strategy.on_start(tick)
            self.started = True
        else:
            intents = self.strategy.on_price(tick)
        self.commit(intents)
        self.flush()

    def _tick(self) -> Tick:
        try:
            return self.market.tick(self.symbol)
        except MarketDataError as e:
            if e.transient:
                raise TransientMarket(str(e)) from None
            raise

    def commit(
        self, intents: list[Intent], fill: Fill | None = None, trades: Sequence[str] = ()
    ) -> None:
        """Record a fill (if any), the strategy's intents, closed deals and its snapshot."""
        assert self.strategy is not None
        deals = getattr(self.strategy, "take_closed_deals", lambda: [])()
        snapshot = self.strategy.snapshot()
        key = json.dumps(snapshot, sort_keys=True)
        if fill is None and not intents and not deals and key == self.saved:
            return
        now = self.clock()
        with self.store.write() as s:
            if fill is not None:
                st.record_fill(s, self.name, fill, list(trades), now)
            for intent in intents:
                if isinstance(intent, Place):
                    st.add_order(s, self.name, self.symbol, intent, now)
                elif isinstance(intent, Cancel):
                    if st.request_cancel(s, intent.client_order_id, now) is None:
                        log.warning(
                            "%s: cancel of unknown order %s", self.name, intent.client_order_id
                        )
            st.add_deals(s, self.name, deals)
            st.save_snapshot(s, self.name, snapshot, now)
        self.saved = key

    # --- carrying out orders -----------------------------------------------------------------

    def _pending(self) -> list[OrderRow]:
        with self.store.read() as s:
            rows = st.orders_of(s, self.name, ["intent", "submitted", "open"])
        return [r for r in rows if r.cancel_requested or r.state != "open"]

    def flush(self) -> None:
        rows = self._pending()
        cancels = [r for r in rows if r.cancel_requested]
        for row in cancels:
            self._cancel(row)
        if cancels and self._cancel_lost_to_a_fill({r.client_order_id for r in cancels}):
            return  # the strategy must see that fill first (next sync); its places may change
        for row in [r for r in rows if not r.cancel_requested]:
            self._place(row)

    def _cancel_lost_to_a_fill(self, coids: set[str]) -> bool:
        """Did an order we meant to cancel fill first (filled, not yet told to the strategy)?"""
        with self.store.read() as s:
            rows = st.orders_of(s, self.name, ["open"])
        return any(r.client_order_id in coids and r.exchange_status == "closed" for r in rows)

    def _update(self, coid: str, **fields: object) -> None:
        with self.store.write() as s:
            st.update_order(s, coid, self.clock(), **fields)

    def _apply_view(self, row: OrderRow, view: OrderView) -> None:
        """Adopt what the exchange says about an order we asked for."""
        state = {"open": "open", "closed": "open", "canceled": "cancelled", "expired": "cancelled",
                 "rejected": "rejected"}.get(view.status, row.state)  # fmt: skip
        self._update(
            row.client_order_id,
            state=state,
            exchange_status=view.status,
            exchange_order_id=view.exchange_order_id or row.exchange_order_id,
        )
        if state == "rejected":
            raise Paused(("exchange_refused",), f"{row.client_order_id}: the exchange rejected it")
        if state == "cancelled" and not row.cancel_requested:
            raise Paused(
                ("order_cancelled_outside",),
                f"{row.client_order_id} was cancelled on the exchange, not by this bot",
            )

    def _lost(self, row: OrderRow) -> bool:
        first = row.first_sent_ms
        return first is not None and self.clock() - first > self.settings.lost_order_grace_ms

    def _cancel(self, row: OrderRow) -> None:
        coid = row.client_order_id
        if row.state == "intent" and not self.recovering:
            self._update(coid, state="cancelled", error="cancelled before it was sent")
            return
        if row.state in ("intent", "submitted"):
            view = self.signer.order(self.symbol, coid)
            if view is None:
                if row.state == "intent" or self._lost(row):
                    self._update(coid, state="cancelled", error="never reached the exchange")
                return  # may still be in flight: ask again next step
            self._apply_view(row, view)
            if view.status != "open":
                return
        result = self.signer.cancel(self.symbol, coid)
        if isinstance(result, OrderView):
            self._apply_view(row, result)
            return
        view = self.signer.order(self.symbol, coid)  # already filled or cancelled?
        if view is not None:
            self._apply_view(row, view)
        else:
            self._update(coid, state="cancelled", error=f"not on the exchange: {result}"[:500])

    def _place(self, row: OrderRow) -> None:
        coid = row.client_order_id
        self._update(coid, attempts=row.attempts + 1)  # every try counts, answered or not
        if row.state == "submitted" or self.recovering:
            view = self.signer.order(self.symbol, coid)
            if view is not None:
                self._apply_view(row, view)
                return
        self._update(coid, state="submitted", first_sent_ms=row.first_sent_ms or self.clock())
        place = Place(
            coid,
            row.side,  # type: ignore[arg-type]
            Decimal(row.amount),
            None if row.price is None else Decimal(row.price),
            row.role,
        )
        outcome = self.signer.submit(self.symbol, place)
        if isinstance(outcome, Placed):
            self.views[coid] = outcome.order
            self._apply_view(row, outcome.order)
        elif isinstance(outcome, Duplicate):
            view = self.signer.order(self.symbol, coid)
            if view is not None:
                self._apply_view(row, view)
            elif self._lost(row):
                self._update(
                    coid, state="rejected", error="allowed once, never reached the exchange"
                )
                raise Paused(
                    ("order_lost",),
                    f"{coid} was allowed by the signer but never reached the exchange",
                )
        elif isinstance(outcome, Denied):
            self._update(coid, state="denied", error=outcome.message)
            raise Paused(outcome.rules, outcome.message)
        elif isinstance(outcome, ExchangeRefused):
            self._update(coid, state="rejected", error=outcome.message)
            raise Paused(("exchange_refused",), f"{coid}: {outcome.message}")
        # Uncertain: stays "submitted"; the next step asks the exchange by client order id

    # --- learning about fills ----------------------------------------------------------------

    def sync(self) -> None:
        with self.store.read() as s:
            live = st.orders_of(s, self.name, ["open"])
        resting = [r for r in live if r.exchange_status != "closed"]
        if resting:
            on_book = {v.client_order_id for v in self.signer.open_orders(self.symbol)}
            for row in resting:
                if row.client_order_id not in on_book:
                    view = self.signer.order(self.symbol, row.client_order_id)
                    if view is not None:
                        self._apply_view(row, view)
        with self.store.read() as s:
            done = [
                r for r in st.orders_of(s, self.name, ["open"]) if r.exchange_status == "closed"
            ]
        if done:
            self._fills(done)

    def _fills(self, done: list[OrderRow]) -> None:
        assert self.strategy is not None
        found: list[tuple[Fill, list[str]]] = []
        need = []
        for row in done:
            view = self.views.get(row.client_order_id)
            fill = None if view is None else fill_from_view(row.client_order_id, row.side, view)
            if fill is not None:
                found.append((fill, [f"order:{view.exchange_order_id}"]))  # type: ignore[union-attr]
            else:
                need.append(row)
        if need:
            by_order: dict[str, list] = {}  # type: ignore[type-arg]
            for t in self.signer.trades(self.symbol):
                by_order.setdefault(t.exchange_order_id, []).append(t)
            for row in need:
                got = fill_from_trades(
                    row.client_order_id,
                    row.side,
                    Decimal(row.amount),
                    by_order.get(row.exchange_order_id or "", []),
                )
                if got is None:
                    log.info(
                        "%s: %s filled; waiting for its trades", self.name, row.client_order_id
                    )
                else:
                    found.append(got)
        found.sort(key=lambda f: (f[0].ts_ms, f[0].client_order_id))
        for fill, trade_ids in found:
            intents = self.strategy.on_fill(fill)
            self.commit(intents, fill, trade_ids)
            self.views.pop(fill.client_order_id, None)
            log.info("%s: filled %s %s %s @ %s", self.name, fill.client_order_id, fill.side,
                     fill.amount, fill.price)  # fmt: skip


class TransientMarket(RuntimeError):
    """The public market data endpoint did not answer; retried with backoff."""
