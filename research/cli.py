"""`gridctl backtest` and `gridctl bench`: thin shells over engine.run and research."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from gridctl.configs.errors import GridctlError
from gridctl.research.options import BacktestOptions

#: The defaults every `backtest` flag shows and falls back to.
D = BacktestOptions()


#: Width of result tables when stdout is not a terminal: rich would assume 80 columns and wrap or cut
#: cells; piped output keeps each row on one line (``COLUMNS`` still wins when set).
PIPED_WIDTH = 1_000


def output_console() -> Console:
    """Console for results on stdout: the terminal's width on a terminal, one line per row when piped."""
    if sys.stdout.isatty():
        return Console()
    columns = os.environ.get("COLUMNS", "")
    # Explicit width when piped: rich would otherwise guess (80 columns, or Jupyter's 115 when an
    # IPython kernel has been imported in this process).
    width = int(columns) if columns.isdigit() and int(columns) > 0 else PIPED_WIDTH
    return Console(width=width, force_jupyter=False)


#: ``gridctl bench`` ranges: enough bars for the regime warm-up, at most the sample generator's ten years
#: of minutes (3,650 days), and at most 4,096 parameter sets (the batch holds one state row per set).
BENCH_MIN_BARS = 2_000
BENCH_MAX_BARS = 3_650 * 1_440
BENCH_MAX_SETS = 4_096
#: ``gridctl bench --symbols``: at most this many synthetic markets in the basket.
BENCH_MAX_SYMBOLS = 16

#: What a cold compile of the single-run kernels takes on a 2-core machine (``gridctl bench --startup``).
COMPILE_ESTIMATE_S = 20


@contextmanager
def compile_notice(status: Console) -> Iterator[None]:
    """Say on stderr that the kernels are being compiled (a spinner on a terminal, one line otherwise)."""
    text = f"compiling kernels (first run only, ~{COMPILE_ESTIMATE_S} s) ..."
    if not status.is_terminal:
        status.print(f"[dim]{text}[/dim]")
        yield
        return
    t0 = time.perf_counter()
    with status.status(text, spinner="dots"):
        yield
    took = time.perf_counter() - t0
    status.print(f"[dim]compiled and ran in {took:.1f} s; the kernels are cached now[/dim]")


def check_run_options(
    timeframe: str, start: str | None, end: str | None, overrides: list[str], detail: str | None
) -> tuple[list[str], int | None, int | None]:
    """Check --timeframe, --detail, --start/--end; returns (overrides with --detail's, start ms, end ms)."""
    from gridctl.data.timeframes import timeframe_ms, window_ms

    try:
        timeframe_ms(timeframe)
    except GridctlError as err:
        raise GridctlError(f"--timeframe: {err}") from None
    if detail is not None:
        try:
            timeframe_ms(detail)
        except GridctlError as err:
            raise GridctlError(f"--detail: {err}") from None
        overrides = [*overrides, f"backtest.detail_timeframe={detail}"]
    start_ms, end_ms = window_ms(start, end)
    return overrides, start_ms, end_ms


def check_detail_timeframe(strategy: Any, timeframe: str, detail: str | None) -> None:
    """The strategy's ``backtest.detail_timeframe`` must be finer than ``timeframe`` and divide it."""
    from gridctl.data.timeframes import timeframe_ms

    detail_tf = strategy.backtest.detail_timeframe
    if detail_tf is not None:
        fine_ms, coarse_ms = timeframe_ms(detail_tf), timeframe_ms(timeframe)
        if not (fine_ms < coarse_ms and coarse_ms % fine_ms == 0):
            given = f"--detail {detail}" if detail is not None else f"backtest.detail_timeframe {detail_tf}"
            raise GridctlError(
                f"{given}: detail bars must be finer than the run's --timeframe {timeframe} and divide it "
                f"(e.g. 1m detail on a 1h run); {detail_tf} is not"
            )


