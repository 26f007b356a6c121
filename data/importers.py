"""Import market data files into the store: Binance USD-M archives and freqtrade futures data files.

Recognised file names (a directory is searched recursively; anything else is skipped and reported):
- Binance klines ``BTCUSDT-1m-2024-01.zip`` / ``BTCUSDT-1m-2024-01-05.csv`` (zip or extracted csv, with or
  without a header row, open times in ms or µs); under a ``markPriceKlines`` folder, or with
  ``kind="mark"``, they are mark-price klines.
- Binance funding ``BTCUSDT-fundingRate-2024-01.zip`` (calc_time, funding_interval_hours, last_funding_rate).
- freqtrade ``<PAIR>-<tf>-futures.feather``, ``<PAIR>-<tf>-mark.feather`` and
  ``<PAIR>-<tf>-funding_rate.feather`` (funding rate in ``open``).
Every file is parsed and validated before anything is written, so a bad file leaves the store untouched.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.feather as feather

from gridctl.configs.errors import GridctlError
from gridctl.configs.files import path_kind, require_regular_file
from gridctl.data.store import Conflict, candle_conflicts, funding_conflicts, write_candles, write_funding
from gridctl.data.timeframes import TIMEFRAMES, timeframe_ms
from gridctl.data.validate import (
    CANDLE_COLUMNS,
    FUNDING_COLUMNS,
    ValidationReport,
    check_candle_frame,
    fmt_ts,
    gap_stats,
    normalise_and_check_funding,
)

BINANCE_KLINE_COLUMNS: tuple[str, ...] = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "ignore",
)
BINANCE_FUNDING_COLUMNS: tuple[str, ...] = ("calc_time", "funding_interval_hours", "last_funding_rate")
_QUOTES = ("USDT", "USDC", "BUSD", "FDUSD")
_MICROSECONDS_ABOVE = 10**14  # ms timestamps are ~1.7e12, µs ~1.7e15

_BINANCE_KLINES = re.compile(
    r"^(?P<pair>[A-Z0-9]+)-(?P<tf>\d+[A-Za-z]{1,2})-(?P<date>\d{4}-\d{2}(?:-\d{2})?)\.(?P<ext>zip|csv)$"
)
_BINANCE_FUNDING = re.compile(
    r"^(?P<pair>[A-Z0-9]+)-fundingRate-(?P<date>\d{4}-\d{2}(?:-\d{2})?)\.(?P<ext>zip|csv)$"
)
_FREQTRADE = re.compile(
    r"^(?P<pair>[A-Z0-9]+(?:_[A-Z0-9]+){1,2})-(?P<tf>\d+[mhdw])-(?P<type>futures|mark|funding_rate)\.feather$"
)
_UNSUPPORTED_FOLDERS = ("indexPriceKlines", "premiumIndexKlines")


@dataclass(frozen=True)
class _Parsed:
    """One recognised file, parsed and validated."""

    symbol: str
    kind: str  # "trade" | "mark" | "funding"
    timeframe: str | None
    df: pl.DataFrame
    source: str
    normalised: int = 0
    note: str = ""  # plain files: the symbol, kind and timeframe inferred, and from where


@dataclass(frozen=True)
class ImportedSeries:
    """One series written by an import."""

    exchange: str
    symbol: str
    kind: str
    timeframe: str | None
    rows: int
    first_ts: int
    last_ts: int
    files: tuple[str, ...]
    gaps: int
    missing_bars: int


@dataclass
class ImportSummary:
    """What an import wrote, what it skipped (with reasons) and the validation warnings."""

    series: list[ImportedSeries] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    report: ValidationReport = field(default_factory=ValidationReport)
    replaced: list[Conflict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was inferred for plain Parquet/CSV files

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "series": [s.__dict__ | {"files": list(s.files)} for s in self.series],
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "replaced": [
                {"path": str(c.path), "rows": c.rows, "first_ts": c.first_ts} for c in self.replaced
            ],
            "warnings": list(self.report.warnings),
            "funding_normalised": self.report.funding_normalised,
            "inferred": list(self.notes),
        }

    def describe(self) -> str:
        """Human-readable multi-line summary."""
        lines = list(self.notes)
        for s in self.series:
            what = f"{s.kind} {s.timeframe}" if s.timeframe else s.kind
            lines.append(
                f"imported {s.exchange} {s.symbol} {what}: {s.rows:,} rows, {fmt_ts(s.first_ts)} -> "
                f"{fmt_ts(s.last_ts)} from {len(s.files)} file(s)"
                + (f"; {s.gaps} gap(s), {s.missing_bars:,} missing bars" if s.gaps else "")
            )
        lines += [f"replaced {c.describe().replace(' would change', ' changed')}" for c in self.replaced]
        lines += [f"warning: {w}" for w in self.report.warnings]
        lines += [f"skipped {p}: {r}" for p, r in self.skipped]
        return "\n".join(lines)


def binance_pair_to_symbol(pair: str) -> str:
    """Binance USD-M contract id to ccxt symbol: ``BTCUSDT`` -> ``BTC/USDT:USDT``."""
    for quote in _QUOTES:
        if pair.endswith(quote) and len(pair) > len(quote):
            return f"{pair[: -len(quote)]}/{quote}:{quote}"
    raise GridctlError(
        f"{pair!r} is not a linear USD-M contract id (quote must be one of {', '.join(_QUOTES)})"
    )


def freqtrade_pair_to_symbol(pair: str) -> str:
    """freqtrade file pair to ccxt symbol: ``XRP_USDT_USDT`` -> ``XRP/USDT:USDT``."""
    parts = pair.split("_")
    return f"{parts[0]}/{parts[1]}:{parts[2]}" if len(parts) == 3 else f"{parts[0]}/{parts[1]}"


#: Largest csv an archive may unpack to: a month of 1m klines is about 7 MB (44,640 rows of ~160 bytes),
#: so 256 MiB is 35 such months; beyond it the archive is no Binance file (a zip bomb unpacked 2 GB for a
#: minute before its columns were refused).
MAX_ARCHIVE_CSV_BYTES = 256 * 2**20


def _read_binance_bytes(path: Path) -> bytes:
    """The CSV payload of an archive (the single csv member, named like the archive) or a plain csv."""
    if path.suffix == ".csv":
        return path.read_bytes()
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.namelist() if m.endswith(".csv")]
            if len(members) != 1:
                raise GridctlError(
                    f"{path}: expected exactly one .csv inside the archive, found {len(members)}"
                )
            inner = Path(members[0]).name
            if inner != f"{path.stem}.csv":
                raise GridctlError(
                    f"{path}: archive holds {inner!r}, which names other data than the archive"
                )
            info = archive.getinfo(members[0])
            if info.flag_bits & 0x1:
                raise GridctlError(
                    f"{path}: {inner} is encrypted; Binance archives are not, so this is no Binance file"
                )
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise GridctlError(
                    f"{path}: {inner} uses zip compression method {info.compress_type}; Binance archives "
                    "use deflate (8) or none (0)"
                )
            too_big = (
                f"{path}: {inner} unpacks to more than {MAX_ARCHIVE_CSV_BYTES // 2**20} MiB; a Binance "
                "monthly archive unpacks to a few MB, so this is no Binance file"
            )
            if info.file_size > MAX_ARCHIVE_CSV_BYTES:
                raise GridctlError(too_big)
            with archive.open(info) as member:  # the declared size may lie: read at most one byte more
                payload = member.read(MAX_ARCHIVE_CSV_BYTES + 1)
            if len(payload) > MAX_ARCHIVE_CSV_BYTES:
                raise GridctlError(too_big)
            return payload
    except zipfile.BadZipFile as err:
        raise GridctlError(f"{path}: not a valid zip archive ({err})") from None
    except (zlib.error, EOFError, OSError, RuntimeError, NotImplementedError) as err:
        raise GridctlError(f"{path}: the archive is damaged and cannot be unpacked ({err})") from None


def _read_csv_strings(payload: bytes, columns: tuple[str, ...], source: str) -> pl.DataFrame:
    """Parse CSV text (header row optional) into string columns named ``columns``."""
    first_line = payload.split(b"\n", 1)[0].strip()
    if not first_line:
        raise GridctlError(f"{source}: empty file")
    has_header = not first_line[:1].isdigit()
    try:
        df = pl.read_csv(io.BytesIO(payload), has_header=has_header, infer_schema=False)
    except Exception as err:  # polars raises several error types for malformed csv
        raise GridctlError(f"{source}: not a readable CSV file ({err})") from None
    if df.width != len(columns):
        raise GridctlError(
            f"{source}: expected {len(columns)} columns ({', '.join(columns)}), found {df.width}"
        )
    if df.height == 0:
        raise GridctlError(f"{source}: no data rows (only a header line)")
    return df.rename(dict(zip(df.columns, columns, strict=True)))


def _to_numbers(
    df: pl.DataFrame, casts: dict[str, pl.DataType], source: str, header_rows: int
) -> pl.DataFrame:
    """Cast string columns, naming the first row (1-based line of the file) that is not a number."""
    out = df.select(
        [pl.col(name).str.strip_chars().cast(dtype, strict=False) for name, dtype in casts.items()]
    )
    for name in casts:
        bad = out[name].is_null()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise GridctlError(
                f"{source}: line {row + 1 + header_rows}: column {name!r} is {df[name][row]!r} (not a number)"
            )
    return out


def _ms_times(values: np.ndarray, source: str, column: str) -> np.ndarray:
    """Timestamps in ms, converting µs files (newer Binance archives) exactly."""
    micro = values > _MICROSECONDS_ABOVE
    if micro.all():
        if (values % 1000).any():
            row = int(np.flatnonzero(values % 1000)[0])
            raise GridctlError(f"{source}: row {row}: {column} {values[row]} µs is not a whole millisecond")
        return values // 1000
    if micro.any():
        row = int(np.flatnonzero(micro)[0]) if not micro[0] else int(np.flatnonzero(~micro)[0])
        raise GridctlError(f"{source}: row {row}: {column} mixes ms and µs timestamps")
    return values


def _parse_binance_klines(path: Path, pair: str, tf: str, kind: str) -> _Parsed:
    source = str(path)
    bar_ms = timeframe_ms(tf)
    payload = _read_binance_bytes(path)
    raw = _read_csv_strings(payload, BINANCE_KLINE_COLUMNS, source)
    header_rows = 0 if payload[:1].isdigit() else 1
    casts = {"open_time": pl.Int64} | dict.fromkeys(("open", "high", "low", "close", "volume"), pl.Float64)
    nums = _to_numbers(raw, casts, source, header_rows)
    ts = _ms_times(nums["open_time"].to_numpy(), source, "open_time")
    df = nums.select(pl.Series("ts", ts, dtype=pl.Int64), "open", "high", "low", "close", "volume").sort("ts")
    check_candle_frame(df, bar_ms, source, kind)
    return _Parsed(binance_pair_to_symbol(pair), kind, tf, df, source)


def _parse_binance_funding(path: Path, pair: str) -> _Parsed:
    source = str(path)
    payload = _read_binance_bytes(path)
    raw = _read_csv_strings(payload, BINANCE_FUNDING_COLUMNS, source)
    header_rows = 0 if payload[:1].isdigit() else 1
    nums = _to_numbers(raw, {"calc_time": pl.Int64, "last_funding_rate": pl.Float64}, source, header_rows)
    ts = _ms_times(nums["calc_time"].to_numpy(), source, "calc_time")
    df = pl.DataFrame({"ts": ts, "rate": nums["last_funding_rate"], "mark_price": np.full(len(ts), np.nan)})
    df, moved = normalise_and_check_funding(df.sort("ts"), source)
    return _Parsed(binance_pair_to_symbol(pair), "funding", None, df, source, moved)


def _read_feather(path: Path) -> pl.DataFrame:
    try:
        table = feather.read_table(path)
    except Exception as err:  # pyarrow raises several error types for a corrupt file
        raise GridctlError(f"{path}: not a readable feather file ({err})") from None
    df = pl.from_arrow(table)
    assert isinstance(df, pl.DataFrame)
    needed = ("date", "open", "high", "low", "close", "volume")
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise GridctlError(
            f"{path}: missing column(s) {', '.join(missing)} (freqtrade data files have {needed})"
        )
    dtype = df.schema["date"]
    if not isinstance(dtype, pl.Datetime) or dtype.time_zone is None:
        raise GridctlError(f"{path}: column 'date' must be a UTC timestamp, found {dtype}")
    for name in needed[1:]:
        if not df.schema[name].is_numeric():
            raise GridctlError(f"{path}: column {name!r} must be numeric, found {df.schema[name]}")
    if df.height == 0:
        raise GridctlError(f"{path}: no rows")
    return df.with_columns(pl.col("date").dt.epoch("ms").alias("ts"))


def _parse_freqtrade(path: Path, pair: str, tf: str, kind: str) -> _Parsed:
    source = str(path)
    symbol = freqtrade_pair_to_symbol(pair)
    df = _read_feather(path).sort("ts")
    if kind == "funding":
        funding = df.select("ts", pl.col("open").alias("rate"), pl.lit(float("nan")).alias("mark_price"))
        funding, moved = normalise_and_check_funding(funding, source)
        return _Parsed(symbol, "funding", None, funding, source, moved)
    candles = df.select(
        "ts", *[pl.col(c).cast(pl.Float64).fill_null(float("nan")) for c in CANDLE_COLUMNS[1:]]
    )
    check_candle_frame(candles, timeframe_ms(tf), source, kind)
    return _Parsed(symbol, kind, tf, candles, source)


def _recognise(path: Path, kind: str | None) -> _Parsed | str:
    """Parse a recognised file, or return the reason it is skipped."""
    name = path.name
    folders = set(path.parts[:-1])
    if match := _FREQTRADE.match(name):
        file_kind = {"futures": "trade", "mark": "mark", "funding_rate": "funding"}[match["type"]]
        if match["tf"] not in TIMEFRAMES:
            return f"timeframe {match['tf']} is not supported (valid: {', '.join(TIMEFRAMES)})"
        return _parse_freqtrade(path, match["pair"], match["tf"], file_kind)
    if match := _BINANCE_FUNDING.match(name):
        return _parse_binance_funding(path, match["pair"])
    if match := _BINANCE_KLINES.match(name):
        if unsupported := folders.intersection(_UNSUPPORTED_FOLDERS):
            return f"{sorted(unsupported)[0]} are not stored (only trade and mark-price klines)"
        if match["tf"] not in TIMEFRAMES:
            return f"timeframe {match['tf']} is not supported (valid: {', '.join(TIMEFRAMES)})"
        candle_kind = kind or ("mark" if "markPriceKlines" in folders else "trade")
        return _parse_binance_klines(path, match["pair"], match["tf"], candle_kind)
    if path.suffix.lower() in PLAIN_SUFFIXES:
        return PLAIN_FILE
    return "not a Binance archive or freqtrade futures data file name, nor a .parquet/.csv table"


def _combine(parts: list[_Parsed]) -> pl.DataFrame:
    """Concatenate one series' files; identical overlapping rows are merged, conflicting ones are an error."""
    columns = list(parts[0].df.columns)
    tagged = pl.concat([p.df.with_columns(pl.lit(p.source).alias("_file")) for p in parts])
    distinct = tagged.unique(subset=columns, keep="first", maintain_order=True).sort(
        "ts", maintain_order=True
    )
    dup = distinct["ts"].is_duplicated()
    if dup.any():
        clash = distinct.filter(dup)
        ts = int(clash["ts"][0])
        files = sorted(set(clash.filter(pl.col("ts") == ts)["_file"].to_list()))
        raise GridctlError(f"{' and '.join(files)}: different values for the same time {fmt_ts(ts)}")
    return distinct.drop("_file")


