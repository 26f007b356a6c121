"""The on-disk market-data store: monthly candle and yearly funding Parquet partitions.

Layout (see docs/DESIGN.md)::

    <data-dir>/<exchange>/<SYMBOL>/<timeframe>/<YYYY-MM>.parquet        trade candles
    <data-dir>/<exchange>/<SYMBOL>/mark_<timeframe>/<YYYY-MM>.parquet   mark-price candles
    <data-dir>/<exchange>/<SYMBOL>/funding/<YYYY>.parquet               funding settlements

Every write validates first, merges with what is stored (new rows win on equal ``ts``), and replaces each
touched partition atomically, so a failed or interrupted write never leaves a half-written file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from gridctl.configs.errors import GridctlError
from gridctl.configs.files import require_regular_file
from gridctl.data.atomic import atomic_write
from gridctl.data.timeframes import HOUR_MS, TIMEFRAMES, timeframe_ms
from gridctl.data.validate import (
    CANDLE_COLUMNS,
    CANDLE_KINDS,
    FUNDING_COLUMNS,
    check_candle_frame,
    coerce_candle_frame,
    fmt_ts,
    normalise_and_check_funding,
)

# Longest regular funding interval on Binance USD-M; a longer step between settlements is a hole.
FUNDING_MAX_INTERVAL_MS = 8 * HOUR_MS

_EXCHANGE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_MONTH_RE = re.compile(r"^\d{4}-\d{2}\.parquet$")
_YEAR_RE = re.compile(r"^\d{4}\.parquet$")


def default_data_dir() -> Path:
    """``$GRIDCTL_DATA_DIR``, else ``$XDG_DATA_HOME/gridctl``, else ``~/.local/share/gridctl``."""
    explicit = os.environ.get("GRIDCTL_DATA_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    if xdg:
        return Path(xdg).expanduser() / "gridctl"
    return Path.home() / ".local" / "share" / "gridctl"


def symbol_key(symbol: str) -> str:
    """The ccxt symbol made path-safe: ``BTC/USDT:USDT`` -> ``BTC_USDT_USDT``."""
    key = symbol.replace("/", "_").replace(":", "_")
    if not _KEY_RE.match(key):
        raise GridctlError(f"symbol {symbol!r} cannot be stored (expected a ccxt symbol like BTC/USDT:USDT)")
    return key


def symbol_from_key(key: str) -> str:
    """Best-effort inverse of ``symbol_key`` for display: ``BTC_USDT_USDT`` -> ``BTC/USDT:USDT``."""
    parts = key.split("_")
    if len(parts) == 3:
        return f"{parts[0]}/{parts[1]}:{parts[2]}"
    if len(parts) == 2:
        return f"{parts[0]}/{parts[1]}"
    return key


def _exchange(exchange: str) -> str:
    if not _EXCHANGE_RE.match(exchange or ""):
        raise GridctlError(f"exchange {exchange!r} is not a valid name (lower-case letters, digits, _ or -)")
    return exchange


def _kind(kind: str) -> str:
    if kind not in CANDLE_KINDS:
        raise GridctlError(f"unknown candle kind {kind!r} (choose from {', '.join(CANDLE_KINDS)})")
    return kind


def symbol_dir(data_dir: str | os.PathLike[str], exchange: str, symbol: str) -> Path:
    """``<data-dir>/<exchange>/<SYMBOL>``."""
    return Path(data_dir) / _exchange(exchange) / symbol_key(symbol)


def candle_dir(
    data_dir: str | os.PathLike[str], exchange: str, symbol: str, timeframe: str, kind: str = "trade"
) -> Path:
    """Directory of one candle series: ``<timeframe>`` for trades, ``mark_<timeframe>`` for mark prices."""
    timeframe_ms(timeframe)
    name = timeframe if _kind(kind) == "trade" else f"mark_{timeframe}"
    return symbol_dir(data_dir, exchange, symbol) / name


def funding_dir(data_dir: str | os.PathLike[str], exchange: str, symbol: str) -> Path:
    """Directory of the funding series: ``<data-dir>/<exchange>/<SYMBOL>/funding``."""
    return symbol_dir(data_dir, exchange, symbol) / "funding"


def _month_key(ts: np.ndarray) -> np.ndarray:
    return ts.astype("datetime64[ms]").astype("datetime64[M]").astype(str)


def _year_key(ts: np.ndarray) -> np.ndarray:
    return ts.astype("datetime64[ms]").astype("datetime64[Y]").astype(str)


def _partitions(directory: Path, pattern: re.Pattern[str]) -> list[Path]:
    """The partition files of a series folder, oldest first; a misnamed one (``2024-13``, ``2024-1``,
    ``99999-01``, ``10000`` for a year) is an error: read as no data at all, it made the stored series
    vanish from `data info` and the backtest say "no 1m candles" while listing 1m."""
    if not directory.is_dir():
        return []
    names = [p for p in directory.iterdir() if p.name.endswith(".parquet") and not p.name.startswith(".")]
    form = "YYYY with a year 0001-9999" if pattern is _YEAR_RE else "YYYY-MM with a month 01-12"
    for path in names:
        if not pattern.match(path.name):
            raise GridctlError(
                f"{path}: not a partition name ({path.stem!r} is not {form}); rename or remove the file"
            )
    found = sorted(p for p in names if pattern.match(p.name))
    for path in found:
        partition_bounds(path)
    return found


def month_bounds(path: Path) -> tuple[int, int]:
    """[first ms, end ms) of the month a ``YYYY-MM.parquet`` partition holds."""
    return _bounds(path, "M", "YYYY-MM with a month 01-12")


def _year_bounds(path: Path) -> tuple[int, int]:
    return _bounds(path, "Y", "YYYY")


def _bounds(path: Path, unit: str, form: str) -> tuple[int, int]:
    try:
        start = np.datetime64(path.stem, unit)
    except ValueError:
        raise GridctlError(
            f"{path}: not a partition name ({path.stem!r} is not {form}); rename or remove the file"
        ) from None
    return int(start.astype("datetime64[ms]").astype(np.int64)), int(
        (start + 1).astype("datetime64[ms]").astype(np.int64)
    )


def partition_bounds(path: Path) -> tuple[int, int] | None:
    """[first ms, end ms) a monthly or yearly partition file may hold, from its name; None for other names."""
    if _MONTH_RE.match(path.name):
        return month_bounds(path)
    if _YEAR_RE.match(path.name):
        return _year_bounds(path)
    return None


def _overlapping(paths: list[Path], bounds, start_ms: int | None, end_ms: int | None) -> list[Path]:
    chosen = []
    for path in paths:
        lo, hi = bounds(path)
        if (start_ms is None or hi > start_ms) and (end_ms is None or lo < end_ms):
            chosen.append(path)
    return chosen


def candle_partitions(
    data_dir: str | os.PathLike[str],
    exchange: str,
    symbol: str,
    timeframe: str,
    start_ms: int | None = None,
    end_ms: int | None = None,
    kind: str = "trade",
) -> list[Path]:
    """Monthly partition files of a candle series that overlap ``[start_ms, end_ms)``, oldest first."""
    directory = candle_dir(data_dir, exchange, symbol, timeframe, kind)
    return _overlapping(_partitions(directory, _MONTH_RE), month_bounds, start_ms, end_ms)


def funding_partitions(
    data_dir: str | os.PathLike[str],
    exchange: str,
    symbol: str,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> list[Path]:
    """Yearly funding partition files that overlap ``[start_ms, end_ms)``, oldest first."""
    directory = funding_dir(data_dir, exchange, symbol)
    return _overlapping(_partitions(directory, _YEAR_RE), _year_bounds, start_ms, end_ms)


def read_partition(path: Path, columns: tuple[str, ...]) -> pl.DataFrame:
    """Read one partition with exactly ``columns``; a GridctlError naming the file if it is no regular
    file (a FIFO would block), unreadable, has a non-integer ``ts`` or rows outside its month (year)."""
    require_regular_file(path, "data partition")
    try:
        df = pl.read_parquet(path)
    except Exception as err:  # pyarrow/polars raise many types for a corrupt file
        raise GridctlError(f"{path}: not a readable Parquet file ({err})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise GridctlError(f"{path}: missing column(s) {', '.join(missing)}")
    if "ts" in columns:
        dtype = df.schema["ts"]
        if not dtype.is_integer():
            raise GridctlError(f"{path}: column 'ts' must be integer epoch milliseconds, found {dtype}")
        bounds = partition_bounds(path)
        if bounds is not None and df.height:
            ts = df["ts"].to_numpy()
            outside = np.flatnonzero((ts < bounds[0]) | (ts >= bounds[1]))
            if outside.size:
                row = int(outside[0])
                raise GridctlError(
                    f"{path}: row {row} (ts {int(ts[row])} = {fmt_ts(ts[row])}) lies outside the partition's "
                    f"{'month' if _MONTH_RE.match(path.name) else 'year'} {path.stem}; the file is damaged "
                    "or misnamed"
                )
    return df.select(columns)


def _write_partition(path: Path, df: pl.DataFrame) -> None:
    atomic_write(path, lambda tmp: df.write_parquet(tmp, compression="zstd"), clean_untagged=True)


def _merge(new: pl.DataFrame, path: Path, columns: tuple[str, ...]) -> pl.DataFrame:
    if not path.exists():
        return new
    old = read_partition(path, columns)
    return pl.concat([new, old.cast(new.schema)]).unique("ts", keep="first").sort("ts")


def _empty(columns: tuple[str, ...]) -> pl.DataFrame:
    return pl.DataFrame(schema={c: pl.Int64 if c == "ts" else pl.Float64 for c in columns})


def _range(df: pl.DataFrame, start_ms: int | None, end_ms: int | None) -> pl.DataFrame:
    if start_ms is not None:
        df = df.filter(pl.col("ts") >= start_ms)
    if end_ms is not None:
        df = df.filter(pl.col("ts") < end_ms)
    return df


@dataclass(frozen=True)
class Conflict:
    """Stored rows that a write would replace with different values: how many, and the first one."""

    path: Path
    rows: int
    first_ts: int
    column: str
    stored: float
    new: float

    def describe(self) -> str:
        """One line: where, how many, and the first differing value."""
        return (
            f"{self.path}: {self.rows:,} stored row(s) would change, first at {fmt_ts(self.first_ts)} "
            f"({self.column} {self.stored:g} stored, {self.new:g} new)"
        )


def _conflict(new: pl.DataFrame, path: Path, columns: tuple[str, ...]) -> Conflict | None:
    """Rows of ``new`` whose ``ts`` is stored in ``path`` with other values (NaN equals NaN)."""
    if not path.exists():
        return None
    old = read_partition(path, columns).cast(new.schema)
    both = new.join(old, on="ts", how="inner", suffix="_stored").sort("ts")
    if both.height == 0:
        return None
    differs = pl.lit(False)
    for c in columns[1:]:
        a, b = pl.col(c), pl.col(f"{c}_stored")
        differs = differs | ((a != b) & ~(a.is_nan() & b.is_nan())).fill_null(True)
    changed = both.filter(differs)
    if changed.height == 0:
        return None
    row = changed.row(0, named=True)
    column = next(c for c in columns[1:] if not _same(row[c], row[f"{c}_stored"]))
    return Conflict(path, changed.height, int(row["ts"]), column, row[f"{column}_stored"], row[column])


def _same(a: float, b: float) -> bool:
    return a == b or (a != a and b != b)  # NaN equals NaN here


def candle_conflicts(
    data_dir: str | os.PathLike[str],
    exchange: str,
    symbol: str,
    timeframe: str,
    df: pl.DataFrame,
    kind: str = "trade",
) -> list[Conflict]:
    """Stored candles (per partition) that ``write_candles`` would replace with different values."""
    directory = candle_dir(data_dir, exchange, symbol, timeframe, kind)
    new = coerce_candle_frame(df, f"{kind} candles {symbol} {timeframe}").sort("ts")
    months = _month_key(new["ts"].to_numpy())
    found = [
        _conflict(new.filter(pl.Series(months == m)), directory / f"{m}.parquet", CANDLE_COLUMNS)
        for m in np.unique(months)
    ]
    return [c for c in found if c is not None]


def funding_conflicts(
    data_dir: str | os.PathLike[str], exchange: str, symbol: str, df: pl.DataFrame
) -> list[Conflict]:
    """Stored funding settlements that ``write_funding`` would replace with different values."""
    directory = funding_dir(data_dir, exchange, symbol)
    new, _ = normalise_and_check_funding(df.sort("ts"), f"funding {symbol}")
    years = _year_key(new["ts"].to_numpy())
    found = [
        _conflict(new.filter(pl.Series(years == y)), directory / f"{y}.parquet", FUNDING_COLUMNS)
        for y in np.unique(years)
    ]
    return [c for c in found if c is not None]


def write_candles(
    data_dir: str | os.PathLike[str],
    exchange: str,
    symbol: str,
    timeframe: str,
    df: pl.DataFrame,
    kind: str = "trade",
) -> list[Path]:
    """Validate ``df`` (ts, open, high, low, close, volume) and merge it into the monthly partitions.

    Rows are sorted by ``ts``; a duplicate ``ts`` inside ``df`` is an error; on a ``ts`` already stored
    the new row wins. Every partition is validated before any is written. Returns the touched files.
    """
    bar_ms = timeframe_ms(timeframe)
    directory = candle_dir(data_dir, exchange, symbol, timeframe, kind)
    source = f"{kind} candles {symbol} {timeframe}"
    new = coerce_candle_frame(df, source).sort("ts")
    check_candle_frame(new, bar_ms, source, kind)
    if new.height == 0:
        return []
    months = _month_key(new["ts"].to_numpy())
    planned: list[tuple[Path, pl.DataFrame]] = []
    for month in np.unique(months):
        path = directory / f"{month}.parquet"
        merged = _merge(new.filter(pl.Series(months == month)), path, CANDLE_COLUMNS)
        check_candle_frame(merged, bar_ms, str(path), kind)
        planned.append((path, merged))
    for path, merged in planned:
        _write_partition(path, merged)
    return [path for path, _ in planned]


def write_funding(
    data_dir: str | os.PathLike[str], exchange: str, symbol: str, df: pl.DataFrame
) -> list[Path]:
    """Validate ``df`` (ts, rate, mark_price) and merge it into the yearly funding partitions.

    Settlement times within 1 s of a whole hour are snapped onto it (exchange jitter); callers that
    report the count use ``data.validate.normalise_and_check_funding`` first. Further off is an error.
    """
    directory = funding_dir(data_dir, exchange, symbol)
    source = f"funding {symbol}"
    new, _ = normalise_and_check_funding(df.sort("ts") if "ts" in df.columns else df, source)
    if new.height == 0:
        return []
    years = _year_key(new["ts"].to_numpy())
    planned: list[tuple[Path, pl.DataFrame]] = []
    for year in np.unique(years):
        path = directory / f"{year}.parquet"
        merged = _merge(new.filter(pl.Series(years == year)), path, FUNDING_COLUMNS)
        merged, _ = normalise_and_check_funding(merged, str(path))
        planned.append((path, merged))
    for path, merged in planned:
        _write_partition(path, merged)
    return [path for path, _ in planned]


def read_candles(
    data_dir: str | os.PathLike[str],
    exchange: str,
    symbol: str,
    timeframe: str,
    start_ms: int | None = None,
    end_ms: int | None = None,
    kind: str = "trade",
) -> pl.DataFrame:
    """Stored candles with ``start_ms <= ts < end_ms`` (empty frame with the columns if none)."""
    paths = candle_partitions(data_dir, exchange, symbol, timeframe, start_ms, end_ms, kind)
    frames = [read_partition(p, CANDLE_COLUMNS) for p in paths]
    if not frames:
        return _empty(CANDLE_COLUMNS)
    return _range(pl.concat(frames), start_ms, end_ms)


def read_funding(
    data_dir: str | os.PathLike[str],
    exchange: str,
    symbol: str,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> pl.DataFrame:
    """Stored funding settlements with ``start_ms <= ts < end_ms`` (empty frame with the columns if none)."""
    paths = funding_partitions(data_dir, exchange, symbol, start_ms, end_ms)
    frames = [read_partition(p, FUNDING_COLUMNS) for p in paths]
    if not frames:
        return _empty(FUNDING_COLUMNS)
    return _range(pl.concat(frames), start_ms, end_ms)


def coverage(
    data_dir: str | os.PathLike[str], exchange: str, symbol: str, timeframe: str, kind: str = "trade"
) -> list[tuple[int, int]]:
    """Contiguous stored ranges ``[(first_ts, last_ts), ...]`` of one series, oldest first.

    For candles a new range starts wherever a bar is missing; for ``kind="funding"`` (``timeframe`` is
    ignored) wherever two settlements are more than 8 h apart.
    """
    if kind == "funding":
        paths = funding_partitions(data_dir, exchange, symbol)
        step = FUNDING_MAX_INTERVAL_MS
    else:
        paths = candle_partitions(data_dir, exchange, symbol, timeframe, kind=kind)
        step = timeframe_ms(timeframe)
    if not paths:
        return []
    ts = np.concatenate([read_partition(p, ("ts",))["ts"].to_numpy() for p in paths])
    if ts.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(ts) > step)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [ts.size - 1]])
    return [(int(ts[a]), int(ts[b])) for a, b in zip(starts, ends, strict=True)]


@dataclass(frozen=True)
class SeriesInfo:
    """One stored series as ``gridctl data info`` shows it."""

    exchange: str
    symbol: str
    series: str  # "1m", "mark_1m", "funding", ...
    files: int
    rows: int
    first_ts: int
    last_ts: int
    gaps: int
    missing: int  # missing bars (candles) or 0 (funding: gaps are holes longer than 8 h)


def _series_step(name: str) -> int:
    if name == "funding":
        return FUNDING_MAX_INTERVAL_MS
    return timeframe_ms(name.removeprefix("mark_"))


def inventory(data_dir: str | os.PathLike[str]) -> list[SeriesInfo]:
    """Everything stored under ``data_dir``: one entry per (exchange, symbol, series), sorted."""
    root = Path(data_dir)
    found: list[SeriesInfo] = []
    if not root.is_dir():
        return found
    for exchange_dir in sorted(p for p in root.iterdir() if p.is_dir() and _EXCHANGE_RE.match(p.name)):
        for sym_dir in sorted(p for p in exchange_dir.iterdir() if p.is_dir() and _KEY_RE.match(p.name)):
            for series_dir in sorted(p for p in sym_dir.iterdir() if p.is_dir()):
                name = series_dir.name
                if name != "funding" and name.removeprefix("mark_") not in TIMEFRAMES:
                    continue
                paths = _partitions(series_dir, _YEAR_RE if name == "funding" else _MONTH_RE)
                if not paths:
                    continue
                ts = np.concatenate([read_partition(p, ("ts",))["ts"].to_numpy() for p in paths])
                if ts.size == 0:
                    continue
                step = _series_step(name)
                jumps = np.diff(ts)
                holes = jumps[jumps > step]
                missing = 0 if name == "funding" else int((holes // step - 1).sum())
                found.append(
                    SeriesInfo(
                        exchange=exchange_dir.name,
                        symbol=symbol_from_key(sym_dir.name),
                        series=name,
                        files=len(paths),
                        rows=int(ts.size),
                        first_ts=int(ts[0]),
                        last_ts=int(ts[-1]),
                        gaps=int(holes.size),
                        missing=missing,
                    )
                )
    return found