def load_basket_strategy(config: str, symbols: tuple[str, ...], overrides: list[str]) -> Any | None:
    """The basket strategy of ``--symbols`` (or of the strategy's own ``strategy.symbols``), else None."""
    from gridctl.configs.loader import load_strategy
    from gridctl.configs.overrides import basket_overrides, symbol_override_sets

    if symbols:  # the basket from the shared --set values, then each symbol's own --set values on it
        shared, own = symbol_override_sets(overrides)
        strategy = load_strategy(config, shared)
        return load_strategy(config, [*shared, *basket_overrides(strategy, symbols), *own])
    strategy = load_strategy(config, overrides)
    return strategy if strategy.strategy.symbols is not None else None


def run_backtest(opts: BacktestOptions, status: Console | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """Load configs and data, run one backtest with curves; returns (run output, market, stats).

    ``opts.detail`` (``--detail``) sets ``backtest.detail_timeframe``: the fills walk those finer bars,
    loaded over the same window. The stats carry the run's path bracket (high first / low first).
    """
    from gridctl.configs.crosscheck import check_notional_in_range, check_strategy_on_venue
    from gridctl.configs.loader import (
        load_strategy,
        load_venue,
        refuse_inert_symbol_overrides,
        retarget_strategy,
    )
    from gridctl.data.market import load_market
    from gridctl.data.sample import SAMPLE_EXCHANGE, SAMPLE_SYMBOL, ensure_sample
    from gridctl.data.store import default_data_dir
    from gridctl.data.timeframes import timeframe_ms
    from gridctl.engine.regime import warmup_bars
    from gridctl.engine.run import compile_early, run_single
    from gridctl.research.stats import backtest_stats

    config, symbol, detail = opts.strategy, opts.symbol, opts.detail
    exchange, timeframe = opts.exchange, opts.timeframe
    data_dir = opts.data_dir if opts.data_dir is not None else default_data_dir()
    overrides, start_ms, end_ms = check_run_options(
        timeframe, opts.start, opts.end, list(opts.overrides), detail
    )
    # Configs first: a bad --strategy/--venue/--set fails before anything is generated or written.
    # --symbol names what to trade: the strategy's instrument follows it (its rules come from the venue).
    strategy = retarget_strategy(config, load_strategy(config, overrides), symbol, overrides)
    refuse_inert_symbol_overrides(strategy)
    check_detail_timeframe(strategy, timeframe, detail)
    detail_tf = strategy.backtest.detail_timeframe
    venue = load_venue(opts.venue)
    sym = symbol or strategy.ccxt_symbol
    check_strategy_on_venue(strategy, venue, sym)
    compile_early(strategy, venue, sym, timeframe_ms(timeframe))  # cold kernels: a helper starts now
    if (exchange, sym) == (SAMPLE_EXCHANGE, SAMPLE_SYMBOL):
        if status is not None:
            status.print(f"[dim]ensuring the bundled sample market in {data_dir} ...[/dim]")
        ensure_sample(data_dir, "--data-dir")
    market = load_market(data_dir, exchange, sym, timeframe, start_ms, end_ms)
    regime = strategy.regime
    warmup = warmup_bars(regime.adx_len, regime.ema_slow, regime.atr_len)
    if len(market.ts) < warmup:
        raise GridctlError(
            f"{exchange} {sym} {timeframe}: only {len(market.ts):,} bar(s) in the selected range, fewer than "
            f"the strategy's regime warm-up of {warmup} bars (max of regime.ema_slow {regime.ema_slow}, "
            f"2 * regime.adx_len {2 * regime.adx_len}, regime.atr_len + 1 {regime.atr_len + 1}); "
            "choose a longer --start/--end range"
        )
    check_notional_in_range(
        strategy, venue, float(market.low.min()), float(market.high.max()), f"{exchange} {sym} {timeframe}"
    )
    fine = None
    if detail_tf is not None:
        if status is not None:
            status.print(f"[dim]loading {detail_tf} detail bars for the same window ...[/dim]")
        window_end = int(market.ts[-1]) + market.bar_ms
        fine = load_market(data_dir, exchange, sym, detail_tf, int(market.ts[0]), window_end)
    if status is not None:
        status.print(
            f"[dim]running {strategy.strategy.name} on {len(market.ts):,} {timeframe} bars ...[/dim]"
        )
    notice = None if status is None else (lambda: compile_notice(status))
    output = run_single(market, strategy, venue, curves=True, detail=fine, compile_notice=notice)
    if status is not None:
        status.print("[dim]path bracket: the same run under the other intrabar path rules ...[/dim]")
    return output, market, backtest_stats(output, market, strategy, venue, detail=fine)


def _print_sections(console: Console, *sections: tuple[str, list[tuple[str, str]]]) -> None:
    """Each (title, rows) as a titled two-column table of names (dim) and values, without borders."""
    for title, rows in sections:
        table = Table(title=title, title_justify="left", show_header=False, box=None, pad_edge=False)
        table.add_column(style="dim")
        table.add_column()
        for key, value in rows:
            table.add_row(key, value)
        console.print(table)


def _print_summary(console: Console, stats: dict[str, Any], out: Path | None) -> None:
    from gridctl.research.report import assumption_rows, gate_rows, headline_rows

    console.print(
        f"[bold]gridctl backtest[/bold]: strategy [cyan]{stats['strategy']}[/cyan] on venue "
        f"[cyan]{stats['venue']}[/cyan], {stats['symbol']} {stats['timeframe']}, "
        f"{stats['data_start']} -> {stats['data_end']} ({stats['bars']:,} bars)"
    )
    _print_sections(
        console,
        ("Results", headline_rows(stats)),
        ("Gates, rejections, events", gate_rows(stats)),
        ("What this run assumed", assumption_rows(stats)),
    )
    if out is not None:
        console.print(f"results written to [bold]{out}[/bold] (open report.html in a browser)")


def _print_basket_summary(console: Console, stats: dict[str, Any], out: Path | None) -> None:
    from gridctl.research.report import basket_bracket_note, basket_symbol_rows, gate_rows, headline_rows

    a = stats["account"]
    console.print(
        f"[bold]gridctl backtest[/bold]: strategy [cyan]{stats['strategy']}[/cyan] on venue "
        f"[cyan]{stats['venue']}[/cyan], basket of {len(stats['basket'])} ({', '.join(stats['basket'])}) "
        f"{stats['timeframe']}, {a['data_start']} -> {a['data_end']} ({a['bars']:,} aligned bars)",
        soft_wrap=True,  # one line however many symbols: the terminal wraps it, grep finds it whole
    )
    data_rows = [
        (symbol, f"{s['gaps']:,} gaps, {s['missing_bars']:,} missing {stats['timeframe']} bars (not traded)")
        for symbol, s in stats["symbols"].items()
        if s["missing_bars"]
    ] + [("Data warning", w) for w in a["assumptions"]["data_warnings"]]
    _print_sections(
        console,
        ("Account", headline_rows(a)),
        ("Account gates, rejections, events", gate_rows(a)),
        *([("Data", data_rows)] if data_rows else []),
    )
    header, *rows = basket_symbol_rows(stats)
    table = Table(title="Per symbol (equity: initial balance + the symbol's PnL)", title_justify="left")
    for col in header:
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(basket_bracket_note(stats), markup=False)
    if out is not None:
        console.print(f"results written to [bold]{out}[/bold] (open report.html in a browser)")


def backtest(
    config: Annotated[
        str,
        typer.Option(
            "--strategy", "-s", help="Strategy config: shipped name (see `config list`) or YAML path."
        ),
    ] = D.strategy,
    venue: Annotated[
        str, typer.Option("--venue", "-v", help="Venue config: shipped name or YAML path.")
    ] = D.venue,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data-dir", help="Market-data directory (default: $GRIDCTL_DATA_DIR or the user data dir)."
        ),
    ] = D.data_dir,
    exchange: Annotated[
        str,
        typer.Option(
            "--exchange",
            help="Exchange of the stored data; the 'sample' BTC/USDT:USDT market is generated if missing.",
        ),
    ] = D.exchange,
    symbol: Annotated[
        str | None,
        typer.Option(
            "--symbol", help="ccxt symbol to trade; sets strategy.instrument_id (default: the strategy's)."
        ),
    ] = D.symbol,
    symbols: Annotated[
        list[str] | None,
        typer.Option(
            "--symbols",
            help="Backtest a basket in one cross-margin wallet: ccxt symbols, comma list or repeated "
            "(sets strategy.symbols; default: the strategy's, if it lists any).",
        ),
    ] = None,
    timeframe: Annotated[
        str, typer.Option("--timeframe", help="Bar timeframe of the stored data.")
    ] = D.timeframe,
    start: Annotated[str | None, typer.Option("--start", help="First day (YYYY-MM-DD, UTC).")] = D.start,
    end: Annotated[
        str | None, typer.Option("--end", help="Day after the last bar (YYYY-MM-DD, UTC, exclusive).")
    ] = D.end,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="Override a strategy field, e.g. grid.grid_step_bps=30.")
    ] = None,
    detail: Annotated[
        str | None,
        typer.Option(
            "--detail",
            help="Walk fills, stops and liquidations through these finer stored bars (e.g. 1m); "
            "decisions stay on --timeframe. Sets backtest.detail_timeframe.",
        ),
    ] = D.detail,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Write ledgers (parquet), stats.json and report.html as this folder (all or nothing).",
        ),
    ] = D.out,
    force: Annotated[
        bool, typer.Option("--force", help="Replace the results already in --out (nothing else is deleted).")
    ] = D.force,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the stats as one JSON object, nothing else.")
    ] = D.as_json,
) -> None:
    """Backtest a hedge-grid strategy; with no options, the default strategy on the bundled sample market.

    Wide because: a typer command takes one parameter per flag; each default is read from BacktestOptions.
    Long because: the flags' declarations; the body only builds BacktestOptions, calls
    ``run_backtest_command`` and prints what it returns.
    """
    from gridctl.configs.cli import parse_symbols_flag

    opts = BacktestOptions(
        strategy=config,
        venue=venue,
        data_dir=data,
        exchange=exchange,
        symbol=symbol,
        symbols=parse_symbols_flag(symbols, basket=True),
        timeframe=timeframe,
        start=start,
        end=end,
        overrides=tuple(overrides or ()),
        detail=detail,
        out=out,
        force=force,
        as_json=as_json,
    )
    status = Console(stderr=True, soft_wrap=True)  # one status line each, however long the path
    stats, is_basket = run_backtest_command(opts, status)
    if opts.as_json:
        from gridctl.research.results import stats_json

        sys.stdout.write(stats_json(stats) + "\n")
    elif is_basket:
        _print_basket_summary(output_console(), stats, opts.out)
    else:
        _print_summary(output_console(), stats, opts.out)