def import_path(
    path: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    exchange: str = "binanceusdm",
    symbol: str | None = None,
    kind: str | None = None,
    force: bool = False,
    timeframe: str | None = None,
) -> ImportSummary:
    """Import one file or every recognised file under a directory into the store (``import_paths``)."""
    return import_paths([path], data_dir, exchange, (symbol,) if symbol else (), kind, force, timeframe)


def import_paths(
    paths: Sequence[str | os.PathLike[str]],
    data_dir: str | os.PathLike[str],
    exchange: str = "binanceusdm",
    symbols: Sequence[str] = (),
    kind: str | None = None,
    force: bool = False,
    timeframe: str | None = None,
) -> ImportSummary:
    """Import files and every recognised file under directories into the store, in one all-or-nothing step.

    ``symbols`` (optional) are the symbols expected: a file naming another fails, and each one must be
    found in some file. One symbol also names plain Parquet/CSV tables whose name says none; with
    several, such a table must name its symbol (or be imported alone with its ``--symbol``).
    ``kind="mark"`` marks Binance klines as mark-price klines (``"trade"`` forces trade klines). Plain
    tables (``read_plain``) take ``timeframe``/``kind`` where their name and columns do not tell.
    Every file is parsed first; the problems of all bad files are reported together (one line each)
    and nothing is written unless every file is valid. Stored rows the import would change (same time,
    other values) are refused unless ``force``; then the summary lists them. Rows equal to the stored
    ones are no change (re-importing is harmless).
    """
    if kind not in (None, "trade", "mark"):
        raise GridctlError(f"--kind: unknown kind {kind!r} (choose from trade, mark)")
    wanted = tuple(dict.fromkeys(symbols))
    summary = ImportSummary()
    parsed = _parse_files(paths, wanted, kind, timeframe, summary)
    groups: dict[tuple[str, str, str | None], list[_Parsed]] = {}
    for item in parsed:
        groups.setdefault((item.symbol, item.kind, item.timeframe), []).append(item)
        summary.report.add_funding_normalised(item.normalised, item.source)
    summary.notes += [item.note for item in parsed if item.note]
    planned = [(key, _combine(items), items) for key, items in groups.items()]
    summary.replaced = _refuse_changes(planned, data_dir, exchange, force)
    for (sym, series_kind, tf), df, items in planned:
        summary.series.append(_write_series(data_dir, exchange, sym, series_kind, tf, df, items, summary))
    return summary


