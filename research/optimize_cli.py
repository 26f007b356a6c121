"""`gridctl optimize` and `gridctl study ...`: shells. Flags are parsed into one options object per command
family (``research/options.py``, where every default and range lives); the library (``research/commands.py``,
studies, report, notebook) computes; this module prints.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from gridctl.research.cli import output_console
from gridctl.research.options import REPORT_TOP, SHOW_TOP, OptimizeOptions, StudyOptions, bounds

#: The defaults every `optimize` flag shows and falls back to (the profile is required).
D = OptimizeOptions(profile="")

DataOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Market-data directory (default: $GRIDCTL_DATA_DIR or the user data dir)."
    ),
]


def _studies_dir_is_a_folder(value: Path | None) -> Path | None:
    """A --studies-dir that exists must be a folder, and one that does not must have a folder as its
    nearest existing ancestor (under a file it could never be created): refused at parse time."""
    if value is None:
        return value
    from gridctl.configs.errors import GridctlError
    from gridctl.configs.files import path_kind
    from gridctl.data.paths import require_path_lengths

    require_path_lengths(value, "--studies-dir")
    kind = path_kind(value)
    if kind == "a folder":
        return value
    if not kind.startswith("missing"):
        raise GridctlError(f"--studies-dir: {value} is {kind}, not a folder")
    anchor = next((p for p in (value, *value.parents) if p.exists() or p.is_symlink()), None)
    if anchor is not None and not anchor.is_dir():
        raise GridctlError(f"--studies-dir: {value} cannot be a folder: {anchor} is {path_kind(anchor)}")
    return value


StudiesOpt = Annotated[
    Path | None,
    typer.Option(
        "--studies-dir",
        callback=_studies_dir_is_a_folder,
        help="Where journal files live (default: $GRIDCTL_STUDIES_DIR or gridctl-studies).",
    ),
]
StorageOpt = Annotated[
    str | None,
    typer.Option(
        "--storage", help="Shared study storage, e.g. postgresql://user@host:5432/db (default: journal)."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object, nothing else.")]
#: Metric columns of the `study show` leaderboard.
BOARD_METRICS = (
    "sharpe",
    "profit_factor",
    "calmar",
    "max_drawdown_bar_close_pct",
    "total_return_pct",
    "trades",
)
#: Column labels (words a narrow terminal can wrap between); the drawdown ones say which drawdown they use.
BOARD_LABELS = {
    "sharpe": "sharpe",
    "profit_factor": "profit factor",
    "calmar": "calmar (CAGR / bar close dd)",
    "max_drawdown_bar_close_pct": "max dd (bar close) %",
    "total_return_pct": "total return %",
    "trades": "trades",
}


#: A table's columns as (header, whole): a ``whole`` column keeps each cell on one line (names, dates).
Columns = list[tuple[str, bool]]


#: Characters between two columns of a result table (padding, separator, padding).
GAP = 3


def _table(title: str, columns: Columns, rows: list[list[str]], widths: list[int]) -> Table:
    """A result table with the given column widths: lines only under the header, cells wrapped between
    words (``_widths`` makes every column at least as wide as its longest word: nothing is cut)."""
    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1),
    )
    for (header, whole), width in zip(columns, widths, strict=True):
        table.add_column(header, no_wrap=whole, overflow="fold", width=width)
    for row in rows:
        table.add_row(*row)
    return table


def _widths(columns: Columns, rows: list[list[str]], room: int) -> list[int] | None:
    """Column widths that fit ``room`` characters with no word (and no cell of a ``whole`` column) split,
    each column as wide as its longest line where there is room; None when even that cannot fit."""
    least, most = [], []
    for i, (header, whole) in enumerate(columns):
        cells = [row[i] for row in rows]
        words = [w for text in (header, *([] if whole else cells)) for w in text.split()]
        least.append(max([len(w) for w in words] + [len(c) for c in cells if whole] + [1]))
        most.append(max(len(line) for text in (header, *cells) for line in text.splitlines() or [""]))
    spare = room - GAP * (len(columns) - 1) - sum(least)
    if spare < 0:
        return None
    widths = list(least)
    for i in sorted(range(len(columns)), key=lambda i: most[i] - least[i]):  # the cheapest unwrap first
        grow = min(spare, max(most[i] - least[i], 0))
        widths[i] += grow
        spare -= grow
    return widths


def print_table(con: Console, title: str, columns: Columns, rows: list[list[str]]) -> None:
    """Print a table that fits ``con``'s width: whole if it fits with every word whole, else as several
    tables, each repeating the first (key) column and taking as many further columns, in order, as fit.
    A name, a word or a number is never cut or folded to make a table fit (one wider than the terminal
    alone is printed in its own table and wraps as the terminal wraps it)."""

    def part(keep: list[int]) -> tuple[Columns, list[list[str]]]:
        return [columns[i] for i in keep], [[row[i] for i in keep] for row in rows]

    groups: list[list[int]] = []
    for i in range(1, len(columns)):
        if groups and _widths(*part([0, *groups[-1], i]), con.width) is not None:
            groups[-1].append(i)
        else:
            groups.append([i])
    for n, group in enumerate(groups or [[]]):
        cols, body = part([0, *group])
        widths = _widths(cols, body, con.width) or _widths(cols, body, 10**6)
        assert widths is not None  # any table fits a million columns
        con.print(_table(title if n == 0 else f"{title} (continued)", cols, body, widths))


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def _dump(obj: Any) -> str:
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(obj))


def optimize(
    profile: Annotated[str, typer.Option("--profile", help="Profile name (configs/profiles) or YAML path.")],
    trials: Annotated[
        int | None,
        typer.Option(
            "--trials", **bounds("trials"), help="Target trial count of the study (default: the profile's)."
        ),
    ] = D.trials,
    data: DataOpt = D.data_dir,
    storage: StorageOpt = D.storage,
    study_name: Annotated[
        str | None,
        typer.Option("--study-name", help="Study to create or resume (default: the profile name)."),
    ] = D.study_name,
    jobs: Annotated[
        int | None,
        typer.Option("--jobs", **bounds("jobs"), help="Cores the batch driver uses (default: all)."),
    ] = D.jobs,
    studies_dir: StudiesOpt = D.studies_dir,
    heartbeat: Annotated[
        int,
        typer.Option(
            "--heartbeat",
            **bounds("heartbeat_s"),
            help="Heartbeat period (s) on --storage: beats every quarter; silent for one period is gone.",
        ),
    ] = D.heartbeat_s,
    as_json: JsonOpt = D.as_json,
) -> None:
    """Optimize a strategy with a profile; the same command with the same --study-name resumes."""
    opts = OptimizeOptions(
        profile=profile,
        trials=trials,
        data_dir=data,
        storage=storage,
        study_name=study_name,
        jobs=jobs,
        studies_dir=studies_dir,
        heartbeat_s=heartbeat,
        as_json=as_json,
    )
    from gridctl.research.commands import run_optimize
    from gridctl.research.optimize import load_workload
    from gridctl.research.profiles import load_profile

    if opts.storage is None:  # the journal file is created there: a folder that cannot be made fails now
        from gridctl.data.paths import require_writable_dir
        from gridctl.research.optimize.storage import default_studies_dir

        require_writable_dir(opts.studies_dir or default_studies_dir(), "--studies-dir")
    prof = load_profile(opts.profile)
    name = opts.study_name or prof.name
    status = Console(stderr=True)
    _print_optimize_header(status, prof, name)
    t_load = time.perf_counter()
    work = load_workload(prof, opts.data_dir)
    load_s = time.perf_counter() - t_load
    status.print(
        f"[dim]{len(work.market.ts):,} {prof.data.timeframe} bars of {work.symbol}, "
        f"{len(work.windows)} scored window(s); numba compiles on the first run ...[/dim]"
    )
    with _progress_bar(status, opts.trials or prof.trials) as on_progress:
        result, out = run_optimize(
            prof, work, opts, on_progress, on_status=lambda line: status.print(f"[dim]{line}[/dim]")
        )
    out["timings_s"]["load_s"] = round(load_s, 3)  # loaded here, before optimize() (not in elapsed_s)
    if opts.as_json:
        sys.stdout.write(_dump(out) + "\n")
    else:
        _print_optimize_result(result, prof, name)
    if result.interrupted:
        raise typer.Exit(130)


def _print_optimize_header(status: Console, prof: Any, name: str) -> None:
    """The first lines of `optimize` on stderr: profile, sampler, objective, batch size and study."""
    status.print(
        f"[bold]gridctl optimize[/bold]: profile [cyan]{prof.name}[/cyan] ({prof.sampler.kind} sampler, "
        f"objective {prof.objective.kind}"
        + (f", {prof.objective.target.replace('_', '-')}" if prof.validation.scheme != "none" else "")
        + f", batches of {prof.batch_size}), study [cyan]{name}[/cyan]"
    )
    if prof.description:
        status.print(f"[dim]{prof.description}[/dim]")


@contextlib.contextmanager
def _progress_bar(status: Console, total: int) -> Iterator[Callable[[Any], None]]:
    """A progress bar of trials on ``status`` while the block runs; yields the optimizer's callback."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("best {task.fields[best]}"),
        TextColumn("{task.fields[rate]} trials/s"),
        TimeElapsedColumn(),
        console=status,
        transient=False,
    )
    with bar:
        task = bar.add_task("trials", total=total, best="-", rate="-")

        def on_progress(p: Any) -> None:
            bar.update(
                task, completed=p.done, total=p.target, best=_fmt(p.best), rate=f"{p.trials_per_s:.1f}"
            )

        yield on_progress


