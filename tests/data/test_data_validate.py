"""Validation: each bad-data class is an error naming source, column and row; gaps and jitter are reported."""

from __future__ import annotations

import numpy as np
import pytest

from gridctl.configs.errors import GridctlError
from gridctl.data.validate import (
    Gap,
    ValidationReport,
    check_candles,
    check_funding,
    gap_stats,
    normalise_funding_ts,
)

MIN = 60_000
HOUR = 3_600_000
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC


def series(n: int = 4) -> dict[str, np.ndarray]:
    """n valid 1m bars: open 100, high 101, low 99, close 100.5, volume 1."""
    return {
        "ts": T0 + np.arange(n, dtype=np.int64) * MIN,
        "open_": np.full(n, 100.0),
        "high": np.full(n, 101.0),
        "low": np.full(n, 99.0),
        "close": np.full(n, 100.5),
        "volume": np.full(n, 1.0),
    }


def check(s: dict[str, np.ndarray], kind: str = "trade") -> object:
    return check_candles(
        s["ts"], s["open_"], s["high"], s["low"], s["close"], s["volume"], MIN, "f.parquet", kind
    )


def test_valid_series_has_no_gaps() -> None:
    assert gap_stats(series()["ts"], MIN).count == 0
    stats = check(series())
    assert (stats.count, stats.missing_bars, stats.largest) == (0, 0, ())


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        (
            "high",
            np.nan,
            r"f\.parquet: row 2 \(ts 1704067320000 = 2024-01-01 00:02:00 UTC\): column 'high' is nan",
        ),
        ("close", np.inf, r"row 2 .*column 'close' is inf \(must be finite\)"),
        ("volume", -np.inf, r"row 2 .*column 'volume' is -inf"),
        ("low", 0.0, r"row 2 .*column 'low' is 0.0 \(prices must be positive\)"),
        ("open_", -5.0, r"row 2 .*column 'open' is -5.0 \(prices must be positive\)"),
        ("volume", -1.0, r"row 2 .*column 'volume' is -1.0 \(must be >= 0\)"),
        ("high", 100.2, r"row 2 .*high 100.2 < max\(open 100.0, close 100.5\)"),
        ("low", 100.3, r"row 2 .*low 100.3 > min\(open 100.0, close 100.5\)"),
    ],
)
def test_bad_values_name_column_and_row(column: str, value: float, message: str) -> None:
    s = series()
    s[column][2] = value
    with pytest.raises(GridctlError, match=message):
        check(s)


def test_unsorted_duplicate_and_off_grid_timestamps() -> None:
    s = series()
    s["ts"][2] = s["ts"][1]
    with pytest.raises(GridctlError, match=r"row 2 .*duplicate timestamp"):
        check(s)
    s = series()
    s["ts"][[1, 2]] = s["ts"][[2, 1]]
    with pytest.raises(GridctlError, match=r"row 2 .*earlier than the previous row"):
        check(s)
    s = series()
    s["ts"][3] += 1
    with pytest.raises(GridctlError, match=r"row 3 .*not on the 60000 ms bar grid"):
        check(s)


def test_zero_volume_is_legal_and_mark_volume_may_be_nan() -> None:
    s = series()
    s["volume"][:] = 0.0
    check(s)
    s["volume"][:] = np.nan
    with pytest.raises(GridctlError, match="column 'volume' is nan"):
        check(s)
    check(s, kind="mark")


def test_gap_stats_counts_and_orders_gaps() -> None:
    # minutes 0,1,2,5,6,10: 2->5 misses 3,4 (2 bars), 6->10 misses 7,8,9 (3 bars)
    ts = T0 + np.array([0, 1, 2, 5, 6, 10], dtype=np.int64) * MIN
    stats = gap_stats(ts, MIN)
    assert stats.count == 2
    assert stats.missing_bars == 5
    assert stats.largest == (Gap(T0 + 6 * MIN, T0 + 10 * MIN, 3), Gap(T0 + 2 * MIN, T0 + 5 * MIN, 2))
    report = ValidationReport()
    report.add_gaps(stats, "1m", "BTC 1m")
    assert report.gap_count == 2 and report.missing_bars == 5
    assert report.warnings == [
        "BTC 1m: 2 gap(s), 5 missing 1m bars (not filled); largest: "
        "2024-01-01 00:06:00 UTC -> 2024-01-01 00:10:00 UTC (3 missing), "
        "2024-01-01 00:02:00 UTC -> 2024-01-01 00:05:00 UTC (2 missing)"
    ]


def test_funding_jitter_snaps_within_one_second_only() -> None:
    raw = np.array([T0 + 17, T0 + 8 * HOUR - 999, T0 + 16 * HOUR, T0 + 24 * HOUR + 1000], dtype=np.int64)
    snapped, moved = normalise_funding_ts(raw, "funding.feather")
    assert snapped.tolist() == [T0, T0 + 8 * HOUR, T0 + 16 * HOUR, T0 + 24 * HOUR]
    assert moved == 3  # the exact 16:00 row is not counted
    with pytest.raises(GridctlError, match=r"funding.feather: row 1 .*1001 ms from the nearest whole hour"):
        normalise_funding_ts(np.array([T0, T0 + 8 * HOUR + 1001]), "funding.feather")


def test_funding_checks() -> None:
    ts = np.array([T0, T0 + 8 * HOUR])
    check_funding(ts, np.array([0.0001, -0.003]), np.array([np.nan, 42000.0]), "f")
    with pytest.raises(GridctlError, match=r"row 1 .*column 'rate' is nan"):
        check_funding(ts, np.array([0.0001, np.nan]), np.array([1.0, 1.0]), "f")
    with pytest.raises(GridctlError, match=r"row 0 .*column 'mark_price' is -1.0"):
        check_funding(ts, np.array([0.0, 0.0]), np.array([-1.0, 1.0]), "f")
    with pytest.raises(GridctlError, match="duplicate timestamp"):
        check_funding(np.array([T0, T0]), np.zeros(2), np.ones(2), "f")
    with pytest.raises(GridctlError, match="not on a whole UTC hour"):
        check_funding(np.array([T0 + 5]), np.zeros(1), np.ones(1), "f")