def _parse_files(
    paths: Sequence[str | os.PathLike[str]],
    wanted: tuple[str, ...],
    kind: str | None,
    timeframe: str | None,
    summary: ImportSummary,
) -> list[_Parsed]:
    """Parse every file given and under every directory given; files a directory holds that are not
    market data go to ``summary.skipped``. Every problem (a bad file, another symbol than ``wanted``,
    a wanted symbol no file holds) is collected and raised together, one line each."""
    plain_symbol = wanted[0] if len(wanted) == 1 else None
    parsed: list[_Parsed] = []
    problems: list[str] = []
    for given in paths:
        root = Path(given)
        if not root.is_dir():
            require_regular_file(root, "import")
        files = sorted(p for p in root.rglob("*") if not p.is_dir()) if root.is_dir() else [root]
        found, before = 0, len(problems)
        for file in files:
            what = path_kind(file)
            try:
                result = (
                    _recognise(file, kind) if what == "a regular file" else f"is {what}, not a regular file"
                )
                if result is PLAIN_FILE:
                    result = read_plain(file, plain_symbol, timeframe, kind)
            except GridctlError as err:
                problems.append(str(err))
                continue
            if isinstance(result, str):
                if len(wanted) > 1 and result.startswith(_NO_SYMBOL_IN_NAME):
                    result += " (with several --symbol, a file must name its own)"
                if not root.is_dir():
                    problems.append(f"{file}: {result}")
                else:
                    summary.skipped.append((str(file), result))
                continue
            if wanted and result.symbol not in wanted:
                asked = wanted[0] if len(wanted) == 1 else f"only {', '.join(wanted)}"
                problems.append(f"{file}: holds {result.symbol} data, but {asked} was requested")
                continue
            parsed.append(result)
            found += 1
        if root.is_dir() and not found and len(problems) == before:
            problems.append(f"{root}: no importable files found ({len(summary.skipped)} skipped)")
    missing = [s for s in wanted if not any(item.symbol == s for item in parsed)]
    if missing and not problems:
        problems += [f"--symbol {s}: no file given holds {s} data" for s in missing]
    if problems:
        # One line per bad file, each read as its own error by the CLI ("error: ..." per line).
        raise GridctlError("\nerror: ".join(problems))
    return parsed