def _print_optimize_result(result: Any, prof: Any, name: str) -> None:
    """`optimize`'s closing lines: trials held and evaluated, the best value and parameters, what next."""
    con = Console()
    verb = "stopped (Ctrl-C)" if result.interrupted else "done"
    con.print(
        f"{verb}: study [cyan]{name}[/cyan] holds {result.n_trials} trials "
        f"({result.told_here} evaluated now, {result.trials_per_s:.1f} trials/s, "
        f"{result.elapsed_s:.1f} s); "
        f"storage {result.storage}"
    )
    what = "best (return %, drawdown %)" if len(prof.objective.directions) > 1 else "best"
    con.print(f"{what} {prof.objective.kind}: {_fmt(result.best_value)} (trial {_fmt(result.best_trial)})")
    if result.best_params:
        for k, v in result.best_params.items():
            con.print(f"  {k} = {_fmt(v)}")
    if result.interrupted:
        con.print(f"resume with the same command (--study-name {name})")
    elif result.told_here == 0:
        con.print(f"the study already had its {result.n_trials} trials; --trials N extends it")


study_app = typer.Typer(help="List, inspect, export and report optimization studies.", no_args_is_help=True)


@study_app.command("list")
def study_list(studies_dir: StudiesOpt = None, storage: StorageOpt = None, as_json: JsonOpt = False) -> None:
    """Every study in the studies directory (or the --storage database)."""
    from gridctl.research.studies import list_studies

    opts = StudyOptions(studies_dir=studies_dir, storage=storage, as_json=as_json)
    rows = list_studies(opts.studies_dir, opts.storage)
    if opts.as_json:
        sys.stdout.write(_dump(rows) + "\n")
        return
    columns: Columns = [("study", True), ("profile", False), ("trials", False), ("failed", False)]
    columns += [("running", False), ("best value", False), ("created at", True)]
    keys = ("study_name", "profile", "n_trials", "failed", "running", "best_value", "created_at")
    damaged = [r for r in rows if "error" in r]
    body = [[_fmt(r[c]) for c in keys] for r in rows if "error" not in r]
    print_table(output_console(), "studies", columns, body)
    for r in damaged:
        Console(stderr=True).print(f"[red]{r['study_name']}[/red]: {r['error']}", highlight=False)


