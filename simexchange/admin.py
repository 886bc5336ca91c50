"""The admin surface under /_sim/ (not part of Binance; off unless `admin=True`).

JSON in, JSON out:
- GET  /_sim/status                       -> serverTime, speed, last prices
- POST /_sim/advance  {"seconds": "60"}   -> step the clock (fills happen on the way)
- POST /_sim/speed    {"speed": "10"}     -> change the clock rate
- POST /_sim/accounts {"name", "balances", "key_type", "public_key", "can_trade",
                       "can_withdraw", "ip_allow"} -> account id and key (HMAC secret once)
- POST /_sim/deposit  {"account_id", "asset", "amount"}
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from simexchange import errors
from simexchange.api import Request, Response
from simexchange.errors import BinanceError
from simexchange.market import fmt

if TYPE_CHECKING:
    from simexchange.server import SimExchange


def _decimal(doc: dict[str, Any], name: str) -> Decimal:
    try:
        value = Decimal(str(doc[name]))
    except (KeyError, InvalidOperation):
        raise errors.mandatory(name) from None
    if not value.is_finite() or value < 0:
        raise errors.invalid_parameter(name)
    return value


class AdminApi:
    """Handlers for /_sim/*; the HTTP layer routes here only when admin is enabled."""

    def __init__(self, sim: SimExchange) -> None:
        self.sim = sim

    def __call__(self, req: Request) -> Response:
        doc = req.json_body if isinstance(req.json_body, dict) else {}
        routes = {
            ("GET", "/_sim/status"): self.status,
            ("POST", "/_sim/advance"): self.advance,
            ("POST", "/_sim/speed"): self.speed,
            ("POST", "/_sim/accounts"): self.accounts,
            ("POST", "/_sim/deposit"): self.deposit,
        }
        handler = routes.get((req.method, req.path))
        if handler is None:
            raise errors.unknown_endpoint()
        try:
            return Response(200, handler(doc))
        except (ValueError, KeyError, TypeError) as exc:
            raise BinanceError(-1130, f"Invalid admin request: {type(exc).__name__}") from None

    def status(self, doc: dict[str, Any]) -> object:
        with self.sim.engine.session() as now:
            prices = {s: fmt(m.price(now)) for s, m in self.sim.engine.markets.items()}
        return {"serverTime": now, "speed": str(self.sim.clock.speed), "prices": prices}

    def advance(self, doc: dict[str, Any]) -> object:
        return {"serverTime": self.sim.advance(_decimal(doc, "seconds"))}

    def speed(self, doc: dict[str, Any]) -> object:
        self.sim.set_speed(_decimal(doc, "speed"))
        return {"speed": str(self.sim.clock.speed)}

    def accounts(self, doc: dict[str, Any]) -> object:
        balances = {str(a): Decimal(str(v)) for a, v in dict(doc.get("balances", {})).items()}
        keys = self.sim.add_account(
            balances,
            name=doc.get("name"),
            key_type=str(doc.get("key_type", "HMAC")),
            public_key_pem=doc.get("public_key"),
            can_trade=bool(doc.get("can_trade", True)),
            can_withdraw=bool(doc.get("can_withdraw", False)),
            can_read=bool(doc.get("can_read", True)),
            ip_allow=tuple(doc.get("ip_allow", ())),
        )
        out = {"accountId": keys.account_id, "name": keys.name, "apiKey": keys.api_key}
        if keys.secret:
            out["secret"] = keys.secret
        return out

    def deposit(self, doc: dict[str, Any]) -> object:
        account_id = int(doc["account_id"])
        if account_id not in self.sim.engine.accounts:
            raise errors.invalid_parameter("account_id")
        self.sim.deposit(account_id, str(doc["asset"]), _decimal(doc, "amount"))
        return {}
