"""The prefetch remembers each key's policy from its last decision; a policy change still
takes effect on the very next order in both directions (adding and removing a market)."""

from __future__ import annotations

from decimal import Decimal

from botengine.signer_client import now_ms
from tests.signer.stack import KEY_ID, POLICY_TOML, Stack

BTC_ONLY = POLICY_TOML.replace('symbols = ["BTC/USDT", "ETH/USDT"]', 'symbols = ["BTC/USDT"]')


def limit_price(stack: Stack, symbol: str) -> Decimal:
    return (stack.price(symbol) * Decimal("0.99")).quantize(Decimal("0.01"))


def test_a_market_added_to_the_policy_is_priced_on_the_next_order(stack: Stack) -> None:
    client = stack.client()
    stack.opened.actions.set_policy("test", now_ms(), KEY_ID, BTC_ONLY)
    btc = client.submit_order("BTC/USDT", "buy", "limit", "0.001", limit_price(stack, "BTC/USDT"),
                              "pf-1", mode="sign-only")  # fmt: skip
    assert btc.decision.allowed  # the signer now remembers a policy without ETH/USDT
    eth_price = limit_price(stack, "ETH/USDT")
    refused = client.submit_order("ETH/USDT", "buy", "limit", "0.01", eth_price, "pf-2",
                                  mode="sign-only")  # fmt: skip
    assert {v.rule_id for v in refused.decision.violations} == {"symbol_not_allowed"}
    stack.opened.actions.set_policy("test", now_ms(), KEY_ID, POLICY_TOML)
    eth = client.submit_order("ETH/USDT", "buy", "limit", "0.01", eth_price, "pf-3",
                              mode="sign-only")  # fmt: skip
    assert eth.decision.allowed, eth.decision.violations  # priced: no missing reference


def test_a_market_removed_from_the_policy_is_refused_on_the_next_order(stack: Stack) -> None:
    client = stack.client()
    eth_price = limit_price(stack, "ETH/USDT")
    first = client.submit_order("ETH/USDT", "buy", "limit", "0.01", eth_price, "pr-1",
                                mode="sign-only")  # fmt: skip
    assert first.decision.allowed
    stack.opened.actions.set_policy("test", now_ms(), KEY_ID, BTC_ONLY)
    after = client.submit_order("ETH/USDT", "buy", "limit", "0.01", eth_price, "pr-2",
                                mode="sign-only")  # fmt: skip
    assert not after.decision.allowed
    assert {v.rule_id for v in after.decision.violations} == {"symbol_not_allowed"}
