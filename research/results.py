"""Turn a run's record arrays into labelled polars frames and write the result files of a backtest.

The frames keep DESIGN.md's record columns, in order, with the same numeric dtypes; only the enum
columns (side, kind, liquidity, mark_source, reason, regime, state) become lowercase labels
("long", "tp", "maker", ...) so a parquet file reads without the engine's enum tables.

``write_results`` renders every file in memory first and then writes each one atomically
(``data.atomic``): a failure before the writes leaves nothing, a failure during them leaves only
complete files, never a half-written one.
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from data.atomic import atomic_write_bytes
from data.market import Market
from engine.enums import EventKind, FillKind, Liquidity, MarkSource, Reason, Regime, RiskState, Side
from engine.records import EQUITY_DTYPE, EVENT_DTYPE, FILL_DTYPE, FUNDING_DTYPE
from research.report import build_report
from research.stats import RunLike

RESULT_FILES = (
    "fills.parquet",
    "funding.parquet",
    "equity.parquet",
    "events.parquet",
    "stats.json",
    "report.html",
)

# Which record columns carry which enum.
_LABELLED: dict[str, dict[str, Any]] = {
    "fills": {"side": Side, "kind": FillKind, "liquidity": Liquidity},
    "funding": {"side": Side, "mark_source": MarkSource},
    "equity": {"regime": Regime, "state": RiskState},
    "events": {"kind": EventKind, "reason": Reason, "side": Side},
}
_DTYPES = {"fills": FILL_DTYPE, "funding": FUNDING_DTYPE, "equity": EQUITY_DTYPE, "events": EVENT_DTYPE}
_POLARS = {"i1": pl.Int8, "i2": pl.Int16, "i8": pl.Int64, "f8": pl.Float64}


def labels(enum: Any) -> list[str]:
    """Lowercase names of an enum's values, indexed by value (values are 0..n-1)."""
    names = [""] * (max(enum) + 1)
    for name, value in zip(enum._fields, enum, strict=True):
        names[value] = name.lower()
    return names


def record_frame(table: str, records: np.ndarray) -> pl.DataFrame:
    """One record array (``table`` in fills/funding/equity/events) as a frame with labelled enum columns."""
    dtype = _DTYPES[table]
    if records.dtype != dtype:
        raise ValueError(f"{table}: expected dtype {dtype}, got {records.dtype}")
    columns: dict[str, pl.Series] = {}
    for name in dtype.names:
        values = np.ascontiguousarray(records[name])
        enum = _LABELLED[table].get(name)
        if enum is None:
            columns[name] = pl.Series(name, values, dtype=_POLARS[dtype[name].str[1:]])
        else:
            # Values outside the enum (events use side -1 for "no side") become null.
            names = dict(enumerate(labels(enum)))
            columns[name] = pl.Series(name, [names.get(v) for v in values.tolist()], dtype=pl.String)
    return pl.DataFrame(columns)


def result_frames(run: RunLike) -> dict[str, pl.DataFrame]:
    """The four ledgers of a run as labelled frames, keyed fills/funding/equity/events."""
    return {t: record_frame(t, getattr(run, t)) for t in ("fills", "funding", "equity", "events")}


def _json_ready(value: Any) -> Any:
    """Replace non-finite floats (not valid JSON) by None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    return value


def stats_json(stats: dict[str, Any]) -> str:
    """The stats as one strict JSON object (NaN/inf become null)."""
    return json.dumps(_json_ready(stats), indent=2, allow_nan=False)


def _parquet_bytes(frame: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.write_parquet(buf, compression="zstd")
    return buf.getvalue()


def write_results(
    out_dir: str | os.PathLike[str], run: RunLike, market: Market, stats: dict[str, Any]
) -> list[Path]:
    """Write the ledgers, ``stats.json`` and ``report.html`` into ``out_dir``; returns the paths written."""
    frames = result_frames(run)
    payloads = {f"{name}.parquet": _parquet_bytes(frame) for name, frame in frames.items()}
    payloads["stats.json"] = (stats_json(stats) + "\n").encode("utf-8")
    payloads["report.html"] = build_report(run, market, stats).encode("utf-8")
    out = Path(out_dir)
    return [atomic_write_bytes(out / name, payloads[name]) for name in RESULT_FILES]
