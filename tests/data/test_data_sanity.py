"""Absurd market data and store files that used to crash loading, each class refused with one line.

Prices no market prints (1e300, a 100x jump between neighbours), rows outside their partition's month,
a percent-unit funding row under the cap, timestamps the calendar cannot hold, misnamed partitions,
a string timestamp column and a FIFO named like a partition (which used to block forever). Real data
of six symbols passes every check unchanged.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from gridctl.configs.errors import GridctlError
from gridctl.data.market import load_market
from gridctl.data.store import candle_dir, funding_dir, inventory, read_candles, write_candles, write_funding
from gridctl.data.validate import MAX_PRICE_JUMP, check_candles, check_funding, fmt_ts

MIN = 60_000
HOUR = 3_600_000
DAY = 86_400_000
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
SYM = "BTC/USDT:USDT"
EX = "binanceusdm"


@pytest.fixture(autouse=True)
def _no_hang() -> Iterator[None]:
    """A read that blocks (a FIFO) fails the test after 20 s instead of hanging the run."""
    signal.alarm(20)
    yield
    signal.alarm(0)


def bars(n: int = 10, price: float = 100.0, start: int = T0, step: int = MIN) -> dict[str, np.ndarray]:
    return {
        "ts": start + np.arange(n, dtype=np.int64) * step,
        "open": np.full(n, price),
        "high": np.full(n, price * 1.01),
        "low": np.full(n, price * 0.99),
        "close": np.full(n, price),
        "volume": np.ones(n),
    }


def check(b: dict[str, np.ndarray], step: int = MIN) -> None:
    check_candles(b["ts"], b["open"], b["high"], b["low"], b["close"], b["volume"], step, "f", "trade")


def _bar_at(b: dict[str, np.ndarray], row: int, price: float) -> dict[str, np.ndarray]:
    """Set one whole bar to ``price`` (consistent OHLC), so only the size of the move is wrong."""
    for col in ("open", "close"):
        b[col][row] = price
    b["high"][row], b["low"][row] = price * 1.001, price * 0.999
    return b


# ----------------------------------------------------------------------------------------------------
# Prices against their neighbours
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("damage", "row", "words"),
    [
        (lambda b: _bar_at(b, 5, 1e300), 5, ["high 1.001e+300 is above 1e+09 (no real price)"]),
        (lambda b: _bar_at(b, 9, 2e9), 9, ["above 1e+09"]),
        (
            lambda b: _bar_at(b, 5, 100.0 * 100),
            5,
            ["price 10010 is 100.1x away from the previous close 100", "at most 10x"],
        ),
        (lambda b: _bar_at(b, 5, 100.0 / 100), 5, ["price 0.999 is 100.1x away from the previous close 100"]),
        (lambda b: _bar_at(b, 0, 1.0), 1, ["previous close 1"]),  # the first bar is the wrong one
        (
            lambda b: b["high"].__setitem__(3, 100.0 * 11),
            3,
            ["high 1100 is 11.11x the low 99", "within one bar"],
        ),
        (lambda b: b["low"].__setitem__(3, 100.0 / 11), 3, ["within one bar"]),
    ],
    ids=["1e300", "2e9", "x100-up", "x100-down", "first-bar", "wick-up", "wick-down"],
)
def test_prices_beyond_any_real_move_are_refused_naming_the_row(
    damage: Callable, row: int, words: list[str]
) -> None:
    b = bars()
    damage(b)
    with pytest.raises(GridctlError) as err:
        check(b)
    message = str(err.value)
    assert message.startswith(f"f: row {row} (ts {T0 + row * MIN} = {fmt_ts(T0 + row * MIN)}): "), message
    assert all(w in message for w in words), message


def test_moves_up_to_the_limit_and_jumps_across_long_holes_pass() -> None:
    b = _bar_at(bars(), 5, 100.0 * MAX_PRICE_JUMP * 0.99 / 1.001)  # high 990: 9.9x the previous close
    check(b)
    hole = bars(4, step=DAY + MIN)  # bars more than a day apart: a relisting may start anywhere
    _bar_at(hole, 2, 5000.0)
    check(hole, step=MIN)


def test_real_data_of_six_symbols_passes_every_price_and_funding_check(real_data: Path) -> None:
    checked = 0
    for path in sorted(real_data.glob("binanceusdm_*.parquet")):
        df = pl.read_parquet(path)
        ts = df["ts"].to_numpy()
        if "rate" in df.columns:
            marks = df["mark_price"].to_numpy() if "mark_price" in df.columns else np.full(ts.size, np.nan)
            check_funding(ts, df["rate"].to_numpy(), marks, path.name)
        else:
            step = int(np.min(np.diff(ts)))
            df = df.with_columns(pl.lit(float("nan")).alias("volume")) if "volume" not in df.columns else df
            cols = [df[c].to_numpy().astype(float) for c in ("open", "high", "low", "close", "volume")]
            check_candles(ts, *cols, step, path.name, "mark" if "mark" in path.name else "trade")
        checked += 1
    assert checked == 34  # BTC and ETH 7 files each, BNB, DOGE, SOL and XRP 5 each


# ----------------------------------------------------------------------------------------------------
# Funding in percent units
# ----------------------------------------------------------------------------------------------------


def _funding(rates: list[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(rates)
    return T0 + np.arange(n, dtype=np.int64) * 8 * HOUR, np.array(rates), np.full(n, np.nan)


@pytest.mark.parametrize(
    ("rates", "row"),
    [
        ([0.0001] * 4 + [0.01] + [0.0001] * 4, 4),  # 0.01 % written as 0.01: 100x its neighbours
        ([0.0001] * 4 + [-0.0075] + [0.0001] * 4, 4),
        ([0.01] + [0.0001] * 6, 0),  # first row
        ([0.0001] * 6 + [0.03], 6),  # last row, under the 5 % cap
        ([0.0001] * 4 + [0.005] + [0.0001] * 4, 4),  # exactly 50x
    ],
)
def test_an_isolated_percent_unit_funding_row_is_refused(rates: list[float], row: int) -> None:
    ts, rate, mark = _funding(rates)
    with pytest.raises(GridctlError) as err:
        check_funding(ts, rate, mark, "funding f")
    message = str(err.value)
    assert message.startswith(f"funding f: row {row} ") and "a percent written as a fraction" in message


@pytest.mark.parametrize(
    "rates",
    [
        [0.0001] * 4 + [0.0049] + [0.0001] * 4,  # below 0.5 %: a real spike size
        [0.0001, 0.0005, 0.002, 0.004, 0.01, 0.004, 0.002],  # a spike that builds up and decays
        [0.0001] * 3 + [0.003, 0.003] + [0.0001] * 3,  # the sample's extreme prints
        [0.02],  # a single settlement has no neighbours to compare
    ],
)
def test_real_looking_funding_spikes_pass(rates: list[float]) -> None:
    check_funding(*_funding(rates), "funding f")


# ----------------------------------------------------------------------------------------------------
# Timestamps and partitions
# ----------------------------------------------------------------------------------------------------


def _frame(b: dict[str, np.ndarray]) -> pl.DataFrame:
    return pl.DataFrame(b)


@pytest.mark.parametrize(
    "ts",
    [-MIN, -DAY * 365, 253_402_300_800_000, 253_402_300_800_000 + DAY * 400],
    ids=["1969", "1969b", "10000", "10001"],
)
def test_timestamps_outside_the_calendar_are_refused_on_write(tmp_path: Path, ts: int) -> None:
    b = bars(3, start=ts)
    with pytest.raises(GridctlError, match=r"row 0 .*timestamp outside 1970-01-01 \.\. 9999-12-31 UTC"):
        write_candles(tmp_path, EX, SYM, "1m", _frame(b))
    funding = pl.DataFrame({"ts": [ts], "rate": [0.0001], "mark_price": [100.0]})
    with pytest.raises(GridctlError, match="timestamp outside"):
        write_funding(tmp_path, EX, SYM, funding)
    assert not any(tmp_path.rglob("*.parquet"))


def _store(tmp_path: Path) -> Path:
    """Two days of 1m bars in January 2024 and their funding."""
    write_candles(tmp_path, EX, SYM, "1m", _frame(bars(2 * 1440)))
    write_funding(
        tmp_path,
        EX,
        SYM,
        pl.DataFrame({"ts": T0 + np.arange(7) * 8 * HOUR, "rate": [1e-4] * 7, "mark_price": [100.0] * 7}),
    )
    return tmp_path


def _rewrite(path: Path, change: Callable[[pl.DataFrame], pl.DataFrame]) -> None:
    change(pl.read_parquet(path)).write_parquet(path)


def _readers(root: Path) -> dict[str, Callable[[], object]]:
    return {
        "load_market": lambda: load_market(root, EX, SYM, "1m"),
        "inventory": lambda: inventory(root),
        "read_candles": lambda: read_candles(root, EX, SYM, "1m"),
        "write_candles": lambda: write_candles(root, EX, SYM, "1m", _frame(bars(3, start=T0 + 10 * DAY))),
    }


JAN = "2024-01.parquet"
STORE_DAMAGE: dict[str, tuple[Callable[[Path], Path], list[str]]] = {
    "1969-row-in-2024-01": (
        lambda d: (
            _rewrite(
                d / JAN,
                lambda df: df.with_columns(
                    pl.when(pl.col("ts") == T0).then(-MIN).otherwise(pl.col("ts")).alias("ts")
                ).sort("ts"),
            ),
            d / JAN,
        )[1],
        ["row 0 (ts -60000 = 1969-12-31 23:59:00 UTC) lies outside the partition's month 2024-01"],
    ),
    "bar-after-year-9999": (
        lambda d: (
            _rewrite(
                d / JAN,
                lambda df: df.with_columns(
                    pl.when(pl.col("ts") == df["ts"].max()).then(2**62).otherwise(pl.col("ts")).alias("ts")
                ),
            ),
            d / JAN,
        )[1],
        ["(outside the calendar)", "lies outside the partition's month 2024-01"],
    ),
    "march-row-in-january": (
        lambda d: (
            _rewrite(
                d / JAN,
                lambda df: df.with_columns(
                    pl.when(pl.col("ts") == df["ts"].max())
                    .then(T0 + 70 * DAY)
                    .otherwise(pl.col("ts"))
                    .alias("ts")
                ),
            ),
            d / JAN,
        )[1],
        ["2024-03-11 00:00:00 UTC) lies outside the partition's month 2024-01"],
    ),
    "partition-2024-13": (
        lambda d: ((d / JAN).rename(d / "2024-13.parquet"), d / "2024-13.parquet")[1],
        ["not a partition name ('2024-13' is not YYYY-MM with a month 01-12)"],
    ),
    # Names the month pattern does not even match were skipped: the series vanished from `data info`.
    "partition-2024-1": (
        lambda d: ((d / JAN).rename(d / "2024-1.parquet"), d / "2024-1.parquet")[1],
        ["not a partition name ('2024-1' is not YYYY-MM with a month 01-12)"],
    ),
    "partition-99999-01": (
        lambda d: ((d / JAN).rename(d / "99999-01.parquet"), d / "99999-01.parquet")[1],
        ["not a partition name ('99999-01' is not YYYY-MM"],
    ),
    "partition-january": (
        lambda d: ((d / JAN).rename(d / "january.parquet"), d / "january.parquet")[1],
        ["not a partition name ('january' is not YYYY-MM"],
    ),
    "string-ts-column": (
        lambda d: (_rewrite(d / JAN, lambda df: df.with_columns(pl.col("ts").cast(pl.String))), d / JAN)[1],
        ["column 'ts' must be integer epoch milliseconds, found String"],
    ),
    "fifo-partition": (
        lambda d: ((d / JAN).unlink(), os.mkfifo(d / JAN), d / JAN)[2],
        ["is a FIFO (named pipe), not a regular file"],
    ),
    "folder-partition": (
        lambda d: ((d / JAN).unlink(), (d / JAN).mkdir(), d / JAN)[2],
        ["is a folder, not a regular file"],
    ),
}


# A write into January merges with (so reads) 2024-01.parquet; it never lists the misnamed 2024-13 file.
DAMAGE_READERS = [
    (damage, reader)
    for damage in STORE_DAMAGE
    for reader in ("load_market", "inventory", "read_candles", "write_candles")
    if not (damage.startswith("partition-") and reader == "write_candles")
]


@pytest.mark.parametrize(("damage", "reader"), DAMAGE_READERS)
def test_damaged_store_files_are_one_line_naming_the_file(tmp_path: Path, damage: str, reader: str) -> None:
    root = _store(tmp_path)
    make, words = STORE_DAMAGE[damage]
    named = make(candle_dir(root, EX, SYM, "1m"))
    with pytest.raises(GridctlError) as err:
        _readers(root)[reader]()
    message = str(err.value)
    assert str(named) in message and "\n" not in message, message
    assert all(w in message for w in words), message


@pytest.mark.parametrize("name", ["10000", "24", "2024-01", "funding"])
def test_a_misnamed_funding_partition_is_named(tmp_path: Path, name: str) -> None:
    root = _store(tmp_path)
    path = funding_dir(root, EX, SYM) / "2024.parquet"
    path.rename(path.with_name(f"{name}.parquet"))
    with pytest.raises(GridctlError) as err:
        load_market(root, EX, SYM, "1m")
    message = str(err.value)
    assert f"{name}.parquet: not a partition name ({name!r} is not YYYY with a year" in message, message


def test_a_funding_row_outside_its_year_is_refused(tmp_path: Path) -> None:
    root = _store(tmp_path)
    path = funding_dir(root, EX, SYM) / "2024.parquet"
    _rewrite(
        path,
        lambda df: df.with_columns(
            pl.when(pl.col("ts") == T0).then(T0 - HOUR * 8).otherwise(pl.col("ts")).alias("ts")
        ),
    )
    with pytest.raises(
        GridctlError,
        match=r"2024\.parquet: row 0 .*2023-12-31 16:00:00 UTC\) lies outside the partition's year 2024",
    ):
        load_market(root, EX, SYM, "1m")
