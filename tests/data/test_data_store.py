"""The Parquet store: layout, merge rules, atomic all-or-nothing writes, coverage, inventory."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridctl.configs.errors import GridctlError
from gridctl.data.store import (
    coverage,
    default_data_dir,
    inventory,
    read_candles,
    read_funding,
    symbol_key,
    write_candles,
    write_funding,
)
from gridctl.data.timeframes import timeframe_ms

SYM = "BTC/USDT:USDT"
EX = "binanceusdm"
MIN = 60_000
HOUR = 3_600_000
JAN_31_2358 = 1_706_745_480_000  # 2024-01-31 23:58 UTC (2024-02-01 00:00 = 1_706_745_600_000)
Y2024 = 1_704_067_200_000  # 2024-01-01 00:00 UTC


def bars(ts: list[int], close: float = 100.0) -> pl.DataFrame:
    """Flat-ish valid bars: open = close = ``close``, high = close + 1, low = close - 1, volume 2."""
    n = len(ts)
    return pl.DataFrame(
        {
            "ts": np.array(ts, dtype=np.int64),
            "open": [close] * n,
            "high": [close + 1] * n,
            "low": [close - 1] * n,
            "close": [close] * n,
            "volume": [2.0] * n,
        }
    )


def test_timeframe_ms_known_and_unknown() -> None:
    assert timeframe_ms("1m") == 60_000
    assert timeframe_ms("4h") == 4 * 60 * 60 * 1000
    assert timeframe_ms("1d") == 24 * 60 * 60 * 1000
    with pytest.raises(GridctlError, match=r"unknown timeframe '7m' \(valid: 1m, 3m, 5m, 15m"):
        timeframe_ms("7m")


def test_default_data_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GRIDCTL_DATA_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "explicit"
    monkeypatch.delenv("GRIDCTL_DATA_DIR")
    assert default_data_dir() == tmp_path / "xdg" / "gridctl"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir() == tmp_path / "home" / ".local" / "share" / "gridctl"


def test_symbol_key() -> None:
    assert symbol_key("BTC/USDT:USDT") == "BTC_USDT_USDT"
    assert symbol_key("ETH/USDT") == "ETH_USDT"
    with pytest.raises(GridctlError, match="cannot be stored"):
        symbol_key("../etc")


def test_write_splits_by_month_and_read_is_end_exclusive(tmp_path: Path) -> None:
    ts = [JAN_31_2358, JAN_31_2358 + MIN, JAN_31_2358 + 2 * MIN]  # 23:58, 23:59, Feb 1 00:00
    paths = write_candles(tmp_path, EX, SYM, "1m", bars(ts))
    base = tmp_path / EX / "BTC_USDT_USDT" / "1m"
    assert paths == [base / "2024-01.parquet", base / "2024-02.parquet"]
    assert pl.read_parquet(paths[0])["ts"].to_list() == ts[:2]
    assert pl.read_parquet(paths[1])["ts"].to_list() == ts[2:]
    got = read_candles(tmp_path, EX, SYM, "1m", start_ms=ts[1], end_ms=ts[2])
    assert got["ts"].to_list() == [ts[1]]
    assert read_candles(tmp_path, EX, SYM, "1m")["ts"].to_list() == ts
    assert read_candles(tmp_path, EX, SYM, "1m").schema == pl.Schema(
        {
            "ts": pl.Int64,
            "open": pl.Float64,
            "high": pl.Float64,
            "low": pl.Float64,
            "close": pl.Float64,
            "volume": pl.Float64,
        }
    )


def test_mark_candles_live_in_their_own_folder(tmp_path: Path) -> None:
    write_candles(tmp_path, EX, SYM, "1h", bars([Y2024]), kind="mark")
    assert (tmp_path / EX / "BTC_USDT_USDT" / "mark_1h" / "2024-01.parquet").is_file()
    assert read_candles(tmp_path, EX, SYM, "1h").height == 0
    assert read_candles(tmp_path, EX, SYM, "1h", kind="mark").height == 1
    with pytest.raises(GridctlError, match="unknown candle kind 'index'"):
        write_candles(tmp_path, EX, SYM, "1h", bars([Y2024]), kind="index")


def test_merge_new_rows_win_and_result_is_sorted(tmp_path: Path) -> None:
    t = [Y2024 + i * MIN for i in range(4)]
    write_candles(tmp_path, EX, SYM, "1m", bars(t[:3], close=100.0))
    write_candles(tmp_path, EX, SYM, "1m", bars([t[3], t[2]], close=200.0))  # unsorted input is fine
    got = read_candles(tmp_path, EX, SYM, "1m")
    assert got["ts"].to_list() == t
    assert got["close"].to_list() == [100.0, 100.0, 200.0, 200.0]


def test_duplicate_ts_inside_one_write_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(GridctlError, match="duplicate timestamp"):
        write_candles(tmp_path, EX, SYM, "1m", bars([Y2024, Y2024]))


def test_invalid_write_leaves_store_untouched(tmp_path: Path) -> None:
    # First a good write in January, then a bad batch touching January and February: nothing may change.
    write_candles(tmp_path, EX, SYM, "1m", bars([JAN_31_2358]))
    jan = tmp_path / EX / "BTC_USDT_USDT" / "1m" / "2024-01.parquet"
    before = jan.read_bytes()
    bad = bars([JAN_31_2358 + MIN, JAN_31_2358 + 2 * MIN]).with_columns(
        pl.Series("high", [101.0, 99.5])  # second row: high 99.5 < open/close 100 -> invalid
    )
    with pytest.raises(GridctlError, match=r"high 99\.5 < max"):
        write_candles(tmp_path, EX, SYM, "1m", bad)
    assert jan.read_bytes() == before
    assert sorted(p.name for p in jan.parent.iterdir()) == ["2024-01.parquet"]  # no Feb file, no temp file


def test_dtype_and_column_checks(tmp_path: Path) -> None:
    with pytest.raises(GridctlError, match="column 'ts' must be integer"):
        write_candles(tmp_path, EX, SYM, "1m", bars([Y2024]).with_columns(pl.col("ts").cast(pl.Float64)))
    with pytest.raises(GridctlError, match="column 'close' must be numeric"):
        write_candles(tmp_path, EX, SYM, "1m", bars([Y2024]).with_columns(pl.lit("x").alias("close")))
    with pytest.raises(GridctlError, match="missing column"):
        write_candles(tmp_path, EX, SYM, "1m", bars([Y2024]).drop("volume"))
    assert not (tmp_path / EX).exists()


def test_funding_yearly_partitions_and_jitter_snapping(tmp_path: Path) -> None:
    dec31_16 = Y2024 - 8 * HOUR
    df = pl.DataFrame(
        {"ts": [dec31_16 + 17, Y2024 - 4], "rate": [0.0001, -0.0002], "mark_price": [42000.0, None]}
    )
    paths = write_funding(tmp_path, EX, SYM, df)
    assert [p.name for p in paths] == ["2023.parquet", "2024.parquet"]
    got = read_funding(tmp_path, EX, SYM)
    assert got["ts"].to_list() == [dec31_16, Y2024]  # +17 ms and -4 ms snapped to the hour
    assert got["rate"].to_list() == [0.0001, -0.0002]
    assert got["mark_price"][0] == 42000.0 and np.isnan(got["mark_price"][1])
    with pytest.raises(GridctlError, match="1001 ms from the nearest whole hour"):
        write_funding(
            tmp_path, EX, SYM, pl.DataFrame({"ts": [Y2024 + 1001], "rate": [0.0], "mark_price": [1.0]})
        )


def test_coverage_splits_at_gaps(tmp_path: Path) -> None:
    t = [Y2024 + i * MIN for i in (0, 1, 2, 5, 6)]
    write_candles(tmp_path, EX, SYM, "1m", bars(t))
    assert coverage(tmp_path, EX, SYM, "1m") == [(t[0], t[2]), (t[3], t[4])]
    assert coverage(tmp_path, EX, SYM, "1m", kind="mark") == []
    f = [Y2024, Y2024 + 8 * HOUR, Y2024 + 32 * HOUR]  # 8 h step, then a 24 h hole
    write_funding(tmp_path, EX, SYM, pl.DataFrame({"ts": f, "rate": [0.0] * 3, "mark_price": [1.0] * 3}))
    assert coverage(tmp_path, EX, SYM, "1m", kind="funding") == [(f[0], f[1]), (f[2], f[2])]


def test_inventory_lists_series_with_gaps(tmp_path: Path) -> None:
    write_candles(tmp_path, EX, SYM, "1m", bars([Y2024 + i * MIN for i in (0, 1, 5)]))
    write_funding(tmp_path, EX, SYM, pl.DataFrame({"ts": [Y2024], "rate": [0.0], "mark_price": [1.0]}))
    items = {i.series: i for i in inventory(tmp_path)}
    assert set(items) == {"1m", "funding"}
    assert items["1m"].symbol == SYM
    # 00:00, 00:01, 00:05 -> one gap, bars 00:02..00:04 missing = 3
    assert (items["1m"].rows, items["1m"].gaps, items["1m"].missing) == (3, 1, 3)


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.lists(st.integers(min_value=0, max_value=60 * 24 * 40), min_size=1, max_size=30, unique=True),
        min_size=1,
        max_size=4,
    )
)
def test_store_matches_dict_model(batches: list[list[int]]) -> None:
    """Any sequence of writes reads back like a dict keyed by ts where the latest write wins."""
    base = 1_706_400_000_000  # 2024-01-28 00:00 UTC: 40 days of minutes span three monthly partitions
    model: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k, minutes in enumerate(batches):
            ts = [base + m * MIN for m in minutes]
            write_candles(tmp, EX, SYM, "1m", bars(ts, close=100.0 + k))
            model.update(dict.fromkeys(ts, 100.0 + k))
        got = read_candles(tmp, EX, SYM, "1m")
        assert got["ts"].to_list() == sorted(model)
        assert got["close"].to_list() == [model[t] for t in sorted(model)]


def test_atomic_write_gives_normal_file_permissions(tmp_path: Path) -> None:
    """A temp-file-and-rename write must not leave the 0600 mode of the temp file on the result."""
    import gridctl.data.atomic
    from gridctl.data.atomic import atomic_write_text

    # The umask is read once at import; with the usual 022 the result is 0644, as open() would give,
    # where mkstemp's own mode would be 0600.
    mask = gridctl.data.atomic._UMASK
    assert 0o666 & ~mask != 0o600, "this umask cannot tell the two modes apart"
    target = atomic_write_text(tmp_path / "x.json", "{}")
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