@study_app.command("show")
def study_show(
    name: Annotated[str, typer.Argument(help="Study name.")],
    studies_dir: StudiesOpt = None,
    storage: StorageOpt = None,
    data: DataOpt = None,
    top: Annotated[int, typer.Option("--top", **bounds("top"), help="Trials in the leaderboard.")] = SHOW_TOP,
    as_json: JsonOpt = False,
) -> None:
    """Leaderboard, winner's robustness table (plateau or spike), deflated Sharpe and PBO.

    DSR and PBO use every distinct feasible trial (and configured-rule-only trials not known to break
    a limit), re-run over the study's window (see DESIGN.md)."""
    from gridctl.research.commands import study_summary
    from gridctl.research.optimize import CONFIGURED_ONLY
    from gridctl.research.reproduce import day_span

    opts = StudyOptions(studies_dir=studies_dir, storage=storage, data_dir=data, as_json=as_json)
    summary = study_summary(name, opts, top)
    out, prof, multi, winner = summary.out, summary.profile, summary.multi, summary.winner
    if opts.as_json:
        sys.stdout.write(_dump(out) + "\n")
        return
    con = output_console()
    con.print(
        f"study [cyan]{name}[/cyan]: profile {out['profile']} ({out['fingerprint']}), objective "
        f"{prof.objective.kind} ({', '.join(prof.objective.directions)}), "
        f"{out['n_trials']} trials {out['states']}"
    )
    if out["configured_rule_only"]:
        con.print(
            f"{out['configured_rule_only']} pruned trial(s): {CONFIGURED_ONLY} (run under the configured "
            "intrabar rule only; their configured-rule value is at most the best's, so no other rule was run)"
        )
    print_table(con, *_leaderboard_table(out, prof, multi, summary.infeasible))
    if winner is not None:
        con.print(
            f"winner: trial {winner.number}, {prof.objective.kind} {_fmt(winner.value)}"
            + (" (ranked by worst neighbour)" if prof.objective.rank_by == "worst_neighbour" else "")
        )
        print_table(con, *_robustness_table(summary.robust_rows))
    wf = out.get("walk_forward")
    if wf is not None:
        print_table(con, *_walk_forward_table(wf))
        con.print(
            f"out of sample (stitched picks): mean objective {_fmt(wf['oos_objective_mean'])}, "
            f"compounded return {_fmt(wf['oos_total_return_pct'])} %"
        )
    hold = out.get("holdout")
    if hold is not None:
        con.print(
            f"hold-out {day_span((hold['start_ms'], hold['end_ms']))} (never scored by any trial): "
            f"winner trial {hold['trial']} objective {_fmt(hold['objective'])}, return "
            f"{_fmt(hold['metrics']['total_return_pct'])} %"
            + (f" (intrabar_path {hold['rule']})" if hold.get("rule") else "")
        )
    for line in overfitting_lines(out):
        con.print(line)


