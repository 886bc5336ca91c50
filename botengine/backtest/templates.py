"""Commented TOML templates written by `bulkhead bot new dca|grid` (each loads as is)."""

from __future__ import annotations

_HEAD = """\
# Bulkhead bot. Money, prices and percentages are decimals in quotes ("0.5"): a TOML float
# is refused, because a float never touches money. Check it with:
#   bulkhead backtest THIS_FILE.toml --data candles.csv

# 1-14 characters A-Z a-z 0-9 _ - ; it prefixes every client order id
name = "{name}"
type = "%s"
# BASE/QUOTE; the order sizes below are in the quote currency
symbol = "{symbol}"
exchange = "binance"             # binance, kucoin or okx
# the signer key this bot trades through (the bot itself never holds a secret)
key_id = "{key_id}"
enabled = true
"""

DCA = (
    _HEAD % "dca"
    + """
[dca]
base_order = "20"                # quote spent by the market buy that opens a deal
safety_order = "20"              # quote of the first safety order (a limit buy below the entry)
max_safety_orders = 5            # 0 to 100
active_safety_orders = 2         # how many rest on the book at once (1 to max_safety_orders)
safety_deviation_pct = "1.5"     # first safety order this % below the base order's fill price
safety_volume_scale = "1.5"      # size of order n = safety_order * scale^(n-1)
safety_step_scale = "1.2"        # deviation of n = dev * (1 + s + ... + s^(n-1)), under 100 %
take_profit_pct = "1.5"          # sell this % above the average entry price
# trailing_deviation_pct = "0.4" # trail the take profit: sell at market this % below the peak
# stop_loss_pct = "15"           # sell at market this % below the average entry price
max_active_deals = 1             # 1 to 100
cooldown_s = 0                   # seconds after a deal opens or closes before the next may open
start_condition = "immediately"  # "immediately", "rsi" or "price"
# rsi_timeframe = "1h"           # 1m 3m 5m 15m 30m 1h 2h 4h 6h 12h 1d (start_condition "rsi")
# rsi_period = 14
# rsi_below = "30"               # open when the RSI is below this
# start_price_below = "90000"    # with start_condition = "price": open at or below this price
# start_price_above = "110000"   #   ... and/or at or above this one
"""
)

GRID = (
    _HEAD % "grid"
    + """
[grid]
lower = "90000"                  # lowest level
upper = "110000"                 # highest level
grids = 20                       # intervals between lower and upper (2 to 500); one order each
spacing = "geometric"            # "arithmetic" (equal steps) or "geometric" (equal ratios)
investment = "1000"              # quote for the buy orders plus the initial position ...
# quantity_per_grid = "0.0005"   # ... or instead a fixed base quantity per grid
# stop_loss = "85000"            # below lower: cancel everything when the price gets here
# stop_loss_action = "stop_and_sell"   # "stop" keeps the base, "stop_and_sell" sells it at market
# take_profit = "120000"         # above upper: the same on the way up
# take_profit_action = "stop_and_sell"
"""
)

TEMPLATES = {"dca": DCA, "grid": GRID}
