"""Turn a run's record arrays into labelled polars frames and write the result files of a backtest.

The frames keep DESIGN.md's record columns, in order, with the same numeric dtypes; only the enum
columns (side, kind, liquidity, mark_source, reason, regime, state) become lowercase labels
("long", "tp", "maker", ...) so a parquet file reads without the engine's enum tables.

``write_results`` renders the files one at a time straight into a temporary folder beside the target
(each ledger's frame is dropped before the next is built, so at most one is in memory) and renames that
folder into place: an interruption (error, Ctrl-C, full disk) leaves the target as it was, never a
folder with some of the files or a mix of two runs. A target that already holds
results is replaced only with ``force`` (old folder renamed aside, new one renamed in, old deleted);
a folder holding anything else is never replaced. (Only a hard kill between the two renames of a
replace can leave the target missing; the old results then sit beside it in ``.NAME.old-<pid>-*``.)
``check_out_dir`` runs the same checks up front so the CLI refuses a bad ``--out`` before the backtest
starts; it also clears what a killed write left: a ``.NAME.new-`` folder of a dead process is removed,
and a ``.NAME.old-`` one is put back as the target when the target is missing (else removed).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gridctl.configs.errors import GridctlError
from gridctl.data.atomic import RANDOM_PART, remove_stale, restore_or_remove_stale, tagged
from gridctl.data.paths import require_output_dir
from gridctl.engine.enums import EventKind, FillKind, Liquidity, MarkSource, Reason, Regime, RiskState, Side
from gridctl.engine.records import EQUITY_DTYPE, EVENT_DTYPE, FILL_DTYPE, FUNDING_DTYPE

if TYPE_CHECKING:  # polars and the report (plotly) load only when a frame or a file is made
    import polars as pl

    from gridctl.data.market import Market
    from gridctl.research.stats import RunLike

RESULT_FILES = (
    "fills.parquet",
    "funding.parquet",
    "equity.parquet",
    "events.parquet",
    "stats.json",
    "report.html",
)
#: A basket's files: the same ledgers with a ``symbol`` column (one file per table, every symbol's rows
#: in basket order), plus the account's equity curve and the path bracket of the account and each symbol.
BASKET_RESULT_FILES = (*RESULT_FILES[:4], "account_equity.parquet", "path_bracket.parquet", *RESULT_FILES[4:])

# Which record columns carry which enum.
_LABELLED: dict[str, dict[str, Any]] = {
    "fills": {"side": Side, "kind": FillKind, "liquidity": Liquidity},
    "funding": {"side": Side, "mark_source": MarkSource},
    "equity": {"regime": Regime, "state": RiskState},
    "events": {"kind": EventKind, "reason": Reason, "side": Side},
}
_DTYPES = {"fills": FILL_DTYPE, "funding": FUNDING_DTYPE, "equity": EQUITY_DTYPE, "events": EVENT_DTYPE}
# Read once at import: os.umask can only be read by setting it, which is not thread-safe.
_UMASK = os.umask(0)
os.umask(_UMASK)
_POLARS_DTYPES = {"i1": "Int8", "i2": "Int16", "i8": "Int64", "f8": "Float64"}


def labels(enum: Any) -> list[str]:
    """Lowercase names of an enum's values, indexed by value (values are 0..n-1)."""
    names = [""] * (max(enum) + 1)
    for name, value in zip(enum._fields, enum, strict=True):
        names[value] = name.lower()
    return names


def record_frame(table: str, records: np.ndarray) -> pl.DataFrame:
    """One record array (``table`` in fills/funding/equity/events) as a frame with labelled enum columns."""
    import polars as pl

    dtype = _DTYPES[table]
    if records.dtype != dtype:
        raise ValueError(f"{table}: expected dtype {dtype}, got {records.dtype}")
    columns: dict[str, pl.Series] = {}
    for name in dtype.names:
        values = np.ascontiguousarray(records[name])
        enum = _LABELLED[table].get(name)
        if enum is None:
            columns[name] = pl.Series(name, values, dtype=getattr(pl, _POLARS_DTYPES[dtype[name].str[1:]]))
        else:
            columns[name] = _label_series(name, values, enum)
    return pl.DataFrame(columns)