def _leaderboard_table(
    out: dict[str, Any], prof: Any, multi: bool, infeasible: int
) -> tuple[str, Columns, list[list[str]]]:
    """`study show`'s leaderboard (title, columns, rows): the Pareto front or the top feasible trials.

    Walk-forward: the objective over the train windows (in-sample) and over the test windows, each a
    mean over its windows, and the metrics as ``research.studies.trial_metrics`` gives them: the mean
    over the test windows (over the train windows where a trial has none). Every header says which.
    """
    board = out["leaderboard"]
    walk_forward = prof.validation.scheme != "none"
    title = ("Pareto front" if multi else f"top {len(board)} feasible trials") + (
        f" ({infeasible} infeasible trial(s) left out)"
    )
    columns: Columns = [("trial", True)]
    if walk_forward:
        ranked = "train" if prof.objective.target == "in_sample" else "test"
        title += f"; ranked by the objective's {ranked} mean"
        over = "test" if all(r["objective_out_of_sample"] is not None for r in board) else "train"
        columns += [("objective (train mean)", False), ("objective (test mean)", False)]
        columns += [(f"{BOARD_LABELS[k]} ({over} mean)", False) for k in BOARD_METRICS]
    else:
        columns += [("value(s)" if multi else "objective", False)]
        columns += [(BOARD_LABELS[k], False) for k in BOARD_METRICS]
    rows = []
    for row in board:
        cells = [str(row["number"])]
        if walk_forward:
            cells += [_fmt(row["objective_in_sample"]), _fmt(row["objective_out_of_sample"])]
        else:
            cells.append(_fmt(row["values"]))
        rows.append(cells + [_fmt(row["metrics"].get(k)) for k in BOARD_METRICS])
    return title, columns, rows