def _refuse_changes(
    planned: list[tuple[tuple[str, str, str | None], pl.DataFrame, list[_Parsed]]],
    data_dir: str | os.PathLike[str],
    exchange: str,
    force: bool,
) -> list[Conflict]:
    """The stored rows the import would change (same time, other values); refused unless ``force``."""
    conflicts: list[Conflict] = []
    for (sym, series_kind, tf), df, _items in planned:
        if series_kind == "funding":
            conflicts += funding_conflicts(data_dir, exchange, sym, df.select(FUNDING_COLUMNS))
        else:
            assert tf is not None
            conflicts += candle_conflicts(data_dir, exchange, sym, tf, df.select(CANDLE_COLUMNS), series_kind)
    if conflicts and not force:
        listed = "; ".join(c.describe() for c in conflicts[:3]) + ("; ..." if len(conflicts) > 3 else "")
        raise GridctlError(
            f"the import would replace stored data with different values: {listed}. Nothing was written; "
            "pass --force to replace them"
        )
    return conflicts


def _write_series(
    data_dir: str | os.PathLike[str],
    exchange: str,
    sym: str,
    series_kind: str,
    tf: str | None,
    df: pl.DataFrame,
    items: list[_Parsed],
    summary: ImportSummary,
) -> ImportedSeries:
    """Write one series (its candles' gaps into ``summary.report``) and describe what was written."""
    ts = df["ts"].to_numpy()
    if series_kind == "funding":
        write_funding(data_dir, exchange, sym, df.select(FUNDING_COLUMNS))
        gaps, missing = 0, 0
    else:
        assert tf is not None
        stats = gap_stats(ts, timeframe_ms(tf))
        summary.report.add_gaps(stats, tf, f"{exchange} {sym} {series_kind} {tf}")
        write_candles(data_dir, exchange, sym, tf, df.select(CANDLE_COLUMNS), kind=series_kind)
        gaps, missing = stats.count, stats.missing_bars
    return ImportedSeries(
        exchange=exchange,
        symbol=sym,
        kind=series_kind,
        timeframe=tf,
        rows=df.height,
        first_ts=int(ts[0]),
        last_ts=int(ts[-1]),
        files=tuple(i.source for i in items),
        gaps=gaps,
        missing_bars=missing,
    )


