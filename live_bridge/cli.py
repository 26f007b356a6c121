"""`gridctl live`: the live bridge command (paper, live, replay). A shell: it parses the flags into one
``LiveOptions`` (live_bridge/options.py, where every default and range lives), calls the library
(live_bridge/runner.py) and prints what it returns.

Heavy imports (numba kernels, ccxt, FastAPI) happen inside the command, so ``gridctl --help`` stays fast.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from gridctl.configs.errors import GridctlError
from gridctl.live_bridge.options import LiveOptions, bounds

#: (compute_stats, write_results, stats_json, basket) of the research layer, given by the top-level
#: cli.py: live_bridge and research are one layer and do not import each other. ``basket`` holds
#: ``load_strategy`` (research.cli.load_basket_strategy), ``run`` (research.basket.run_basket_backtest)
#: and ``write`` (research.results.write_basket_results).
ResultsProvider = Callable[[], tuple[Callable[..., Any], Callable[..., Any], Callable[..., str], Any]]
_results: ResultsProvider | None = None
#: The defaults every flag shows and falls back to.
D = LiveOptions()


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
    strategy: Annotated[
        str,
        typer.Option(
            "--strategy", "-s", help="Strategy config: shipped name (see `config list`) or YAML path."
        ),
    ] = D.strategy,
    venue: Annotated[
        str, typer.Option("--venue", "-v", help="Venue config: shipped name or YAML path.")
    ] = D.venue,
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
    ] = D.replay,
    exchange: Annotated[
        str, typer.Option("--exchange", help="Exchange of the stored data (--replay).")
    ] = D.exchange,
    symbol: Annotated[
        str | None, typer.Option("--symbol", help="ccxt symbol (default: the strategy's instrument).")
    ] = D.symbol,
    symbols: Annotated[
        list[str] | None,
        typer.Option(
            "--symbols",
            help="A basket on one account (one wallet), ccxt symbols as a comma list or repeated (sets "
            "strategy.symbols, as `gridctl backtest --symbols`; default: the strategy's, if it lists any); "
            "with --replay a stored basket, else traded on the exchange's feed (--paper) or account.",
        ),
    ] = None,
    timeframe: Annotated[str, typer.Option("--timeframe", help="Bar timeframe.")] = D.timeframe,
    start: Annotated[
        str | None,
        typer.Option("--start", help="--replay: first day (YYYY-MM-DD, UTC), as `gridctl backtest --start`."),
    ] = D.start,
    end: Annotated[
        str | None,
        typer.Option(
            "--end",
            help="--replay: day after the last bar (YYYY-MM-DD, UTC, exclusive), as `backtest --end`.",
        ),
    ] = D.end,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Write ledgers, stats.json and report.html here (as `gridctl backtest --out`)."
        ),
    ] = D.out,
    testnet: Annotated[
        bool,
        typer.Option(
            "--testnet", help="Required to trade a testnet venue with --live; refused for production venues."
        ),
    ] = D.testnet,
    api_url: Annotated[
        str | None,
        typer.Option(
            "--api-url",
            help="Exchange root URL (scheme://host:port) replacing the venue's hosts, e.g. an emulator.",
        ),
    ] = D.api_url,
    journal: Annotated[
        Path | None,
        typer.Option(
            "--journal",
            help="SQLite journal; an existing one is restarted from and reconciled with the exchange.",
        ),
    ] = D.journal,
    ops_port: Annotated[
        int,
        typer.Option(
            "--ops-port",
            **bounds("ops_port"),
            help="Ops API / metrics port on 127.0.0.1 (0 picks a free port).",
        ),
    ] = D.ops_port,
    token_env: Annotated[
        str,
        typer.Option(
            "--ops-token-env",
            help="Environment variable holding the ops API bearer token (required with --live).",
        ),
    ] = D.token_env,
    min_balance: Annotated[
        float,
        typer.Option(
            "--min-balance",
            **bounds("min_balance"),
            help="--live: refuse to start below this available balance (quote).",
        ),
    ] = D.min_balance,
    allow_gate_off: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-gate-off", help="--live: allow this risk_management.enable_* gate to be off (repeat)."
        ),
    ] = None,
    max_skew_ms: Annotated[
        int,
        typer.Option(
            "--max-clock-skew-ms",
            **bounds("max_skew_ms"),
            help="Largest allowed |exchange clock - local clock|.",
        ),
    ] = D.max_skew_ms,
    max_bars: Annotated[
        int | None,
        typer.Option(
            "--max-bars",
            **bounds("max_bars"),
            help="Stop after this many live bars (default: run until Ctrl-C).",
        ),
    ] = D.max_bars,
    poll_s: Annotated[
        float,
        typer.Option(
            "--poll-s",
            **bounds("poll_s"),
            help="Longest wait between two polls of the exchange (s); polls are aimed at each bar's close.",
        ),
    ] = D.poll_s,
    fills_poll_s: Annotated[
        float,
        typer.Option(
            "--fills-poll-s",
            **bounds("fills_poll_s"),
            help="--live: between bar closes, look for fills this often (s); new lots' TP/SL go out at once.",
        ),
    ] = D.fills_poll_s,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result / readiness as JSON.")
    ] = D.as_json,
) -> None:
    """Run the live bridge: --paper (simulated fills), --live (real orders), or --paper --replay PATH.

    Wide because: a typer command takes one parameter per flag; each default is read from LiveOptions.
    Long because: the flags' declarations; the body only builds LiveOptions and calls ``_run_live``.
    """
    if paper == live_mode:
        raise GridctlError("choose exactly one of --paper and --live")
    from gridctl.configs.cli import parse_symbols_flag

    opts = LiveOptions(
        mode="live" if live_mode else "paper",
        strategy=strategy,
        venue=venue,
        overrides=tuple(overrides or ()),
        venue_overrides=tuple(venue_overrides or ()),
        replay=replay,
        exchange=exchange,
        symbol=symbol,
        symbols=parse_symbols_flag(symbols, basket=True),
        timeframe=timeframe,
        start=start,
        end=end,
        out=out,
        testnet=testnet,
        api_url=api_url,
        journal=journal,
        ops_port=ops_port,
        token_env=token_env,
        min_balance=min_balance,
        allow_gate_off=tuple(allow_gate_off or ()),
        max_skew_ms=max_skew_ms,
        max_bars=max_bars,
        poll_s=poll_s,
        fills_poll_s=fills_poll_s,
        as_json=as_json,
    )
    _run_live(opts)


def _run_live(opts: LiveOptions) -> None:
    """Load the configs ``opts`` names and run: a replay or the exchange, one symbol or a basket."""
    from gridctl.live_bridge.runner import load_run_configs

    strategy_cfg, venue_cfg, _symbol = load_run_configs(opts)
    is_basket = bool(opts.symbols) or strategy_cfg.strategy.symbols is not None
    if opts.replay is not None and is_basket:
        _replay_basket(venue_cfg, opts)
    elif is_basket:
        _run_exchange_basket(venue_cfg, opts)
    elif opts.replay is not None:
        _replay(strategy_cfg, venue_cfg, opts)
    else:
        _run_exchange(strategy_cfg, venue_cfg, opts)


def _research(what: str) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., str], Any]:
    """The research layer's (compute_stats, write_results, stats_json, basket), given by register()."""
    if _results is None:
        raise GridctlError(f"{what} (mount the command with register())")
    return _results()


