"""`gridctl data ...`: sample, import, info, resample (and download, registered by data.download_cli).

Thin shells over the library functions in ``data.*``; user errors raise GridctlError, which the top-level
CLI prints as ``error: ...`` with exit code 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from gridctl.data.store import default_data_dir
from gridctl.data.validate import fmt_ts

# Same as data.sample.MAX_DAYS (not imported here: numpy and polars are slow to import for --help).
MAX_DAYS = 3_650
MAX_SEED = 2**32 - 1

app = typer.Typer(no_args_is_help=True, help="Download, import, generate and inspect market data.")

_DATA_DIR_HELP = (
    "data directory (env GRIDCTL_DATA_DIR; default $XDG_DATA_HOME/gridctl or ~/.local/share/gridctl)"
)
DataDirOption = Annotated[
    Path | None, typer.Option("--data-dir", envvar="GRIDCTL_DATA_DIR", help=_DATA_DIR_HELP)
]


def _data_dir(value: Path | None, writes: bool = False) -> Path:
    """The data directory a command uses, checked before any work: it must exist to be read, and be
    creatable and writable to be written (a file, or a folder under a file or /proc, fails at once)."""
    from gridctl.data.paths import require_existing_dir, require_writable_dir

    path = value if value is not None else default_data_dir()
    if writes:
        return require_writable_dir(path, "--data-dir")
    return require_existing_dir(path, "--data-dir", "nothing is stored there yet (try `gridctl data sample`)")


def _short(ms: int) -> str:
    return fmt_ts(ms).removesuffix(" UTC").removesuffix(":00")


@app.command("sample")
def sample_command(
    data_dir: DataDirOption = None,
    days: Annotated[
        int, typer.Option("--days", min=1, max=MAX_DAYS, help="length of the generated market in days")
    ] = 180,
    seed: Annotated[
        int, typer.Option("--seed", min=0, max=MAX_SEED, help="random seed (same seed, same market)")
    ] = 7,
    force: Annotated[
        bool, typer.Option("--force", help="replace a stored sample market that differs from this one")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Generate the deterministic sample market (exchange `sample`, BTC/USDT:USDT, 1m) and store it."""
    from gridctl.data.sample import SAMPLE_EXCHANGE, SAMPLE_SYMBOL, write_sample

    info = write_sample(_data_dir(data_dir, writes=True), days, seed, force=force)
    if as_json:
        payload = {
            "exchange": SAMPLE_EXCHANGE,
            "symbol": SAMPLE_SYMBOL,
            "path": str(info.path),
            "days": info.days,
            "seed": info.seed,
            "bars": info.bars,
            "funding": info.funding,
            "first_ts": info.first_ts,
            "last_ts": info.last_ts,
        }
        typer.echo(json.dumps(payload, sort_keys=True))
        return
    typer.echo(
        f"sample market {SAMPLE_EXCHANGE} {SAMPLE_SYMBOL} 1m: {info.bars:,} bars "
        f"({_short(info.first_ts)} -> {_short(info.last_ts)}), {info.funding:,} funding settlements, "
        f"mark-price candles; seed {info.seed}; stored in {info.path}"
    )


@app.command("import")
def import_command(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Binance archives (zip/csv), freqtrade .feather files, Parquet/CSV tables, or folders",
        ),
    ],
    data_dir: DataDirOption = None,
    exchange: Annotated[
        str, typer.Option("--exchange", help="exchange name to store the data under")
    ] = "binanceusdm",
    symbol: Annotated[
        list[str] | None,
        typer.Option(
            "--symbol",
            "--symbols",
            help="expected ccxt symbol(s), repeated or a comma list; files naming another fail, each must "
            "be found (one symbol: plain tables naming none use it)",
        ),
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind", help="trade or mark (Binance klines: default from folder; plain tables: from columns)"
        ),
    ] = None,
    timeframe: Annotated[
        str | None,
        typer.Option("--timeframe", help="plain candle tables: bar length (default: from name or spacing)"),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="replace stored rows the files hold with other values")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Validate and import market data files for one or several symbols; a bad file leaves the store
    untouched (every bad file is named, one line each).

    Stored rows that the files hold with other values are refused unless --force (then listed).
    """
    from gridctl.configs.cli import parse_symbols_flag
    from gridctl.data.importers import import_paths

    symbols = parse_symbols_flag(symbol, "--symbol", "BTC/USDT:USDT")

    summary = import_paths(
        paths,
        _data_dir(data_dir, writes=True),
        exchange=exchange,
        symbols=symbols,
        kind=kind,
        timeframe=timeframe,
        force=force,
    )
    typer.echo(json.dumps(summary.to_dict(), sort_keys=True) if as_json else summary.describe())


@app.command("info")
def info_command(
    data_dir: DataDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the inventory as JSON")] = False,
) -> None:
    """Show what is stored: exchanges, symbols, timeframes, ranges and gaps."""
    from gridctl.data.store import inventory

    root = _data_dir(data_dir)
    items = inventory(root)
    if as_json:
        typer.echo(json.dumps({"data_dir": str(root), "series": [i.__dict__ for i in items]}, sort_keys=True))
        return
    if not items:
        typer.echo(f"{root}: no market data stored (try `gridctl data sample`)")
        return
    typer.echo(f"data dir: {root}")
    for i in items:
        gaps = "no gaps" if i.gaps == 0 else f"{i.gaps} gap(s)"
        if i.missing:
            gaps += f", {i.missing:,} missing bars"
        typer.echo(
            f"{i.exchange:<12} {i.symbol:<16} {i.series:<9} {i.rows:>9,} rows  "
            f"{_short(i.first_ts)} -> {_short(i.last_ts)}  {gaps}"
        )


@app.command("resample")
def resample_command(
    symbol: Annotated[str, typer.Option("--symbol", help="ccxt symbol, e.g. BTC/USDT:USDT")],
    target: Annotated[str, typer.Option("--to", help="target timeframe, e.g. 1h")],
    source: Annotated[str, typer.Option("--from", help="source timeframe")] = "1m",
    exchange: Annotated[str, typer.Option("--exchange", help="exchange name in the store")] = "binanceusdm",
    kind: Annotated[str, typer.Option("--kind", help="trade or mark candles")] = "trade",
    data_dir: DataDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Build coarser candles from stored finer ones; incomplete target bars are dropped and counted."""
    from gridctl.data.resample import resample_store

    root = _data_dir(data_dir)
    _data_dir(root, writes=True)
    result = resample_store(root, exchange, symbol, source, target, kind=kind)
    if as_json:
        typer.echo(
            json.dumps({"built": result.built, "dropped": result.dropped, "from": source, "to": target})
        )
    else:
        typer.echo(result.describe(source, target))


from gridctl.data.download_cli import register as _register_download  # noqa: E402

_register_download(app)
