"""`gridctl live`: the live bridge command (paper, live, replay). A thin shell over live_bridge.

Heavy imports (numba kernels, ccxt, FastAPI) happen inside the command, so ``gridctl --help`` stays fast.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from gridctl.configs.errors import GridctlError

DEFAULT_TOKEN_ENV = "GRIDCTL_OPS_TOKEN"

#: (compute_stats, write_results, stats_json) of the research layer, given by the top-level cli.py:
#: live_bridge and research are one layer and do not import each other.
ResultsProvider = Callable[[], tuple[Callable[..., Any], Callable[..., Any], Callable[..., str]]]
_results: ResultsProvider | None = None


def _run_id() -> str:
    return secrets.token_hex(4)


def run_replay(
    strategy: Any,
    venue: Any,
    source: Path,
    exchange: str,
    symbol: str,
    timeframe: str,
    compute_stats: Callable[..., dict[str, Any]],
) -> tuple[Any, Any, dict[str, Any], Any]:
    """Replay a stored market through the paper bridge; returns (run output, market, stats, bridge).

    ``compute_stats`` is ``research.stats.compute_stats`` (passed in: research is the same layer).
    """
    from gridctl.live_bridge.bridge import Bridge
    from gridctl.live_bridge.replay import ReplayFeed, load_replay_market
    from gridctl.live_bridge.session import EngineSession

    market = load_replay_market(source, None, exchange, symbol, timeframe)
    session = EngineSession(strategy, venue, market.symbol, market.timeframe, capacity=len(market.ts) + 16)
    bridge = Bridge(session, _options(strategy, "replay", _run_id()))
    t0 = time.perf_counter()
    for bar in ReplayFeed(market):
        bridge.on_bar(bar)
        if session.liquidated:
            break
    elapsed = time.perf_counter() - t0
    output = session.output()
    output.meta["bars_total"] = len(market.ts)
    output.meta["replay_seconds"] = elapsed
    return output, market, compute_stats(output, market, strategy, venue), bridge


#: Virtual file systems a journal can never live on.
_VIRTUAL_ROOTS = ("proc", "sys", "dev")


def check_journal_path(path: Path) -> None:
    """``--journal`` as a usable journal: an existing SQLite file we may write, or a new file in a
    writable folder; anything else (a folder, a corrupt file, /proc, ...) is one GridctlError line."""
    import sqlite3

    from gridctl.data.paths import require_writable_dir

    target = path.expanduser()
    resolved = target.resolve()
    if len(resolved.parts) > 1 and resolved.parts[1] in _VIRTUAL_ROOTS:
        raise GridctlError(f"--journal: {target} is on /{resolved.parts[1]}, not a file system for a journal")
    if target.is_dir():
        raise GridctlError(f"--journal: {target} is a folder; give the journal file's path")
    if not target.exists():
        require_writable_dir(target.parent, "--journal")
        return
    if not target.is_file():
        raise GridctlError(f"--journal: {target} is not a regular file")
    if not os.access(target, os.R_OK | os.W_OK):
        raise GridctlError(f"--journal: {target} is not readable and writable by this user")
    try:
        db = sqlite3.connect(f"file:{target}?mode=ro", uri=True, timeout=5)
        try:
            db.execute("SELECT name FROM sqlite_master").fetchall()
        finally:
            db.close()
    except sqlite3.Error as err:
        raise GridctlError(f"--journal: {target} is not a journal (SQLite: {err})") from None


def _options(strategy: Any, mode: str, run_id: str) -> Any:
    from gridctl.live_bridge.bridge import BridgeOptions

    ex = strategy.execution
    return BridgeOptions(
        mode=mode,
        run_id=run_id,
        maker_only=bool(ex.maker_only),
        retry_delay_ms=int(ex.retry_delay_ms),
        unexplained_position=str(ex.unexplained_position),
    )


def live(
    paper: Annotated[
        bool, typer.Option("--paper", help="Real market data, fills simulated by the engine; no credentials.")
    ] = False,
    live_mode: Annotated[
        bool,
        typer.Option(
            "--live", help="Real orders through the exchange (credentials from the venue's env vars)."
        ),
    ] = False,
    config: Annotated[
        str, typer.Option("--config", help="Strategy name (configs/strategies) or YAML path.")
    ] = "default",
    venue: Annotated[
        str, typer.Option("--venue", help="Venue name (configs/venues) or YAML path.")
    ] = "binance_futures",
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="Override a strategy field, e.g. policy.throttle=0.5.")
    ] = None,
    venue_overrides: Annotated[
        list[str] | None,
        typer.Option("--venue-set", help="Override a venue field, e.g. precision.min_notional=100."),
    ] = None,
    replay: Annotated[
        Path | None,
        typer.Option(
            "--replay",
            help=(
                "Replay stored data instead of the exchange: a data directory (with --exchange/--symbol/"
                "--timeframe) or a <YYYY-MM>.parquet partition in one."
            ),
        ),
    ] = None,
    exchange: Annotated[
        str, typer.Option("--exchange", help="Exchange of the stored data (--replay).")
    ] = "sample",
    symbol: Annotated[
        str | None, typer.Option("--symbol", help="ccxt symbol (default: the strategy's instrument).")
    ] = None,
    timeframe: Annotated[str, typer.Option("--timeframe", help="Bar timeframe.")] = "1m",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Write ledgers, stats.json and report.html here (as `gridctl backtest --out`)."
        ),
    ] = None,
    testnet: Annotated[
        bool,
        typer.Option(
            "--testnet", help="Required to trade a testnet venue with --live; refused for production venues."
        ),
    ] = False,
    api_url: Annotated[
        str | None,
        typer.Option(
            "--api-url",
            help="Exchange root URL (scheme://host:port) replacing the venue's hosts, e.g. an emulator.",
        ),
    ] = None,
    journal_path: Annotated[
        Path | None,
        typer.Option(
            "--journal",
            help="SQLite journal; an existing one is restarted from and reconciled with the exchange.",
        ),
    ] = None,
    ops_port: Annotated[
        int, typer.Option("--ops-port", help="Ops API / metrics port on 127.0.0.1 (0 picks a free port).")
    ] = 8787,
    token_env: Annotated[
        str,
        typer.Option(
            "--ops-token-env",
            help="Environment variable holding the ops API bearer token (required with --live).",
        ),
    ] = DEFAULT_TOKEN_ENV,
    min_balance: Annotated[
        float,
        typer.Option("--min-balance", help="--live: refuse to start below this available balance (quote)."),
    ] = 50.0,
    allow_gate_off: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-gate-off", help="--live: allow this risk_management.enable_* gate to be off (repeat)."
        ),
    ] = None,
    max_skew_ms: Annotated[
        int, typer.Option("--max-clock-skew-ms", help="Largest allowed |exchange clock - local clock|.")
    ] = 1000,
    max_bars: Annotated[
        int | None,
        typer.Option("--max-bars", help="Stop after this many live bars (default: run until Ctrl-C)."),
    ] = None,
    poll_s: Annotated[
        float,
        typer.Option(
            "--poll-s",
            help="Longest wait between two polls of the exchange (s); polls are aimed at each bar's close.",
        ),
    ] = 1.0,
    fills_poll_s: Annotated[
        float,
        typer.Option(
            "--fills-poll-s",
            help="--live: between bar closes, look for fills this often (s); new lots' TP/SL go out at once.",
        ),
    ] = 5.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result / readiness as JSON.")] = False,
) -> None:
    """Run the live bridge: --paper (simulated fills), --live (real orders), or --paper --replay PATH."""
    if paper == live_mode:
        raise GridctlError("choose exactly one of --paper and --live")
    if not poll_s > 0:
        raise GridctlError(f"--poll-s must be a positive number of seconds, got {poll_s}")
    if not fills_poll_s > 0:
        raise GridctlError(f"--fills-poll-s must be a positive number of seconds, got {fills_poll_s}")
    if replay is not None and live_mode:
        raise GridctlError("--replay works with --paper only (a replay never sends orders)")
    if out is not None and replay is None:
        raise GridctlError("--out is for --replay runs; a live run journals to --journal")
    if not math.isfinite(min_balance) or min_balance < 0:
        raise GridctlError(f"--min-balance must be a finite amount >= 0 (quote currency), got {min_balance}")
    if not 0 <= ops_port <= 65535:
        raise GridctlError(f"--ops-port must be a TCP port 0..65535 (0 picks a free one), got {ops_port}")
    if max_bars is not None and max_bars < 1:
        raise GridctlError(
            f"--max-bars must be at least 1 (leave it out to run until Ctrl-C), got {max_bars}"
        )
    if journal_path is not None and replay is None:
        check_journal_path(journal_path)
    from gridctl.configs.loader import load_strategy, load_venue

    strategy = load_strategy(config, list(overrides or []))
    venue_cfg = load_venue(venue, list(venue_overrides or []), option="--venue-set")
    sym = symbol or strategy.ccxt_symbol
    if replay is not None:
        _replay_command(strategy, venue_cfg, replay, exchange, sym, timeframe, out, as_json)
        return
    _run_exchange(
        strategy,
        venue_cfg,
        sym,
        timeframe,
        "live" if live_mode else "paper",
        testnet,
        api_url,
        journal_path,
        ops_port,
        token_env,
        min_balance,
        list(allow_gate_off or []),
        max_skew_ms,
        max_bars,
        as_json,
        poll_s,
        fills_poll_s,
    )


def _replay_command(
    strategy: Any,
    venue: Any,
    source: Path,
    exchange: str,
    sym: str,
    timeframe: str,
    out: Path | None,
    as_json: bool,
) -> None:
    if _results is None:
        raise GridctlError("replay results need the research layer (mount the command with register())")
    compute_stats, write_results, stats_json = _results()
    if out is not None and out.exists() and not out.is_dir():
        raise GridctlError(f"--out: {out} exists and is not a directory")
    if not source.exists():
        raise GridctlError(f"--replay: {source} does not exist")
    # A replay plays what is stored; it never generates a market (an empty folder is refused by the load).
    output, market, stats, _bridge = run_replay(
        strategy, venue, source, exchange, sym, timeframe, compute_stats
    )
    if out is not None:
        write_results(out, output, market, stats)
    secs = output.meta["replay_seconds"]
    speed = {
        "bars": session_bars(output),
        "seconds": secs,
        "bars_per_second": session_bars(output) / secs if secs > 0 else None,
    }
    if as_json:
        sys.stdout.write(stats_json({**stats, "replay": speed}) + "\n")
        return
    typer.echo(
        f"replayed {speed['bars']:,} bars of {market.symbol} {market.timeframe} in {secs:.2f} s "
        f"({speed['bars_per_second'] or 0:,.0f} bars/s); final equity {stats['final_equity']:,.2f}, "
        f"{stats['n_fills']} fills" + (f"; results in {out}" if out is not None else "")
    )


def session_bars(output: Any) -> int:
    return int(output.meta["bars"])


def _run_exchange(
    strategy: Any,
    venue: Any,
    sym: str,
    timeframe: str,
    mode: str,
    testnet: bool,
    api_url: str | None,
    journal_path: Path | None,
    ops_port: int,
    token_env: str,
    min_balance: float,
    allow_off: list[str],
    max_skew_ms: int,
    max_bars: int | None,
    as_json: bool,
    poll_s: float = 1.0,
    fills_poll_s: float = 5.0,
) -> None:
    from gridctl.live_bridge.runner import prepare, run_loop

    ready, ctx = prepare(
        strategy,
        venue,
        sym,
        timeframe,
        mode,
        testnet,
        api_url,
        journal_path,
        ops_port,
        os.environ.get(token_env),
        token_env,
        min_balance,
        allow_off,
        max_skew_ms,
    )
    if as_json:
        sys.stdout.write(json.dumps({"readiness": ready.as_json()}) + "\n")
    else:
        for item, ok, detail in ready.rows:
            typer.echo(f"{'ok ' if ok else 'FAIL'} {item}: {detail}", err=True)
    try:
        ready.require()
    except GridctlError:
        ctx.close()
        raise
    how = "new run"
    if ctx.restarted:
        how = "restarted from the journal" + (", reconciled with the exchange" if mode == "live" else "")
    typer.echo(
        f"gridctl live --{mode}: run {ctx.bridge.o.run_id} ({how}), ops API on {ctx.ops_url}", err=True
    )
    try:
        if ctx.restarted and mode == "live":
            ctx.bridge.resume_after_restart()  # exits for what the restart booked, guards, stale orders
        run_loop(ctx, max_bars=max_bars, poll_s=poll_s, fills_poll_s=fills_poll_s)
    except KeyboardInterrupt:
        typer.echo("stopped (Ctrl-C); the journal holds the state for a restart", err=True)
    finally:
        ctx.close()
    if as_json:
        sys.stdout.write(json.dumps({"latency": ctx.bridge.latency.summary(), "bars": ctx.bridge.s.n}) + "\n")


def register(app: typer.Typer, results: ResultsProvider) -> None:
    """Add ``gridctl live`` to the top-level app; ``results`` lazily gives the research result writers."""
    global _results
    _results = results
    app.command("live")(live)
