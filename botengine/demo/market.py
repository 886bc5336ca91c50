"""The demo's market: real 1-hour candles from ../shared/data, the policy and the two bots.

The window ends on 11 June 2021 00:00 UTC and reaches back `days` days, so the full week holds
8-9 June, when DATA/USDT (a thin, low-cap coin) rose x3.7 in a day -- the kind of coin the 2022
attackers pumped with stolen keys. Only the window (plus two days after it, for the incident)
is copied into the demo's data directory, so the simulator loads a few hundred candles, not
seven years of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

HOUR_MS = 3_600_000
WINDOW_END = datetime(2021, 6, 11, tzinfo=UTC)
MAX_DAYS = 7
TAIL_HOURS = 48  # candles after the window: the market keeps moving during the incident
# simexchange symbol -> (ccxt symbol, candle file)
MARKETS = {
    "BTCUSDT": ("BTC/USDT", "BTC_USDT-1h.json"),
    "ETHUSDT": ("ETH/USDT", "ETH_USDT-1h.json"),
    "DATAUSDT": ("DATA/USDT", "DATA_USDT-1h.json"),
}


class DemoSetupError(RuntimeError):
    """Something the demo needs is missing; the message says what and where."""


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


# Where the workplace keeps the shared data when the repository is cloned elsewhere (CI).
WORKPLACE_DATA = Path("/work/shared/data")


def find_data_dir(explicit: Path | None = None) -> Path:
    """../shared/data beside the repository (or `explicit`), with every candle file present.

    A clone outside the workplace (CI clones to a temporary directory) falls back to the
    workplace's own shared/data."""
    beside_repo = repo_root().parent / "shared" / "data"
    candidates = [explicit] if explicit else [beside_repo, WORKPLACE_DATA]
    for data in candidates:
        if all((data / name).is_file() for _, name in MARKETS.values()):
            return data
    data = candidates[0]
    missing = [name for _, name in MARKETS.values() if not (data / name).is_file()]
    raise DemoSetupError(
        f"candle data not found: {data} lacks {', '.join(missing)}; the demo replays real "
        "freqtrade 1h candles from ../shared/data (relative to the repository root); "
        "pass --data DIR to use another directory"
    )
    data = candidates[0]
    if missing:
        raise DemoSetupError(
            f"candle data not found: {data} lacks {', '.join(missing)}; the demo replays real "
            "freqtrade 1h candles from ../shared/data (relative to the repository root); "
            "pass --data DIR to use another directory"
        )
    return data


@dataclass(frozen=True)
class Window:
    start_ms: int
    end_ms: int
    files: dict[str, Path]  # simexchange symbol -> the window's candle file
    moves: dict[str, tuple[Decimal, Decimal, Decimal, Decimal]]  # open, low, high, close

    def describe(self) -> str:
        """One line per market: how the real prices moved over the window."""
        lines = []
        for market_id, (o, lo, hi, c) in self.moves.items():
            lines.append(
                f"{MARKETS[market_id][0]}: {o} -> {c} (low {lo}, high {hi}: "
                f"high/low x{(hi / lo).quantize(Decimal('0.1'))})"
            )
        return "\n".join(lines)

    @property
    def hours(self) -> int:
        return (self.end_ms - self.start_ms) // HOUR_MS


def write_window(data: Path, out: Path, days: int) -> Window:
    """Copy the window's candles (and TAIL_HOURS after it) of each market into `out`."""
    if not 1 <= days <= MAX_DAYS:
        raise DemoSetupError(f"--days {days} is out of range: allowed 1..{MAX_DAYS}")
    end = int(WINDOW_END.timestamp() * 1000)
    start = int((WINDOW_END - timedelta(days=days)).timestamp() * 1000)
    files: dict[str, Path] = {}
    moves: dict[str, tuple[Decimal, Decimal, Decimal, Decimal]] = {}
    for market_id, (_, name) in MARKETS.items():
        rows = json.loads((data / name).read_text(), parse_float=Decimal, parse_int=Decimal)
        kept = [r for r in rows if start <= int(r[0]) < end + TAIL_HOURS * HOUR_MS]
        if len(kept) < (end - start) // HOUR_MS:
            raise DemoSetupError(
                f"{data / name}: only {len(kept)} 1h candles between "
                f"{_day(start)} and {_day(end)}; the demo needs every hour of that window"
            )
        path = out / f"{market_id}-1h.json"
        path.write_text(
            "[" + ",\n".join("[" + ",".join(str(v) for v in r) + "]" for r in kept) + "]\n"
        )
        files[market_id] = path
        week = [r for r in kept if int(r[0]) < end]
        moves[market_id] = (
            week[0][1],
            min(r[3] for r in week),
            max(r[2] for r in week),
            week[-1][4],
        )
    return Window(start, end, files, moves)


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


KEY_ID = "main"
ENGINE_ID = "engine-1"
OPERATOR_ID = "demo-operator"

# BTC/USDT and ETH/USDT only. The band is wide enough for the grid's farthest level (the signer's
# reference price is at most 2 s old, hours of market time at demo speed); the caps are far above
# what the bots send and far below what a thief wants.
POLICY = """
symbols = ["BTC/USDT", "ETH/USDT"]
sides = ["buy", "sell"]
order_types = ["limit", "market"]
max_order_notional = "3000"
max_notional_24h = "500000"
max_open_orders = 60
orders_per_minute = 600
price_band_pct = "25"
market_slippage_pct = "2"
reference_max_age_s = 2
"""

DCA_BOT = f"""
name = "btc-dca"
type = "dca"
symbol = "BTC/USDT"
key_id = "{KEY_ID}"
[dca]
base_order = "250"
safety_order = "250"
max_safety_orders = 4
active_safety_orders = 2
safety_deviation_pct = "1.5"
safety_volume_scale = "1.5"
safety_step_scale = "1.3"
take_profit_pct = "1.2"
"""

GRID_BOT = f"""
name = "eth-grid"
type = "grid"
symbol = "ETH/USDT"
key_id = "{KEY_ID}"
[grid]
lower = "2300"
upper = "2900"
grids = 12
investment = "3000"
"""

BOTS = {"btc-dca": DCA_BOT, "eth-grid": GRID_BOT}
BALANCES = {"USDT": "20000"}
