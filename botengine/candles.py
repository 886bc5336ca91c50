"""OHLCV candles for backtests: CSV and freqtrade JSON loaders, exact integer prices, gap report.

Prices are parsed from their text straight into integers scaled by 10^decimals (the most
decimals any price in the file has, at most 8, checked at load), held in numpy int64 arrays for
the vectorised jump-ahead search, and turned back into exact Decimals with `price(i)`. No float
ever holds a price. Volume is not loaded: nothing here trades on it.

Timestamps become the candle's open time in UTC epoch ms. A CSV may instead carry a close-time
column (Binance's `close_time` = open + interval - 1 ms), in any UTC offset, as
`BTCUSDT_1m.csv` does (`close_datetime` in UTC+01:00). The interval is the most common spacing;
larger spacings are gaps, reported by `gaps()` and bridged in a backtest by a price jump from
the last close to the next open.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path

import numpy as np

MAX_DECIMALS = 8
_NUM_RE = re.compile(r"^\d+(?:\.\d*)?$")
_COLUMN_RE = re.compile(r"(?:\d+(?:\.\d*)?\n)*\d+(?:\.\d*)?")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TZ_RE = re.compile(r"(Z|[+-]\d\d:\d\d)$")
OPEN_TIME_COLUMNS = ("open_time", "timestamp", "date", "time", "open_datetime", "datetime")
CLOSE_TIME_COLUMNS = ("close_time", "close_datetime")
QUOTES = ("USDT", "USDC", "FDUSD", "BUSD", "TUSD", "EUR", "TRY", "BTC", "ETH", "BNB")


class CandleError(ValueError):
    """A candle file could not be used; the message names the file, row and value."""


@dataclass(frozen=True)
class Gap:
    """Missing candles between two present ones (open times in UTC ms)."""

    last_ms: int  # open time of the candle before the gap
    next_ms: int  # open time of the candle after it
    missing: int


class Candles:
    """A candle series: int64 arrays of open times and scaled OHLC prices."""

    def __init__(
        self,
        open_ms: np.ndarray,
        o: np.ndarray,
        h: np.ndarray,
        low: np.ndarray,
        c: np.ndarray,
        *,
        interval_ms: int,
        decimals: int,
        source: str = "",
    ) -> None:
        n = len(open_ms)
        if n == 0:
            raise CandleError(f"{source}: no candles")
        if not all(len(a) == n for a in (o, h, low, c)):
            raise CandleError(f"{source}: columns differ in length")
        if not 0 <= decimals <= MAX_DECIMALS or interval_ms <= 0:
            raise CandleError(f"{source}: decimals {decimals} / interval {interval_ms} invalid")
        self.open_ms = np.ascontiguousarray(open_ms, dtype=np.int64)
        self.open = np.ascontiguousarray(o, dtype=np.int64)
        self.high = np.ascontiguousarray(h, dtype=np.int64)
        self.low = np.ascontiguousarray(low, dtype=np.int64)
        self.close = np.ascontiguousarray(c, dtype=np.int64)
        self.interval_ms = interval_ms
        self.decimals = decimals
        self.scale = 10**decimals
        self.source = source
        self.end_ms = self.open_ms + (interval_ms - 1)
        bad = (self.low > np.minimum(self.open, self.close)) | (
            self.high < np.maximum(self.open, self.close)
        )
        bad |= self.low <= 0
        if bad.any():
            i = int(bad.argmax())
            raise CandleError(
                f"{source}: candle {i} ({self.iso(i)}) breaks 0 < low <= open, close <= high"
            )
        if n > 1 and not (np.diff(self.open_ms) > 0).all():
            raise CandleError(f"{source}: open times are not strictly increasing")

    def __len__(self) -> int:
        return len(self.open_ms)

    def price(self, scaled: int) -> Decimal:
        """The exact Decimal for a scaled integer price."""
        return Decimal(int(scaled)).scaleb(-self.decimals)

    def ohlc(self, i: int) -> tuple[Decimal, Decimal, Decimal, Decimal]:
        return (
            self.price(self.open[i]),
            self.price(self.high[i]),
            self.price(self.low[i]),
            self.price(self.close[i]),
        )

    def floor_scaled(self, price: Decimal) -> int:
        """Largest scaled int <= price: `low <= price` iff `low_int <= floor_scaled(price)`."""
        return int(price.scaleb(self.decimals).to_integral_value(ROUND_FLOOR))

    def ceil_scaled(self, price: Decimal) -> int:
        return int(price.scaleb(self.decimals).to_integral_value(ROUND_CEILING))

    def iso(self, i: int) -> str:
        return iso_ms(int(self.open_ms[i]))

    def gaps(self) -> list[Gap]:
        diffs = np.diff(self.open_ms)
        idx = np.nonzero(diffs != self.interval_ms)[0]
        return [
            Gap(
                int(self.open_ms[i]),
                int(self.open_ms[i + 1]),
                int(diffs[i]) // self.interval_ms - 1,
            )
            for i in idx
        ]

    def slice(self, start: int, stop: int | None = None) -> Candles:
        sl = np.s_[start:stop]
        return Candles(
            self.open_ms[sl], self.open[sl], self.high[sl], self.low[sl], self.close[sl],
            interval_ms=self.interval_ms, decimals=self.decimals, source=self.source,
        )  # fmt: skip

    def tiled(self, count: int) -> Candles:
        """`count` contiguous candles made of copies of this series, every other one played
        backwards (open and close swapped) so the price path never jumps at a seam."""
        n = len(self)
        reps = -(-count // n)
        parts: list[list[np.ndarray]] = [[], [], [], []]
        for r in range(reps):
            sel = np.s_[::-1] if r % 2 else np.s_[:]
            o, c = (self.close, self.open) if r % 2 else (self.open, self.close)
            for arr, src in zip(parts, (o, self.high, self.low, c), strict=True):
                arr.append(src[sel])
        o, h, low, c = (np.concatenate(p)[:count] for p in parts)
        times = self.open_ms[0] + np.arange(count, dtype=np.int64) * self.interval_ms
        return Candles(
            times, o, h, low, c, interval_ms=self.interval_ms, decimals=self.decimals,
            source=f"{self.source} tiled to {count}",
        )  # fmt: skip

    @classmethod
    def from_rows(
        cls,
        rows: list[tuple[int, str, str, str, str]],
        *,
        interval_ms: int | None = None,
        source: str = "rows",
    ) -> Candles:
        """Candles from (open_ms, open, high, low, close) with decimal strings (tests, tools)."""
        times = [int(r[0]) for r in rows]
        cols = [[str(r[k]) for r in rows] for k in range(1, 5)]
        return _build(times, cols, source, interval_ms)


def iso_ms(ms: int) -> str:
    return (_EPOCH + timedelta(milliseconds=ms)).strftime("%Y-%m-%d %H:%M")


def _scale_columns(cols: list[list[str]], source: str) -> tuple[list[np.ndarray], int]:
    """Exact int64 arrays for decimal strings, all scaled by the same 10^decimals.

    Plain "123.45" text is split and joined with numpy's string ufuncs (no per-value Python);
    anything else (exponents, signs) goes through Decimal row by row and must still be a
    decimal >= 0.
    """
    parts = []
    for col in cols:
        if not _COLUMN_RE.fullmatch("\n".join(col)):
            col = [_plain_number(text, source, row) for row, text in enumerate(col)]
        split = np.strings.partition(np.asarray(col, dtype=str), ".")
        parts.append((split[0], np.strings.rstrip(split[2], "0")))
    decimals = max(int(np.strings.str_len(frac).max(initial=0)) for _, frac in parts)
    if decimals > MAX_DECIMALS:
        for k, (_, frac) in enumerate(parts):
            row = int((np.strings.str_len(frac) > MAX_DECIMALS).argmax())
            if len(frac[row]) > MAX_DECIMALS:
                raise CandleError(
                    f"{source} row {row}: price {cols[k][row]!r} has more than "
                    f"{MAX_DECIMALS} decimals"
                )
    out = []
    for whole, frac in parts:
        text = np.strings.add(whole, np.strings.ljust(frac, decimals, "0"))
        if int(np.strings.str_len(text).max(initial=0)) > 18:
            raise CandleError(f"{source}: a price is too large for exact 64-bit scaled integers")
        out.append(text.astype(np.int64))
    return out, decimals


def _plain_number(text: str, source: str, row: int) -> str:
    t = text.strip()
    try:
        t = format(Decimal(t), "f")
    except ArithmeticError:
        t = ""
    if not _NUM_RE.match(t):
        raise CandleError(f"{source} row {row}: price {text!r} is not a decimal >= 0")
    return t


def _infer_interval(times: np.ndarray, source: str) -> int:
    diffs = np.diff(times)
    if len(diffs) == 0:
        raise CandleError(f"{source}: at least two candles are needed to infer the interval")
    values, counts = np.unique(diffs[diffs > 0], return_counts=True)
    if len(values) == 0:
        raise CandleError(f"{source}: every candle has the same time")
    return int(values[counts.argmax()])


def _build(
    times: list[int] | np.ndarray, cols: list[list[str]], source: str, interval_ms: int | None
) -> Candles:
    t = np.asarray(times, dtype=np.int64)
    order = np.argsort(t, kind="stable")
    t = t[order]
    dup = np.nonzero(np.diff(t) == 0)[0]
    if len(dup):
        raise CandleError(f"{source}: two candles open at {iso_ms(int(t[dup[0]]))} UTC")
    interval = interval_ms or _infer_interval(t, source)
    odd = np.nonzero(np.diff(t) % interval)[0]
    if len(odd):
        raise CandleError(
            f"{source}: candle at {iso_ms(int(t[odd[0] + 1]))} UTC is off the {interval} ms grid"
        )
    scaled, decimals = _scale_columns(cols, source)
    arrs = [col[order] for col in scaled]
    return Candles(t, *arrs, interval_ms=interval, decimals=decimals, source=source)


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    return (gzip.decompress(raw) if path.name.endswith(".gz") else raw).decode("utf-8")


def _parse_times(texts: list[str], source: str) -> np.ndarray:
    """Epoch ms (UTC) from epoch seconds/ms or ISO 8601 text (naive means UTC)."""
    if _COLUMN_RE.fullmatch("\n".join(texts)):
        values = np.strings.partition(np.asarray(texts, dtype=str), ".")[0].astype(np.int64)
        return values * 1000 if values.max() < 100_000_000_000 else values  # seconds or ms
    first = texts[0].strip()
    m = re.search(r"(Z|[+-]\d\d:\d\d)$", first)
    suffix = m[1] if m else ""
    if all(t.strip().endswith(suffix) and (suffix or not _TZ_RE.search(t)) for t in texts):
        bare = [t.strip()[: len(t.strip()) - len(suffix)] for t in texts]
        try:
            ms = np.asarray(bare, dtype=str).astype("datetime64[ms]").astype(np.int64)
        except ValueError:
            ms = None
        if ms is not None:
            if suffix not in ("", "Z"):
                sign = 1 if suffix[0] == "+" else -1
                ms -= sign * (int(suffix[1:3]) * 3_600_000 + int(suffix[4:6]) * 60_000)
            return ms
    out = []
    for row, text in enumerate(texts):
        try:
            dt = datetime.fromisoformat(text.strip())
        except ValueError:
            raise CandleError(
                f"{source} row {row}: time {text!r} is not epoch seconds/ms or ISO 8601"
            ) from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        out.append((dt - _EPOCH) // timedelta(milliseconds=1))
    return np.asarray(out, dtype=np.int64)


def load_csv(path: Path) -> Candles:
    """A CSV with a header: open,high,low,close and an open-time or close-time column."""
    source = str(path)
    reader = csv.reader(io.StringIO(_read_text(path)))
    header = [h.strip().lower() for h in next(reader, [])]
    try:
        cols_at = [header.index(k) for k in ("open", "high", "low", "close")]
    except ValueError:
        raise CandleError(f"{source}: the header needs open, high, low and close columns") from None
    open_col = next((c for c in OPEN_TIME_COLUMNS if c in header), None)
    close_col = next((c for c in CLOSE_TIME_COLUMNS if c in header), None)
    time_col = open_col or close_col
    if time_col is None:
        names = ", ".join(OPEN_TIME_COLUMNS + CLOSE_TIME_COLUMNS)
        raise CandleError(f"{source}: no time column; expected one of {names}")
    ti = header.index(time_col)
    rows = [r for r in reader if r]
    try:
        times = _parse_times([r[ti] for r in rows], source)
        cols = [[r[k] for r in rows] for k in cols_at]
    except IndexError:
        raise CandleError(f"{source}: a row has fewer columns than the header") from None
    if open_col is None:  # close time = open + interval - 1 ms
        interval = _infer_interval(np.sort(times), source)
        times = times + (1 - interval)
        return _build(times, cols, source, interval)
    return _build(times, cols, source, None)


def load_freqtrade_json(path: Path) -> Candles:
    """freqtrade's JSON: an array of [open_time_ms, open, high, low, close, volume]."""
    source = str(path)
    try:
        rows = json.loads(_read_text(path), parse_float=str, parse_int=str)
    except ValueError as e:
        raise CandleError(f"{source}: not valid JSON: {e}") from None
    if not isinstance(rows, list) or not rows:
        raise CandleError(f"{source}: expected a non-empty array of candles")
    for i, r in enumerate(rows):
        if not isinstance(r, list) or len(r) < 5:
            raise CandleError(f"{source} row {i}: expected [open_time_ms, o, h, l, c, volume]")
    times = _parse_times([str(r[0]) for r in rows], source)
    cols = [[str(r[k]) for r in rows] for k in range(1, 5)]
    return _build(times, cols, source, None)


def load_candles(path: str | Path) -> Candles:
    """Load by suffix: .csv or .json (optionally .gz)."""
    p = Path(path)
    name = p.name.lower().removesuffix(".gz")
    try:
        if name.endswith(".csv"):
            return load_csv(p)
        if name.endswith(".json"):
            return load_freqtrade_json(p)
    except OSError as e:
        raise CandleError(f"{p}: cannot read: {e.strerror}") from None
    raise CandleError(f"{p}: unknown candle format; allowed .csv or .json (optionally .gz)")


def symbol_hint(path: str | Path) -> str | None:
    """The symbol a file name suggests ("BTC_USDT-1h.json", "BTCUSDT_1m.csv"), if any."""
    stem = Path(path).name.upper()
    m = re.match(r"^([A-Z0-9]+)[_/-]([A-Z0-9]+)[-_]", stem)
    if m and m[2] in QUOTES:
        return f"{m[1]}/{m[2]}"
    m = re.match(r"^([A-Z0-9]+?)(" + "|".join(QUOTES) + r")[_.-]", stem)
    return f"{m[1]}/{m[2]}" if m else None