# ----------------------------------------------------------------------------------------------------
# Plain Parquet / CSV tables (candles, funding, mark) whose columns identify them
# ----------------------------------------------------------------------------------------------------

PLAIN_SUFFIXES = (".parquet", ".csv")
PLAIN_FILE = "plain table"  # _recognise's marker: parse with read_plain
_NO_SYMBOL_IN_NAME = "its name names no USD-M symbol"
_TIME_COLUMNS = ("ts", "timestamp", "open_time", "time", "date", "datetime")
_RATE_COLUMNS = ("rate", "funding_rate", "fundingRate", "last_funding_rate")
_PAIR_IN_NAME = re.compile(r"(?:^|[^A-Z0-9])([A-Z0-9]{2,}?(?:USDT|USDC))(?:[^A-Z0-9]|$)")
_FT_PAIR_IN_NAME = re.compile(r"(?:^|[^A-Z0-9])([A-Z0-9]+)_(USDT|USDC)_(USDT|USDC)(?:[^A-Z0-9_]|$)")
_TF_IN_NAME = re.compile(r"(?:^|[_\-.]|mark)(\d+[mhdw])(?:[_\-.]|$)")


def _plain_frame(path: Path) -> pl.DataFrame:
    try:
        if path.suffix.lower() == ".parquet":
            return pl.read_parquet(path)
        return pl.read_csv(path)
    except Exception as err:  # polars/pyarrow raise several error types for a corrupt file
        raise GridctlError(f"{path}: not a readable {path.suffix[1:]} table ({err})") from None