def _basket_strategy(basket: Any, opts: LiveOptions, what: str) -> Any:
    """The basket strategy ``opts`` names (with --symbols and --set); a --symbol beside it is refused."""
    strategy = basket.load_strategy(opts.strategy, opts.symbols, list(opts.overrides))
    if opts.symbol is not None:
        raise GridctlError(
            f"--symbol {opts.symbol}: strategy {strategy.origin} trades the basket "
            f"{list(strategy.basket_symbols)} (strategy.symbols); give --symbols for {what}"
        )
    return strategy


def _check_readiness(ready: Any, ctx: Any, opts: LiveOptions) -> None:
    """Print the readiness checklist (stderr, or one JSON line on stdout with --json); if an item
    failed, close the run's resources and raise its error."""
    if opts.as_json:
        sys.stdout.write(json.dumps({"readiness": ready.as_json()}) + "\n")
    else:
        for item, ok, detail in ready.rows:
            typer.echo(f"{'ok ' if ok else 'FAIL'} {item}: {detail}", err=True)
    try:
        ready.require()
    except GridctlError:
        ctx.close()
        raise


def _how_started(ctx: Any, opts: LiveOptions) -> str:
    """``new run``, or restarted from the journal (and, live, reconciled with the exchange)."""
    if not ctx.restarted:
        return "new run"
    return "restarted from the journal" + (", reconciled with the exchange" if opts.mode == "live" else "")


