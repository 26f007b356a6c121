"""Resampling: UTC-aligned OHLCV aggregation, incomplete target bars dropped and counted, real-data parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridctl.configs.errors import GridctlError
from gridctl.data.resample import resample_candles, resample_store
from gridctl.data.store import read_candles, write_candles

MIN = 60_000
T10 = 1_704_103_200_000  # 2024-01-01 10:00 UTC


def minute_bars(minutes: list[int], base: int = T10) -> pl.DataFrame:
    """Bar at minute m: open 100 + m, close 100.5 + m, high close + m%3, low open - 1, volume m + 1."""
    m = np.array(minutes, dtype=np.int64)
    open_ = 100.0 + m
    close = open_ + 0.5
    return pl.DataFrame(
        {
            "ts": base + m * MIN,
            "open": open_,
            "high": close + m % 3,
            "low": open_ - 1.0,
            "close": close,
            "volume": (m + 1).astype(float),
        }
    )


def test_hand_computed_5m_bars() -> None:
    result = resample_candles(minute_bars(list(range(10))), "1m", "5m")
    # Bar 10:00 = minutes 0..4: open 100, close 104.5, high max(100.5+0, 101.5+1, 102.5+2, 103.5+0, 104.5+1)
    # = 105.5, low 99, volume 1+2+3+4+5 = 15. Bar 10:05 = minutes 5..9: open 105, close 109.5,
    # high max(105.5+2, 106.5+0, 107.5+1, 108.5+2, 109.5+0) = 110.5, low 104, volume 6+...+10 = 40.
    assert result.candles.to_dicts() == [
        {"ts": T10, "open": 100.0, "high": 105.5, "low": 99.0, "close": 104.5, "volume": 15.0},
        {"ts": T10 + 5 * MIN, "open": 105.0, "high": 110.5, "low": 104.0, "close": 109.5, "volume": 40.0},
    ]
    assert (result.built, result.dropped) == (2, 0)


def test_target_bar_with_missing_minute_is_dropped_and_counted() -> None:
    minutes = [m for m in range(2, 15) if m != 7]  # 10:00 bar lacks 0,1; 10:05 lacks 7; 10:10 complete
    result = resample_candles(minute_bars(minutes), "1m", "5m")
    assert result.candles["ts"].to_list() == [T10 + 10 * MIN]
    assert (result.built, result.dropped) == (1, 2)
    assert "2 dropped because a 1m bar inside them was missing" in result.describe("1m", "5m")


def test_invalid_targets() -> None:
    with pytest.raises(GridctlError, match="whole multiple"):
        resample_candles(minute_bars([0]), "3m", "5m")
    with pytest.raises(GridctlError, match="whole multiple"):
        resample_candles(minute_bars([0]), "1h", "1m")


def test_resample_store_writes_target_series(tmp_path: Path) -> None:
    write_candles(tmp_path, "ex", "BTC/USDT:USDT", "1m", minute_bars(list(range(60)), base=T10))
    result = resample_store(tmp_path, "ex", "BTC/USDT:USDT", "1m", "15m")
    assert (result.built, result.dropped) == (4, 0)
    stored = read_candles(tmp_path, "ex", "BTC/USDT:USDT", "15m")
    assert stored["ts"].to_list() == [T10 + k * 15 * MIN for k in range(4)]
    with pytest.raises(GridctlError, match="no stored trade 1m candles"):
        resample_store(tmp_path, "ex", "ETH/USDT:USDT", "1m", "15m")


def test_real_1m_resampled_to_1h_equals_real_1h(real_data: Path) -> None:
    one_min = pl.read_parquet(real_data / "binanceusdm_BTCUSDT_1m_2025-05_2025-06.parquet")
    hourly = pl.read_parquet(real_data / "binanceusdm_BTCUSDT_1h_2019-09_2025-12.parquet")
    result = resample_candles(one_min, "1m", "1h")
    # 15:33..15:59 on 05-04 and 10:00..10:30 on 06-24 are partial hours -> dropped (2). Complete hours:
    # 05-04 16:00 .. 06-24 09:00 = 51 days - 6 h = 1218; check: 27 + 1218*60 + 31 = 73,138 source rows.
    assert (result.built, result.dropped) == (1218, 2)
    joined = result.candles.join(hourly, on="ts", suffix="_real")
    assert joined.height == 1218
    for col in ("open", "high", "low", "close"):
        assert (joined[col] == joined[f"{col}_real"]).all(), col
    # Volumes are sums of 0.001 lots; float addition may differ from the exchange's total in the last bits.
    np.testing.assert_allclose(joined["volume"].to_numpy(), joined["volume_real"].to_numpy(), rtol=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.sets(st.integers(min_value=0, max_value=59), min_size=1), st.sampled_from(["5m", "15m", "30m"]))
def test_resample_invariants(present: set[int], target: str) -> None:
    """Built bars come only from complete buckets; built + dropped = touched buckets; OHLC consistent."""
    minutes = sorted(present)
    per = {"5m": 5, "15m": 15, "30m": 30}[target]
    result = resample_candles(minute_bars(minutes), "1m", target)
    buckets = {m // per for m in minutes}
    complete = {b for b in buckets if all(b * per + k in present for k in range(per))}
    assert result.built + result.dropped == len(buckets)
    assert result.candles["ts"].to_list() == [T10 + b * per * MIN for b in sorted(complete)]
    c = result.candles
    assert (c["high"] >= c[["open", "close"]].max_horizontal()).all()
    assert (c["low"] <= c[["open", "close"]].min_horizontal()).all()
    # volume of bucket b = sum over its minutes m of (m + 1)
    assert c["volume"].to_list() == [
        float(sum(b * per + k + 1 for k in range(per))) for b in sorted(complete)
    ]