def _plain_times(df: pl.DataFrame, source: str) -> tuple[str, np.ndarray]:
    """The time column and its values in epoch ms (seconds, ms, µs or a UTC datetime column)."""
    name = next((c for c in _TIME_COLUMNS if c in df.columns), None)
    if name is None:
        raise GridctlError(
            f"{source}: no time column (looked for {', '.join(_TIME_COLUMNS)}; found {', '.join(df.columns)})"
        )
    col = df[name]
    if col.dtype == pl.String:  # a CSV has no datetime type: ISO text such as 2024-01-01 00:00:00 (UTC)
        try:
            col = col.str.to_datetime(time_unit="ms", strict=True)  # an offset is converted to UTC
        except pl.exceptions.PolarsError:
            raise GridctlError(
                f"{source}: column {name!r} holds text that is not a date and time (first value "
                f"{df[name][0]!r}); give epoch times or ISO datetimes like 2024-01-01 00:00:00 (UTC)"
            ) from None
        if col.null_count():
            row = int(col.is_null().arg_max() or 0)
            raise GridctlError(f"{source}: row {row}: column {name!r} is empty")
    if isinstance(col.dtype, pl.Datetime):
        if col.dtype.time_zone not in (None, "UTC"):
            raise GridctlError(f"{source}: column {name!r} is in time zone {col.dtype.time_zone}, not UTC")
        return name, col.dt.epoch("ms").to_numpy()
    if not col.dtype.is_integer():
        raise GridctlError(f"{source}: column {name!r} holds {col.dtype}, not epoch times or datetimes")
    values = col.to_numpy().astype(np.int64)
    if len(values) and int(np.abs(values).max()) < 10**11:  # epoch seconds (ms are ~1.7e12)
        return name, values * 1000
    return name, _ms_times(values, source, name)


