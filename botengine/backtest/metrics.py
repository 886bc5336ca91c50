"""Backtest numbers: PnL, capital, drawdown, deal statistics, the per-deal table; all Decimal.

Balances start at zero, so equity(t) = quote balance + base held x price is the running PnL.
Equity is marked at every candle close. Max drawdown is the largest fall of that equity from
its running peak, exact: between two fills the holdings are constant, so per stretch only
the lowest close, the highest close and the largest fall of the close from its running
maximum matter, and those come from one vectorised pass over the scaled int64 closes.
Its percentage is relative to the max capital used (cost basis of the base held plus the
quote reserved by resting buys, at its highest).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np

from botengine.backtest.engine import BacktestResult
from botengine.candles import iso_ms
from botengine.config import canonical
from botengine.model import Deal

_ZERO = Decimal(0)
OFFSET_LIMIT = 2**62  # the offset trick below must stay inside int64


@dataclass(frozen=True)
class Holdings:
    """The account after each fill: `state[k]` holds after the first k fills."""

    fill_candles: np.ndarray  # candle index of each fill
    quote: list[Decimal]
    base: list[Decimal]

    @classmethod
    def of(cls, result: BacktestResult) -> Holdings:
        q, b = [_ZERO], [_ZERO]
        for f in result.fills:
            notional = f.price * f.amount
            if f.side == "buy":
                q.append(q[-1] - notional - f.fee)
                b.append(b[-1] + f.amount)
            else:
                q.append(q[-1] + notional - f.fee)
                b.append(b[-1] - f.amount)
        candles = np.fromiter((f.candle for f in result.fills), dtype=np.int64)
        return cls(candles, q, b)

    def state_at_close(self, n: int) -> np.ndarray:
        """For each candle, the holdings index in force at its close."""
        return np.searchsorted(self.fill_candles, np.arange(n), side="right")


def max_drawdown(result: BacktestResult, holdings: Holdings | None = None) -> Decimal:
    """Largest fall of equity (marked at candle closes) from its running peak, in quote."""
    h = holdings or Holdings.of(result)
    c = result.candles
    closes = c.close
    n = len(closes)
    state = h.state_at_close(n)
    starts = np.concatenate(([0], np.nonzero(np.diff(state))[0] + 1))
    rank = np.zeros(n, dtype=np.int64)
    rank[starts[1:]] = 1
    rank = np.cumsum(rank)
    big = int(closes.max() - closes.min()) + 1
    if len(starts) * big < OFFSET_LIMIT:
        shifted = closes + rank * big
        fall = np.maximum.accumulate(shifted) - shifted  # per-stretch fall from its own max
        seg_fall = np.maximum.reduceat(fall, starts)
    else:  # too many stretches for the offset trick: one numpy call per stretch
        ends = [*starts[1:], n]
        seg_fall = np.array(
            [int((np.maximum.accumulate(closes[a:e]) - closes[a:e]).max())
             for a, e in zip(starts, ends, strict=True)], dtype=np.int64,
        )  # fmt: skip
    seg_min = np.minimum.reduceat(closes, starts)
    seg_max = np.maximum.reduceat(closes, starts)
    peak, worst = _ZERO, _ZERO
    for k in range(len(starts)):
        s = int(state[starts[k]])
        q, b = h.quote[s], h.base[s]
        if b == 0:
            low = high = q
            inner = _ZERO
        else:
            low = q + b * c.price(seg_min[k])
            high = q + b * c.price(seg_max[k])
            inner = b * c.price(seg_fall[k])
        worst = max(worst, peak - low, inner)
        peak = max(peak, high)
    return worst


def equity_samples(
    result: BacktestResult, points: int = 2000, holdings: Holdings | None = None
) -> list[tuple[int, Decimal]]:
    """Equity at (up to) `points` evenly spaced candle closes, plus the last one."""
    h = holdings or Holdings.of(result)
    c = result.candles
    n = len(c)
    idx = np.unique(np.concatenate((np.linspace(0, n - 1, min(points, n)).astype(np.int64),
                                    [n - 1])))  # fmt: skip
    state = np.searchsorted(h.fill_candles, idx, side="right")
    return [
        (int(c.end_ms[i]), h.quote[int(s)] + h.base[int(s)] * c.price(c.close[i]))
        for i, s in zip(idx, state, strict=True)
    ]


def deal_row(deal: Deal, mark: Decimal | None = None) -> dict[str, Any]:
    """One row of the deal table; an open deal is marked to `mark` (its unrealised PnL)."""
    if deal.closed_ms is not None:
        pnl = deal.realised_pnl
    else:
        pnl = deal.proceeds + (deal.bought - deal.sold) * (mark or _ZERO) - deal.cost
    return {
        "deal": deal.deal_id,
        "opened": iso_ms(deal.opened_ms),
        "closed": None if deal.closed_ms is None else iso_ms(deal.closed_ms),
        "duration_h": None if deal.closed_ms is None else _hours(deal.closed_ms - deal.opened_ms),
        "bought": canonical(deal.bought),
        "cost": _money(deal.cost),
        "sold": canonical(deal.sold),
        "proceeds": _money(deal.proceeds),
        "fees": _money(deal.fees_quote),
        "pnl": _money(pnl),
        "pnl_pct": _money(pnl / deal.cost * 100) if deal.cost else "0",
        "safety_orders": deal.safety_orders,
        "status": "closed" if deal.closed_ms is not None else "open",
    }


def _hours(ms: int) -> str:
    return canonical((Decimal(ms) / 3_600_000).quantize(Decimal("0.01")))


def _money(x: Decimal) -> str:
    """Quote amounts rounded to 10^-8 for display (the exact values stay in the result)."""
    return canonical(x.quantize(Decimal("1e-8")))


def summary(result: BacktestResult, kind: str) -> dict[str, Any]:
    """The headline numbers as a JSON-ready dict (decimals as strings)."""
    c = result.candles
    h = Holdings.of(result)
    last = result.last_price
    total = result.quote_balance + result.base_balance * last
    realised = sum((d.realised_pnl for d in result.deals), _ZERO)
    unrealised = total - realised
    dd = max_drawdown(result, h)
    cap = result.max_capital
    durations = [d.closed_ms - d.opened_ms for d in result.deals if d.closed_ms is not None]
    avg_h = _hours(sum(durations) // len(durations)) if durations else None
    gaps = c.gaps()
    out: dict[str, Any] = {
        "bot": result.bot,
        "symbol": result.symbol,
        "strategy": kind,
        "mode": result.mode,
        "data": {
            "source": c.source,
            "candles": len(c),
            "interval_ms": c.interval_ms,
            "first": iso_ms(int(c.open_ms[0])),
            "last": iso_ms(int(c.open_ms[-1])),
            "gaps": len(gaps),
            "missing_candles": sum(g.missing for g in gaps),
        },
        "last_price": canonical(last),
        "realised_pnl": _money(realised),
        "unrealised_pnl": _money(unrealised),
        "total_pnl": _money(total),
        "max_capital_used": _money(cap),
        "return_on_max_capital_pct": _money(total / cap * 100) if cap else "0",
        "max_drawdown": _money(dd),
        "max_drawdown_pct": _money(dd / cap * 100) if cap else "0",
        "deals_closed": len(result.deals),
        "deals_open": len(result.open_deals),
        "avg_deal_duration_h": avg_h,
        "fees_paid": _money(result.fees_paid),
        "fills": len(result.fills),
        "orders_placed": result.orders_placed,
        "orders_cancelled": result.orders_cancelled,
        "base_held": canonical(result.base_balance),
        "quote_balance": _money(result.quote_balance),
        "candles_visited": result.candles_visited,
        "elapsed_s": round(result.elapsed_s, 4),
    }
    if kind == "dca":
        all_deals = [*result.deals, *result.open_deals]
        out["safety_orders_used"] = sum(d.safety_orders for d in all_deals)
        out["max_safety_orders_in_a_deal"] = max((d.safety_orders for d in all_deals), default=0)
    else:
        out["grid_round_trips"] = int(result.extra.get("round_trips", 0))
        out["stopped"] = result.extra.get("stopped")
    return out


def report_dict(result: BacktestResult, kind: str) -> dict[str, Any]:
    """Summary plus the per-deal table (closed deals, then open ones marked to the last price)."""
    last = result.last_price
    return {
        "summary": summary(result, kind),
        "deals": [deal_row(d) for d in result.deals]
        + [deal_row(d, last) for d in result.open_deals],
    }