def _label_series(name: str, values: np.ndarray, enum: Any) -> pl.Series:
    """The labels of an enum column (looked up in one gather, no Python object per row); values
    outside the enum (events use side -1 for "no side") become null."""
    import polars as pl

    table = pl.Series(name, labels(enum), dtype=pl.String)
    codes = values.astype(np.int64)
    outside = (codes < 0) | (codes >= table.len())
    if not outside.any():
        return table.gather(codes)
    return table.gather(np.where(outside, 0, codes)).scatter(np.flatnonzero(outside), None)


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


def build_report(run: RunLike, market: Market, stats: dict[str, Any]) -> str:
    """``research.report.build_report``, imported on first use (plotly loads only to write a report)."""
    from gridctl.research.report import build_report as build

    return build(run, market, stats)


def check_out_dir(out_dir: str | os.PathLike[str], force: bool = False, option: str = "--out") -> Path:
    """Refuse an output folder ``write_results`` could not fill; call it before the work starts.

    The folder may be missing (its parent must be creatable) or empty; one that holds results needs
    ``force``; one that holds other files is refused even with ``force`` (gridctl never deletes them).
    """
    out = require_output_dir(out_dir, option)
    _clean_interrupted(out)
    if not out.is_dir():
        return out
    present = sorted(p.name for p in out.iterdir())
    if not present:
        return out
    foreign = [name for name in present if name not in BASKET_RESULT_FILES]
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise GridctlError(
            f"{option}: {out} holds files that are not backtest results ({shown}); "
            "choose an empty or new folder (gridctl never deletes other files)"
        )
    if not force:
        raise GridctlError(f"{option}: {out} already holds results; pass --force to replace them")
    return out


def _clean_interrupted(out: Path) -> None:
    """What a killed ``write_results`` left beside ``out``: the half-written ``.new-`` folder goes; the
    previous results moved aside (``.old-``) come back if ``out`` is missing, else go."""
    stem = re.escape(out.name)
    parent = out.absolute().parent
    remove_stale(parent, re.compile(rf"^\.{stem}\.new-(?:(?P<pid>\d+)-)?{RANDOM_PART}$"), untagged=True)
    restore_or_remove_stale(parent, re.compile(rf"^\.{stem}\.old-(?:(?P<pid>\d+)-)?{RANDOM_PART}$"), out)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_results(
    out_dir: str | os.PathLike[str],
    run: RunLike,
    market: Market,
    stats: dict[str, Any],
    force: bool = False,
) -> list[Path]:
    """Write the ledgers, ``stats.json`` and ``report.html`` as the folder ``out_dir``, all at once.

    Returns the paths written. An existing results folder is replaced only with ``force``; see the
    module docstring for what an interruption leaves.
    """

    def render(name: str) -> bytes | pl.DataFrame:
        table, _, ext = name.partition(".")
        if ext == "parquet":
            return record_frame(table, getattr(run, table))
        if name == "stats.json":
            return (stats_json(stats) + "\n").encode("utf-8")
        return build_report(run, market, stats).encode("utf-8")

    return _write_folder(out_dir, RESULT_FILES, render, force)


def basket_frame(table: str, per_symbol: dict[str, Any]) -> pl.DataFrame:
    """One ledger of every basket symbol as one frame, a ``symbol`` column first, in basket order."""
    import polars as pl

    frames = [
        record_frame(table, getattr(run, table)).select(pl.lit(symbol).alias("symbol"), pl.all())
        for symbol, run in per_symbol.items()
    ]
    return pl.concat(frames)


def account_frame(rows: np.ndarray) -> pl.DataFrame:
    """The account's equity rows (``engine.basket.ACCOUNT_EQUITY_DTYPE``), the state as its label."""
    import polars as pl

    columns: dict[str, pl.Series] = {}
    for name in rows.dtype.names:
        values = np.ascontiguousarray(rows[name])
        columns[name] = (
            _label_series(name, values, RiskState)
            if name == "state"
            else pl.Series(name, values, dtype=getattr(pl, _POLARS_DTYPES[rows.dtype[name].str[1:]]))
        )
    return pl.DataFrame(columns)