def _replay(strategy: Any, venue: Any, opts: LiveOptions) -> None:
    """`live --paper --replay`: run the replay, write the results to --out, print the speed."""
    from gridctl.live_bridge.runner import run_replay

    compute_stats, write_results, stats_json, _basket = _research("replay results need the research layer")
    output, market, stats, _bridge = run_replay(strategy, venue, opts, compute_stats)
    if opts.out is not None:
        write_results(opts.out, output, market, stats)
    _print_replay(opts, output.meta, stats, stats_json, f"{market.symbol} {market.timeframe}", stats)


def _replay_basket(venue: Any, opts: LiveOptions) -> None:
    """`live --paper --replay DATA-DIR --symbols ...` (or a strategy with strategy.symbols): the basket's
    stored markets loaded and checked as `gridctl backtest --symbols` does, stepped one aligned closed bar
    at a time by the live basket session (``live_bridge.basket.replay_basket``); the results written to
    --out as the backtest writes them."""
    from gridctl.live_bridge.basket import replay_basket

    _compute, _write, stats_json, basket = _research("replay results need the research layer")
    source = opts.replay
    assert source is not None
    if not source.is_dir():
        raise GridctlError(
            f"--replay {source}: a basket replays a data directory (with --exchange/--timeframe)"
        )
    if opts.out is not None and opts.out.exists() and not opts.out.is_dir():
        raise GridctlError(f"--out: {opts.out} exists and is not a directory")
    strategy = _basket_strategy(basket, opts, "a basket replay")
    start_ms, end_ms = opts.window()
    run = basket.run(
        strategy, venue, source, opts.exchange, opts.timeframe, start_ms, end_ms, run=replay_basket
    )
    if opts.out is not None:
        basket.write(opts.out, run)
    what = f"the basket {', '.join(run.output.symbols)} {opts.timeframe}"
    _print_replay(opts, run.output.meta, run.stats, stats_json, what, run.stats["account"])


def _print_replay(
    opts: LiveOptions,
    meta: dict[str, Any],
    stats: dict[str, Any],
    stats_json: Callable[..., str],
    what: str,
    account: dict[str, Any],
) -> None:
    """A replay's result: with --json the stats and the replay's speed as one JSON object, else one line
    (bars of ``what``, seconds, bars/s, the ``account``'s final equity and fills, where --out is)."""
    secs = float(meta["replay_seconds"])
    bars = int(meta["bars"])
    speed = {"bars": bars, "seconds": secs, "bars_per_second": bars / secs if secs > 0 else None}
    if opts.as_json:
        sys.stdout.write(stats_json({**stats, "replay": speed}) + "\n")
        return
    typer.echo(
        f"replayed {bars:,} bars of {what} in {secs:.2f} s "
        f"({speed['bars_per_second'] or 0:,.0f} bars/s); final equity {account['final_equity']:,.2f}, "
        f"{account['n_fills']} fills" + (f"; results in {opts.out}" if opts.out is not None else "")
    )


