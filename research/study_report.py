"""Interactive analysis of any Optuna study: the figures, and one self-contained HTML page of them.

The figure builders (``history_figure``, ``importance_figure``, ``parallel_figure``,
``pareto_figure``, ``is_oos_figure``, ``top_equity_figure``) return plotly figures; the notebook
research/notebooks/study_analysis.ipynb shows them one by one and ``render_study_report`` (called by
``gridctl study report``) writes them into ``index.html`` with plotly.js inline, once, so the page
opens with no network.

Conventions read from the study:
- Trials' user attrs ``is_metrics`` / ``oos_metrics`` (dicts of numbers) are shown side by side.
- Feasibility is Optuna's: a trial whose constraint values (``FrozenTrial.constraints``) are not all
  <= 0 is infeasible; the top-trials table, "best" and the overfitting statistics leave those out.
- The deflated Sharpe ratio and PBO come from ``research.overfitting.overfitting_report``, the one
  implementation every view calls: for a ``gridctl optimize`` study over every distinct feasible
  trial re-run on the study's data (``research.studies.overfitting_stats``, what ``gridctl study show``
  prints); for any other study from each feasible trial's user attr ``daily_returns`` (a list) or the
  study's user attr ``daily_returns`` (``{trial number: list}``).
- Parameter importances use PED-ANOVA, optuna's default evaluator: it has no random part, so the
  same study always gives the same importances (fANOVA would need scikit-learn and a seed).
"""

from __future__ import annotations

import html
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import plotly.graph_objects as go
from optuna.importance import PedAnovaImportanceEvaluator
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from gridctl.configs.errors import GridctlError
from gridctl.data.atomic import atomic_write_text
from gridctl.research.options import REPORT_TOP
from gridctl.research.reproduce import day_span

#: Fewer completed trials than this (or no parameter that varies) and importances are not computed:
#: PED-ANOVA compares the best 10 % of the trials with the rest, so it needs one trial in that 10 %.
MIN_TRIALS_FOR_IMPORTANCE = 10
REPORT_FILE = "index.html"
DAILY_RETURNS = "daily_returns"
IS_METRICS, OOS_METRICS = "is_metrics", "oos_metrics"
GRIDCTL_ATTR = "gridctl"  # the user attr gridctl optimize keeps a trial's metrics and overrides in
PLOT_CONFIG = {"scrollZoom": True, "displaylogo": False, "responsive": True}
_RESERVED_ATTRS = (DAILY_RETURNS, IS_METRICS, OOS_METRICS)


def open_study(
    study_name: str,
    journal: str | Path | None = None,
    storage: str | None = None,
    studies_dir: str | Path | None = None,
) -> optuna.Study:
    """Load an existing study by name: from a journal file, a storage URL, or (neither given) the
    gridctl studies directory (``studies_dir``, default ``$GRIDCTL_STUDIES_DIR``) where
    ``gridctl optimize`` keeps it."""
    if journal is not None and storage is not None:
        raise GridctlError("give a journal file or a storage URL, not both")
    if journal is None and storage is None:
        from gridctl.research.optimize import journal_path

        journal = journal_path(study_name, Path(studies_dir) if studies_dir else None)
    if journal is not None:
        path = Path(journal)
        if not path.is_file():
            raise GridctlError(f"{path}: no such journal file")
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        store: Any = JournalStorage(JournalFileBackend(str(path)))
    else:
        store = storage
    try:
        return optuna.load_study(study_name=study_name, storage=store)
    except KeyError:
        raise GridctlError(f"no study named {study_name!r} in {journal or storage}") from None


def completed(study: optuna.Study) -> list[FrozenTrial]:
    """The study's completed trials, in trial order."""
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def is_feasible(trial: FrozenTrial) -> bool:
    """Optuna's feasibility: every constraint value of the trial is <= 0 (no constraints: feasible)."""
    return all(v <= 0.0 for v in trial.constraints.values())


