"""load_market and market_from_arrays: contiguous arrays, funding window, mark fill, loud failures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from gridctl.configs.errors import GridctlError
from gridctl.data.market import load_market, market_from_arrays
from gridctl.data.store import read_funding, write_candles, write_funding

SYM = "BTC/USDT:USDT"
EX = "binanceusdm"
HOUR = 3_600_000
JAN1 = 1_704_067_200_000  # 2024-01-01 00:00 UTC


def hour_bars(start: int, n: int, skip: tuple[int, ...] = ()) -> pl.DataFrame:
    """n hourly bars from ``start`` (minus indices in ``skip``); close = 100 + i so rows are identifiable."""
    idx = np.array([i for i in range(n) if i not in skip])
    close = 100.0 + idx
    return pl.DataFrame(
        {
            "ts": start + idx * HOUR,
            "open": close,
            "high": close + 0.5,
            "low": close - 0.5,
            "close": close,
            "volume": np.ones(idx.size),
        }
    )


def funding(ts: list[int], marks: list[float | None] | None = None) -> pl.DataFrame:
    marks = marks if marks is not None else [50_000.0] * len(ts)
    return pl.DataFrame({"ts": ts, "rate": [0.0001 * (i + 1) for i in range(len(ts))], "mark_price": marks})


def every_8h(first: int, last: int) -> list[int]:
    return list(range(first, last + 1, 8 * HOUR))


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """72 hourly bars from 2024-01-01 00:00 and 8h funding from 2023-12-31 16:00 to 2024-01-04 00:00."""
    write_candles(tmp_path, EX, SYM, "1h", hour_bars(JAN1, 72))
    write_funding(tmp_path, EX, SYM, funding(every_8h(JAN1 - 8 * HOUR, JAN1 + 72 * HOUR)))
    return tmp_path


def test_load_returns_contiguous_typed_arrays(store: Path) -> None:
    m = load_market(store, EX, SYM, "1h")
    assert (m.symbol, m.timeframe, m.bar_ms, len(m)) == (SYM, "1h", HOUR, 72)
    for arr, dtype in [
        (m.ts, np.int64),
        (m.open, np.float64),
        (m.volume, np.float64),
        (m.funding_ts, np.int64),
    ]:
        assert arr.dtype == dtype and arr.flags["C_CONTIGUOUS"]
    assert m.close[5] == 105.0
    assert m.report.warnings == [] and m.report.gap_count == 0


def test_funding_window_includes_previous_and_next_settlement(store: Path) -> None:
    # Bars 2024-01-01 10:00 .. 2024-01-02 09:00 (end exclusive at 10:00); last close 2024-01-02 10:00.
    # Needed: last settlement <= 10:00 (01-01 08:00), all inside (16:00, 01-02 00:00, 08:00) and the
    # first one after the last close (01-02 16:00) -> 5 settlements.
    m = load_market(store, EX, SYM, "1h", start=JAN1 + 10 * HOUR, end="2024-01-02T10:00")
    assert m.ts[0] == JAN1 + 10 * HOUR and m.ts[-1] == JAN1 + 33 * HOUR and len(m) == 24
    assert m.funding_ts.tolist() == [JAN1 + h * HOUR for h in (8, 16, 24, 32, 40)]
    # rates were 0.0001 * (k + 1) for the k-th settlement from 2023-12-31 16:00 (k = 0), 01-01 08:00 is k = 2
    assert m.funding_rate.tolist() == pytest.approx([0.0003, 0.0004, 0.0005, 0.0006, 0.0007])
    assert np.all(m.funding_mark == 50_000.0)


def test_start_exactly_on_a_settlement_keeps_it(store: Path) -> None:
    m = load_market(store, EX, SYM, "1h", start="2024-01-02", end="2024-01-02T01:00")
    assert m.funding_ts.tolist() == [JAN1 + 24 * HOUR, JAN1 + 32 * HOUR]


def test_mark_filled_from_stored_mark_candles_else_nan(tmp_path: Path) -> None:
    write_candles(tmp_path, EX, SYM, "1h", hour_bars(JAN1, 24))
    settlements = [JAN1, JAN1 + 8 * HOUR, JAN1 + 16 * HOUR, JAN1 + 24 * HOUR]
    write_funding(tmp_path, EX, SYM, funding(settlements, marks=[None, 123.0, None, None]))
    # Mark candles exist for 00:00 (open 100) and 16:00 (open 116) only, not for 2024-01-02 00:00.
    write_candles(tmp_path, EX, SYM, "1h", hour_bars(JAN1, 17, skip=tuple(range(1, 16))), kind="mark")
    m = load_market(tmp_path, EX, SYM, "1h")
    assert m.funding_mark[:3].tolist() == [100.0, 123.0, 116.0]
    assert np.isnan(m.funding_mark[3])
    assert any("1 of 4 settlements have no mark price" in w for w in m.report.warnings)


def test_gaps_are_reported_never_filled(tmp_path: Path) -> None:
    write_candles(tmp_path, EX, SYM, "1h", hour_bars(JAN1, 10, skip=(3, 4, 7)))
    write_funding(tmp_path, EX, SYM, funding([JAN1, JAN1 + 8 * HOUR]))
    m = load_market(tmp_path, EX, SYM, "1h")
    assert len(m) == 7  # 10 hours minus 3 missing, nothing fabricated
    assert (m.report.gap_count, m.report.missing_bars) == (2, 3)
    assert "2 gap(s), 3 missing 1h bars" in m.report.warnings[0]


def test_missing_funding_is_a_loud_error(tmp_path: Path) -> None:
    write_candles(tmp_path, EX, SYM, "1h", hour_bars(JAN1, 3))
    with pytest.raises(GridctlError, match=r"no funding series for BTC/USDT:USDT .*gridctl data download"):
        load_market(tmp_path, EX, SYM, "1h")


def test_missing_candles_name_what_is_stored(store: Path) -> None:
    with pytest.raises(GridctlError, match=r"no 1m candles .*stored timeframes: 1h"):
        load_market(store, EX, SYM, "1m")
    with pytest.raises(GridctlError, match="in the requested range"):
        load_market(store, EX, SYM, "1h", start="2025-01-01")


def test_a_window_wider_than_the_stored_bars_says_where_the_symbol_trades(store: Path) -> None:
    # In a basket the run goes on with the other symbols: the warning no longer says "the run ends there".
    m = load_market(store, EX, SYM, "1h", start="2023-12-31", end="2024-01-05")
    assert (
        "binanceusdm BTC/USDT:USDT 1h: the requested start 2023-12-31 00:00:00 UTC is before the first "
        "stored bar in range (2024-01-01 00:00:00 UTC); it trades from there (a basket's other symbols may "
        "start earlier)"
    ) in m.report.warnings
    assert (
        "binanceusdm BTC/USDT:USDT 1h: the requested end 2024-01-05 00:00:00 UTC is after the last stored "
        "bar in range (2024-01-03 23:00:00 UTC, closing 2024-01-04 00:00:00 UTC); it trades up to there (a "
        "basket's other symbols may go on)"
    ) in m.report.warnings


def test_a_window_outside_a_stored_timeframe_names_its_stored_range(store: Path) -> None:
    # 1h is stored (72 bars: 2024-01-01 00:00 .. 2024-01-03 23:00), only not in 2025; a finer stored 1m
    # series must not turn that into a "resample from 1m" hint (resampling cannot add 2025 bars).
    ones = [1.0] * 3
    minutes = {"ts": [JAN1 + i * 60_000 for i in range(3)], "open": ones, "high": ones, "low": ones}
    write_candles(store, EX, SYM, "1m", pl.DataFrame({**minutes, "close": ones, "volume": ones}))
    with pytest.raises(GridctlError) as err:
        load_market(store, EX, SYM, "1h", start="2025-01-01")
    assert str(err.value) == (
        f"no 1h candles for {SYM} on {EX} in the requested range in {store}: its stored 1h candles run "
        "2024-01-01 00:00:00 UTC .. 2024-01-03 23:00:00 UTC; choose a window inside them (--start/--end, "
        "or a profile's data.start/end), or get the missing bars with `gridctl data download` or "
        "`gridctl data import`"
    )


def minute_bars(start: int, n: int) -> pl.DataFrame:
    """n flat 1m bars from ``start``."""
    ones = [1.0] * n
    ts = [start + i * 60_000 for i in range(n)]
    return pl.DataFrame({"ts": ts, "open": ones, "high": ones, "low": ones, "close": ones, "volume": ones})


def test_a_window_inside_a_gap_names_the_gap_not_the_whole_range(tmp_path: Path) -> None:
    # Hours 0..71 from 2024-01-01 without day two (24..47): the last bar before the window opens
    # 2024-01-01 23:00, the next 2024-01-03 00:00. "Choose a window inside them" would name a range
    # (01-01 .. 01-03 23:00) that contains this very window.
    write_candles(tmp_path, EX, SYM, "1h", hour_bars(JAN1, 72, skip=tuple(range(24, 48))))
    with pytest.raises(GridctlError) as err:
        load_market(tmp_path, EX, SYM, "1h", start="2024-01-02T06:00", end="2024-01-02T12:00")
    assert str(err.value) == (
        f"no 1h candles for {SYM} on {EX} in the requested range in {tmp_path}: the window falls in a gap "
        "of the stored 1h candles (the last bar before it opens 2024-01-01 23:00:00 UTC, the next one "
        "2024-01-03 00:00:00 UTC); get the missing bars with `gridctl data download` or `gridctl data "
        "import`, or choose a window with stored bars (--start/--end, or a profile's data.start/end)"
    )
    # A window between two adjacent bars' opens is no gap: it only holds no bar's open.
    with pytest.raises(GridctlError) as err:
        load_market(tmp_path, EX, SYM, "1h", start="2024-01-01T10:15", end="2024-01-01T10:45")
    assert (
        ": no 1h bar opens inside the window (stored bars open at 2024-01-01 10:00:00 UTC and next at "
        "2024-01-01 11:00:00 UTC); widen the window" in str(err.value)
    )


def test_a_window_holding_no_bar_open_is_no_gap_though_its_neighbours_are_apart(tmp_path: Path) -> None:
    # Hours 0..23 of 2024-01-01 without 11:00: the window 10:15 .. 10:45 lies between the stored 10:00 and
    # 12:00 bars, yet no 1h bar (stored or missing) opens inside it, so the missing 11:00 bar would not
    # fill it: widening the window helps, getting missing bars does not.
    write_candles(tmp_path, EX, SYM, "1h", hour_bars(JAN1, 24, skip=(11,)))
    with pytest.raises(GridctlError) as err:
        load_market(tmp_path, EX, SYM, "1h", start="2024-01-01T10:15", end="2024-01-01T10:45")
    assert str(err.value) == (
        f"no 1h candles for {SYM} on {EX} in the requested range in {tmp_path}: no 1h bar opens inside the "
        "window (stored bars open at 2024-01-01 10:00:00 UTC and next at 2024-01-01 12:00:00 UTC); widen "
        "the window to hold a bar's open (--start/--end, or a profile's data.start/end)"
    )
    # 10:15 .. 11:30 holds the open of the missing 11:00 bar: that is the gap.
    with pytest.raises(GridctlError) as err:
        load_market(tmp_path, EX, SYM, "1h", start="2024-01-01T10:15", end="2024-01-01T11:30")
    msg = str(err.value)
    assert ": the window falls in a gap of the stored 1h candles (the last bar before it opens " in msg


def test_a_window_only_finer_bars_cover_names_data_resample(store: Path) -> None:
    # 1h is stored for 2024-01-01 .. 01-03; 1m holds two whole hours on 01-05 (120 bars from 00:00)
    # and 59 minutes of an hour on 01-07: resampling builds 1h bars for the first window only.
    write_candles(store, EX, SYM, "1m", minute_bars(JAN1 + 96 * HOUR, 120))
    write_candles(store, EX, SYM, "1m", minute_bars(JAN1 + 144 * HOUR, 59))
    with pytest.raises(GridctlError) as err:
        load_market(store, EX, SYM, "1h", start="2024-01-05", end="2024-01-06")
    assert str(err.value) == (
        f"no 1h candles for {SYM} on {EX} in the requested range in {store}: its stored 1h candles run "
        "2024-01-01 00:00:00 UTC .. 2024-01-03 23:00:00 UTC; build them from the stored 1m bars with "
        f"`gridctl data resample --exchange {EX} --symbol {SYM} --from 1m --to 1h --data-dir {store}`"
    )
    with pytest.raises(GridctlError) as err:
        load_market(store, EX, SYM, "1h", start="2024-01-07", end="2024-01-08")
    assert "choose a window inside them" in str(err.value) and "resample" not in str(err.value)
    # Not stored at all: the 1m bars count only where they would build a 4h bar of the window.
    with pytest.raises(GridctlError) as err:
        load_market(store, EX, SYM, "4h", start="2024-01-05", end="2024-01-06")
    assert "(stored timeframes: 1m, 1h); get them with `gridctl data download`" in str(err.value)


def test_funding_starting_after_first_bar_is_warned(tmp_path: Path) -> None:
    write_candles(tmp_path, EX, SYM, "1h", hour_bars(JAN1, 12))
    write_funding(tmp_path, EX, SYM, funding([JAN1 + 8 * HOUR]))
    m = load_market(tmp_path, EX, SYM, "1h")
    assert m.funding_ts.tolist() == [JAN1 + 8 * HOUR]
    assert "new entries are blocked until then" in m.report.warnings[0]


def test_funding_outside_the_bars_is_an_error_not_a_stale_rate(tmp_path: Path) -> None:
    write_candles(tmp_path, EX, SYM, "1h", hour_bars(JAN1, 12))
    # Last settlement 2023-12-31 15:00 is 9 h before the first bar: more than one 8 h interval -> stale.
    write_funding(tmp_path, EX, SYM, funding([JAN1 - 9 * HOUR]))
    with pytest.raises(GridctlError, match=r"no funding settlements .*nor within 8 h"):
        load_market(tmp_path, EX, SYM, "1h")


def test_funding_ending_before_the_last_bar_is_an_error(tmp_path: Path) -> None:
    # 48 hourly bars need settlements through 2024-01-03 00:00; the series stops at 08:00 on day one,
    # so 4 settlements would go unpaid and the guard would run blind: refuse, naming the gap.
    write_candles(tmp_path, EX, SYM, "1h", hour_bars(JAN1, 48))
    write_funding(tmp_path, EX, SYM, funding([JAN1, JAN1 + 8 * HOUR]))
    with pytest.raises(
        GridctlError, match=r"the funding series ends at 2024-01-01 08:00:00 UTC.*--kinds funding"
    ):
        load_market(tmp_path, EX, SYM, "1h")
    # Cutting the bars to the covered range works.
    m = load_market(tmp_path, EX, SYM, "1h", end=JAN1 + 12 * HOUR)
    assert m.funding_ts.tolist() == [JAN1, JAN1 + 8 * HOUR]


def test_funding_hole_is_an_error_naming_it(tmp_path: Path) -> None:
    # Settlements at 00:00, 08:00, then 2024-01-02 08:00: the 16:00 and 00:00 ones are missing.
    write_candles(tmp_path, EX, SYM, "1h", hour_bars(JAN1, 36))
    write_funding(tmp_path, EX, SYM, funding([JAN1, JAN1 + 8 * HOUR, JAN1 + 32 * HOUR, JAN1 + 40 * HOUR]))
    with pytest.raises(
        GridctlError, match=r"1 hole\(s\) longer than 8 h .*first after 2024-01-01 08:00:00 UTC"
    ):
        load_market(tmp_path, EX, SYM, "1h")


def test_arrays_built_market_only_warns_about_funding_holes() -> None:
    # market_from_arrays serves tests and the live bridge, which marks missing rates itself.
    ts = np.arange(JAN1, JAN1 + 36 * HOUR, HOUR, dtype=np.int64)
    px = np.full(ts.size, 100.0)
    fts = np.array([JAN1, JAN1 + 8 * HOUR, JAN1 + 32 * HOUR, JAN1 + 40 * HOUR], dtype=np.int64)
    m = market_from_arrays(SYM, "1h", ts, px, px, px, px, px, fts, np.full(4, 1e-4))
    assert any("hole(s) longer than 8 h" in w for w in m.report.warnings)


def test_hand_placed_bad_partition_names_the_file(store: Path) -> None:
    path = store / EX / "BTC_USDT_USDT" / "1h" / "2024-01.parquet"
    df = pl.read_parquet(path)
    pl.concat([df, df.tail(1)]).write_parquet(path)  # duplicate last row
    with pytest.raises(GridctlError, match=rf"{path}: row 72 .*duplicate timestamp"):
        load_market(store, EX, SYM, "1h")


def test_loaded_arrays_own_their_memory_and_are_read_only(tmp_path: Path) -> None:
    # Bars over two monthly partitions with a gap; the range cuts into both months.
    write_candles(tmp_path, EX, SYM, "1h", hour_bars(JAN1 - 48 * HOUR, 120, skip=(60, 61, 62)))
    write_funding(tmp_path, EX, SYM, funding(every_8h(JAN1 - 56 * HOUR, JAN1 + 80 * HOUR)))
    m = load_market(tmp_path, EX, SYM, "1h", start=JAN1 - 10 * HOUR, end=JAN1 + 20 * HOUR)
    # 2023-12-31 14:00 .. 2024-01-01 19:00: 30 hours minus the 3 skipped (rows 60..62 = Jan 1, 12-14h).
    assert len(m) == 27 and m.ts[0] == JAN1 - 10 * HOUR and m.ts[-1] == JAN1 + 19 * HOUR
    assert m.close[0] == 100.0 + 38 and m.close[-1] == 100.0 + 67
    for name in ("ts", "open", "high", "low", "close", "volume"):
        arr = getattr(m, name)
        # No frame of the Parquet reader stays alive behind the arrays, and nobody can edit the bars.
        assert arr.base is None and arr.flags.owndata and not arr.flags.writeable, name
        assert arr.size == 27


def test_a_partition_holding_rows_of_another_month_is_refused(tmp_path: Path) -> None:
    # A hand-made file named for January that also holds February's first 5 hours (the store never
    # writes that): the rows do not belong to the file's month, so the file is named as damaged.
    write_candles(tmp_path, EX, SYM, "1h", hour_bars(JAN1, 31 * 24))
    path = tmp_path / EX / "BTC_USDT_USDT" / "1h" / "2024-01.parquet"
    hour_bars(JAN1, 31 * 24 + 5).write_parquet(path)
    write_funding(tmp_path, EX, SYM, funding(every_8h(JAN1 - 8 * HOUR, JAN1 + (31 * 24 + 16) * HOUR)))
    with pytest.raises(GridctlError, match=rf"{path}: row 744 .*2024-02-01 00:00:00 UTC\) lies outside"):
        load_market(tmp_path, EX, SYM, "1h")


def test_market_from_arrays_validates_and_snaps_funding() -> None:
    ts = JAN1 + np.arange(3) * HOUR
    px = np.array([100.0, 101.0, 102.0])
    m = market_from_arrays(SYM, "1h", ts, px, px + 1, px - 1, px, np.zeros(3), [JAN1 + 17], [0.0001])
    assert m.funding_ts.tolist() == [JAN1]
    assert m.report.funding_normalised == 1
    assert np.isnan(m.funding_mark[0])
    bad_high = np.array([101.0, 100.0, 103.0])  # row 1: high 100 < open/close 101
    with pytest.raises(GridctlError, match=r"arrays: row 1 .*high 100.0 < max\(open 101.0"):
        market_from_arrays(SYM, "1h", ts, px, bad_high, px - 1, px, np.zeros(3), [JAN1], [0.0])
    with pytest.raises(GridctlError, match="same length"):
        market_from_arrays(SYM, "1h", ts, px, px + 1, px - 1, px[:2], np.zeros(3), [JAN1], [0.0])


def test_real_btc_1m_through_the_store(tmp_path: Path, real_data: Path) -> None:
    candles = pl.read_parquet(real_data / "binanceusdm_BTCUSDT_1m_2025-05_2025-06.parquet")
    write_candles(tmp_path, EX, SYM, "1m", candles)
    fund = pl.read_parquet(real_data / "binanceusdm_BTCUSDT_funding_2019-09_2025-12.parquet")
    write_funding(tmp_path, EX, SYM, fund.select("ts", "rate", "mark_price"))
    m = load_market(tmp_path, EX, SYM, "1m")
    # README: 73,138 rows, 2025-05-04 15:33 -> 2025-06-24 10:30, no missing bars.
    assert len(m) == 73_138
    assert m.ts[0] == 1_746_372_780_000  # 2025-05-04 15:33 UTC
    assert m.ts[-1] == 1_750_761_000_000  # 2025-06-24 10:30 UTC
    assert m.report.gap_count == 0
    # Settlements 2025-05-04 08:00 (last before the first bar) .. 2025-06-24 16:00 (first after the last
    # close at 10:31): 51 days + 8 h = 154 intervals of 8 h -> 155 settlements, all with a mark price.
    assert m.funding_ts[0] == 1_746_345_600_000 and m.funding_ts[-1] == 1_750_780_800_000
    assert m.funding_ts.size == 155
    assert np.isfinite(m.funding_mark).all()
    # Published Binance values (README "Known published values").
    jan1 = read_funding(tmp_path, EX, SYM, start_ms=JAN1, end_ms=JAN1 + 9 * HOUR)
    assert jan1["rate"].to_list() == [0.00037409, 0.00027213]
