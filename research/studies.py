"""Working with finished (or running) studies: list, load, tabulate, pick the winner, export, overfitting.

Notebook use::

    from gridctl.research.studies import load_study, study_frame, best_config
    study = load_study("wide-1")
    df = study_frame(study)            # one row per trial: number, state, values, params, metrics
    cfg = best_config(study)           # the winner as a StrategyConfig (run it with engine.run.run_single)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import yaml

from gridctl.configs.errors import GridctlError
from gridctl.research.optimize import (
    ATTR,
    STUDY_ATTR,
    default_studies_dir,
    feasible_trial,
    open_storage,
    restore_metrics,
)
from gridctl.research.profiles import Profile, migrate_profile_tree

ROBUST_ATTR = "gridctl_worst_neighbour"


def list_studies(studies_dir: Path | None = None, storage: str | None = None) -> list[dict[str, Any]]:
    """Name, trial counts, profile and best value of every study in the studies dir (or RDB storage)."""
    out = []
    if storage is None:
        directory = studies_dir or default_studies_dir()
        names = sorted(p.stem for p in directory.glob("*.journal")) if directory.is_dir() else []
        for name in names:
            out.append(_listing(load_study(name, studies_dir=directory)))
        return out
    store = open_storage("-", storage)
    for summary in optuna.get_all_study_summaries(store):
        out.append(_listing(optuna.load_study(study_name=summary.study_name, storage=store)))
    return out


def _listing(study: optuna.Study) -> dict[str, Any]:
    trials = study.get_trials(deepcopy=False)
    states = [t.state.name.lower() for t in trials]
    info = study.user_attrs.get(STUDY_ATTR, {})
    best = best_trial(study) if len(study.directions) == 1 else None
    return {
        "study_name": study.study_name,
        "profile": info.get("name"),
        "created_at": info.get("created_at"),
        "n_trials": sum(s in ("complete", "pruned") for s in states),
        "failed": states.count("fail"),
        "running": states.count("running"),
        "best_value": best.value if best is not None else None,
    }


def load_study(name: str, studies_dir: Path | None = None, storage: str | None = None) -> optuna.Study:
    """Open an existing gridctl study by name (journal file in the studies dir, or an RDB URL)."""
    store = open_storage(name, storage, studies_dir, create=False)
    try:
        study = optuna.load_study(study_name=name, storage=store)
    except KeyError:
        raise GridctlError(f"no study named {name!r} in that storage (gridctl study list)") from None
    if STUDY_ATTR not in study.user_attrs:
        raise GridctlError(f"study {name!r} was not created by gridctl optimize")
    return study


def study_profile(study: optuna.Study) -> Profile:
    """The profile the study was created with (stored on the study, independent of today's file)."""
    return Profile.model_validate(migrate_profile_tree(study.user_attrs[STUDY_ATTR]["profile"]))


def study_info(study: optuna.Study) -> dict[str, Any]:
    """The stored profile name, fingerprint, data window and creation time."""
    return dict(study.user_attrs[STUDY_ATTR])


def trial_metrics(trial: optuna.trial.FrozenTrial) -> dict[str, float]:
    """The metrics the trial was scored on (whole window; walk-forward: the mean over target folds)."""
    attrs = trial.user_attrs.get(ATTR, {})
    if "metrics" in attrs:
        return restore_metrics(attrs["metrics"])
    folds = [restore_metrics(m) for m in attrs.get("out_of_sample") or attrs.get("in_sample") or []]
    if not folds:
        return {}
    return {k: float(np.nanmean([f[k] for f in folds])) for k in folds[0]}


def study_frame(study: optuna.Study) -> Any:
    """pandas DataFrame, one row per trial: number, state, feasible, value(s), params, metrics."""
    import pandas as pd

    rows = []
    for t in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {
            "number": t.number,
            "state": t.state.name.lower(),
            "feasible": feasible_trial(t),
        }
        if t.values is not None:
            for i, v in enumerate(t.values):
                row["value" if len(t.values) == 1 else f"value_{i}"] = v
        attrs = t.user_attrs.get(ATTR, {})
        for k, v in attrs.get("overrides", {}).items():
            row[k] = v
        for k, v in trial_metrics(t).items():
            row[f"m.{k}"] = v
        if "objective_in_sample" in attrs:
            row["objective_in_sample"] = attrs["objective_in_sample"][0]
        if "objective_out_of_sample" in attrs:
            row["objective_out_of_sample"] = attrs["objective_out_of_sample"][0]
        rows.append(row)
    return pd.DataFrame(rows)


def feasible_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Completed trials satisfying every hard limit."""
    return [t for t in study.get_trials(deepcopy=False) if feasible_trial(t)]


def ranked_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Feasible trials of a single-objective study, best first."""
    trials = feasible_trials(study)
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    return sorted(trials, key=lambda t: (sign * t.value, t.number))


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The winner: best feasible value, or best worst-neighbour value when the profile ranks by it."""
    ranked = ranked_trials(study)
    if not ranked:
        return None
    worst = study.user_attrs.get(ROBUST_ATTR)
    if worst and study_profile(study).objective.rank_by == "worst_neighbour":
        by_number = {t.number: t for t in ranked}
        scored = [(v, -int(n)) for n, v in worst.items() if int(n) in by_number]
        if scored:
            return by_number[-max(scored)[1]]
    return ranked[0]


def pareto_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Feasible non-dominated trials of a return-versus-drawdown study (max return, min drawdown)."""
    trials = feasible_trials(study)
    front = []
    for t in trials:
        r, d = t.values
        dominated = any(
            (o.values[0] >= r and o.values[1] <= d) and (o.values[0] > r or o.values[1] < d) for o in trials
        )
        if not dominated:
            front.append(t)
    return sorted(front, key=lambda t: t.values[0])


def get_trial(study: optuna.Study, number: int | None) -> optuna.trial.FrozenTrial:
    """Trial ``number``, or the winner (single objective) / highest-return Pareto trial."""
    if number is None:
        if len(study.directions) > 1:
            front = pareto_trials(study)
            if not front:
                raise GridctlError(f"study {study.study_name!r} has no feasible trial yet")
            return front[-1]
        best = best_trial(study)
        if best is None:
            raise GridctlError(f"study {study.study_name!r} has no feasible completed trial yet")
        return best
    trials = study.get_trials(deepcopy=False)
    if not 0 <= number < len(trials):
        raise GridctlError(f"--trial {number}: study {study.study_name!r} has trials 0..{len(trials) - 1}")
    trial = trials[number]
    if trial.state != optuna.trial.TrialState.COMPLETE:
        raise GridctlError(f"--trial {number} is {trial.state.name.lower()}, not complete")
    return trial


def best_config(study: optuna.Study, trial: int | None = None) -> Any:
    """The trial's complete strategy (base strategy of the profile + the trial's values), validated."""
    from gridctl.configs.loader import load_strategy, load_venue
    from gridctl.engine.batch import apply_overrides

    profile = study_profile(study)
    t = get_trial(study, trial)
    strategy = load_strategy(profile.base.strategy)
    venue = load_venue(profile.base.venue)
    strategy, _ = apply_overrides(strategy, venue, t.user_attrs[ATTR]["overrides"])
    label = f"{study.study_name}-trial{t.number}"
    data = strategy.model_dump()
    data["strategy"]["name"] = label
    named = type(strategy).model_validate(data)
    named._origin = f"study {study.study_name} trial {t.number}"
    return named


def export_config(study: optuna.Study, out: Path, trial: int | None = None) -> Path:
    """Write the trial's complete strategy config as YAML that ``gridctl backtest --config`` loads."""
    from gridctl.data.atomic import atomic_write_text
    from gridctl.research.reproduce import reproduce_lines

    t = get_trial(study, trial)
    cfg = best_config(study, t.number)
    profile = study_profile(study)
    info = study_info(study)
    values = ", ".join(f"{v:.6g}" for v in t.values or ())
    lines, rule = reproduce_lines(study, t, cfg.backtest.intrabar_path)
    header = [
        f"# Exported by gridctl study export: study {study.study_name!r}, trial {t.number}, profile "
        f"{profile.name!r} ({info.get('fingerprint')})",
        f"# objective {profile.objective.kind}: {values}",
        *lines,
        "",
    ]
    dumped = cfg.model_dump(mode="json")
    if rule is not None:  # the rule that scored it: `gridctl backtest --config` gives the study's figures
        dumped["backtest"]["intrabar_path"] = rule
    body = yaml.safe_dump(dumped, sort_keys=False)
    out = Path(out)
    if out.exists() and out.is_dir():
        raise GridctlError(f"--out {out} is a directory; give a file name like best.yaml")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, "\n".join(header) + body)
    return out


