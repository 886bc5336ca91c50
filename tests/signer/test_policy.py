"""Policy config and rule evaluation: exact boundaries, every failure reported, never a crash."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signer.errors import ConfigError
from signer.policy import (
    RULE_IDS,
    IntentFacts,
    Policy,
    PolicyConfigError,
    RefPrice,
    Usage,
    evaluate,
    is_loosening,
    parse_policy_toml,
    policy_from_json,
    policy_to_json,
)

D = Decimal
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MONDAY = 4 * DAY_MS  # 1970-01-05 00:00 UTC was a Monday
NOW = MONDAY + 10 * HOUR_MS

BASE_TOML = """
symbols = ["BTC/USDT", "ETH/USDT"]
sides = ["buy", "sell"]
order_types = ["limit", "market"]
max_order_notional = "1000"
max_notional_24h = "5000"
max_notional_24h_per_symbol = "3000"
max_open_orders = 10
orders_per_minute = 60
price_band_pct = "5"
market_slippage_pct = "1"
reference_max_age_s = 30
"""

BASE: dict[str, Any] = {
    "symbols": ["BTC/USDT", "ETH/USDT"],
    "sides": ["buy", "sell"],
    "order_types": ["limit", "market"],
    "max_order_notional": "1000",
    "max_notional_24h": "5000",
    "max_notional_24h_per_symbol": "3000",
    "max_open_orders": 10,
    "orders_per_minute": 60,
    "price_band_pct": "5",
    "market_slippage_pct": "1",
    "reference_max_age_s": 30,
}


def policy(**changes: Any) -> Policy:
    return Policy.model_validate({**BASE, **changes})


def intent(**changes: Any) -> IntentFacts:
    base = IntentFacts("BTC/USDT", "buy", "limit", D("0.01"), D("50000"), NOW)
    return replace(base, **changes)


def usage(**changes: Any) -> Usage:
    return replace(Usage(D(0), D(0), 0, D(1)), **changes)


def ref(price: str = "50000", age_ms: int = 0) -> RefPrice:
    return RefPrice(D(price), NOW - age_ms)


def decide(p: Policy | None = None, i: IntentFacts | None = None, u: Usage | None = None,
           r: RefPrice | None | str = "default", *, global_frozen: bool = False,
           key_frozen: bool = False):  # fmt: skip
    return evaluate(
        policy() if p is None else p,
        i or intent(),
        u or usage(),
        ref() if r == "default" else r,  # type: ignore[arg-type]
        global_frozen=global_frozen,
        key_frozen=key_frozen,
    )


# --- evaluation: the happy path and deny by default -----------------------------------------


def test_an_intent_within_every_rule_is_allowed_with_its_exact_notional() -> None:
    d = decide()
    assert d.allowed and d.reasons == () and d.rule_ids == ()
    assert d.notional == D("500")


def test_no_policy_denies_by_default() -> None:
    d = evaluate(None, intent(), usage(), ref(), global_frozen=False, key_frozen=False)
    assert not d.allowed and d.rule_ids == ("no_policy",)


def test_market_notional_includes_the_slippage_bound() -> None:
    d = decide(i=intent(order_type="market", limit_price=None, amount=D("0.01")))
    assert d.allowed and d.notional == D("0.01") * D("50000") * D("1.01")


# --- each rule alone, just inside and just outside its exact boundary -----------------------

TINY = D("1e-18")

BOUNDARIES = [
    # (rule, policy changes, allowed intent/usage/ref, denied intent/usage/ref)
    ("notional_cap", {}, {"i": intent(amount=D("0.02"))},
     {"i": intent(amount=D("0.02"), limit_price=D("50000.00000001"))}),
    ("notional_24h_cap", {"max_notional_24h_per_symbol": None},
     {"u": usage(notional_24h_key=D(4500))}, {"u": usage(notional_24h_key=D(4500) + TINY)}),
    ("symbol_notional_24h_cap", {}, {"u": usage(notional_24h_symbol=D(2500))},
     {"u": usage(notional_24h_symbol=D(2500) + TINY)}),
    ("symbol_notional_24h_cap", {"symbol_max_notional_24h": {"BTC/USDT": "600"}},
     {"u": usage(notional_24h_symbol=D(100))}, {"u": usage(notional_24h_symbol=D(100) + TINY)}),
    ("open_orders_cap", {}, {"u": usage(open_orders=9)}, {"u": usage(open_orders=10)}),
    ("rate_limit", {}, {"u": usage(tokens=D(1))}, {"u": usage(tokens=D("0.999999999"))}),
    ("price_band", {}, {"i": intent(limit_price=D("52500"), amount=D("0.001"))},
     {"i": intent(limit_price=D("52500") + TINY, amount=D("0.001"))}),
    ("price_band", {}, {"i": intent(limit_price=D("47500"), amount=D("0.001"))},
     {"i": intent(limit_price=D("47500") - TINY, amount=D("0.001"))}),
    ("reference_price_stale", {}, {"r": ref(age_ms=30_000)}, {"r": ref(age_ms=30_001)}),
    ("outside_trading_hours", {"trading_hours": {"windows": ["08:00-10:01"]}},
     {"i": intent(now_ms=NOW + 60_000 - 1)}, {"i": intent(now_ms=NOW + 60_000)}),
    ("outside_trading_hours", {"trading_hours": {"windows": ["10:00-12:00"]}},
     {"i": intent(now_ms=MONDAY + 10 * HOUR_MS)}, {"i": intent(now_ms=MONDAY + 10 * HOUR_MS - 1)}),
]  # fmt: skip


@pytest.mark.parametrize(("rule", "changes", "inside", "outside"), BOUNDARIES)
def test_each_rule_allows_at_its_boundary_and_denies_just_past_it(
    rule: str, changes: dict[str, Any], inside: dict[str, Any], outside: dict[str, Any]
) -> None:
    p = policy(**changes)
    inside, outside = dict(inside), dict(outside)
    for kw in (inside, outside):  # keep the reference fresh when the intent's clock moves
        if "i" in kw and "r" not in kw:
            kw["r"] = RefPrice(D("50000"), kw["i"].now_ms)
    ok = decide(p, **inside)
    assert ok.allowed, ok.reasons
    bad = decide(p, **outside)
    assert not bad.allowed and bad.rule_ids == (rule,), bad.reasons


def test_market_order_at_the_cap_with_slippage_is_allowed_exactly() -> None:
    # 1000 / (50000 * 1.01) is not a finite decimal, so pick an amount whose notional is 1000.
    p = policy(market_slippage_pct="0", max_order_notional="1000")
    market = intent(order_type="market", limit_price=None, amount=D("0.02"))
    assert decide(p, market).allowed
    assert decide(p, replace(market, amount=D("0.020000000000000001"))).rule_ids == (
        "notional_cap",
    )
    p = policy(market_slippage_pct="1", max_order_notional="1010")
    assert decide(p, market).notional == D("1010") and decide(p, market).allowed


@pytest.mark.parametrize(
    ("rule", "kwargs"),
    [
        ("symbol_not_allowed", {"i": intent(symbol="DOGE/USDT")}),
        ("side_not_allowed", {"p": policy(sides=["sell"])}),
        ("order_type_not_allowed", {"p": policy(order_types=["limit"], market_slippage_pct=None),
                                    "i": intent(order_type="market", limit_price=None)}),
        ("key_frozen", {"key_frozen": True}),
        ("key_frozen", {"p": policy(frozen=True)}),
        ("global_freeze", {"global_frozen": True}),
        ("reference_price_unavailable", {"r": None}),
        ("reference_price_unavailable", {"r": RefPrice(D("NaN"), NOW)}),
        ("reference_price_unavailable", {"r": RefPrice(D("-1"), NOW)}),
        ("outside_trading_hours", {"p": policy(trading_hours={"windows": ["00:00-24:00"],
                                                              "weekdays": ["sat", "sun"]})}),
        ("invalid_price", {"i": intent(limit_price=None)}),
    ],
)  # fmt: skip
def test_each_allow_list_and_freeze_rule_denies_alone(rule: str, kwargs: dict[str, Any]) -> None:
    d = decide(**kwargs)
    assert not d.allowed and d.rule_ids == (rule,), d.reasons


def test_a_market_order_carrying_a_price_is_invalid() -> None:
    d = decide(i=intent(order_type="market", limit_price=D("50000")))
    assert not d.allowed and "invalid_price" in d.rule_ids


def test_wrapping_trading_window_honours_the_weekday_of_the_current_time() -> None:
    p = policy(trading_hours={"windows": ["22:00-02:00"], "weekdays": ["mon"]})

    def at(ms: int) -> bool:
        return decide(p, intent(now_ms=ms), r=RefPrice(D("50000"), ms)).allowed

    assert at(MONDAY + 23 * HOUR_MS) and at(MONDAY + HOUR_MS)
    assert not at(MONDAY + 2 * HOUR_MS) and not at(MONDAY + 21 * HOUR_MS)
    assert not at(MONDAY + DAY_MS + HOUR_MS)  # Tuesday 01:00: Tuesday is not listed


@pytest.mark.parametrize(
    "value",
    ["NaN", "sNaN", "Infinity", "-Infinity", "0", "-0", "-1", "1E+20", "1E+999999",
     "0.0000000000000000001", "1E-999999"],
)  # fmt: skip
def test_odd_amounts_and_prices_are_refused_not_crashed_on(value: str) -> None:
    d = decide(i=intent(amount=D(value)))
    assert not d.allowed and "invalid_amount" in d.rule_ids and d.notional is None
    d = decide(i=intent(limit_price=D(value)))
    assert not d.allowed and "invalid_price" in d.rule_ids and d.notional is None


def test_trailing_zeros_do_not_count_as_decimal_places() -> None:
    assert decide(i=intent(amount=D("0.010000000000000000000000"))).allowed


def test_all_failed_rules_are_reported_together() -> None:
    p = policy(sides=["sell"], trading_hours={"windows": ["00:00-01:00"]}, frozen=True)
    i = intent(symbol="DOGE/USDT", amount=D("1"), limit_price=D("60000"))
    u = Usage(D(4999), D(2999), 10, D(0))
    d = decide(p, i, u, ref(age_ms=31_000), global_frozen=True)
    assert set(d.rule_ids) == {
        "global_freeze", "key_frozen", "symbol_not_allowed", "side_not_allowed",
        "outside_trading_hours", "reference_price_stale", "price_band", "notional_cap",
        "notional_24h_cap", "symbol_notional_24h_cap", "open_orders_cap", "rate_limit",
    }  # fmt: skip
    assert len(d.rule_ids) == len(set(d.rule_ids)) and not d.allowed
    assert all(r.message for r in d.reasons)


def test_no_policy_still_reports_freezes_and_bad_input() -> None:
    d = evaluate(None, intent(amount=D("NaN")), usage(), None, global_frozen=True, key_frozen=True)
    assert set(d.rule_ids) == {"no_policy", "global_freeze", "key_frozen", "invalid_amount"}


ODD = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True),
    st.builds(lambda m, e: D(m).scaleb(e), st.integers(-(10**40), 10**40), st.integers(-60, 60)),
    st.sampled_from([D("sNaN"), D("-sNaN"), D("1E+999999"), D("1E-999999"), D("-0")]),
)


@settings(max_examples=300, deadline=None)
@given(
    amount=ODD, price=st.one_of(st.none(), ODD), ref_price=ODD, used_key=ODD, used_sym=ODD,
    tokens=ODD, opened=st.integers(-5, 20), order_type=st.sampled_from(["limit", "market", "x"]),
    age=st.integers(-10**6, 10**6),
)  # fmt: skip
def test_evaluate_never_raises_and_never_allows_past_a_cap(
    amount: Decimal, price: Decimal | None, ref_price: Decimal, used_key: Decimal,
    used_sym: Decimal, tokens: Decimal, opened: int, order_type: str, age: int,
) -> None:  # fmt: skip
    p = policy(market_slippage_pct="0.5")
    i = intent(amount=amount, limit_price=price, order_type=order_type)
    d = evaluate(p, i, Usage(used_key, used_sym, opened, tokens), ref(str(ref_price), age),
                 global_frozen=False, key_frozen=False)  # fmt: skip
    assert set(d.rule_ids) <= RULE_IDS
    assert d.allowed == (not d.reasons)
    if d.allowed:
        assert d.notional is not None and D(0) < d.notional <= p.max_order_notional
        assert used_key + d.notional <= p.max_notional_24h
        assert used_sym + d.notional <= p.max_notional_24h_per_symbol  # type: ignore[operator]
        assert 0 <= opened < p.max_open_orders and tokens >= 1


# --- TOML parsing ---------------------------------------------------------------------------


def toml_with(line: str, drop: str | None = None) -> str:
    key = drop or line.split("=")[0].strip()
    kept = [x for x in BASE_TOML.splitlines() if not x.startswith(f"{key} ")]
    return line + "\n" + "\n".join(kept)


def test_a_full_toml_policy_parses_to_exact_decimals() -> None:
    text = BASE_TOML + '[symbol_max_notional_24h]\n"ETH/USDT" = "100.50"\n'
    text += '[trading_hours]\nwindows = ["08:00-16:30"]\nweekdays = ["mon", "tue"]\n'
    p = parse_policy_toml(text)
    assert p.max_order_notional == D("1000") and p.symbol_cap("ETH/USDT") == D("100.5")
    assert p.symbol_cap("BTC/USDT") == D("3000") and p.burst == 60
    assert p.trading_hours is not None and p.trading_hours.weekdays == ("mon", "tue")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("max_order_notional = -5", ["max_order_notional", "-5", "> 0"]),
        ("max_order_notional = 0.5", ["max_order_notional", "0.5", "float", "quoted decimal"]),
        ('max_order_notional = "1e21"', ["max_order_notional", "1e21", "< 1000"]),
        ('max_order_notional = "0.0000000000000000001"', ["max_order_notional", "18 decimal"]),
        ('max_order_notional = "NaN"', ["max_order_notional", "NaN"]),
        ('max_order_notional = "lots"', ["max_order_notional", "lots"]),
        ("max_notional_24h = true", ["max_notional_24h", "True"]),
        ("leverage = 10", ["leverage", "unknown field"]),
        ('price_band_pct = "0"', ["price_band_pct", "'0'", "> 0 and <= 100"]),
        ('price_band_pct = "100.000001"', ["price_band_pct", "<= 100"]),
        ("orders_per_minute = 0", ["orders_per_minute", "0", "from 1 to 100000"]),
        ("orders_per_minute = 100001", ["orders_per_minute", "100001", "from 1 to 100000"]),
        ("max_open_orders = 2.0", ["max_open_orders", "2.0", "integer"]),
        ('max_open_orders = "3"', ["max_open_orders", "'3'", "integer"]),
        ("reference_max_age_s = 0", ["reference_max_age_s", "from 1 to 3600"]),
        ('market_slippage_pct = "6"', ["market_slippage_pct", "6", "price_band_pct"]),
        ('market_slippage_pct = "-1"', ["market_slippage_pct", "-1", ">= 0"]),
        ("symbols = []", ["symbols", "[]", "1 to 1000"]),
        ('symbols = ["btc/usdt"]', ["symbols", "'btc/usdt'", "BTC/USDT"]),
        ('symbols = ["BTC/USDT", "BTC/USDT"]', ["symbols", "unique"]),
        ('sides = ["buy", "short"]', ["sides", "'short'", "buy, sell"]),
        ('order_types = ["limit", "stop"]', ["order_types", "'stop'"]),
        ("frozen = 1", ["frozen", "true or false"]),
        ("max_order_notional = ", ["policy TOML"]),
    ],
)  # fmt: skip
def test_bad_toml_values_are_refused_naming_field_value_and_range(
    line: str, expected: list[str]
) -> None:
    with pytest.raises(PolicyConfigError) as info:
        parse_policy_toml(toml_with(line))
    assert isinstance(info.value, ConfigError)
    for fragment in expected:
        assert fragment in str(info.value), str(info.value)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('[symbol_max_notional_24h]\n"DOGE/USDT" = "1"', "every symbol must also be in symbols"),
        ('[symbol_max_notional_24h]\n"BTC/USDT" = 1.5', "float"),
        ('[trading_hours]\nwindows = ["10:00-10:00"]', "'10:00-10:00'"),
        ('[trading_hours]\nwindows = ["25:00-26:00"]', "'25:00-26:00'"),
        ('[trading_hours]\nwindows = ["08:00-09:00"]\nweekdays = ["someday"]', "'someday'"),
        ('[trading_hours]\nwindows = ["08:00-09:00"]\ntimezone = "CET"', "trading_hours.timezone"),
    ],
)
def test_bad_tables_are_refused(extra: str, expected: str) -> None:
    with pytest.raises(PolicyConfigError, match=None) as info:
        parse_policy_toml(BASE_TOML + extra)
    assert expected in str(info.value)


def test_every_missing_field_is_named_at_once() -> None:
    with pytest.raises(PolicyConfigError) as info:
        parse_policy_toml('symbols = ["BTC/USDT"]')
    for field in ("sides", "order_types", "max_order_notional", "price_band_pct"):
        assert f"{field}: missing" in str(info.value)


def test_market_orders_need_a_slippage_bound() -> None:
    with pytest.raises(PolicyConfigError, match="market_slippage_pct: missing"):
        parse_policy_toml(toml_with("# no slippage", drop="market_slippage_pct"))
    text = toml_with('order_types = ["limit"]').replace('market_slippage_pct = "1"\n', "")
    assert parse_policy_toml(text).market_slippage_pct is None


# --- canonical JSON -------------------------------------------------------------------------


def test_json_is_canonical_and_round_trips() -> None:
    a = policy(
        symbols=["ETH/USDT", "BTC/USDT"], sides=["sell", "buy"], max_order_notional="1000.00"
    )
    b = policy(max_order_notional=1000)
    assert a == b and policy_to_json(a) == policy_to_json(b) and hash(a) == hash(b)
    text = policy_to_json(a)
    data = json.loads(text)
    assert list(data) == sorted(data) and data["max_order_notional"] == "1000"
    assert data["price_band_pct"] == "5" and ": " not in text
    assert policy_from_json(text) == a


def test_json_with_a_float_is_refused() -> None:
    data = json.loads(policy_to_json(policy()))
    data["max_order_notional"] = 1000.5
    with pytest.raises(PolicyConfigError, match="max_order_notional.*float"):
        policy_from_json(json.dumps(data))


# --- loosening ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"symbols": ["BTC/USDT", "ETH/USDT", "SOL/USDT"]}, "symbols: added SOL/USDT"),
        ({"max_order_notional": "1000.01"}, "max_order_notional: raised"),
        ({"max_notional_24h": "6000"}, "max_notional_24h: raised"),
        ({"max_notional_24h_per_symbol": None}, "24h cap for BTC/USDT"),
        ({"max_open_orders": 11}, "max_open_orders"),
        ({"orders_per_minute": 61}, "orders_per_minute"),
        ({"orders_burst": 120}, "orders_burst"),
        ({"price_band_pct": "5.5"}, "price_band_pct: raised"),
        ({"reference_max_age_s": 60}, "reference_max_age_s"),
        ({"market_slippage_pct": "0.5"}, "market_slippage_pct: lowered"),
    ],
)
def test_loosening_changes_are_named(changes: dict[str, Any], fragment: str) -> None:
    found = is_loosening(policy(), policy(**changes))
    assert any(fragment in f for f in found), found


def test_sides_types_unfreeze_and_hours_loosen() -> None:
    narrow = policy(sides=["buy"], order_types=["limit"], frozen=True,
                    trading_hours={"windows": ["08:00-16:00"], "weekdays": ["mon"]})  # fmt: skip
    found = " | ".join(is_loosening(narrow, policy()))
    for fragment in ("sides: added sell", "order_types: added market", "frozen: unfrozen",
                     "trading_hours"):  # fmt: skip
        assert fragment in found

    def hours(window: str) -> Policy:
        return policy(sides=["buy"], trading_hours={"windows": [window], "weekdays": ["mon"]})

    assert is_loosening(hours("08:00-16:00"), hours("08:00-16:01")) == [
        "trading_hours: 1 more minutes per week"
    ]
    assert is_loosening(hours("08:00-16:01"), hours("08:00-16:00")) == []


def test_tightening_is_not_loosening() -> None:
    old = policy()
    tighter = policy(
        symbols=["BTC/USDT"], sides=["buy"], max_order_notional="999", max_notional_24h="1",
        max_open_orders=1, orders_per_minute=1, price_band_pct="1", market_slippage_pct="1",
        reference_max_age_s=5, frozen=True, symbol_max_notional_24h={"BTC/USDT": "1"},
        trading_hours={"windows": ["08:00-09:00"]},
    )  # fmt: skip
    assert is_loosening(old, tighter) == []
    assert is_loosening(old, old) == []
    assert is_loosening(None, tighter) != []


def test_a_refused_symbol_is_not_also_blamed_on_a_missing_reference_price() -> None:
    """The signer fetches no price for a symbol outside the allow-list; the denial names the
    real reason only, so an auditor's report does not show a misleading second rule."""
    d = decide(i=intent(symbol="DATA/USDT"), r=None)
    assert d.rule_ids == ("symbol_not_allowed",)
    assert decide(r=None).rule_ids == ("reference_price_unavailable",)
