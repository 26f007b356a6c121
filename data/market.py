"""Load a validated market (candles + funding) from the store into contiguous numpy arrays for the kernels."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl

from gridctl.configs.errors import GridctlError
from gridctl.data.store import (
    FUNDING_MAX_INTERVAL_MS,
    candle_partitions,
    funding_dir,
    funding_partitions,
    month_bounds,
    read_partition,
    symbol_dir,
)
from gridctl.data.timeframes import TIMEFRAMES, timeframe_ms
from gridctl.data.validate import (
    CANDLE_COLUMNS,
    FUNDING_COLUMNS,
    ValidationReport,
    check_candle_frame,
    check_candles,
    check_funding,
    coerce_candle_frame,
    fmt_ts,
    gap_stats,
    normalise_and_check_funding,
    normalise_funding_ts,
)

__all__ = ["Market", "ValidationReport", "load_market", "market_from_arrays", "to_ms"]


@dataclass(frozen=True)
class Market:
    """One symbol's bars plus the funding settlements that apply to them (see docs/DESIGN.md)."""

    symbol: str
    timeframe: str
    bar_ms: int
    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    funding_ts: np.ndarray
    funding_rate: np.ndarray
    funding_mark: np.ndarray
    report: ValidationReport

    def __len__(self) -> int:
        return int(self.ts.size)


def to_ms(value: int | str | date | datetime | None, name: str) -> int | None:
    """Epoch ms from an int (already ms), an ISO date/datetime string or a date/datetime (UTC if naive)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise GridctlError(f"{name}: {value!r} is not a time")
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise GridctlError(
                f"{name}: {value!r} is not a date (expected YYYY-MM-DD or ISO datetime)"
            ) from None
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return round(value.timestamp() * 1000)
    raise GridctlError(f"{name}: {value!r} is not a time")


def _f64(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.float64)


def _i64(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.int64)


def _stored_timeframes(data_dir: str | os.PathLike[str], exchange: str, symbol: str, mark: bool) -> list[str]:
    base = symbol_dir(data_dir, exchange, symbol)
    prefix = "mark_" if mark else ""
    found = [tf for tf in TIMEFRAMES if (base / f"{prefix}{tf}").is_dir()]
    return found


def _require_rows(df: pl.DataFrame, path: Path) -> None:
    """The store never writes an empty partition, so a 0-row file is damaged: say so, naming it."""
    if df.height == 0:
        raise GridctlError(
            f"{path}: the file holds 0 rows (the store never writes an empty partition, so it is damaged); "
            "delete it and download, import or generate that period again"
        )


class _Candles(NamedTuple):
    """Candle columns as owned, contiguous numpy arrays (ts int64, the rest float64)."""

    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray


def _read_checked_candles(
    paths: list[Path], bar_ms: int, kind: str, start_ms: int | None = None, end_ms: int | None = None
) -> _Candles:
    """Read and validate each partition (errors name the file), check that files do not overlap, and
    return the bars with ``start_ms <= ts < end_ms`` as numpy arrays.

    Each partition's rows are copied into arrays sized from the partitions' month bounds, and its
    frame is dropped before the next file is read: no frame per partition and no concatenated frame
    stay alive beside the arrays (a year of 1m bars is ~25 MB of arrays; the frames used to triple it).
    """
    # A monthly partition holds at most one bar per bar_ms of its month inside [start_ms, end_ms):
    # read_partition refuses rows outside the file's month, and check_candle_frame duplicates.
    lo_ms = -(2**62) if start_ms is None else start_ms
    hi_ms = 2**62 if end_ms is None else end_ms
    capacity = 0
    for lo, hi in map(month_bounds, paths):
        lo, hi = max(lo, lo_ms), min(hi, hi_ms)
        capacity += max(-(-(hi - lo) // bar_ms), 0)
    cols = [np.empty(capacity, np.int64 if c == "ts" else np.float64) for c in CANDLE_COLUMNS]
    filled = 0
    previous: tuple[Path, int] | None = None
    for path in paths:
        df = coerce_candle_frame(read_partition(path, CANDLE_COLUMNS), str(path))
        _require_rows(df, path)
        check_candle_frame(df, bar_ms, str(path), kind)
        ts = df["ts"].to_numpy()
        first = int(ts[0])
        if previous is not None and first <= previous[1]:
            raise GridctlError(
                f"{path}: first bar {fmt_ts(first)} is not after the last bar of {previous[0]} "
                f"({fmt_ts(previous[1])}); partitions overlap"
            )
        previous = (path, int(ts[-1]))
        lo = 0 if start_ms is None else int(np.searchsorted(ts, start_ms, side="left"))
        hi = ts.size if end_ms is None else int(np.searchsorted(ts, end_ms, side="left"))
        rows = max(hi - lo, 0)
        for out, name in zip(cols, CANDLE_COLUMNS, strict=True):
            out[filled : filled + rows] = df[name].to_numpy()[lo:hi]
        filled += rows
        del df, ts
    for c in cols:
        if c.size > filled:  # missing bars: give the spare rows back (realloc in place, no copy)
            c.resize(filled, refcheck=False)
        c.flags.writeable = False  # loaded bars are read-only, as the Parquet-backed arrays were
    return _Candles(*cols)


def _read_checked_funding(paths: list[Path], report: ValidationReport) -> pl.DataFrame:
    frames: list[pl.DataFrame] = []
    previous: tuple[Path, int] | None = None
    for path in paths:
        df, moved = normalise_and_check_funding(read_partition(path, FUNDING_COLUMNS), str(path))
        _require_rows(df, path)
        report.add_funding_normalised(moved, str(path))
        first = int(df["ts"][0])
        if previous is not None and first <= previous[1]:
            raise GridctlError(
                f"{path}: first settlement {fmt_ts(first)} is not after the last one of {previous[0]}; "
                "partitions overlap"
            )
        previous = (path, int(df["ts"][-1]))
        frames.append(df)
    if not frames:
        return pl.DataFrame(schema={c: pl.Int64 if c == "ts" else pl.Float64 for c in FUNDING_COLUMNS})
    return pl.concat(frames, rechunk=True)


def _clip_warnings(
    ts: np.ndarray,
    bar_ms: int,
    start_ms: int | None,
    end_ms: int | None,
    series: str,
    report: ValidationReport,
) -> None:
    """Warn when the requested range reaches beyond the stored bars (the run is shorter than asked)."""
    if start_ms is not None and int(ts[0]) > -(-start_ms // bar_ms) * bar_ms:
        report.warnings.append(
            f"{series}: the requested start {fmt_ts(start_ms)} is before the first stored bar in range "
            f"({fmt_ts(ts[0])}); it trades from there (a basket's other symbols may start earlier)"
        )
    if end_ms is not None and int(ts[-1]) < -(-end_ms // bar_ms) * bar_ms - bar_ms:
        report.warnings.append(
            f"{series}: the requested end {fmt_ts(end_ms)} is after the last stored bar in range "
            f"({fmt_ts(ts[-1])}, closing {fmt_ts(int(ts[-1]) + bar_ms)}); it trades up to there (a basket's "
            "other symbols may go on)"
        )


def _select_funding(fts: np.ndarray, first_bar: int, last_close: int) -> tuple[int, int]:
    """Index range [i0, i1) of settlements the bars need: the last one at or before the first bar,
    every one inside, and the first one after the last bar's close (the funding guard looks ahead)."""
    i0 = max(int(np.searchsorted(fts, first_bar, side="right")) - 1, 0)
    i1 = min(int(np.searchsorted(fts, last_close, side="right")) + 1, fts.size)
    return i0, i1