# ----------------------------------------------------------------------------------------------------
# Overfitting: deflated Sharpe ratio and probability of backtest overfitting
# ----------------------------------------------------------------------------------------------------


def top_trial_returns(
    study: optuna.Study, top_k: int = 16, data_dir: Path | None = None
) -> tuple[list[int], np.ndarray]:
    """Daily returns ``(T, K)`` of the top-K feasible trials, recomputed with ``run_single`` over the
    study's whole data window (a liquidated run's later days count as 0 return)."""
    from gridctl.configs.loader import load_venue
    from gridctl.engine.run import run_single
    from gridctl.research.optimize import load_workload
    from gridctl.research.stats import daily_equity, daily_returns

    profile = study_profile(study)
    if len(study.directions) > 1:
        trials = list(reversed(pareto_trials(study)))[:top_k]
    else:
        trials = ranked_trials(study)[:top_k]
    if not trials:
        return [], np.zeros((0, 0))
    work = load_workload(profile, data_dir)
    venue = load_venue(profile.base.venue)
    days_all = np.unique(np.asarray(work.market.ts, dtype=np.int64) // 86_400_000)
    cols = []
    for t in trials:
        cfg = best_config(study, t.number)
        run = run_single(work.market, cfg, venue, curves=True, detail=work.detail)
        days, eq = daily_equity(run.equity["ts"], run.equity["equity"])
        rets = daily_returns(eq, float(cfg.backtest.initial_balance))
        col = np.zeros(len(days_all))
        col[np.searchsorted(days_all, days)] = rets
        cols.append(col)
    return [t.number for t in trials], np.column_stack(cols)


def overfitting_stats(study: optuna.Study, top_k: int = 16, data_dir: Path | None = None) -> dict[str, Any]:
    """Deflated Sharpe ratio of the winner and PBO across the top-K trials (research/overfitting.py).

    DSR inputs: the winner's per-day (not annualised) Sharpe, the variance of all completed trials'
    per-day Sharpe, the number of completed trials, the number of days, and the winner's daily-return
    skewness and (non-excess, normal = 3) kurtosis.
    """
    try:
        from gridctl.research.overfitting import deflated_sharpe_ratio, probability_of_backtest_overfitting
    except ImportError:
        return {"deflated_sharpe": None, "pbo": None, "note": "research.overfitting is not available"}
    numbers, rets = top_trial_returns(study, top_k, data_dir)
    out: dict[str, Any] = {"deflated_sharpe": None, "pbo": None, "top_k": len(numbers), "note": None}
    if not numbers:
        out["note"] = "no feasible completed trials"
        return out
    best = rets[:, 0]
    sd = float(np.std(best, ddof=1)) if len(best) > 1 else 0.0
    sharpes = [trial_metrics(t).get("sharpe", math.nan) for t in study.get_trials(deepcopy=False)]
    sharpes = np.asarray([s for s in sharpes if math.isfinite(s)]) / math.sqrt(365.0)
    if sd > 0 and len(sharpes) >= 2:
        z = (best - best.mean()) / sd
        out["deflated_sharpe"] = float(
            deflated_sharpe_ratio(
                float(best.mean() / sd),
                float(np.var(sharpes, ddof=1)),
                len(sharpes),
                len(best),
                float(np.mean(z**3)),
                float(np.mean(z**4)),
            )
        )
    else:
        out["note"] = "the winner's daily returns have no dispersion (or < 2 scored trials): no DSR"
    if rets.shape[1] >= 2 and rets.shape[0] >= 16:
        out["pbo"] = float(probability_of_backtest_overfitting(rets, n_blocks=16))
    else:
        out["note"] = (out["note"] or "") + f" PBO needs >= 2 trials and >= 16 days (have {rets.shape})"
    return out


def render_report(study: optuna.Study, out_dir: Path, data_dir: Path | None = None, top_k: int = 16) -> Path:
    """HTML report of a study (research.study_report; a minimal trial table if that module is absent).

    The top-K trials' daily returns are recomputed and stored on the study (user attr
    ``daily_returns``) first, so the report can show the deflated Sharpe ratio and PBO.
    """
    try:
        from gridctl.research.study_report import render_study_report
    except ImportError:
        render_study_report = None
    if render_study_report is not None:
        numbers, rets = top_trial_returns(study, top_k, data_dir)
        study.set_user_attr("daily_returns", {str(n): rets[:, j].tolist() for j, n in enumerate(numbers)})
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise GridctlError(f"--out {out_dir} exists and is not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    if render_study_report is not None:
        result = render_study_report(study, out_dir)
        return Path(result) if result is not None else out_dir / "index.html"
    return _minimal_report(study, out_dir)


def _minimal_report(study: optuna.Study, out_dir: Path) -> Path:
    """Fallback until research/study_report.py lands: one self-contained HTML table of the trials."""
    import html

    from gridctl.data.atomic import atomic_write_text

    frame = study_frame(study)
    info = study_info(study)
    table = frame.to_html(index=False, float_format=lambda v: f"{v:.6g}", na_rep="", border=0)
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>study {html.escape(study.study_name)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:12px}"
        "td,th{padding:2px 6px;border-bottom:1px solid #ddd;text-align:right}</style></head><body>"
        f"<h1>Study {html.escape(study.study_name)}</h1>"
        f"<p>profile {html.escape(str(info.get('name')))} ({html.escape(str(info.get('fingerprint')))}), "
        f"{len(frame)} trials</p>{table}</body></html>"
    )
    path = out_dir / "index.html"
    atomic_write_text(path, page)
    return path
