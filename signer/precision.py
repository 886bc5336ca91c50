"""Exchange precision rules checked before a decision: an order the exchange would round or
reject is refused with a rule id, so what is audited is exactly what gets signed."""

from __future__ import annotations

from decimal import Decimal

from signer.exchanges import MarketRules
from signer.policy import Reason, RefPrice

PRECISION_RULE_IDS = frozenset(
    {"amount_precision", "price_precision", "min_amount", "min_notional", "unknown_market"}
)


def precision_reasons(
    rules: MarketRules, amount: Decimal, price: Decimal | None, ref: RefPrice | None
) -> list[Reason]:
    reasons: list[Reason] = []
    if rules.step_size > 0 and amount % rules.step_size != 0:
        reasons.append(
            Reason(
                "amount_precision",
                f"amount {amount} is not a multiple of the step size {rules.step_size}",
            )
        )
    if price is not None and rules.tick_size > 0 and price % rules.tick_size != 0:
        reasons.append(
            Reason(
                "price_precision",
                f"price {price} is not a multiple of the tick size {rules.tick_size}",
            )
        )
    if amount < rules.min_amount:
        reasons.append(
            Reason("min_amount", f"amount {amount} is below the minimum {rules.min_amount}")
        )
    basis = price if price is not None else (ref.price if ref is not None else None)
    if basis is not None and rules.min_notional > 0 and amount * basis < rules.min_notional:
        reasons.append(
            Reason(
                "min_notional",
                f"notional {amount * basis} is below the exchange minimum {rules.min_notional}",
            )
        )
    return reasons