def feasible_completed(study: optuna.Study) -> list[FrozenTrial]:
    """The study's completed, feasible trials, in trial order."""
    return [t for t in completed(study) if is_feasible(t)]


def objective_names(study: optuna.Study) -> list[str]:
    """The objectives' metric names, or ``objective 0``, ``objective 1``, ..."""
    names = study.metric_names
    return list(names) if names else [f"objective {i}" for i in range(len(study.directions))]


def _maximize(study: optuna.Study, i: int) -> bool:
    return study.directions[i] == StudyDirection.MAXIMIZE


def top_trials(study: optuna.Study, top_k: int = REPORT_TOP) -> list[FrozenTrial]:
    """Best ``top_k`` completed feasible trials: by the objective; multi-objective: the (feasible)
    Pareto front first, each rank ordered by the first objective."""
    trials = feasible_completed(study)
    if not trials:
        return []
    if len(study.directions) == 1:
        sign = -1.0 if _maximize(study, 0) else 1.0
        return sorted(trials, key=lambda t: (sign * t.value, t.number))[:top_k]
    front = {t.number for t in study.best_trials}  # Optuna's front holds feasible trials only
    sign0 = -1.0 if _maximize(study, 0) else 1.0
    return sorted(trials, key=lambda t: (t.number not in front, sign0 * t.values[0], t.number))[:top_k]


def _message_figure(title: str, message: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False)
    fig.update_layout(
        title=title, height=220, xaxis={"visible": False}, yaxis={"visible": False}, template="plotly_white"
    )
    return fig


def _target(study: optuna.Study, objective: int) -> dict[str, Any]:
    """Keyword arguments selecting one objective for optuna's plots (none for single-objective)."""
    if len(study.directions) == 1:
        return {"target_name": objective_names(study)[0]}
    return {"target": lambda t: t.values[objective], "target_name": objective_names(study)[objective]}


def history_figure(study: optuna.Study, objective: int = 0) -> go.Figure:
    """Objective value of every trial in order, with the best so far (single-objective)."""
    if not completed(study):
        return _message_figure("Optimization history", "no completed trials yet")
    fig = optuna.visualization.plot_optimization_history(study, **_target(study, objective))
    fig.update_layout(title=f"Optimization history: {objective_names(study)[objective]}")
    return fig


def importance_note(study: optuna.Study) -> str | None:
    """Why importances cannot be computed for this study, or None when they can."""
    trials = completed(study)
    if len(trials) < MIN_TRIALS_FOR_IMPORTANCE:
        return (
            f"parameter importances need at least {MIN_TRIALS_FOR_IMPORTANCE} completed trials "
            f"(this study has {len(trials)})"
        )
    varying = {
        name
        for name in {n for t in trials for n in t.params}
        if len({repr(t.params.get(name)) for t in trials}) > 1
    }
    if not varying:
        return "parameter importances need a parameter that takes more than one value"
    return None


def param_importances(study: optuna.Study, objective: int = 0) -> dict[str, float]:
    """Importance of each parameter for one objective (PED-ANOVA; deterministic)."""
    note = importance_note(study)
    if note is not None:
        raise GridctlError(note)
    sign = -1.0 if _maximize(study, objective) else 1.0
    # PED-ANOVA with an explicit target ranks lower as better: negate objectives being maximised
    # (optuna warns about exactly that on every call; the negation is deliberate).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator computes")
        return optuna.importance.get_param_importances(
            study,
            evaluator=PedAnovaImportanceEvaluator(),
            target=lambda t: sign * t.values[objective],
        )