@contextmanager
def _sigterm_stops() -> Iterator[None]:
    """In the block, SIGTERM (``kill``, ``systemctl stop``, ``docker stop``) stops the run as Ctrl-C does:
    ``KeyboardInterrupt("SIGTERM")`` in the main thread, so the ops server and the journal are closed and
    the stop is reported, instead of the process vanishing at the signal's default action."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt("SIGTERM")

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _cancel_entries(ctx: Any, bridges: dict[str, Any]) -> str:
    """``runner.cancel_entries_at_stop`` for a stopped run, as text for its stop line ("" on paper); a
    second Ctrl-C or SIGTERM while it runs skips it."""
    from gridctl.live_bridge.runner import cancel_entries_at_stop

    if any(b.o.mode == "live" for b in bridges.values()):
        typer.echo("stopping: cancelling the resting entries (Ctrl-C again to skip)", err=True)
    try:
        with _sigterm_stops():
            text = cancel_entries_at_stop(bridges)
    except KeyboardInterrupt:
        text = "COULD NOT cancel the resting entries (interrupted again); cancel them on the exchange"
    return f"; {text}" if text else ""


def _stop_how(err: KeyboardInterrupt) -> str:
    return "SIGTERM" if err.args == ("SIGTERM",) else "Ctrl-C"


def _run_exchange(strategy: Any, venue: Any, opts: LiveOptions) -> None:
    """`live --paper|--live` against the exchange: readiness, then the control loop until done or Ctrl-C."""
    from gridctl.live_bridge.runner import prepare, run_loop

    ready, ctx = prepare(strategy, venue, opts, os.environ.get(opts.token_env))
    _check_readiness(ready, ctx, opts)
    mode = opts.mode
    how = _how_started(ctx, opts)
    typer.echo(
        f"gridctl live --{mode}: run {ctx.bridge.o.run_id} ({how}), ops API on {ctx.ops_url}", err=True
    )
    try:
        with _sigterm_stops():
            if ctx.restarted and mode == "live":
                ctx.bridge.resume_after_restart()  # exits for what the restart booked, guards, stale orders
            run_loop(ctx, max_bars=opts.max_bars, poll_s=opts.poll_s, fills_poll_s=opts.fills_poll_s)
    except KeyboardInterrupt as err:
        cancelled = _cancel_entries(ctx, {ctx.bridge.s.symbol: ctx.bridge})
        typer.echo(
            f"stopped ({_stop_how(err)}){cancelled}; the journal holds the state for a restart", err=True
        )
    finally:
        ctx.close()
    if opts.as_json:
        sys.stdout.write(json.dumps({"latency": ctx.bridge.latency.summary(), "bars": ctx.bridge.s.n}) + "\n")


def _run_exchange_basket(venue: Any, opts: LiveOptions) -> None:
    """`live --paper|--live --symbols A,B` (or a strategy with strategy.symbols) against the exchange: the
    basket's readiness (per symbol), then the basket's control loop (``runner.run_basket_loop``)."""
    from gridctl.live_bridge.runner import prepare_basket, run_basket_loop

    basket = _research("a basket needs the research layer's loader")[3]
    strategy = _basket_strategy(basket, opts, "a basket")
    ready, ctx = prepare_basket(strategy, venue, opts, os.environ.get(opts.token_env))
    _check_readiness(ready, ctx, opts)
    bridges = ctx.bridge.bridges
    run_id = next(iter(bridges.values())).o.run_id
    typer.echo(
        f"gridctl live --{opts.mode}: basket {', '.join(bridges)} run {run_id} ({_how_started(ctx, opts)}), "
        f"ops API on {ctx.ops_url}",
        err=True,
    )
    try:
        with _sigterm_stops():
            if ctx.restarted and opts.mode == "live":
                for bridge in bridges.values():  # per symbol: exits for what was booked, guards, stale orders
                    bridge.resume_after_restart()
            run_basket_loop(ctx, max_bars=opts.max_bars, poll_s=opts.poll_s, fills_poll_s=opts.fills_poll_s)
    except KeyboardInterrupt as err:
        how, cancelled = _stop_how(err), _cancel_entries(ctx, bridges)
        typer.echo(
            f"stopped ({how}){cancelled}; the journal holds the basket's state for a restart", err=True
        )
    finally:
        ctx.close()
    if opts.as_json:
        out: dict[str, Any] = {"latency": ctx.bridge.latency.summary(), "bars": ctx.bridge.session.n}
        if opts.mode == "live":  # each symbol's orders go out in turn: bar received -> that symbol's sent
            out["latency_per_symbol"] = {sym: b.latency.summary() for sym, b in bridges.items()}
        sys.stdout.write(json.dumps(out) + "\n")


def register(app: typer.Typer, results: ResultsProvider) -> None:
    """Add ``gridctl live`` to the top-level app; ``results`` lazily gives the research result writers."""
    global _results
    _results = results
    app.command("live")(live)
