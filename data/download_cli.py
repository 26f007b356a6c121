"""`gridctl data download`: parse and check the options, then hand over to `data.download.download`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from gridctl.configs.errors import GridctlError
from gridctl.data.download_options import DEFAULT_TIMEOUT_S, KINDS

MAX_TIMEOUT_S = 3600.0
#: ``--kinds`` when not given: every kind.
DEFAULT_KINDS = ",".join(KINDS)

# data.download.OptionError.option -> the command-line option a user types.
_OPTION_NAMES = {
    "exchange": "--exchange",
    "symbol": "--symbol",
    "timeframe": "--timeframe",
    "kinds": "--kinds",
    "range": "--start/--end",
    "api-url": "--api-url",
    "timeout": "--timeout",
}


def parse_date_ms(text: str, option: str) -> int:
    """Parse ``YYYY-MM-DD`` or an ISO datetime (UTC unless it carries an offset) into epoch ms."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise GridctlError(
            f"{option}: {text!r} is not a date (expected YYYY-MM-DD or ISO datetime)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def parse_kinds(text: str) -> tuple[str, ...]:
    """Split ``candles,mark,funding`` into a de-duplicated tuple (``download`` checks the names)."""
    return tuple(dict.fromkeys(part.strip() for part in text.split(",")))


def parse_symbols(
    values: list[str] | tuple[str, ...], flag: str = "--symbols", basket: bool = False
) -> tuple[str, ...]:
    """Symbols from repeated options and/or comma lists, stripped, in order, each once. For a
    ``basket`` (backtest, live) a symbol named twice is refused, as ``strategy.symbols`` refuses it:
    a basket trades each symbol once and a mistyped list must not shrink silently."""
    parts = [part.strip() for value in values for part in value.split(",")]
    found = [part for part in parts if part]
    twice = list(dict.fromkeys(s for s in found if found.count(s) > 1))
    if basket and twice:
        raise GridctlError(f"{flag}: {', '.join(twice)} given more than once; name each symbol once")
    return tuple(dict.fromkeys(found))


def parse_symbols_flag(
    values: list[str] | None,
    flag: str = "--symbols",
    example: str = "BTC/USDT:USDT,ETH/USDT:USDT",
    basket: bool = False,
) -> tuple[str, ...]:
    """A symbols option as typed (None: not given) -> its symbols; given but naming none is refused,
    and for a ``basket`` so is a symbol named twice."""
    symbols = parse_symbols(values or [], flag, basket)
    if values is not None and not symbols:
        raise GridctlError(f"{flag}: {' '.join(values)!r} names no symbol (e.g. {example})")
    return symbols


def download_command(
    symbol: Annotated[
        list[str],
        typer.Option(
            "--symbol",
            "--symbols",
            help="ccxt symbol(s), e.g. BTC/USDT:USDT; repeat the option or give a comma list",
        ),
    ],
    start: Annotated[str, typer.Option("--start", help="first bar (UTC), YYYY-MM-DD or ISO datetime")],
    end: Annotated[str, typer.Option("--end", help="end of the range, exclusive (UTC)")],
    exchange: Annotated[str, typer.Option("--exchange", help="ccxt exchange id")] = "binanceusdm",
    timeframe: Annotated[str, typer.Option("--timeframe", help="candle timeframe, e.g. 1m, 1h")] = "1m",
    kinds: Annotated[
        str, typer.Option("--kinds", help="comma list of candles, mark, funding")
    ] = DEFAULT_KINDS,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="data directory (default: $GRIDCTL_DATA_DIR)")
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            min=0.0,
            max=MAX_TIMEOUT_S,
            help="seconds to keep retrying an exchange that gives no answer (connection refused, "
            "timed out); a host name that does not resolve fails at once",
        ),
    ] = DEFAULT_TIMEOUT_S,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="hide the progress bar")] = False,
    api_url: Annotated[
        str | None, typer.Option("--api-url", hidden=True, help="send API calls to this base URL")
    ] = None,
) -> None:
    """Download trade candles, mark-price candles and funding into the local store (incremental).

    Several symbols are checked against the exchange first (a bad one: nothing is fetched), then
    downloaded one after another, each announced by a progress line on stderr.

    Wide because: a typer command takes one parameter per flag.
    Long because: the flags' declarations; the body parses them and calls ``download_symbols``.
    """
    from gridctl.data.download import FetchOptions, OptionError, download_symbols
    from gridctl.data.paths import require_writable_dir
    from gridctl.data.store import default_data_dir

    symbols = parse_symbols(symbol)
    start_ms = parse_date_ms(start, "--start")
    end_ms = parse_date_ms(end, "--end")
    target = require_writable_dir(
        data_dir if data_dir is not None else default_data_dir(),
        "--data-dir" if data_dir is not None else "data dir ($GRIDCTL_DATA_DIR or default)",
    )

    def announce(i: int, name: str) -> None:
        if len(symbols) > 1:
            typer.echo(f"[{i + 1}/{len(symbols)}] {exchange} {name} {timeframe} ...", err=True)

    try:
        fetch = FetchOptions(
            kinds=parse_kinds(kinds),
            progress=not no_progress and not as_json,
            api_url=api_url,
            timeout_s=timeout,
        )
        summaries = download_symbols(
            exchange, symbols, timeframe, start_ms, end_ms, target, fetch, on_symbol=announce
        )
    except OptionError as err:
        name = _OPTION_NAMES.get(err.option, err.option)
        # One line per problem (several bad symbols: one each), each read as its own error.
        raise GridctlError("\nerror: ".join(f"{name}: {line}" for line in str(err).splitlines())) from None
    if as_json:
        payload = (
            summaries[0].to_dict() if len(summaries) == 1 else {"symbols": [s.to_dict() for s in summaries]}
        )
        typer.echo(json.dumps(payload, sort_keys=True))
    else:
        typer.echo("\n".join(s.describe() for s in summaries))


def register(app: typer.Typer) -> None:
    """Add the ``download`` command to the ``gridctl data`` app."""
    app.command("download")(download_command)