def _funding_warnings(
    fts: np.ndarray, first_bar: int, last_bar: int, source: str, report: ValidationReport, strict: bool
) -> None:
    """Report how the funding series covers the bars.

    A series that starts after the first bar is a warning (the kernel blocks entries until a rate is
    known: fail closed). A series that ends early or has holes would leave settlements unpaid and the
    funding guard blind; with ``strict`` (data from the store) that is an error, never a silent default.
    """
    problems: list[str] = []
    if fts[0] > first_bar:
        report.warnings.append(
            f"{source}: the first funding settlement ({fmt_ts(fts[0])}) is after the first bar "
            f"({fmt_ts(first_bar)}); the rate is unknown before it, so new entries are blocked until then"
        )
    if fts[-1] + FUNDING_MAX_INTERVAL_MS < last_bar:
        problems.append(
            f"{source}: the funding series ends at {fmt_ts(fts[-1])}, before the last bar "
            f"({fmt_ts(last_bar)}); later settlements are missing"
        )
    holes = np.flatnonzero(np.diff(fts) > FUNDING_MAX_INTERVAL_MS)
    if holes.size:
        first = int(holes[0])
        problems.append(
            f"{source}: {holes.size} hole(s) longer than 8 h in the funding series, first after "
            f"{fmt_ts(fts[first])} (next settlement {fmt_ts(fts[first + 1])})"
        )
    if problems and strict:
        raise GridctlError(
            "; ".join(problems) + ". Download or import the missing funding "
            "(gridctl data download --kinds funding ...) or choose --start/--end inside the covered range"
        )
    report.warnings.extend(problems)