def run_backtest_command(opts: BacktestOptions, status: Console | None = None) -> tuple[dict[str, Any], bool]:
    """What `gridctl backtest` does, without printing: (stats, whether the run was a basket).

    Paths are checked first (a bad --out or --data-dir fails in a second, not after the whole run), then
    the options; a basket (``opts.symbols`` or the strategy's ``strategy.symbols``) runs in one wallet,
    else one symbol; the results are written to ``opts.out`` when given.
    """
    from gridctl.data.paths import require_existing_dir
    from gridctl.data.store import default_data_dir
    from gridctl.research.results import check_out_dir, write_results

    if opts.out is not None:
        check_out_dir(opts.out, opts.force)
    if opts.data_dir is not None:
        require_existing_dir(
            opts.data_dir, "--data-dir", "create it, or leave --data-dir out to use the default data dir"
        )
    if opts.symbols and opts.symbol is not None:
        raise GridctlError(
            "--symbol and --symbols: give one (--symbol trades one symbol, --symbols a basket)"
        )
    window = check_run_options(opts.timeframe, opts.start, opts.end, list(opts.overrides), opts.detail)
    basket_strategy = load_basket_strategy(opts.strategy, opts.symbols, window[0])
    if basket_strategy is not None and opts.symbol is not None:
        raise GridctlError(
            f"--symbol {opts.symbol}: strategy {basket_strategy.origin} trades the basket "
            f"{list(basket_strategy.basket_symbols)} (strategy.symbols); give --symbols {opts.symbol} for "
            "that symbol alone (with its symbol_overrides), or --symbols for another basket"
        )
    if basket_strategy is not None:
        from gridctl.configs.loader import load_venue
        from gridctl.research.basket import run_basket_backtest
        from gridctl.research.results import write_basket_results

        check_detail_timeframe(basket_strategy, opts.timeframe, opts.detail)
        data_dir = opts.data_dir if opts.data_dir is not None else default_data_dir()
        run = run_basket_backtest(
            basket_strategy,
            load_venue(opts.venue),
            data_dir,
            opts.exchange,
            opts.timeframe,
            window[1],
            window[2],
            status=status,
        )
        if opts.out is not None:
            write_basket_results(opts.out, run, force=opts.force)
        return run.stats, True
    output, market, stats = run_backtest(opts, status=status)
    if opts.out is not None:
        write_results(opts.out, output, market, stats, force=opts.force)
    return stats, False