def _plain_symbol(path: Path, symbol: str | None) -> tuple[str, str] | str:
    """(ccxt symbol, where it came from) from --symbol or the file name, else the reason it is unknown."""
    found = None
    if match := _FT_PAIR_IN_NAME.search(path.name):
        found = f"{match[1]}/{match[2]}:{match[3]}"
    elif match := _PAIR_IN_NAME.search(path.name):
        found = binance_pair_to_symbol(match[1])
    if symbol is not None:
        if found is not None and found != symbol:
            raise GridctlError(f"{path}: the file name says {found}, but --symbol {symbol} was given")
        return symbol, "--symbol"
    if found is None:
        return f"{_NO_SYMBOL_IN_NAME} (like BTCUSDT or BTC_USDT_USDT); give --symbol"
    return found, "file name"


def _plain_timeframe(path: Path, ts: np.ndarray, timeframe: str | None) -> tuple[str, str]:
    """(timeframe, where from): --timeframe, else the file name, checked against the bars' usual spacing."""
    steps, counts = np.unique(np.diff(ts), return_counts=True)
    typical = int(steps[counts.argmax()]) if len(steps) else None
    if timeframe is not None:
        tf, how = timeframe, "--timeframe"
    elif match := _TF_IN_NAME.search(path.name):
        tf, how = match[1], "file name"
    else:
        by_spacing = [t for t in TIMEFRAMES if typical is not None and timeframe_ms(t) == typical]
        if not by_spacing:
            raise GridctlError(
                f"{path}: cannot tell the timeframe from the name or the bar spacing; give --timeframe"
            )
        tf, how = by_spacing[0], "bar spacing"
    if tf not in TIMEFRAMES:
        raise GridctlError(
            f"{path}: timeframe {tf} ({how}) is not supported (valid: {', '.join(TIMEFRAMES)})"
        )
    if typical is not None and typical != timeframe_ms(tf):
        raise GridctlError(
            f"{path}: timeframe {tf} ({how}) does not match the data, whose bars are mostly "
            f"{typical:,} ms apart"
        )
    return tf, how