def _fill_mark_from_candles(
    data_dir: str | os.PathLike[str],
    exchange: str,
    symbol: str,
    fts: np.ndarray,
    mark: np.ndarray,
) -> np.ndarray:
    """Fill NaN marks with the open of a stored mark bar starting at the settlement (finest tf first)."""
    mark = mark.copy()
    for tf in _stored_timeframes(data_dir, exchange, symbol, mark=True):
        need = np.flatnonzero(np.isnan(mark))
        if need.size == 0:
            break
        wanted = fts[need]
        paths = candle_partitions(
            data_dir, exchange, symbol, tf, int(wanted[0]), int(wanted[-1]) + 1, kind="mark"
        )
        if not paths:
            continue
        # Mark candles pass the same checks as trade candles (file and row named on NaN, <= 0, damage).
        stored = _read_checked_candles(paths, timeframe_ms(tf), "mark", int(wanted[0]), int(wanted[-1]) + 1)
        keep = np.isin(stored.ts, wanted)
        if not keep.any():
            continue
        bar_ts, bar_open = stored.ts[keep], stored.open[keep]  # sorted: partitions are checked
        del stored
        pos = np.clip(np.searchsorted(bar_ts, wanted), 0, bar_ts.size - 1)
        hit = (bar_ts[pos] == wanted) & np.isfinite(bar_open[pos]) & (bar_open[pos] > 0)
        mark[need[hit]] = bar_open[pos[hit]]
    return mark


def load_market(
    data_dir: str | os.PathLike[str],
    exchange: str,
    symbol: str,
    timeframe: str,
    start: int | str | date | datetime | None = None,
    end: int | str | date | datetime | None = None,
) -> Market:
    """Load, validate and return bars in ``[start, end)`` (epoch ms or ISO date, UTC) with their funding.

    Funding includes the last settlement at or before the first bar (so its rate is known) and the first
    one after the last bar's close (so the funding guard sees the next settlement); settlements more than
    8 h away from the bars are ignored as stale, and none at all is an error. A settlement's mark
    price comes from the funding file, else from the open of a stored mark-price bar starting at it,
    else stays NaN (the engine then uses the trade open and says so).
    """
    bar_ms = timeframe_ms(timeframe)
    start_ms, end_ms = to_ms(start, "start"), to_ms(end, "end")
    if start_ms is not None and end_ms is not None and end_ms <= start_ms:
        raise GridctlError(f"end ({fmt_ts(end_ms)}) must be after start ({fmt_ts(start_ms)})")
    if not Path(data_dir).is_dir():
        raise GridctlError(
            f"data folder {data_dir} does not exist (or is not a folder); get data with "
            "`gridctl data download`, `gridctl data import` or `gridctl data sample`"
        )
    report = ValidationReport()
    series = f"{exchange} {symbol} {timeframe}"
    paths = candle_partitions(data_dir, exchange, symbol, timeframe, start_ms, end_ms)
    candles = _read_checked_candles(paths, bar_ms, "trade", start_ms, end_ms)
    if candles.ts.size == 0:
        raise _no_candles(data_dir, exchange, symbol, timeframe, start_ms, end_ms)
    ts = candles.ts
    report.add_gaps(gap_stats(ts, bar_ms), timeframe, series)
    _clip_warnings(ts, bar_ms, start_ms, end_ms, series, report)

    fts, rate, mark = _load_funding(data_dir, exchange, symbol, int(ts[0]), int(ts[-1]), bar_ms, report)
    return Market(
        symbol=symbol,
        timeframe=timeframe,
        bar_ms=bar_ms,
        ts=ts,
        open=candles.open,
        high=candles.high,
        low=candles.low,
        close=candles.close,
        volume=candles.volume,
        funding_ts=fts,
        funding_rate=rate,
        funding_mark=mark,
        report=report,
    )


_GET_DATA = "get them with `gridctl data download`, `gridctl data import` or `gridctl data sample`"