def _robustness_table(rows: list[Any]) -> tuple[str, Columns, list[list[str]]]:
    """The winner's parameters one step either way and the objective there (plateau or spike); each
    parameter's name stays whole on its line (the other columns wrap)."""
    columns: Columns = [("parameter = winner's value", True), ("-1 step -> objective", False)]
    columns += [("+1 step -> objective", False), ("verdict", False)]
    body = [
        [
            f"{r.param} = {_fmt(r.value)}",
            _step(r.down_value, r.down_objective),
            _step(r.up_value, r.up_objective),
            r.verdict,
        ]
        for r in rows
    ]
    return "robustness: one step either way (plateau or spike)", columns, body


def _step(value: Any, objective: Any) -> str:
    """A neighbour's value and the objective there, or ``-`` where there is no step that way."""
    return "-" if value is None else f"{_fmt(value)} -> {_fmt(objective)}"


def _walk_forward_table(wf: dict[str, Any]) -> tuple[str, Columns, list[list[str]]]:
    """Per walk-forward fold: its windows, the trial picked on train and its scores on test."""
    from gridctl.research.reproduce import day_span

    title = (
        "walk-forward: per fold, the best trial on its train window, scored on its test window "
        f"({wf['distinct_picks']} distinct picks)"
    )
    names = ("fold", "train", "test", "trial", "train objective", "test objective", "test return %")
    rows = [
        [
            str(f["fold"]),
            day_span(f["train"], " .."),  # a narrow column wraps at the space: both days stay whole
            day_span(f["test"], " .."),
            _fmt(f["trial"]),
            _fmt(f.get("train_objective")),
            _fmt(f.get("test_objective")),
            _fmt(f.get("test_return_pct")),
        ]
        for f in wf["folds"]
    ]
    return title, [(name, False) for name in names], rows


def overfitting_lines(over: dict[str, Any]) -> list[str]:
    """The deflated Sharpe ratio and PBO with their inputs, as `study show` prints them."""
    from gridctl.research.reproduce import day_span

    pool = "feasible or configured-rule-only" if over.get("trials_configured_rule_only") else "feasible"
    lines = [f"deflated Sharpe {_fmt(over.get('deflated_sharpe'))}"]
    if over.get("sharpe") is not None:
        lines[0] += (
            f" (trial {over['selected_trial']}: Sharpe {_fmt(over['sharpe_annualised'])} annualised over "
            f"{over['periods']} days, skew {_fmt(over['skew'])}, kurtosis {_fmt(over['kurtosis'])}; "
            f"N = {over['clusters']} correlation clusters (mean correlation >= "
            f"{_fmt(over['cluster_min_correlation'])}) of {over['trials_used']} distinct "
            f"{pool} trials, "
            + (
                f"V[SR] {_fmt(over['sharpe_variance'])} per day^2 (MAD; sample "
                f"{_fmt(over['sharpe_variance_sample'])}), "
                if over["clusters"] != 1
                else "one cluster: no V[SR], "
            )
            + f"SR0 {_fmt(over['sr0_annualised'])} annualised)"
        )
    pbo = f"PBO {_fmt(over.get('pbo'))}"
    if over.get("pbo") is not None:
        pbo += (
            f" (CSCV over all {over['trials_used']} trials used, {over['pbo_blocks']} blocks, "
            f"{over['pbo_splits']} splits)"
        )
    lines.append(pbo)
    win = over.get("returns_window")
    if win is not None:
        lines.append(
            f"  both from daily returns over {day_span((win['start_ms'], win['end_ms']))} ({win['days']} days"
            + ("; the hold-out left out: nothing selected on it)" if win["holdout_excluded"] else ")")
        )
    lines += [f"  note: {n}" for n in over.get("notes") or ()]
    return lines