def importance_figure(study: optuna.Study, objective: int = 0) -> go.Figure:
    """Horizontal bars of the parameter importances for one objective (a note when too few trials)."""
    title = f"Parameter importances: {objective_names(study)[objective]}"
    note = importance_note(study)
    if note is not None:
        return _message_figure(title, note)
    imp = param_importances(study, objective)
    names = list(imp)[::-1]
    fig = go.Figure(
        go.Bar(
            x=[imp[n] for n in names],
            y=names,
            orientation="h",
            name="importance",
            hovertemplate="%{y}: %{x:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=title,
        xaxis_title="importance (PED-ANOVA, sums to 1)",
        height=max(260, 60 + 28 * len(names)),
        template="plotly_white",
        margin={"l": 200},
    )
    return fig


def parallel_figure(study: optuna.Study, objective: int = 0) -> go.Figure:
    """Parallel coordinates of the parameters, coloured by one objective."""
    if not completed(study):
        return _message_figure("Parallel coordinates", "no completed trials yet")
    fig = optuna.visualization.plot_parallel_coordinate(study, **_target(study, objective))
    fig.update_layout(title=f"Parallel coordinates: {objective_names(study)[objective]}")
    return fig


def pareto_figure(study: optuna.Study) -> go.Figure | None:
    """The Pareto front of a 2- or 3-objective study (None for a single objective)."""
    n = len(study.directions)
    if n == 1:
        return None
    if not completed(study):
        return _message_figure("Pareto front", "no completed trials yet")
    if n > 3:
        return _message_figure("Pareto front", f"{n} objectives: pick 2 or 3 with optuna's plot_pareto_front")
    fig = optuna.visualization.plot_pareto_front(study, target_names=objective_names(study))
    fig.update_layout(title="Pareto front (best trials highlighted)")
    return fig


def _numbers(d: Any) -> dict[str, float]:
    if not isinstance(d, dict):
        return {}
    out = {}
    for k, v in d.items():
        if isinstance(v, bool) or not isinstance(v, int | float):
            continue
        out[str(k)] = float(v)
    return out


def is_oos_table(trials: Sequence[FrozenTrial]) -> tuple[list[str], list[dict[str, Any]]]:
    """(metric names, rows) of in-sample vs out-of-sample metrics for trials that carry both attrs.

    Each row has ``trial`` and ``<metric> IS`` / ``<metric> OOS`` per metric both dicts share.
    """
    have = [t for t in trials if IS_METRICS in t.user_attrs and OOS_METRICS in t.user_attrs]
    if not have:
        return [], []
    keys: list[str] = []
    for t in have:
        ins, oos = _numbers(t.user_attrs[IS_METRICS]), _numbers(t.user_attrs[OOS_METRICS])
        keys += [k for k in ins if k in oos and k not in keys]
    rows = []
    for t in have:
        ins, oos = _numbers(t.user_attrs[IS_METRICS]), _numbers(t.user_attrs[OOS_METRICS])
        row: dict[str, Any] = {"trial": t.number}
        for k in keys:
            row[f"{k} IS"] = ins.get(k)
            row[f"{k} OOS"] = oos.get(k)
        rows.append(row)
    return keys, rows


def is_oos_figure(study: optuna.Study, metric: str | None = None) -> go.Figure | None:
    """In-sample vs out-of-sample value of one metric (default: sharpe, else the first shared one)
    for every completed trial that has both; None when no trial carries them."""
    keys, rows = is_oos_table(completed(study))
    if not keys:
        return None
    metric = metric or ("sharpe" if "sharpe" in keys else keys[0])
    if metric not in keys:
        raise GridctlError(f"metric {metric!r} is not in both is_metrics and oos_metrics (have {keys})")
    pts = [(r["trial"], r[f"{metric} IS"], r[f"{metric} OOS"]) for r in rows]
    pts = [
        p
        for p in pts
        if p[1] is not None and p[2] is not None and math.isfinite(p[1]) and math.isfinite(p[2])
    ]
    xs = [p[1] for p in pts]
    ys = [p[2] for p in pts]
    fig = go.Figure(
        go.Scatter(
            x=xs,
            y=ys,
            mode="markers",
            name="trials",
            customdata=[p[0] for p in pts],
            hovertemplate="trial %{customdata}<br>IS %{x:.4g}<br>OOS %{y:.4g}<extra></extra>",
        )
    )
    if pts:
        lo, hi = min(xs + ys), max(xs + ys)
        fig.add_trace(
            go.Scatter(
                x=[lo, hi], y=[lo, hi], mode="lines", name="OOS = IS", line={"dash": "dot", "color": "#999"}
            )
        )
    fig.update_layout(
        title=f"In-sample vs out-of-sample: {metric}",
        xaxis_title=f"{metric} in sample",
        yaxis_title=f"{metric} out of sample",
        template="plotly_white",
        height=420,
    )
    return fig


def trial_returns(study: optuna.Study) -> dict[int, np.ndarray]:
    """Daily returns per completed feasible trial number, from trial or study user attrs (module doc)."""
    by_study = study.user_attrs.get(DAILY_RETURNS) or {}
    out: dict[int, np.ndarray] = {}
    for t in feasible_completed(study):
        raw = t.user_attrs.get(DAILY_RETURNS)
        if raw is None and isinstance(by_study, dict):
            raw = by_study.get(str(t.number), by_study.get(t.number))
        if raw is None:
            continue
        arr = np.asarray(raw, dtype=np.float64)
        if arr.ndim != 1:
            raise GridctlError(f"trial {t.number}: {DAILY_RETURNS} must be a list of numbers")
        out[t.number] = arr
    return out


def is_gridctl_study(study: optuna.Study) -> bool:
    """True for a study ``gridctl optimize`` made (it records its profile on the study)."""
    from gridctl.research.optimize import STUDY_ATTR

    return STUDY_ATTR in study.user_attrs


def overfitting(study: optuna.Study, data_dir: str | Path | None = None) -> dict[str, Any] | None:
    """Deflated Sharpe ratio of the best feasible trial and PBO over the feasible trials
    (``research.overfitting.overfitting_report``); None for a foreign study without daily returns.

    A ``gridctl optimize`` study: ``research.studies.overfitting_stats`` (every distinct feasible trial
    re-run on the study's data from ``data_dir``), the numbers ``gridctl study show`` prints. Any other
    study: the ``daily_returns`` attrs of its feasible trials (those of the most common length).
    """
    from gridctl.research.overfitting import overfitting_report

    if is_gridctl_study(study):
        from gridctl.research.studies import overfitting_stats

        return overfitting_stats(study, Path(data_dir) if data_dir is not None else None)
    rets = trial_returns(study)
    if not rets:
        return None
    lengths = [len(r) for r in rets.values()]
    n_obs = max(set(lengths), key=lengths.count)  # trials of one window share its length
    numbers = [n for n, r in rets.items() if len(r) == n_obs]
    ranked = [t.number for t in top_trials(study, len(completed(study))) if t.number in set(numbers)]
    matrix = np.column_stack([rets[n] for n in numbers])
    return overfitting_report(matrix, numbers, ranked[0])


def study_market(study: optuna.Study, data_dir: str | Path | None = None) -> tuple[Any, Any, Any, Any]:
    """(market, base strategy, venue, detail bars) a ``gridctl optimize`` study ran on, from the profile
    stored on it and the data in ``data_dir`` (refused when that data is not the study's)."""
    from gridctl.research.optimize import check_same_data, load_workload
    from gridctl.research.studies import study_info, study_profile

    work = load_workload(study_profile(study), Path(data_dir) if data_dir is not None else None)
    check_same_data(study.study_name, study_info(study).get("data"), work)
    return work.market, work.strategy, work.venue, work.detail


def trial_overrides(trial: FrozenTrial) -> dict[str, Any]:
    """The config overrides a trial ran with: ``gridctl optimize`` records the exact ones (after its
    drawn constraints) in the user attr ``gridctl`` -> ``overrides``; any other study's trial ran its
    params, which must then be ``section.key`` config names."""
    recorded = trial.user_attrs.get(GRIDCTL_ATTR)
    if isinstance(recorded, dict) and isinstance(recorded.get("overrides"), dict):
        return dict(recorded["overrides"])
    return dict(trial.params)


def top_equity_figure(
    study: optuna.Study, market: Any, strategy: Any, venue: Any, top_k: int = REPORT_TOP, detail: Any = None
) -> go.Figure:
    """Equity curves of the top trials, each re-run in full (``run_single``; a basket: the account's of
    ``run_basket``) with its overrides (``trial_overrides``) applied to ``strategy`` / ``venue`` by
    ``engine.batch.apply_overrides``; ``detail``: the detail bars when the strategy sets
    ``backtest.detail_timeframe``."""
    from gridctl.configs.overrides import apply_overrides
    from gridctl.research.optimize.markets import equity_rows
    from gridctl.research.report import MAX_CURVE_POINTS, minmax_indices

    fig = go.Figure()
    for t in top_trials(study, top_k):
        s, v = apply_overrides(strategy, venue, trial_overrides(t))
        eq = equity_rows(market, s, v, detail=detail)  # a basket study's: the account's equity
        idx = minmax_indices(eq["equity"], MAX_CURVE_POINTS)
        fig.add_trace(
            go.Scattergl(
                x=np.asarray(eq["ts"][idx] + market.bar_ms, dtype=np.float64),
                y=eq["equity"][idx],
                mode="lines",
                name=f"trial {t.number}",
                hovertemplate=f"trial {t.number} %{{x|%Y-%m-%d %H:%M}} %{{y:,.2f}}<extra></extra>",
            )
        )
    fig.update_xaxes(type="date")
    fig.update_layout(
        title=f"Equity of the top {len(fig.data)} trials (fresh backtests)",
        yaxis_title="equity (USDT)",
        template="plotly_white",
        height=420,
    )
    return fig


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}" if math.isfinite(v) else str(v)
    return str(v)


