"""Candle loading: the real sample files, exact prices, time zones, gaps and bad input."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from botengine.candles import CandleError, Candles, load_candles, symbol_hint
from tests.botengine.support import DATA, D, candles


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def test_the_1m_csv_close_times_in_utc_plus_one_become_utc_open_times() -> None:
    c = candles("BTCUSDT_1m.csv")
    assert len(c) == 41_761 and c.interval_ms == 60_000 and c.decimals == 2
    # first row: close_datetime 2024-12-01 00:00:59.999+01:00 -> opens 2024-11-30 23:00 UTC
    assert int(c.open_ms[0]) == ms("2024-11-30 23:00")
    assert int(c.open_ms[-1]) == ms("2024-12-29 23:00")
    assert c.ohlc(0) == (D("96466.11"), D("96495.52"), D("96440.0"), D("96440.0"))
    assert c.gaps() == []


def test_the_freqtrade_json_files_load_with_their_documented_gaps() -> None:
    btc = candles("BTC_USDT-1h.json")
    assert len(btc) == 64_532 and btc.interval_ms == 3_600_000
    assert btc.ohlc(0)[0] == D("4261.48") and int(btc.open_ms[0]) == ms("2017-08-17 04:00")
    gaps = btc.gaps()
    assert len(gaps) == 28 and sum(g.missing for g in gaps) == 128
    assert any(g.last_ms == ms("2018-02-08 00:00") and g.next_ms == ms("2018-02-09 10:00")
               for g in gaps)  # fmt: skip
    for name in ("ETH_USDT-1h.json", "DATA_USDT-1h.json", "PERL_USDT-1h.json"):
        c = candles(name)
        assert len(c) == 4_090 and [g.missing for g in c.gaps()] == [1, 1, 2, 3]
    data = candles("DATA_USDT-1h.json")
    assert data.decimals == 5 and data.ohlc(0)[3] == D("0.03702")


def test_1m_candles_grouped_by_hour_match_the_1h_file() -> None:
    m, h = candles("BTCUSDT_1m.csv"), candles("BTC_USDT-1h.json")
    start = int(np.searchsorted(h.open_ms, m.open_ms[0]))
    for k in range(start, start + 48):
        a = int(np.searchsorted(m.open_ms, h.open_ms[k]))
        assert int(m.open_ms[a]) == int(h.open_ms[k])
        assert (int(m.open[a]), int(m.close[a + 59])) == (int(h.open[k]), int(h.close[k]))
        assert int(m.high[a : a + 60].max()) == int(h.high[k])
        assert int(m.low[a : a + 60].min()) == int(h.low[k])


def test_prices_are_exact_integers_scaled_to_the_file_precision() -> None:
    c = Candles.from_rows(
        [(0, "0.1", "0.30000001", "0.1", "0.2"), (60_000, "1e-2", "2", "1E-2", "1")]
    )
    assert c.decimals == 8
    assert c.open.tolist() == [10_000_000, 1_000_000]
    assert c.price(c.high[0]) == D("0.30000001")  # no float could have kept this exact
    assert c.floor_scaled(D("0.123456789")) == 12_345_678
    assert c.ceil_scaled(D("0.123456789")) == 12_345_679


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


T = 1_700_000_040_000  # a real epoch-ms open time (small numbers would read as seconds)


def test_csv_with_an_open_time_column_in_any_order_and_gzip_loads(tmp_path: Path) -> None:
    rows = "open_time,open,high,low,close,volume\n"
    rows += "".join(f"{T + dt},{p},{p},{p},{p},1\n" for dt, p in
                    ((120_000, 3), (0, 1), (60_000, 2), (300_000, 3)))  # fmt: skip
    p = tmp_path / "x.csv.gz"
    p.write_bytes(gzip.compress(rows.encode()))
    c = load_candles(p)
    assert (c.open_ms - T).tolist() == [0, 60_000, 120_000, 300_000]
    assert c.open.tolist() == [1, 2, 3, 3] and c.interval_ms == 60_000
    (gap,) = c.gaps()
    assert (gap.last_ms - T, gap.next_ms - T, gap.missing) == (120_000, 300_000, 2)


def test_iso_times_without_offset_are_utc_and_seconds_become_ms(tmp_path: Path) -> None:
    iso = write(tmp_path, "a.csv", "date,open,high,low,close\n2024-01-01 00:00,1,1,1,1\n"
                "2024-01-01 01:00,1,1,1,1\n")  # fmt: skip
    assert load_candles(iso).open_ms.tolist() == [ms("2024-01-01 00:00"), ms("2024-01-01 01:00")]
    secs = write(tmp_path, "b.json", json.dumps([[1_700_000_000, 1, 1, 1, 1, 0],
                                                 [1_700_000_060, 1, 1, 1, 1, 0]]))  # fmt: skip
    assert load_candles(secs).open_ms.tolist() == [1_700_000_000_000, 1_700_000_060_000]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("a.csv", "open_time,open,high,low,close\n0,1,2,1,1\n0,1,2,1,1\n", "two candles open"),
        ("b.csv", "open_time,open,high,low,close\n0,1,2,1,1.000000001\n60000,1,1,1,1\n",
         "more than 8 decimals"),
        ("c.csv", "open_time,open,high,low,close\n0,1,2,1.5,1\n60000,1,1,1,1\n", "breaks 0 < low"),
        ("d.csv", "open_time,open,high,low,close\n0,1,2,1,abc\n60000,1,1,1,1\n", "'abc' is not"),
        ("e.csv", "open,high,low,close\n1,2,1,1\n", "no time column"),
        ("f.json", '[[0, 1, 2, 1, -1, 0], [60000, 1, 1, 1, 1, 0]]', "'-1' is not a decimal"),
        ("g.json", "{}", "non-empty array"),
        ("h.txt", "", "unknown candle format"),
        ("i.csv", "open_time,open,high,low,close\n" + "".join(f"{T + t},1,1,1,1\n" for t in
         (0, 60_000, 120_000, 150_000)),
         "off the 60000 ms grid"),
    ],
)  # fmt: skip
def test_bad_candle_files_are_refused_with_the_reason(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    with pytest.raises(CandleError, match=message):
        load_candles(write(tmp_path, name, text))


def test_tiling_plays_every_other_copy_backwards_so_the_path_never_jumps() -> None:
    c = candles("ETH_USDT-1h.json")
    t = c.tiled(3 * len(c) + 10)
    n = len(c)
    assert len(t) == 3 * n + 10 and t.gaps() == []
    assert int(t.open[n]) == int(c.close[n - 1]) and int(t.close[n]) == int(c.open[n - 1])
    assert int(t.open[2 * n]) == int(c.open[0]) and int(t.close[2 * n - 1]) == int(c.open[0])
    assert np.array_equal(t.high[:n], c.high) and np.array_equal(t.low[n : 2 * n], c.low[::-1])


def test_file_names_hint_at_their_symbol() -> None:
    assert symbol_hint(DATA / "BTC_USDT-1h.json") == "BTC/USDT"
    assert symbol_hint(DATA / "BTCUSDT_1m.csv") == "BTC/USDT"
    assert symbol_hint("prices.csv") is None
    assert isinstance(candles("ETH_USDT-1h.json").price(1), Decimal)