def _plain_numbers(df: pl.DataFrame, name: str, source: str) -> pl.Series:
    """A price, volume or rate column as float64; a column of text, booleans or anything else not numeric
    is an error naming it (a cast raised a polars traceback, or quietly turned booleans into 0/1)."""
    col = df[name]
    if not col.dtype.is_numeric():
        first = next((v for v in col.to_list() if v is not None), None)
        raise GridctlError(
            f"{source}: column {name!r} must be numeric, found {col.dtype}"
            + (f" (first value {first!r})" if first is not None else "")
        )
    return col.cast(pl.Float64)


def read_plain(path: Path, symbol: str | None, timeframe: str | None, kind: str | None) -> _Parsed | str:
    """Parse a plain Parquet/CSV table of candles (``ts, open, high, low, close[, volume]``) or funding
    (``ts, rate[, mark_price]``), inferring symbol, kind and timeframe where no flag gives them.

    A table with a rate column is funding; candles without a volume column are mark-price candles
    (mark klines carry no volume) unless ``kind`` says otherwise. Returns the reason a file is skipped.
    """
    source = str(path)
    df = _plain_frame(path)
    sym = _plain_symbol(path, symbol)
    if isinstance(sym, str):
        return sym
    sym_name, sym_how = sym
    rate = next((c for c in _RATE_COLUMNS if c in df.columns), None)
    ohlc = all(c in df.columns for c in ("open", "high", "low", "close"))
    if rate is None and not ohlc:
        return (
            f"columns {', '.join(df.columns)} are neither candles (open, high, low, close) nor funding (rate)"
        )
    time_col, ts = _plain_times(df, source)
    if rate is not None:
        mark = (
            _plain_numbers(df, "mark_price", source)
            if "mark_price" in df.columns
            else np.full(len(ts), np.nan)
        )
        funding = pl.DataFrame(
            {"ts": ts, "rate": _plain_numbers(df, rate, source), "mark_price": mark},
            schema_overrides={"ts": pl.Int64},
        ).sort("ts")
        funding, moved = normalise_and_check_funding(funding, source)
        marks = "mark_price" if "mark_price" in df.columns else "no mark_price column: mark unknown"
        note = f"{path.name}: {sym_name} funding ({sym_how}; columns {time_col}, {rate}, {marks})"
        return _Parsed(sym_name, "funding", None, funding, source, moved, note)
    candle_kind = kind or ("trade" if "volume" in df.columns else "mark")
    order = np.argsort(ts, kind="stable")
    tf, tf_how = _plain_timeframe(path, ts[order], timeframe)
    volume = _plain_numbers(df, "volume", source) if "volume" in df.columns else pl.Series(np.zeros(len(ts)))
    candles = pl.DataFrame(
        {
            "ts": ts,
            **{
                c: _plain_numbers(df, c, source).fill_null(float("nan"))
                for c in ("open", "high", "low", "close")
            },
            "volume": volume,
        },
        schema_overrides={"ts": pl.Int64},
    ).sort("ts")
    check_candle_frame(candles, timeframe_ms(tf), source, candle_kind)
    note = f"{path.name}: {sym_name} ({sym_how}) {candle_kind} candles {tf} ({tf_how})"
    return _Parsed(sym_name, candle_kind, tf, candles, source, 0, note)
