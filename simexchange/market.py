"""Symbols: Binance filters, exchangeInfo entries, the book around the path, and price impact.

A thin market has a simple depth model: `depth_quote_per_pct` quote units of liquidity per
1 % of price on each side. A taker order of notional N moves the price by N / depth % (the
fill averages half of that), and the move decays back to the path with a half-life. That is
enough to show a pump of a low-cap coin: buying it with someone else's money moves it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal

from simexchange import errors
from simexchange.prices import Point, PricePath, Window

EIGHT = Decimal("0.00000001")
ORDER_TYPES = ("LIMIT", "LIMIT_MAKER", "MARKET")
MAX_NUM_ORDERS = 200


def fmt(value: Decimal, places: int = 8) -> str:
    """Binance's decimal string style: fixed 8 places, e.g. '0.01000000'."""
    return f"{value.quantize(Decimal(1).scaleb(-places), ROUND_HALF_EVEN):f}"


def floor_to(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(ROUND_FLOOR) * step


def ceil_to(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(ROUND_CEILING) * step


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    """Trading rules of one symbol, as Binance publishes them in exchangeInfo."""

    symbol: str
    base: str
    quote: str
    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    min_notional: Decimal
    max_notional: Decimal = Decimal("9000000")
    min_price: Decimal | None = None
    max_price: Decimal = Decimal("1000000")
    notional_filter: str = "NOTIONAL"  # or "MIN_NOTIONAL" (the older filter)
    base_precision: int = 8
    quote_precision: int = 8

    def filters(self) -> list[dict[str, object]]:
        """The filter list of this symbol's exchangeInfo entry."""
        lot = {"minQty": fmt(self.min_qty), "maxQty": fmt(self.max_qty)}
        lot["stepSize"] = fmt(self.step_size)
        out: list[dict[str, object]] = [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": fmt(self.min_price or self.tick_size),
                "maxPrice": fmt(self.max_price),
                "tickSize": fmt(self.tick_size),
            },
            {"filterType": "LOT_SIZE", **lot},
            {"filterType": "MARKET_LOT_SIZE", **lot},
        ]
        if self.notional_filter == "MIN_NOTIONAL":
            out.append(
                {
                    "filterType": "MIN_NOTIONAL",
                    "minNotional": fmt(self.min_notional),
                    "applyToMarket": True,
                    "avgPriceMins": 0,
                }
            )
        else:
            out.append(
                {
                    "filterType": "NOTIONAL",
                    "minNotional": fmt(self.min_notional),
                    "applyMinToMarket": True,
                    "maxNotional": fmt(self.max_notional),
                    "applyMaxToMarket": False,
                    "avgPriceMins": 0,
                }
            )
        out.append({"filterType": "MAX_NUM_ORDERS", "maxNumOrders": MAX_NUM_ORDERS})
        return out

    def exchange_info(self) -> dict[str, object]:
        """This symbol's entry in GET /api/v3/exchangeInfo."""
        return {
            "symbol": self.symbol,
            "status": "TRADING",
            "baseAsset": self.base,
            "baseAssetPrecision": self.base_precision,
            "quoteAsset": self.quote,
            "quotePrecision": self.quote_precision,
            "quoteAssetPrecision": self.quote_precision,
            "baseCommissionPrecision": 8,
            "quoteCommissionPrecision": 8,
            "orderTypes": list(ORDER_TYPES),
            "icebergAllowed": False,
            "ocoAllowed": False,
            "otoAllowed": False,
            "quoteOrderQtyMarketAllowed": True,
            "allowTrailingStop": False,
            "cancelReplaceAllowed": False,
            "amendAllowed": False,
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "filters": self.filters(),
            "permissions": [],
            "permissionSets": [["SPOT"]],
            "defaultSelfTradePreventionMode": "NONE",
            "allowedSelfTradePreventionModes": ["NONE"],
        }

    def check_price(self, price: Decimal) -> None:
        """PRICE_FILTER: min <= price <= max and price a multiple of the tick."""
        low = self.min_price or self.tick_size
        if price < low or price > self.max_price or price % self.tick_size != 0:
            raise errors.filter_failure("PRICE_FILTER")

    def check_qty(self, qty: Decimal, market_order: bool) -> None:
        """LOT_SIZE (MARKET_LOT_SIZE for market orders; same bounds here)."""
        if qty < self.min_qty or qty > self.max_qty or qty % self.step_size != 0:
            raise errors.filter_failure("MARKET_LOT_SIZE" if market_order else "LOT_SIZE")

    def check_notional(self, notional: Decimal, market_order: bool) -> None:
        """NOTIONAL / MIN_NOTIONAL (market orders are checked at the last price)."""
        if notional < self.min_notional:
            raise errors.filter_failure(self.notional_filter)
        if self.notional_filter == "NOTIONAL" and not market_order and notional > self.max_notional:
            raise errors.filter_failure("NOTIONAL")


class Market:
    """One symbol's live state: the path, the impact of taker trades, the synthetic book."""

    def __init__(
        self,
        spec: SymbolSpec,
        path: PricePath,
        *,
        depth_quote_per_pct: Decimal,
        price_impact: bool = False,
        impact_half_life_ms: int = 600_000,
    ) -> None:
        if depth_quote_per_pct <= 0:
            raise ValueError(f"{spec.symbol}: depth_quote_per_pct must be > 0")
        self.spec = spec
        self.path = path
        self.depth = depth_quote_per_pct
        self.price_impact = price_impact
        self.half_life_ms = impact_half_life_ms
        self.impact_m0 = Decimal(1)
        self.impact_t0 = 0

    # --- prices -------------------------------------------------------------------------
    def multiplier(self, t: int) -> Decimal:
        """The decaying price-impact factor at time t (1 when there is no impact)."""
        if self.impact_m0 == 1:
            return Decimal(1)
        elapsed = Decimal(max(t - self.impact_t0, 0)) / self.half_life_ms
        return 1 + (self.impact_m0 - 1) * Decimal("0.5") ** elapsed

    def price(self, t: int) -> Decimal:
        """Last price at time t: the path times the impact factor, on the tick."""
        raw = self.path.price_at(t) * self.multiplier(t)
        return max(raw.quantize(self.spec.tick_size, ROUND_HALF_EVEN), self.spec.tick_size)

    def points(self, start: int, end: int) -> list[Point]:
        """The effective path (impact included) from start to end."""
        tick = self.spec.tick_size
        return [
            (t, max((p * self.multiplier(t)).quantize(tick, ROUND_HALF_EVEN), tick))
            for t, p in self.path.points(start, end)
        ]

    def window(self, start: int, end: int) -> Window | None:
        """OHLCV of the effective path over [start, end); None before the data begins."""
        first = self.path.series.first_time
        if end <= first or end <= start:
            return None
        start = max(start, first)
        pts = self.points(start, end - 1)
        prices = [p for _, p in pts]
        volume = self.path.volume(start, end)
        return Window(pts[0][1], max(prices), min(prices), pts[-1][1], volume)

    def bid_ask(self, t: int) -> tuple[Decimal, Decimal]:
        """Best bid is the last price; best ask one tick above."""
        last = self.price(t)
        return last, last + self.spec.tick_size

    def level_qty(self, price: Decimal) -> Decimal:
        """Base quantity resting at each book level (levels are 0.1 % apart)."""
        qty = self.depth / 10 / price
        return max(floor_to(qty, self.spec.step_size), self.spec.step_size)

    def book(self, t: int, limit: int) -> tuple[list[list[str]], list[list[str]]]:
        """Synthetic depth: `limit` levels each side, spaced 0.1 % (at least one tick)."""
        bid, ask = self.bid_ask(t)
        gap = max(floor_to(bid / 1000, self.spec.tick_size), self.spec.tick_size)
        bids, asks = [], []
        for i in range(limit):
            b, a = bid - gap * i, ask + gap * i
            if b > 0:
                bids.append([fmt(b), fmt(self.level_qty(b))])
            asks.append([fmt(a), fmt(self.level_qty(a))])
        return bids, asks

    # --- taker fills --------------------------------------------------------------------
    def impact_fraction(self, notional: Decimal) -> Decimal:
        """How far (as a fraction) a taker notional moves this market; 0 when deep."""
        if not self.price_impact:
            return Decimal(0)
        return min(notional / self.depth / 100, Decimal("0.9"))

    def taker_price(self, side: str, notional: Decimal, t: int, slippage: Decimal) -> Decimal:
        """Average fill price of a taker order of about `notional` quote (buys round up)."""
        bid, ask = self.bid_ask(t)
        half = self.impact_fraction(notional) / 2
        if side == "BUY":
            return ceil_to(ask * (1 + slippage) * (1 + half), self.spec.tick_size)
        price = floor_to(bid * (1 - slippage) * (1 - half), self.spec.tick_size)
        return max(price, self.spec.tick_size)

    def apply_impact(self, side: str, notional: Decimal, t: int) -> None:
        """Move the market after a taker trade (buys push it up, sells down)."""
        f = self.impact_fraction(notional)
        if f == 0:
            return
        factor = 1 + f if side == "BUY" else 1 - f
        self.impact_m0 = (self.multiplier(t) * factor).quantize(Decimal("1E-12"), ROUND_DOWN)
        self.impact_t0 = t
