"""Raw exchange JSON -> the gateway's plain dicts of strings, and market rules as Decimals.

ccxt's parsed structures hold floats; these mappers read the exchange's own JSON (which carries
amounts and prices as decimal strings) so a float never touches money. binance is mapped in
full (it is the exchange the product runs end to end); kucoin and okx are best effort.
Keys whose value the exchange did not give are left out rather than filled with a guess.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

Resolve = Callable[[str], str]  # exchange market id -> unified symbol
Row = dict[str, str]


@dataclass(frozen=True)
class MarketRules:
    """What an order must respect on one market, read from the exchange's raw filters."""

    symbol: str
    market_id: str
    base: str
    quote: str
    tick_size: Decimal
    step_size: Decimal
    min_amount: Decimal
    min_notional: Decimal  # Decimal(0) when the exchange publishes none


def plain(value: Decimal) -> str:
    """A Decimal as a plain decimal string without exponent or trailing zeros ('0.01', '100')."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def dec(value: Any) -> Decimal | None:
    """A raw JSON value (string or int, never float) as a Decimal; None when absent or empty."""
    if value is None or value == "" or isinstance(value, bool | float):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _put(row: Row, key: str, value: Any) -> None:
    if value is None or value == "" or isinstance(value, float):
        return
    row[key] = str(value).lower() if isinstance(value, bool) else str(value)


def _average(filled: Any, quote_filled: Any) -> str | None:
    qty, quote = dec(filled), dec(quote_filled)
    if qty is None or quote is None or qty <= 0 or quote < 0:
        return None
    return plain(quote / qty)


def _data(raw: Any) -> Any:
    return raw.get("data") if isinstance(raw, Mapping) else None


def _items(raw: Any) -> list[Mapping[str, Any]]:
    data = _data(raw) if isinstance(raw, Mapping) and "data" in raw else raw
    if isinstance(data, Mapping):
        data = data.get("items", [])
    return [d for d in data if isinstance(d, Mapping)] if isinstance(data, list) else []


def _first(raw: Any) -> Mapping[str, Any]:
    items = _items(raw)
    if items:
        return items[0]
    data = _data(raw)
    return data if isinstance(data, Mapping) else {}


# ---------------------------------------------------------------- binance

_BINANCE_STATUS = {
    "NEW": "open",
    "PENDING_NEW": "open",
    "PARTIALLY_FILLED": "open",
    "PENDING_CANCEL": "open",  # not final until the exchange says CANCELED
    "FILLED": "closed",
    "CANCELED": "canceled",
    "REJECTED": "rejected",
    "EXPIRED": "expired",
    "EXPIRED_IN_MATCH": "expired",
}
_BINANCE_TYPE = {"LIMIT": "limit", "LIMIT_MAKER": "limit", "MARKET": "market"}


def _binance_order(raw: Mapping[str, Any], resolve: Resolve, known: Row) -> Row:
    row: Row = dict(known)
    _put(row, "exchange_order_id", raw.get("orderId"))
    _put(row, "client_order_id", raw.get("origClientOrderId") or raw.get("clientOrderId"))
    if raw.get("symbol"):
        row["symbol"] = resolve(str(raw["symbol"]))
    _put(row, "side", str(raw.get("side", "")).lower())
    raw_type = str(raw.get("type", ""))
    _put(row, "type", _BINANCE_TYPE.get(raw_type, raw_type.lower()))
    raw_status = str(raw.get("status", ""))
    _put(row, "status", _BINANCE_STATUS.get(raw_status, raw_status.lower()))
    _put(row, "amount", raw.get("origQty"))
    _put(row, "filled", raw.get("executedQty"))
    price = dec(raw.get("price"))
    if price is not None and price > 0:
        row["price"] = str(raw["price"])
    _put(row, "average", _average(raw.get("executedQty"), raw.get("cummulativeQuoteQty")))
    fees: dict[str, Decimal] = {}
    for fill in raw.get("fills") or []:
        cost, asset = dec(fill.get("commission")), fill.get("commissionAsset")
        if cost is not None and asset:
            fees[str(asset)] = fees.get(str(asset), Decimal(0)) + cost
    if len(fees) == 1:  # several fee assets have no single (cost, currency): leave them out
        ((asset, cost),) = fees.items()
        row["fee_cost"], row["fee_currency"] = plain(cost), asset
    stamp = raw.get("transactTime") or raw.get("updateTime") or raw.get("time")
    _put(row, "timestamp_ms", stamp)
    return row


def _binance_trade(raw: Mapping[str, Any], resolve: Resolve) -> Row:
    row: Row = {}
    _put(row, "trade_id", raw.get("id"))
    _put(row, "exchange_order_id", raw.get("orderId"))
    row["symbol"] = resolve(str(raw.get("symbol", "")))
    row["side"] = "buy" if raw.get("isBuyer") else "sell"
    _put(row, "price", raw.get("price"))
    _put(row, "amount", raw.get("qty"))
    _put(row, "fee_cost", raw.get("commission"))
    _put(row, "fee_currency", raw.get("commissionAsset"))
    _put(row, "timestamp_ms", raw.get("time"))
    return row


def _binance_balances(raw: Any) -> list[Row]:
    rows = []
    for bal in raw.get("balances", []) if isinstance(raw, Mapping) else []:
        free, locked = dec(bal.get("free")), dec(bal.get("locked"))
        if (free or 0) == 0 and (locked or 0) == 0:
            continue
        rows.append({"asset": str(bal["asset"]), "free": bal["free"], "locked": bal["locked"]})
    return rows


def _binance_rules(market: Mapping[str, Any]) -> MarketRules:
    info = market.get("info") or {}
    filters = {f.get("filterType"): f for f in info.get("filters", [])}
    price_filter, lot = filters.get("PRICE_FILTER", {}), filters.get("LOT_SIZE", {})
    notional = filters.get("NOTIONAL") or filters.get("MIN_NOTIONAL") or {}
    return _rules(
        market,
        price_filter.get("tickSize"),
        lot.get("stepSize"),
        lot.get("minQty"),
        notional.get("minNotional"),
    )


# ---------------------------------------------------------------- kucoin (best effort)


def _kucoin_order(raw: Any, resolve: Resolve, known: Row) -> Row:
    data = _first(raw) if isinstance(raw, Mapping) and "data" in raw else raw
    row: Row = dict(known)
    _put(row, "exchange_order_id", data.get("id") or data.get("orderId"))
    _put(row, "exchange_order_id", data.get("cancelledOrderId"))
    _put(row, "client_order_id", data.get("clientOid"))
    if data.get("symbol"):
        row["symbol"] = resolve(str(data["symbol"]))
    _put(row, "side", data.get("side"))
    _put(row, "type", data.get("type"))
    if "isActive" in data or "active" in data:
        active = data.get("isActive", data.get("active"))
        row["status"] = "open" if active else "canceled" if data.get("cancelExist") else "closed"
    elif "cancelledOrderId" in data or (known.get("status") == "canceled"):
        row["status"] = "canceled"
    _put(row, "amount", data.get("size"))
    _put(row, "filled", data.get("dealSize"))
    if (dec(data.get("price")) or 0) > 0:
        row["price"] = str(data["price"])
    _put(row, "average", _average(data.get("dealSize"), data.get("dealFunds")))
    if data.get("feeCurrency"):
        _put(row, "fee_cost", data.get("fee"))
        _put(row, "fee_currency", data.get("feeCurrency"))
    _put(row, "timestamp_ms", data.get("createdAt"))
    return row


def _kucoin_trade(raw: Mapping[str, Any], resolve: Resolve) -> Row:
    row: Row = {}
    _put(row, "trade_id", raw.get("tradeId"))
    _put(row, "exchange_order_id", raw.get("orderId"))
    row["symbol"] = resolve(str(raw.get("symbol", "")))
    _put(row, "side", raw.get("side"))
    _put(row, "price", raw.get("price"))
    _put(row, "amount", raw.get("size"))
    _put(row, "fee_cost", raw.get("fee"))
    _put(row, "fee_currency", raw.get("feeCurrency"))
    _put(row, "timestamp_ms", raw.get("createdAt"))
    return row


def _kucoin_balances(raw: Any) -> list[Row]:
    rows = []
    for acc in _items(raw):
        free, locked = dec(acc.get("available")), dec(acc.get("holds"))
        if (free or 0) == 0 and (locked or 0) == 0:
            continue
        rows.append(
            {"asset": str(acc["currency"]), "free": acc["available"], "locked": acc["holds"]}
        )
    return rows


def _kucoin_rules(market: Mapping[str, Any]) -> MarketRules:
    info = market.get("info") or {}
    return _rules(
        market,
        info.get("priceIncrement"),
        info.get("baseIncrement"),
        info.get("baseMinSize"),
        info.get("minFunds") or info.get("quoteMinSize"),
    )


# ---------------------------------------------------------------- okx (best effort)

_OKX_STATUS = {
    "live": "open",
    "partially_filled": "open",
    "filled": "closed",
    "canceled": "canceled",
    "mmp_canceled": "canceled",
}


def _okx_order(raw: Any, resolve: Resolve, known: Row) -> Row:
    data = _first(raw) if isinstance(raw, Mapping) and "data" in raw else raw
    row: Row = dict(known)
    _put(row, "exchange_order_id", data.get("ordId"))
    _put(row, "client_order_id", data.get("clOrdId"))
    if data.get("instId"):
        row["symbol"] = resolve(str(data["instId"]))
    _put(row, "side", data.get("side"))
    raw_type = str(data.get("ordType", ""))
    _put(row, "type", "limit" if raw_type == "post_only" else raw_type)
    state = str(data.get("state", ""))
    _put(row, "status", _OKX_STATUS.get(state, state))
    _put(row, "amount", data.get("sz"))
    _put(row, "filled", data.get("accFillSz"))
    if (dec(data.get("px")) or 0) > 0:
        row["price"] = str(data["px"])
    if (dec(data.get("avgPx")) or 0) > 0:
        row["average"] = str(data["avgPx"])
    fee = dec(data.get("fee"))
    if fee is not None and data.get("feeCcy"):
        row["fee_cost"], row["fee_currency"] = plain(-fee), str(data["feeCcy"])  # okx: charged < 0
    _put(row, "timestamp_ms", data.get("cTime") or data.get("ts"))
    return row


def _okx_trade(raw: Mapping[str, Any], resolve: Resolve) -> Row:
    row: Row = {}
    _put(row, "trade_id", raw.get("tradeId"))
    _put(row, "exchange_order_id", raw.get("ordId"))
    row["symbol"] = resolve(str(raw.get("instId", "")))
    _put(row, "side", raw.get("side"))
    _put(row, "price", raw.get("fillPx"))
    _put(row, "amount", raw.get("fillSz"))
    fee = dec(raw.get("fee"))
    if fee is not None:
        row["fee_cost"] = plain(-fee)
    _put(row, "fee_currency", raw.get("feeCcy"))
    _put(row, "timestamp_ms", raw.get("ts"))
    return row


def _okx_balances(raw: Any) -> list[Row]:
    rows = []
    for acc in _items(raw):
        for det in acc.get("details", []):
            free, locked = dec(det.get("availBal")), dec(det.get("frozenBal"))
            if (free or 0) == 0 and (locked or 0) == 0:
                continue
            rows.append(
                {"asset": str(det["ccy"]), "free": plain(free or 0), "locked": plain(locked or 0)}
            )
    return rows


def _okx_rules(market: Mapping[str, Any]) -> MarketRules:
    info = market.get("info") or {}
    return _rules(market, info.get("tickSz"), info.get("lotSz"), info.get("minSz"), None)


# ---------------------------------------------------------------- shared


def _rules(
    market: Mapping[str, Any], tick: Any, step: Any, min_amt: Any, notional: Any
) -> MarketRules:
    tick_d, step_d = dec(tick), dec(step)
    if tick_d is None or step_d is None or tick_d <= 0 or step_d <= 0:
        raise ValueError(f"market {market.get('symbol')} publishes no tick or step size")
    return MarketRules(
        symbol=str(market["symbol"]),
        market_id=str(market["id"]),
        base=str(market["base"]),
        quote=str(market["quote"]),
        tick_size=tick_d.normalize(),
        step_size=step_d.normalize(),
        min_amount=(dec(min_amt) or Decimal(0)).normalize(),
        min_notional=(dec(notional) or Decimal(0)).normalize(),
    )


@dataclass(frozen=True)
class Mapper:
    """The raw-JSON readers for one exchange."""

    order: Callable[[Any, Resolve, Row], Row]
    orders: Callable[[Any], list[Mapping[str, Any]]]
    trade: Callable[[Mapping[str, Any], Resolve], Row]
    trades: Callable[[Any], list[Mapping[str, Any]]]
    balances: Callable[[Any], list[Row]]
    rules: Callable[[Mapping[str, Any]], MarketRules]
    ticker: Callable[[Any], Any]  # -> the raw last-price value


def _list(raw: Any) -> list[Mapping[str, Any]]:
    return [r for r in raw if isinstance(r, Mapping)] if isinstance(raw, list) else []


MAPPERS: dict[str, Mapper] = {
    "binance": Mapper(
        order=_binance_order,
        orders=_list,
        trade=_binance_trade,
        trades=_list,
        balances=_binance_balances,
        rules=_binance_rules,
        ticker=lambda raw: raw.get("price") if isinstance(raw, Mapping) else None,
    ),
    "kucoin": Mapper(
        order=_kucoin_order,
        orders=_items,
        trade=_kucoin_trade,
        trades=_items,
        balances=_kucoin_balances,
        rules=_kucoin_rules,
        ticker=lambda raw: (_data(raw) or {}).get("price"),
    ),
    "okx": Mapper(
        order=_okx_order,
        orders=_items,
        trade=_okx_trade,
        trades=_items,
        balances=_okx_balances,
        rules=_okx_rules,
        ticker=lambda raw: _first(raw).get("last"),
    ),
}