def _html_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _scalar_attrs(t: FrozenTrial) -> dict[str, Any]:
    """A trial's numeric user attrs, dicts flattened one level (``attr.key``), reserved ones left out."""
    out: dict[str, Any] = {}
    for k, v in t.user_attrs.items():
        if k in _RESERVED_ATTRS:
            continue
        if isinstance(v, dict):
            out.update({f"{k}.{kk}": vv for kk, vv in _numbers(v).items()})
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out[k] = v
    return out


#: ``gridctl study show``'s leaderboard metrics (``research.objectives.row_metrics`` names) and labels.
SHOWN_METRICS = (
    ("sharpe", "sharpe"),
    ("profit_factor", "profit_factor"),
    ("calmar", "calmar (CAGR / bar-close dd)"),
    ("max_drawdown_bar_close_pct", "max dd bar-close %"),
    ("total_return_pct", "total_return_pct"),
    ("trades", "trades"),
)


def top_trials_rows(study: optuna.Study, top_k: int = REPORT_TOP) -> tuple[list[str], list[list[Any]]]:
    """(header, rows) of the top trials: number, objective values, parameters, numeric user attrs.

    A ``gridctl optimize`` study's rows are ``gridctl study show``'s: the metrics each trial was
    scored on (walk-forward: the mean over its windows), then the strategy values it ran (a value
    drawn as a fraction of another, such as ``exit.tp_steps``, as the value itself)."""
    trials = top_trials(study, top_k)
    if trials and all(isinstance(t.user_attrs.get(GRIDCTL_ATTR), dict) for t in trials):
        return _gridctl_rows(study, trials)
    params = sorted({p for t in trials for p in t.params})
    attrs: list[str] = []
    for t in trials:
        attrs += [k for k in _scalar_attrs(t) if k not in attrs]
    header = ["trial", *objective_names(study), *params, *attrs]
    rows = []
    for t in trials:
        a = _scalar_attrs(t)
        rows.append([t.number, *t.values, *(t.params.get(p) for p in params), *(a.get(k) for k in attrs)])
    return header, rows