def _no_candles(
    data_dir: str | os.PathLike[str],
    exchange: str,
    symbol: str,
    timeframe: str,
    start_ms: int | None,
    end_ms: int | None,
) -> GridctlError:
    """The error for a series with no bars in ``[start_ms, end_ms)`` (None: open): what is stored, where
    the window lies against it, and the command that would help (resample a finer stored timeframe
    that would build a bar there, else get data)."""
    bar_ms = timeframe_ms(timeframe)
    whole = start_ms is None and end_ms is None
    stored = _stored_timeframes(data_dir, exchange, symbol, mark=False)
    have = f"stored timeframes: {', '.join(stored)}" if stored else "nothing stored for this symbol"
    finer = [tf for tf in stored if timeframe_ms(tf) < bar_ms and bar_ms % timeframe_ms(tf) == 0]
    if not whole:  # resampling helps only if it would build a bar inside the window
        finer = [tf for tf in finer if _fills_a_bar(data_dir, exchange, symbol, tf, bar_ms, start_ms, end_ms)]
    in_range = "" if whole else " in the requested range"
    head = f"no {timeframe} candles for {symbol} on {exchange}{in_range} in {data_dir}"
    how = ""
    if finer:
        source = finer[-1]  # the coarsest stored timeframe that divides the wanted one
        how = (
            f"build them from the stored {source} bars with `gridctl data resample --exchange "
            f"{exchange} --symbol {symbol} --from {source} --to {timeframe} --data-dir {data_dir}`"
        )
    paths = candle_partitions(data_dir, exchange, symbol, timeframe)
    if not whole and paths:
        # The timeframe is stored, only not in this window: say where the window lies against it.
        before = _bar_before(paths, start_ms)
        after = _bar_from(paths, end_ms)
        flags = "(--start/--end, or a profile's data.start/end)"
        # A gap only if some bar opens inside the window (that bar is missing): otherwise no missing bar
        # would fill the window, however far apart its stored neighbours are.
        gap = start_ms is not None and end_ms is not None and -(-start_ms // bar_ms) * bar_ms < end_ms
        if before is not None and after is not None and gap:
            where = (
                f"the window falls in a gap of the stored {timeframe} candles (the last bar before it opens "
                f"{fmt_ts(before)}, the next one {fmt_ts(after)})"
            )
            how = how or (
                "get the missing bars with `gridctl data download` or `gridctl data import`, or choose a "
                f"window with stored bars {flags}"
            )
        elif before is not None and after is not None:
            where = (
                f"no {timeframe} bar opens inside the window (stored bars open at {fmt_ts(before)} and "
                f"next at {fmt_ts(after)})"
            )
            how = how or f"widen the window to hold a bar's open {flags}"
        else:
            first = read_partition(paths[0], ("ts",))["ts"].min()
            last = read_partition(paths[-1], ("ts",))["ts"].max()
            if first is None or last is None:  # an empty (damaged) partition: say only what is stored
                return GridctlError(f"{head} ({have}); {how or _GET_DATA}")
            where = f"its stored {timeframe} candles run {fmt_ts(first)} .. {fmt_ts(last)}"
            how = how or (
                f"choose a window inside them {flags}, or get the missing bars with "
                "`gridctl data download` or `gridctl data import`"
            )
        return GridctlError(f"{head}: {where}; {how}")
    return GridctlError(f"{head} ({have}); {how or _GET_DATA}")


def _bar_before(paths: list[Path], start_ms: int | None) -> int | None:
    """Open time of the last stored bar before ``start_ms`` in ``paths`` (oldest first), None if none."""
    if start_ms is None:
        return None
    for path in reversed(paths):
        if month_bounds(path)[0] < start_ms:
            ts = read_partition(path, ("ts",))["ts"].to_numpy()
            ts = ts[ts < start_ms]
            if ts.size:
                return int(ts.max())
    return None


def _bar_from(paths: list[Path], end_ms: int | None) -> int | None:
    """Open time of the first stored bar at or after ``end_ms`` in ``paths`` (oldest first), None if none."""
    if end_ms is None:
        return None
    for path in paths:
        if month_bounds(path)[1] > end_ms:
            ts = read_partition(path, ("ts",))["ts"].to_numpy()
            ts = ts[ts >= end_ms]
            if ts.size:
                return int(ts.min())
    return None


def _fills_a_bar(
    data_dir: str | os.PathLike[str],
    exchange: str,
    symbol: str,
    source: str,
    bar_ms: int,
    start_ms: int | None,
    end_ms: int | None,
) -> bool:
    """Whether the stored ``source`` bars fill every slot of some ``bar_ms`` bar opening in
    ``[start_ms, end_ms)``: the bar `gridctl data resample` would build there (it skips partial ones)."""
    lo = None if start_ms is None else -(-start_ms // bar_ms) * bar_ms
    hi = None if end_ms is None else -(-end_ms // bar_ms) * bar_ms
    per_bar = bar_ms // timeframe_ms(source)
    # Every timeframe divides a day, so no bar straddles two monthly partitions.
    for path in candle_partitions(data_dir, exchange, symbol, source, lo, hi):
        ts = np.unique(read_partition(path, ("ts",))["ts"].to_numpy())
        if lo is not None:
            ts = ts[ts >= lo]
        if hi is not None:
            ts = ts[ts < hi]
        if ts.size and (np.unique(ts // bar_ms, return_counts=True)[1] == per_bar).any():
            return True
    return False


def _load_funding(
    data_dir: str | os.PathLike[str],
    exchange: str,
    symbol: str,
    first_bar: int,
    last_bar: int,
    bar_ms: int,
    report: ValidationReport,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(times, rates, mark prices) of the funding settlements that cover bars ``first_bar..last_bar``,
    checked, with their warnings in ``report``; a missing mark price comes from the stored mark bars."""
    if not funding_partitions(data_dir, exchange, symbol):
        raise GridctlError(
            f"no funding series for {symbol} on {exchange} in {funding_dir(data_dir, exchange, symbol)}; "
            f"get it with `gridctl data download --symbol {symbol} --kinds funding --start ... --end ...` "
            "or `gridctl data import` (a Binance fundingRate archive or a freqtrade funding_rate file)"
        )
    last_close = last_bar + bar_ms
    funding_paths = funding_partitions(
        data_dir,
        exchange,
        symbol,
        first_bar - FUNDING_MAX_INTERVAL_MS,
        last_close + FUNDING_MAX_INTERVAL_MS + 1,
    )
    funding = _read_checked_funding(funding_paths, report)
    # Only settlements within one interval of the bars count: an older one would be a stale rate.
    funding = funding.filter(
        pl.col("ts").is_between(first_bar - FUNDING_MAX_INTERVAL_MS, last_close + FUNDING_MAX_INTERVAL_MS)
    )
    fts_all = funding["ts"].to_numpy()
    i0, i1 = _select_funding(fts_all, first_bar, last_close)
    if i1 <= i0:
        raise GridctlError(
            f"no funding settlements for {symbol} on {exchange} between {fmt_ts(first_bar)} and "
            f"{fmt_ts(last_close)} (nor within 8 h of them); download or import funding for that period"
        )
    fts = _i64(fts_all[i0:i1])
    rate = _f64(funding["rate"].to_numpy()[i0:i1])
    mark = _f64(funding["mark_price"].to_numpy()[i0:i1])
    _funding_warnings(fts, first_bar, last_bar, f"{exchange} {symbol} funding", report, strict=True)
    if np.isnan(mark).any():
        mark = _fill_mark_from_candles(data_dir, exchange, symbol, fts, mark)
        unknown = int(np.isnan(mark).sum())
        if unknown:
            report.warnings.append(
                f"{exchange} {symbol} funding: {unknown} of {mark.size} settlements have no mark price "
                "(none in the funding file or stored mark candles); the trade open is used for them"
            )
    return fts, rate, mark


def market_from_arrays(
    symbol: str,
    timeframe: str,
    ts: np.ndarray,
    open: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    funding_ts: np.ndarray,
    funding_rate: np.ndarray,
    funding_mark: np.ndarray | None = None,
    source: str = "arrays",
) -> Market:
    """Build a Market from in-memory arrays (tests, live bridge), with the same validation as a load.

    Funding times within 1 s of the hour are snapped (and reported); ``funding_mark`` defaults to NaN.

    Wide because: one argument per column of the Market it builds, named as Market's fields, so a
    caller holding loose arrays passes each by name (a Market itself is what it returns).
    """
    bar_ms = timeframe_ms(timeframe)
    arrays = [_f64(a) for a in (open, high, low, close, volume)]
    ts = _i64(ts)
    if any(a.shape != ts.shape for a in arrays):
        raise GridctlError(f"{source}: ts, open, high, low, close and volume must have the same length")
    if ts.size == 0:
        raise GridctlError(f"{source}: no bars")
    report = ValidationReport()
    report.add_gaps(check_candles(ts, *arrays, bar_ms, source), timeframe, source)
    fts, moved = normalise_funding_ts(_i64(funding_ts), f"{source} funding")
    report.add_funding_normalised(moved, f"{source} funding")
    rate = _f64(funding_rate)
    mark = np.full(fts.size, np.nan) if funding_mark is None else _f64(funding_mark)
    if rate.shape != fts.shape or mark.shape != fts.shape:
        raise GridctlError(f"{source}: funding_ts, funding_rate and funding_mark must have the same length")
    check_funding(fts, rate, mark, f"{source} funding")
    if fts.size:
        _funding_warnings(fts, int(ts[0]), int(ts[-1]), f"{source} funding", report, strict=False)
    else:
        report.warnings.append(f"{source}: no funding settlements; new entries stay blocked (rate unknown)")
    return Market(symbol, timeframe, bar_ms, ts, *arrays, _i64(fts), rate, _f64(mark), report)