def bench(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the measurements as one JSON object.")
    ] = False,
    bars: Annotated[
        int,
        typer.Option(
            "--bars",
            min=BENCH_MIN_BARS,
            max=BENCH_MAX_BARS,
            help="Number of 1m bars to run (generated in memory; at most ten years of minutes).",
        ),
    ] = 1_000_000,
    sets: Annotated[
        int,
        typer.Option("--sets", min=1, max=BENCH_MAX_SETS, help="Parameter sets in the batch measurement."),
    ] = 64,
    startup: Annotated[
        bool,
        typer.Option(
            "--startup",
            help="Instead: start-up figures from fresh processes (help, compile, cached start, "
            "first/second backtest wall time and peak memory).",
        ),
    ] = False,
    reference_sim: Annotated[
        Path | None,
        typer.Option(
            "--reference-sim",
            help="The pure-Python reference simulator of a source checkout (tests/reference_sim.py) "
            "to measure the kernel against; without it the reference figures are n/a.",
        ),
    ] = None,
    symbols: Annotated[
        int | None,
        typer.Option(
            "--symbols",
            min=1,
            max=BENCH_MAX_SYMBOLS,
            help="Instead: a basket of N synthetic markets in one wallet against N single runs, "
            "kernel and batch (CPU seconds; --bars bars each).",
        ),
    ] = None,
) -> None:
    """Measure kernel, batch and reference speed; with --startup, compile and start-up times."""
    from gridctl.research import bench as bench_mod

    status = Console(stderr=True)
    progress = lambda msg: status.print(f"[dim]{msg}[/dim]")  # noqa: E731
    if startup:
        result: dict[str, Any] = bench_mod.startup_bench(progress=progress)
        title = "gridctl bench --startup (fresh processes, empty then filled numba cache)"
    elif symbols is not None:
        result = bench_mod.basket_bench(bars=bars, symbols=symbols, progress=progress)
        title = (
            f"gridctl bench --symbols {symbols} ({bars:,} bars each, batch {int(result['batch_sets'])} sets, "
            "CPU seconds)"
        )
    else:
        result = bench_mod.run_bench(bars=bars, sets=sets, progress=progress, reference_sim=reference_sim)
        title = f"gridctl bench ({bars:,} bars, {sets} sets)"
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
        return
    table = Table(title=title, title_justify="left")
    for col in ("measure", "value", "target"):
        table.add_column(col)
    for key, value in result.items():
        if key in BENCH_COUNTS:
            continue
        if value is None:
            shown = "n/a (no --reference-sim)"
        else:
            shown = f"{value:,.3f}" if value < 100 else f"{value:,.0f}"
        table.add_row(key, shown, {**bench_mod.TARGETS, **bench_mod.BASKET_TARGETS}.get(key, ""))
    output_console().print(table)


#: Bench result keys that are counts (shown in the title, not as measurements).
BENCH_COUNTS = ("bars", "sets", "reference_bars", "threads", "basket_symbols", "basket_bars", "batch_sets")


def register(app: typer.Typer) -> None:
    """Add the engine's top-level commands to the gridctl app."""
    app.command("backtest")(backtest)
    app.command("bench")(bench)
