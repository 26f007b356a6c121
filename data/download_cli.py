"""`gridctl data download`: parse and check the options, then hand over to `data.download.download`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from gridctl.configs.errors import GridctlError

# Same as data.download.DEFAULT_TIMEOUT_S (not imported here: ccxt is slow to import for every command).
DEFAULT_TIMEOUT_S = 20.0
MAX_TIMEOUT_S = 3600.0

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


def register(app: typer.Typer) -> None:
    """Add the ``download`` command to the ``gridctl data`` app."""

    @app.command("download")
    def download_command(
        symbol: Annotated[str, typer.Option("--symbol", help="ccxt symbol, e.g. BTC/USDT:USDT")],
        start: Annotated[str, typer.Option("--start", help="first bar (UTC), YYYY-MM-DD or ISO datetime")],
        end: Annotated[str, typer.Option("--end", help="end of the range, exclusive (UTC)")],
        exchange: Annotated[str, typer.Option("--exchange", help="ccxt exchange id")] = "binanceusdm",
        timeframe: Annotated[str, typer.Option("--timeframe", help="candle timeframe, e.g. 1m, 1h")] = "1m",
        kinds: Annotated[
            str, typer.Option("--kinds", help="comma list of candles, mark, funding")
        ] = "candles,mark,funding",
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
        """Download trade candles, mark-price candles and funding into the local store (incremental)."""
        from gridctl.data.download import OptionError, download
        from gridctl.data.paths import require_writable_dir
        from gridctl.data.store import default_data_dir

        start_ms = parse_date_ms(start, "--start")
        end_ms = parse_date_ms(end, "--end")
        target = require_writable_dir(
            data_dir if data_dir is not None else default_data_dir(),
            "--data-dir" if data_dir is not None else "data dir ($GRIDCTL_DATA_DIR or default)",
        )
        try:
            summary = download(
                exchange,
                symbol,
                timeframe,
                start_ms,
                end_ms,
                target,
                kinds=parse_kinds(kinds),
                progress=not no_progress and not as_json,
                api_url=api_url,
                timeout_s=timeout,
            )
        except OptionError as err:
            raise GridctlError(f"{_OPTION_NAMES.get(err.option, err.option)}: {err}") from None
        if as_json:
            typer.echo(json.dumps(summary.to_dict(), sort_keys=True))
        else:
            typer.echo(summary.describe())