def _gridctl_rows(study: optuna.Study, trials: list[FrozenTrial]) -> tuple[list[str], list[list[Any]]]:
    """``top_trials_rows`` of a ``gridctl optimize`` study (see there)."""
    from gridctl.research.studies import trial_metrics

    overrides = [t.user_attrs[GRIDCTL_ATTR].get("overrides", {}) for t in trials]
    params = sorted({p for o in overrides for p in o})
    header = ["trial", *objective_names(study), *(label for _, label in SHOWN_METRICS), *params]
    rows = []
    for t, o in zip(trials, overrides, strict=True):
        m = trial_metrics(t)
        rows.append([t.number, *t.values, *(m.get(k) for k, _ in SHOWN_METRICS), *(o.get(p) for p in params)])
    return header, rows


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:20px;color:#222}"
    "table{border-collapse:collapse;margin:0 0 16px 0;font-size:13px}"
    "th,td{border-bottom:1px solid #ddd;padding:3px 8px;text-align:right}th{color:#555;font-weight:normal}"
    "p.note{color:#555;font-size:13px}.chart{margin:8px 0 24px 0}.wide{overflow-x:auto}"
)


def study_figures(study: optuna.Study) -> list[tuple[str, go.Figure]]:
    """(id, figure) of every chart the study report shows, in page order."""
    figs: list[tuple[str, go.Figure]] = []
    n_obj = len(study.directions)
    for i in range(n_obj):
        figs.append((f"history-{i}", history_figure(study, i)))
    for i in range(n_obj):
        figs.append((f"importance-{i}", importance_figure(study, i)))
    figs.append(("parallel", parallel_figure(study, 0)))
    pareto = pareto_figure(study)
    if pareto is not None:
        figs.append(("pareto", pareto))
    isoos = is_oos_figure(study)
    if isoos is not None:
        figs.append(("is-oos", isoos))
    return figs