def bracket_frame(stats: dict[str, Any]) -> pl.DataFrame:
    """The basket's path brackets as rows: ``scope`` (``account`` or a symbol, basket order) x ``rule``
    (every intrabar path rule), with the scope's ``pnl`` (USDT) and ``total_return_pct`` in that rule's
    basket run, its ``n_fills``, whether the rule is the ``configured`` one, and whether it gives the
    scope's ``worst`` / ``best`` return (``research.basket.symbol_bracket``)."""
    import polars as pl

    from gridctl.research.stats import BRACKET_RULES

    rows = []
    scopes = [("account", stats["account"]["path_bracket"], "return_rules")]
    scopes += [(symbol, s["path_bracket"], "rules") for symbol, s in stats["symbols"].items()]
    for scope, b, rules in scopes:
        for rule in BRACKET_RULES:
            rows.append(
                {
                    "scope": scope,
                    "rule": rule,
                    "configured": rule == b["rule"],
                    "pnl": float(b[rule]["pnl"]),
                    "total_return_pct": float(b[rule]["total_return_pct"]),
                    "n_fills": int(b[rule]["n_fills"]),
                    "worst": rule in b["worst"][rules],
                    "best": rule in b["best"][rules],
                }
            )
    return pl.DataFrame(rows)


def write_basket_results(out_dir: str | os.PathLike[str], basket: Any, force: bool = False) -> list[Path]:
    """A basket's result folder (``BASKET_RESULT_FILES``), all at once like ``write_results``.

    ``basket`` is a ``research.basket.BasketBacktest``: ledgers with a ``symbol`` column, the account's
    equity curve, the path brackets (``bracket_frame``), ``stats.json`` (``account`` and ``symbols``
    blocks) and the report.
    """
    from gridctl.research.report import build_basket_report

    output = basket.output

    def render(name: str) -> bytes | pl.DataFrame:
        table, _, ext = name.partition(".")
        if table == "account_equity":
            return account_frame(output.account_equity)
        if table == "path_bracket":
            return bracket_frame(basket.stats)
        if ext == "parquet":
            return basket_frame(table, output.per_symbol)
        if name == "stats.json":
            return (stats_json(basket.stats) + "\n").encode("utf-8")
        return build_basket_report(basket).encode("utf-8")

    return _write_folder(out_dir, BASKET_RESULT_FILES, render, force)


def _write_folder(
    out_dir: str | os.PathLike[str],
    names: tuple[str, ...],
    render: Callable[[str], bytes | pl.DataFrame],
    force: bool,
) -> list[Path]:
    """Render each file of ``names`` into a staging folder, then rename it into place as ``out_dir``."""
    out = check_out_dir(out_dir, force).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=tagged(f".{out.name}.new-"), dir=out.parent))
    aside: Path | None = None
    try:
        for name in names:
            with open(staging / name, "wb") as fh:
                content = render(name)  # one file's frame or text at a time
                if isinstance(content, bytes):
                    fh.write(content)
                else:
                    content.write_parquet(fh, compression="zstd")
                del content
                fh.flush()
                os.fsync(fh.fileno())
        # mkdtemp makes a 0700 folder; give it the permissions a plain mkdir would have.
        os.chmod(staging, 0o777 & ~_UMASK)
        _fsync_dir(staging)
        if out.exists():
            aside = Path(tempfile.mkdtemp(prefix=tagged(f".{out.name}.old-"), dir=out.parent))
            os.replace(out, aside)  # an empty folder of that name stands ready, so this is a rename
        os.replace(staging, out)
    except BaseException:
        if aside is not None and not out.exists():
            os.replace(aside, out)  # put the old results back
            aside = None
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
    _fsync_dir(out.parent)
    return [out / name for name in names]
