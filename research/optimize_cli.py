"""`gridctl optimize` and `gridctl study ...`: shells. Flags are parsed into one options object per command
family (``research/options.py``, where every default and range lives); the library (``research/commands.py``,
studies, report, notebook) computes; this module prints.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

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
    """A --studies-dir that exists must be a folder: refused at parse time, before any work."""
    if value is not None and (value.exists() or value.is_symlink()) and not value.is_dir():
        from gridctl.configs.errors import GridctlError
        from gridctl.configs.files import path_kind

        raise GridctlError(f"--studies-dir: {value} is {path_kind(value)}, not a folder")
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
#: Column labels that say which drawdown a metric uses.
BOARD_LABELS = {"calmar": "calmar (CAGR / bar-close dd)", "max_drawdown_bar_close_pct": "max dd bar-close %"}


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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from gridctl.research.commands import run_optimize
    from gridctl.research.optimize import load_workload
    from gridctl.research.profiles import load_profile

    prof = load_profile(opts.profile)
    name = opts.study_name or prof.name
    status = Console(stderr=True)
    status.print(
        f"[bold]gridctl optimize[/bold]: profile [cyan]{prof.name}[/cyan] ({prof.sampler.kind} sampler, "
        f"objective {prof.objective.kind}"
        + (f", {prof.objective.target.replace('_', '-')}" if prof.validation.scheme != "none" else "")
        + f", batches of {prof.batch_size}), study [cyan]{name}[/cyan]"
    )
    if prof.description:
        status.print(f"[dim]{prof.description}[/dim]")
    t_load = time.perf_counter()
    work = load_workload(prof, opts.data_dir)
    load_s = time.perf_counter() - t_load
    status.print(
        f"[dim]{len(work.market.ts):,} {prof.data.timeframe} bars of {work.symbol}, "
        f"{len(work.windows)} scored window(s); numba compiles on the first run ...[/dim]"
    )
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
        task = bar.add_task("trials", total=opts.trials or prof.trials, best="-", rate="-")

        def on_progress(p: Any) -> None:
            bar.update(
                task, completed=p.done, total=p.target, best=_fmt(p.best), rate=f"{p.trials_per_s:.1f}"
            )

        result, out = run_optimize(
            prof, work, opts, on_progress, on_status=lambda line: status.print(f"[dim]{line}[/dim]")
        )
    out["timings_s"]["load_s"] = round(load_s, 3)  # loaded here, before optimize() (not in elapsed_s)
    if opts.as_json:
        sys.stdout.write(_dump(out) + "\n")
    else:
        con = Console()
        verb = "stopped (Ctrl-C)" if result.interrupted else "done"
        con.print(
            f"{verb}: study [cyan]{name}[/cyan] holds {result.n_trials} trials "
            f"({result.told_here} evaluated now, {result.trials_per_s:.1f} trials/s, "
            f"{result.elapsed_s:.1f} s); "
            f"storage {result.storage}"
        )
        what = "best (return %, drawdown %)" if len(prof.objective.directions) > 1 else "best"
        con.print(
            f"{what} {prof.objective.kind}: {_fmt(result.best_value)} (trial {_fmt(result.best_trial)})"
        )
        if result.best_params:
            for k, v in result.best_params.items():
                con.print(f"  {k} = {_fmt(v)}")
        if result.interrupted:
            con.print(f"resume with the same command (--study-name {name})")
        elif result.told_here == 0:
            con.print(f"the study already had its {result.n_trials} trials; --trials N extends it")
    if result.interrupted:
        raise typer.Exit(130)


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
    table = Table(title="studies", title_justify="left")
    for col in ("study_name", "profile", "n_trials", "failed", "running", "best_value", "created_at"):
        table.add_column(col)
    damaged = [r for r in rows if "error" in r]
    for r in (r for r in rows if "error" not in r):
        table.add_row(
            *(
                _fmt(r[c])
                for c in (
                    "study_name",
                    "profile",
                    "n_trials",
                    "failed",
                    "running",
                    "best_value",
                    "created_at",
                )
            )
        )
    Console().print(table)
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

    opts = StudyOptions(studies_dir=studies_dir, storage=storage, data_dir=data, as_json=as_json)
    summary = study_summary(name, opts, top)
    out, prof, multi, winner = summary.out, summary.profile, summary.multi, summary.winner
    if opts.as_json:
        sys.stdout.write(_dump(out) + "\n")
        return
    con = Console()
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
    table = Table(
        title=("Pareto front" if multi else f"top {len(out['leaderboard'])} feasible trials")
        + f" ({summary.infeasible} infeasible trial(s) left out)",
        title_justify="left",
    )
    table.add_column("trial")
    table.add_column("value(s)")
    if prof.validation.scheme != "none":
        table.add_column("in-sample")
        table.add_column("out-of-sample")
    for col in BOARD_METRICS:
        table.add_column(BOARD_LABELS.get(col, col))
    for row in out["leaderboard"]:
        cells = [str(row["number"]), _fmt(row["values"])]
        if prof.validation.scheme != "none":
            cells += [_fmt(row["objective_in_sample"]), _fmt(row["objective_out_of_sample"])]
        cells += [_fmt(row["metrics"].get(k)) for k in BOARD_METRICS]
        table.add_row(*cells)
    con.print(table)
    if winner is not None:
        con.print(
            f"winner: trial {winner.number}, {prof.objective.kind} {_fmt(winner.value)}"
            + (" (ranked by worst neighbour)" if prof.objective.rank_by == "worst_neighbour" else "")
        )
        rt = Table(title="robustness: one step either way (plateau or spike)", title_justify="left")
        for col in ("param", "value", "-1 step", "objective", "+1 step", "objective", "verdict"):
            rt.add_column(col)
        for r in summary.robust_rows:
            rt.add_row(
                r.param,
                _fmt(r.value),
                _fmt(r.down_value),
                _fmt(r.down_objective),
                _fmt(r.up_value),
                _fmt(r.up_objective),
                r.verdict,
            )
        con.print(rt)
    wf = out.get("walk_forward")
    if wf is not None:
        wt = Table(
            title=f"walk-forward: per fold, the best trial on its train window, scored on its test window "
            f"({wf['distinct_picks']} distinct picks)",
            title_justify="left",
        )
        for col in ("fold", "train", "test", "trial", "train objective", "test objective", "test return %"):
            wt.add_column(col)
        for f in wf["folds"]:
            wt.add_row(
                str(f["fold"]),
                _span(f["train"]),
                _span(f["test"]),
                _fmt(f["trial"]),
                _fmt(f.get("train_objective")),
                _fmt(f.get("test_objective")),
                _fmt(f.get("test_return_pct")),
            )
        con.print(wt)
        con.print(
            f"out of sample (stitched picks): mean objective {_fmt(wf['oos_objective_mean'])}, "
            f"compounded return {_fmt(wf['oos_total_return_pct'])} %"
        )
    hold = out.get("holdout")
    if hold is not None:
        con.print(
            f"hold-out {_span((hold['start_ms'], hold['end_ms']))} (never scored by any trial): winner trial "
            f"{hold['trial']} objective {_fmt(hold['objective'])}, return "
            f"{_fmt(hold['metrics']['total_return_pct'])} %"
        )
    for line in overfitting_lines(out):
        con.print(line)


def overfitting_lines(over: dict[str, Any]) -> list[str]:
    """The deflated Sharpe ratio and PBO with their inputs, as `study show` prints them."""
    pool = "feasible or configured-rule-only" if over.get("trials_configured_rule_only") else "feasible"
    lines = [f"deflated Sharpe {_fmt(over.get('deflated_sharpe'))}"]
    if over.get("sharpe") is not None:
        lines[0] += (
            f" (trial {over['selected_trial']}: Sharpe {_fmt(over['sharpe_annualised'])} annualised over "
            f"{over['periods']} days, skew {_fmt(over['skew'])}, kurtosis {_fmt(over['kurtosis'])}; "
            f"N = {over['clusters']} correlation clusters (mean correlation >= "
            f"{_fmt(over['cluster_min_correlation'])}) of {over['trials_used']} distinct "
            f"{pool} trials, "
            f"V[SR] {_fmt(over['sharpe_variance'])} per day^2 (MAD; sample "
            f"{_fmt(over['sharpe_variance_sample'])}), SR0 {_fmt(over['sr0_annualised'])} annualised)"
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
            f"  both from daily returns over {_span((win['start_ms'], win['end_ms']))} ({win['days']} days"
            + ("; the hold-out left out: nothing selected on it)" if win["holdout_excluded"] else ")")
        )
    lines += [f"  note: {n}" for n in over.get("notes") or ()]
    return lines


def _span(bounds: Any) -> str:
    """``YYYY-MM-DD..YYYY-MM-DD`` of a window's (start_ms, end_ms), end exclusive (a partial last day
    rounds up to the next day)."""
    if not bounds:
        return "-"
    start, end = bounds
    end = -(-end // 86_400_000) * 86_400_000
    a, b = (time.strftime("%Y-%m-%d", time.gmtime(ms // 1000)) for ms in (start, end))
    return f"{a}..{b}"


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
    notebook extra: pip install 'gridctl[notebook]')."""
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
