"""Checks every candle and funding series passes on write, import and load.

Problems that would make a backtest wrong (unsorted or duplicate timestamps, off-grid bars, NaN/inf,
non-positive prices, impossible OHLC) raise ``GridctlError`` naming the source, column, row and timestamp.
Facts a user should know but that are legal (gaps, funding-time jitter snapped to the hour) become
warnings in a ``ValidationReport``. Nothing is repaired silently and no bar is ever fabricated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import polars as pl

from gridctl.configs.errors import GridctlError
from gridctl.data.timeframes import HOUR_MS

CANDLE_COLUMNS: tuple[str, ...] = ("ts", "open", "high", "low", "close", "volume")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
FUNDING_COLUMNS: tuple[str, ...] = ("ts", "rate", "mark_price")
CANDLE_KINDS: tuple[str, ...] = ("trade", "mark")

FUNDING_GRID_MS = HOUR_MS
# Largest |funding rate| per settlement accepted as real. Binance USD-M clamps every rate: the default
# caps are a fraction of the maintenance margin ratio, and the widest adjusted caps it publishes
# (GET /fapi/v1/fundingInfo ``adjustedFundingRateCap``/``Floor``, announcements "capped at +3.00% /
# -3.00%") are 3 % per interval. 5 % leaves headroom above every cap; beyond it a rate is a unit error
# (percent for fraction: 0.01 written 1.0) or corrupt data, and would wipe out a backtest's equity.
MAX_ABS_FUNDING_RATE = 0.05
FUNDING_SNAP_MS = 1_000
LARGEST_GAPS_LISTED = 5
# A funding row at least this large (0.5 % per settlement) that is also ISOLATED_FUNDING_FACTOR times every
# rate within ISOLATED_FUNDING_WINDOW settlements on either side is a unit error, not a market: real
# spikes build up and decay over several settlements (in the shipped real data of six symbols, no rate
# above 0.2 % is more than 22x its largest neighbour), while 0.01 written for "0.01 %" is 100x its
# neighbours of 0.0001.
ISOLATED_FUNDING_MIN = 0.005
ISOLATED_FUNDING_FACTOR = 50.0
ISOLATED_FUNDING_WINDOW = 3
# Price sanity: no perpetual trades above a billion per unit, and no real bar moves a price by more than
# a factor of ten within itself or from the previous close less than a day before (the shipped real
# data of six symbols peaks at 3.8x, an ETH 1h wick in 2021; a cents-for-dollars or corrupt value is
# 100x or far more).
MAX_PRICE = 1e9
MAX_PRICE_JUMP = 10.0
JUMP_WINDOW_MS = 86_400_000
# Timestamps must be 1970-01-01 .. 9999-12-31 UTC: what partition names and dates can express.
MAX_TS_MS = 253_402_300_800_000


def fmt_ts(ms: int) -> str:
    """Epoch ms as a readable UTC time (milliseconds shown only when non-zero); raw ms if out of range."""
    try:
        moment = datetime.fromtimestamp(int(ms) / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return f"{int(ms)} ms (outside the calendar)"
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    if int(ms) % 1000:
        text += f".{int(ms) % 1000:03d}"
    return text + " UTC"


@dataclass(frozen=True)
class Gap:
    """A hole in a bar series: ``missing`` bars between the bars at ``before_ts`` and ``after_ts``."""

    before_ts: int
    after_ts: int
    missing: int


@dataclass(frozen=True)
class GapStats:
    """Gap count, total missing bars and the largest gaps (largest first) of one bar series."""

    count: int
    missing_bars: int
    largest: tuple[Gap, ...]


@dataclass
class ValidationReport:
    """Legal-but-notable facts found while loading: shown to the user, never silently dropped."""

    warnings: list[str] = field(default_factory=list)
    gap_count: int = 0
    missing_bars: int = 0
    largest_gaps: list[Gap] = field(default_factory=list)
    funding_normalised: int = 0

    def add_gaps(self, stats: GapStats, timeframe: str, source: str) -> None:
        """Record the gaps of a bar series and add one warning describing them."""
        if stats.count == 0:
            return
        self.gap_count += stats.count
        self.missing_bars += stats.missing_bars
        merged = sorted([*self.largest_gaps, *stats.largest], key=lambda g: (-g.missing, g.before_ts))
        self.largest_gaps = merged[:LARGEST_GAPS_LISTED]
        listed = ", ".join(
            f"{fmt_ts(g.before_ts)} -> {fmt_ts(g.after_ts)} ({g.missing:,} missing)" for g in stats.largest
        )
        self.warnings.append(
            f"{source}: {stats.count:,} gap(s), {stats.missing_bars:,} missing {timeframe} bars "
            f"(not filled); largest: {listed}"
        )

    def add_funding_normalised(self, count: int, source: str) -> None:
        """Record how many funding timestamps were snapped to the whole hour."""
        if count == 0:
            return
        self.funding_normalised += count
        self.warnings.append(
            f"{source}: {count:,} funding timestamp(s) within {FUNDING_SNAP_MS} ms of the hour "
            "were normalised to the whole hour"
        )


def coerce_candle_frame(df: pl.DataFrame, source: str) -> pl.DataFrame:
    """Check the candle columns and dtypes of ``df``; return it as ts Int64 + Float64 columns."""
    return _coerce(df, CANDLE_COLUMNS, source)


def coerce_funding_frame(df: pl.DataFrame, source: str) -> pl.DataFrame:
    """Check the funding columns and dtypes of ``df``; return it as ts Int64 + Float64 columns."""
    return _coerce(df, FUNDING_COLUMNS, source)


def _coerce(df: pl.DataFrame, columns: tuple[str, ...], source: str) -> pl.DataFrame:
    if not isinstance(df, pl.DataFrame):
        raise GridctlError(f"{source}: expected a polars DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise GridctlError(
            f"{source}: missing column(s) {', '.join(missing)} (expected {', '.join(columns)}; "
            f"found {', '.join(df.columns) or 'none'})"
        )
    ts_dtype = df.schema["ts"]
    if not ts_dtype.is_integer():
        raise GridctlError(f"{source}: column 'ts' must be integer epoch milliseconds, found {ts_dtype}")
    exprs = [pl.col("ts").cast(pl.Int64)]
    for name in columns[1:]:
        dtype = df.schema[name]
        if not dtype.is_numeric():
            raise GridctlError(f"{source}: column {name!r} must be numeric, found {dtype}")
        # Nulls (e.g. an unknown funding mark price) become NaN so downstream code sees one sentinel.
        exprs.append(pl.col(name).cast(pl.Float64).fill_null(float("nan")))
    return df.select(exprs)


def _row_error(source: str, row: int, ts: np.ndarray, what: str) -> GridctlError:
    return GridctlError(f"{source}: row {row} (ts {int(ts[row])} = {fmt_ts(ts[row])}): {what}")


def check_ts_range(ts: np.ndarray, source: str) -> None:
    """Raise for a timestamp before 1970 or after the year 9999 (no partition or date can hold it)."""
    bad = np.flatnonzero((ts < 0) | (ts >= MAX_TS_MS))
    if bad.size:
        raise _row_error(source, int(bad[0]), ts, "timestamp outside 1970-01-01 .. 9999-12-31 UTC")


def check_order(ts: np.ndarray, source: str) -> None:
    """Raise if timestamps are not strictly increasing, naming the first offending row."""
    if ts.size < 2:
        return
    step = np.diff(ts)
    bad = np.flatnonzero(step <= 0)
    if bad.size:
        row = int(bad[0]) + 1
        kind = "duplicate timestamp" if step[bad[0]] == 0 else "timestamp earlier than the previous row"
        raise _row_error(source, row, ts, f"{kind} (rows must be sorted by ts with no duplicates)")


def check_candles(
    ts: np.ndarray,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    bar_ms: int,
    source: str,
    kind: str = "trade",
) -> GapStats:
    """Validate one candle series and return its gaps; raise GridctlError on anything that is not legal.

    ``kind="mark"`` allows a NaN volume column (mark-price klines carry no volume).
    """
    columns = {"open": open_, "high": high, "low": low, "close": close}
    if kind != "mark":
        columns["volume"] = volume
    for name, values in columns.items():
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            row = int(bad[0])
            raise _row_error(source, row, ts, f"column {name!r} is {values[row]} (must be finite)")
    if kind == "mark":
        bad = np.flatnonzero(np.isinf(volume))
        if bad.size:
            raise _row_error(source, int(bad[0]), ts, "column 'volume' is infinite")
    check_ts_range(ts, source)
    off = np.flatnonzero(ts % bar_ms != 0)
    if off.size:
        raise _row_error(source, int(off[0]), ts, f"not on the {bar_ms} ms bar grid (bar open times, UTC)")
    check_order(ts, source)
    for name in PRICE_COLUMNS:
        values = columns[name]
        bad = np.flatnonzero(values <= 0)
        if bad.size:
            row = int(bad[0])
            raise _row_error(source, row, ts, f"column {name!r} is {values[row]} (prices must be positive)")
    bad = np.flatnonzero(volume < 0)
    if bad.size:
        raise _row_error(source, int(bad[0]), ts, f"column 'volume' is {volume[bad[0]]} (must be >= 0)")
    bad = np.flatnonzero(high < np.maximum(open_, close))
    if bad.size:
        row = int(bad[0])
        what = f"high {high[row]} < max(open {open_[row]}, close {close[row]})"
        raise _row_error(source, row, ts, what + " (inconsistent OHLC)")
    bad = np.flatnonzero(low > np.minimum(open_, close))
    if bad.size:
        row = int(bad[0])
        what = f"low {low[row]} > min(open {open_[row]}, close {close[row]})"
        raise _row_error(source, row, ts, what + " (inconsistent OHLC)")
    check_price_moves(ts, high, low, close, source)
    return gap_stats(ts, bar_ms)


def check_price_moves(
    ts: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray, source: str
) -> None:
    """Refuse prices no market prints: above ``MAX_PRICE``, or a bar whose high/low, or whose move from the
    previous close (less than a day before), exceeds a factor ``MAX_PRICE_JUMP`` (OHLC already consistent).
    """
    bad = np.flatnonzero(high > MAX_PRICE)
    if bad.size:
        row = int(bad[0])
        raise _row_error(source, row, ts, f"high {high[row]:g} is above {MAX_PRICE:g} (no real price)")
    bad = np.flatnonzero(high > MAX_PRICE_JUMP * low)
    if bad.size:
        row = int(bad[0])
        raise _row_error(
            source,
            row,
            ts,
            f"high {high[row]:g} is {high[row] / low[row]:,.4g}x the low {low[row]:g}, beyond any real "
            f"move within one bar (at most {MAX_PRICE_JUMP:g}x is accepted)",
        )
    if ts.size < 2:
        return
    prev = close[:-1]
    near = np.diff(ts) <= JUMP_WINDOW_MS
    bad = np.flatnonzero(near & ((high[1:] > MAX_PRICE_JUMP * prev) | (prev > MAX_PRICE_JUMP * low[1:])))
    if bad.size:
        row = int(bad[0]) + 1
        far = high[row] if high[row] > MAX_PRICE_JUMP * prev[row - 1] else low[row]
        raise _row_error(
            source,
            row,
            ts,
            f"price {far:g} is {max(far / prev[row - 1], prev[row - 1] / far):,.4g}x away from the previous "
            f"close {prev[row - 1]:g}, beyond any real move (at most {MAX_PRICE_JUMP:g}x is accepted)",
        )


def check_candle_frame(df: pl.DataFrame, bar_ms: int, source: str, kind: str = "trade") -> GapStats:
    """``check_candles`` on a coerced candle DataFrame."""
    return check_candles(
        df["ts"].to_numpy(),
        df["open"].to_numpy(),
        df["high"].to_numpy(),
        df["low"].to_numpy(),
        df["close"].to_numpy(),
        df["volume"].to_numpy(),
        bar_ms,
        source,
        kind,
    )


def gap_stats(ts: np.ndarray, bar_ms: int) -> GapStats:
    """Count gaps (steps longer than one bar) in a sorted, on-grid series; list the largest ones."""
    if ts.size < 2:
        return GapStats(0, 0, ())
    step = np.diff(ts)
    where = np.flatnonzero(step > bar_ms)
    if where.size == 0:
        return GapStats(0, 0, ())
    missing = step[where] // bar_ms - 1
    order = np.argsort(-missing, kind="stable")[:LARGEST_GAPS_LISTED]
    largest = tuple(Gap(int(ts[where[i]]), int(ts[where[i] + 1]), int(missing[i])) for i in order)
    return GapStats(int(where.size), int(missing.sum()), largest)


def normalise_funding_ts(ts: np.ndarray, source: str) -> tuple[np.ndarray, int]:
    """Snap settlement times within 1 s of a whole UTC hour onto it; raise for anything further off.

    Real exchange data carries a few ms of jitter (08:00:00.017). Returns (snapped ts, how many moved).
    """
    ts = np.asarray(ts, dtype=np.int64)
    check_ts_range(ts, source)
    nearest = (ts + FUNDING_GRID_MS // 2) // FUNDING_GRID_MS * FUNDING_GRID_MS
    off = ts - nearest
    bad = np.flatnonzero(np.abs(off) > FUNDING_SNAP_MS)
    if bad.size:
        raise _row_error(
            source,
            int(bad[0]),
            ts,
            f"funding time is {int(off[bad[0]])} ms from the nearest whole hour "
            f"(at most {FUNDING_SNAP_MS} ms of jitter is accepted)",
        )
    return nearest, int(np.count_nonzero(off))


def check_funding(ts: np.ndarray, rate: np.ndarray, mark: np.ndarray, source: str) -> None:
    """Validate an on-grid funding series: sorted, unique, on whole hours, finite rates within
    ``MAX_ABS_FUNDING_RATE``, mark NaN or > 0."""
    check_ts_range(ts, source)
    off = np.flatnonzero(ts % FUNDING_GRID_MS != 0)
    if off.size:
        raise _row_error(source, int(off[0]), ts, "funding time is not on a whole UTC hour")
    check_order(ts, source)
    bad = np.flatnonzero(~np.isfinite(rate))
    if bad.size:
        raise _row_error(source, int(bad[0]), ts, f"column 'rate' is {rate[bad[0]]} (must be finite)")
    bad = np.flatnonzero(np.abs(rate) > MAX_ABS_FUNDING_RATE)
    if bad.size:
        raise _row_error(
            source,
            int(bad[0]),
            ts,
            f"column 'rate' is {rate[bad[0]]:g} ({rate[bad[0]]:.2%} per settlement), beyond the "
            f"{MAX_ABS_FUNDING_RATE:.0%} no Binance USD-M cap allows (a rate is a fraction: 0.0001 = 0.01%)",
        )
    bad = np.flatnonzero(np.isinf(mark) | (mark <= 0))
    if bad.size:
        raise _row_error(
            source, int(bad[0]), ts, f"column 'mark_price' is {mark[bad[0]]} (must be positive or NaN)"
        )
    check_isolated_funding(ts, rate, source)


def check_isolated_funding(ts: np.ndarray, rate: np.ndarray, source: str) -> None:
    """Refuse a rate of at least ``ISOLATED_FUNDING_MIN`` that is ``ISOLATED_FUNDING_FACTOR`` times every
    rate within ``ISOLATED_FUNDING_WINDOW`` settlements of it: a percent written as a fraction."""
    size = np.abs(rate)
    for row in np.flatnonzero(size >= ISOLATED_FUNDING_MIN):
        lo, hi = max(row - ISOLATED_FUNDING_WINDOW, 0), min(row + ISOLATED_FUNDING_WINDOW + 1, size.size)
        neighbours = np.concatenate([size[lo:row], size[row + 1 : hi]])
        if neighbours.size and size[row] >= ISOLATED_FUNDING_FACTOR * neighbours.max():
            raise _row_error(
                source,
                int(row),
                ts,
                f"column 'rate' is {rate[row]:g} ({rate[row]:.2%}), {ISOLATED_FUNDING_FACTOR:g}x or more "
                f"every rate within {ISOLATED_FUNDING_WINDOW} settlements (largest {neighbours.max():g}); "
                "a percent written as a fraction? (0.01 % is 0.0001)",
            )


def normalise_and_check_funding(df: pl.DataFrame, source: str) -> tuple[pl.DataFrame, int]:
    """Coerce, snap jitter and validate a funding frame (sorted by the caller's data, never re-sorted).

    Returns the clean frame and how many timestamps were snapped.
    """
    df = coerce_funding_frame(df, source)
    snapped, moved = normalise_funding_ts(df["ts"].to_numpy(), source)
    df = df.with_columns(pl.Series("ts", snapped, dtype=pl.Int64))
    check_funding(snapped, df["rate"].to_numpy(), df["mark_price"].to_numpy(), source)
    return df, moved
