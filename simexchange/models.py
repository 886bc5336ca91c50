"""Accounts, orders and trades, and their Binance JSON shapes."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from simexchange.market import fmt

ZERO = Decimal(0)


@dataclass(slots=True)
class Balance:
    free: Decimal = ZERO
    locked: Decimal = ZERO


@dataclass(slots=True)
class Account:
    """A paper account: balances per asset and its commission rates (fractions)."""

    account_id: int
    name: str
    maker_rate: Decimal
    taker_rate: Decimal
    balances: dict[str, Balance] = field(default_factory=dict)
    update_time: int = 0

    def balance(self, asset: str) -> Balance:
        return self.balances.setdefault(asset, Balance())

    def to_json(self, assets: list[str], omit_zero: bool) -> dict[str, object]:
        """GET /api/v3/account."""
        rows = []
        for asset in sorted(set(assets) | set(self.balances)):
            b = self.balances.get(asset, Balance())
            if omit_zero and b.free == 0 and b.locked == 0:
                continue
            rows.append({"asset": asset, "free": fmt(b.free), "locked": fmt(b.locked)})
        maker_bps = int(self.maker_rate * 10_000)
        taker_bps = int(self.taker_rate * 10_000)
        return {
            "makerCommission": maker_bps,
            "takerCommission": taker_bps,
            "buyerCommission": 0,
            "sellerCommission": 0,
            "commissionRates": {
                "maker": fmt(self.maker_rate),
                "taker": fmt(self.taker_rate),
                "buyer": fmt(ZERO),
                "seller": fmt(ZERO),
            },
            "canTrade": True,
            "canWithdraw": True,
            "canDeposit": True,
            "brokered": False,
            "requireSelfTradePrevention": False,
            "preventSor": False,
            "updateTime": self.update_time,
            "accountType": "SPOT",
            "balances": rows,
            "permissions": ["SPOT"],
            "uid": self.account_id,
        }


@dataclass(slots=True)
class Trade:
    trade_id: int
    order_id: int
    symbol: str
    account_id: int
    price: Decimal
    qty: Decimal
    quote_qty: Decimal
    commission: Decimal
    commission_asset: str
    time: int
    is_buyer: bool
    is_maker: bool

    def to_json(self) -> dict[str, object]:
        """One element of GET /api/v3/myTrades."""
        return {
            "symbol": self.symbol,
            "id": self.trade_id,
            "orderId": self.order_id,
            "orderListId": -1,
            "price": fmt(self.price),
            "qty": fmt(self.qty),
            "quoteQty": fmt(self.quote_qty),
            "commission": fmt(self.commission),
            "commissionAsset": self.commission_asset,
            "time": self.time,
            "isBuyer": self.is_buyer,
            "isMaker": self.is_maker,
            "isBestMatch": True,
        }

    def fill_json(self) -> dict[str, object]:
        """One element of a FULL new-order response's `fills`."""
        return {
            "price": fmt(self.price),
            "qty": fmt(self.qty),
            "commission": fmt(self.commission),
            "commissionAsset": self.commission_asset,
            "tradeId": self.trade_id,
        }


@dataclass(slots=True)
class Order:
    order_id: int
    symbol: str
    account_id: int
    client_order_id: str
    side: str
    type: str
    time_in_force: str
    price: Decimal
    orig_qty: Decimal
    orig_quote_qty: Decimal
    time: int
    status: str = "NEW"
    executed_qty: Decimal = ZERO
    cum_quote: Decimal = ZERO
    update_time: int = 0
    locked_asset: str = ""
    locked: Decimal = ZERO
    trade_ids: list[int] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.status in ("NEW", "PARTIALLY_FILLED")

    def _common(self) -> dict[str, object]:
        return {
            "symbol": self.symbol,
            "orderId": self.order_id,
            "orderListId": -1,
            "clientOrderId": self.client_order_id,
            "price": fmt(self.price),
            "origQty": fmt(self.orig_qty),
            "executedQty": fmt(self.executed_qty),
            "cummulativeQuoteQty": fmt(self.cum_quote),
            "status": self.status,
            "timeInForce": self.time_in_force,
            "type": self.type,
            "side": self.side,
        }

    def to_json(self) -> dict[str, object]:
        """GET /api/v3/order, openOrders and allOrders."""
        return {
            **self._common(),
            "stopPrice": fmt(ZERO),
            "icebergQty": fmt(ZERO),
            "time": self.time,
            "updateTime": self.update_time,
            "isWorking": True,
            "workingTime": self.time,
            "origQuoteOrderQty": fmt(self.orig_quote_qty),
            "selfTradePreventionMode": "NONE",
        }

    def new_order_json(self, resp_type: str, fills: list[Trade]) -> dict[str, object]:
        """POST /api/v3/order in the ACK, RESULT or FULL shape."""
        ack: dict[str, object] = {
            "symbol": self.symbol,
            "orderId": self.order_id,
            "orderListId": -1,
            "clientOrderId": self.client_order_id,
            "transactTime": self.time,
        }
        if resp_type == "ACK":
            return ack
        result = {
            **ack,
            **self._common(),
            "origQuoteOrderQty": fmt(self.orig_quote_qty),
            "workingTime": self.time,
            "selfTradePreventionMode": "NONE",
        }
        if resp_type == "FULL":
            result["fills"] = [t.fill_json() for t in fills]
        return result

    def cancel_json(self, cancel_client_id: str, now: int) -> dict[str, object]:
        """DELETE /api/v3/order: clientOrderId is the cancel's id, origClientOrderId the order's."""
        return {
            **self._common(),
            "origClientOrderId": self.client_order_id,
            "clientOrderId": cancel_client_id,
            "transactTime": now,
            "origQuoteOrderQty": fmt(self.orig_quote_qty),
            "selfTradePreventionMode": "NONE",
        }