@study_app.command("export")
def study_export(
    name: Annotated[str, typer.Argument(help="Study name.")],
    out: Annotated[Path, typer.Option("--out", help="Strategy YAML to write.")],
    trial: Annotated[
        int | None, typer.Option("--trial", **bounds("trial"), help="Trial number (default: the winner).")
    ] = None,
    studies_dir: StudiesOpt = None,
    storage: StorageOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out file.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write a trial's complete strategy config; `gridctl backtest --strategy FILE` reproduces it."""
    from gridctl.data.paths import require_output_file
    from gridctl.research.studies import export_config, load_study

    opts = StudyOptions(studies_dir=studies_dir, storage=storage, as_json=as_json)
    require_output_file(out, "--out")  # before the study is loaded
    path = export_config(load_study(name, opts.studies_dir, opts.storage), out, trial, force=force)
    typer.echo(json.dumps({"study": name, "path": str(path)}) if opts.as_json else f"wrote {path}")


@study_app.command("report")
def study_report(
    name: Annotated[str, typer.Argument(help="Study name.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for the HTML report.")],
    studies_dir: StudiesOpt = None,
    storage: StorageOpt = None,
    data: DataOpt = None,
    top: Annotated[
        int, typer.Option("--top", **bounds("top"), help="Feasible trials in the top-trials table.")
    ] = REPORT_TOP,
    force: Annotated[bool, typer.Option("--force", help="Replace the index.html already in --out.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write an HTML report of the study (opens with no network); DSR and PBO as `study show` gives them."""
    from gridctl.data.paths import require_output_dir
    from gridctl.research.studies import load_study
    from gridctl.research.study_report import check_report_dir, render_report

    opts = StudyOptions(studies_dir=studies_dir, storage=storage, data_dir=data, as_json=as_json)
    require_output_dir(out, "--out")  # before the study is loaded and its trials re-run
    check_report_dir(out, force)  # an occupied --out fails before the study is even opened
    study = load_study(name, opts.studies_dir, opts.storage)
    path = render_report(study, out, opts.data_dir, top, force=force)
    typer.echo(json.dumps({"study": name, "path": str(path)}) if opts.as_json else f"wrote {path}")


@study_app.command("notebook")
def study_notebook(
    name: Annotated[str, typer.Argument(help="Study name.")],
    out: Annotated[Path, typer.Option("--out", help="Executed notebook to write (.ipynb).")],
    studies_dir: StudiesOpt = None,
    storage: StorageOpt = None,
    data: DataOpt = None,
    top: Annotated[
        int, typer.Option("--top", **bounds("top"), help="Feasible trials in the top table and equity chart.")
    ] = REPORT_TOP,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out file.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Run the packaged study-analysis notebook on a study; writes the executed copy (needs the
    notebook extra: pip install 'gridctl\\[notebook]')."""
    from gridctl.data.paths import require_output_file
    from gridctl.research.notebook import run_notebook

    opts = StudyOptions(studies_dir=studies_dir, storage=storage, data_dir=data, as_json=as_json)
    require_output_file(out, "--out")
    path = run_notebook(name, out, opts.studies_dir, opts.storage, opts.data_dir, top, force)
    typer.echo(json.dumps({"study": name, "path": str(path)}) if opts.as_json else f"wrote {path}")


def register(app: typer.Typer) -> None:
    """Add `optimize` and the `study` sub-app to the gridctl app."""
    app.command("optimize")(optimize)
    app.add_typer(study_app, name="study", help="List, inspect, export and report optimization studies.")