def overfitting_rows(over: dict[str, Any]) -> list[list[Any]]:
    """(measure, value) rows of an ``overfitting_report`` result, every input named."""
    per = "day" if over.get("periods_per_year") == 365.0 else "period"
    return [
        ["deflated Sharpe ratio (selected trial)", over.get("deflated_sharpe")],
        ["selected trial", over.get("selected_trial")],
        [f"its Sharpe ratio (per {per})", over.get("sharpe")],
        ["its Sharpe ratio (annualised)", over.get("sharpe_annualised")],
        ["its skewness / kurtosis (normal: 0 / 3)", _pair(over.get("skew"), over.get("kurtosis"))],
        [f"{per}s (T)", over.get("periods")],
        [
            "trials used (distinct, feasible or configured-rule-only, with dispersion)",
            over.get("trials_used"),
        ],
        ["independent trials N (correlation clusters)", over.get("clusters")],
        ["clusters: mean correlation at least", over.get("cluster_min_correlation")],
        [f"variance of the clusters' Sharpe ratios (robust: MAD; per {per})", over.get("sharpe_variance")],
        ["the same, sample variance (not used)", over.get("sharpe_variance_sample")],
        [f"SR0, the best of N by luck (per {per})", over.get("sr0")],
        ["SR0 (annualised)", over.get("sr0_annualised")],
        ["probability of backtest overfitting (CSCV, all trials used)", over.get("pbo")],
        ["CSCV blocks / splits", _pair(over.get("pbo_blocks"), over.get("pbo_splits"))],
        ["daily returns over (end exclusive; never the hold-out)", _window(over.get("returns_window"))],
    ]


def _window(win: dict[str, Any] | None) -> str | None:
    """``YYYY-MM-DD .. YYYY-MM-DD`` of a ``returns_window`` (as `study show` prints it: a partial last day
    rounds up), and whether a hold-out was left out."""
    if win is None:
        return None
    left = "; hold-out left out" if win["holdout_excluded"] else ""
    return f"{day_span((win['start_ms'], win['end_ms']), ' .. ')} ({win['days']} days{left})"


def _pair(a: Any, b: Any) -> str | None:
    return None if a is None and b is None else f"{_fmt(a)} / {_fmt(b)}"


def render_study_report(
    study: optuna.Study,
    out_dir: Path,
    top_k: int = REPORT_TOP,
    overfitting_result: dict[str, Any] | None = None,
) -> Path:
    """Write ``out_dir/index.html``: the study's charts and tables, plotly.js inline; returns the path.

    ``overfitting_result``: an ``overfitting_report`` result already computed (``gridctl study
    report`` passes ``research.studies.overfitting_stats``); otherwise ``overfitting(study)``."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise GridctlError(f"{out_dir} exists and is not a directory")
    trials = study.get_trials(deepcopy=False)
    states = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    infeasible = len(completed(study)) - len(feasible_completed(study))
    name = html.escape(study.study_name)
    directions = ", ".join(
        f"{n} ({d.name.lower()})" for n, d in zip(objective_names(study), study.directions, strict=True)
    )
    parts = [
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>study {name}</title>',
        f"<style>{_CSS}</style></head><body><h1>Optuna study {name}</h1>",
        f'<p class="note">objectives: {html.escape(directions)}; trials: '
        + html.escape(", ".join(f"{v} {k}" for k, v in states.items() if v))
        + f"; {infeasible} completed trial(s) break a hard limit (infeasible): left out of every table"
        + " and of the best</p>",
        f"<h2>Top {top_k} feasible trials</h2>",
    ]
    header, rows = top_trials_rows(study, top_k)
    parts.append(_html_table(header, rows) if rows else '<p class="note">no completed feasible trials</p>')
    keys, isoos = is_oos_table(top_trials(study, top_k))
    if keys:
        parts.append("<h2>In-sample vs out-of-sample (top trials)</h2>")
        cols = ["trial", *[f"{k} {w}" for k in keys for w in ("IS", "OOS")]]
        parts.append(_html_table(cols, [[r.get(c) for c in cols] for r in isoos]))
    over = overfitting_result if overfitting_result is not None else overfitting(study)
    if over is not None:
        parts.append("<h2>Overfitting</h2>")
        parts.append(_html_table(["measure", "value"], overfitting_rows(over)))
        parts += [f'<p class="note">{html.escape(n)}</p>' for n in over["notes"]]
    parts.append("<h2>Charts</h2>")
    for i, (fid, fig) in enumerate(study_figures(study)):
        parts.append(
            '<div class="chart">'
            + fig.to_html(
                full_html=False,
                include_plotlyjs=(i == 0),  # plotly.js inline, once, before the first chart
                config=PLOT_CONFIG,
                div_id=f"chart-{fid}",
                default_width="100%",
            )
            + "</div>"
        )
    parts.append("</body></html>")
    out_dir.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(out_dir / REPORT_FILE, "\n".join(parts))


def render_report(
    study: optuna.Study,
    out_dir: Path,
    data_dir: Path | None = None,
    top_k: int = REPORT_TOP,
    force: bool = False,
) -> Path:
    """HTML report of a ``gridctl optimize`` study, with ``research.studies.overfitting_stats`` in it.

    Refuses an ``out_dir`` that is a file, or that already holds a report without ``force``, before
    anything is computed; writes nothing to the study's storage.
    """
    from gridctl.research.studies import overfitting_stats

    out_dir = Path(out_dir)
    check_report_dir(out_dir, force)
    over = overfitting_stats(study, data_dir)
    return render_study_report(study, out_dir, top_k=top_k, overfitting_result=over)


def check_report_dir(out_dir: Path, force: bool) -> None:
    """Refuse a report folder that is a file or already holds ``index.html`` (without ``force``)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise GridctlError(f"--out {out_dir} exists and is not a directory")
    if (out_dir / REPORT_FILE).exists() and not force:
        raise GridctlError(f"--out {out_dir} already holds {REPORT_FILE}; add --force to replace it")
    parent = out_dir.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise GridctlError(f"--out {out_dir}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise GridctlError(f"--out {out_dir}: {parent} is not writable")
