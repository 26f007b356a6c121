"""Walk-forward validation without leakage: fold windows, per-fold selection, the stitched record.

Folds are whole UTC days from the first day of the data window. ``rolling``: the train window of
``train_days`` slides by ``step_days``; ``anchored``: it always starts at the window start and grows by
``step_days``. The test window (``test_days``) starts ``purge_days`` after its train window; folds whose
test window would run past the data (or into the hold-out) are dropped. Test windows never overlap
(``step_days >= test_days``) and never lie inside the train window of the same or an earlier fold
(``check_no_leakage`` refuses any that would). The windows themselves are computed in
``research.optimize.folds`` (the optimizer cuts its workload from them). Each window is backtested from
a fresh account (indicators warm up inside the window), so a fold's result does not depend on the
folds before it.

Selection: every trial is scored on every window; the value told to Optuna is the mean over the TRAIN
windows (in-sample). The out-of-sample record is :func:`select_per_fold`: for each fold, the trial best
on that fold's train window alone, scored on that fold's test window; :func:`walk_forward_report`
stitches the picks' test windows. A profile's ``holdout_days`` are never scored by any trial;
:func:`holdout_report` runs the winner there, reported apart.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from gridctl.research.optimize.folds import check_no_leakage as check_no_leakage  # kept importable here
from gridctl.research.optimize.folds import fold_bounds as fold_bounds  # kept importable here
from gridctl.research.profiles import LimitsSpec


def stitched_equity(study: Any, picks: dict[int, int], data_dir: Path | None = None) -> dict[str, Any]:
    """The out-of-sample equity of ``picks`` (fold -> trial number), fold after fold, as one curve.

    Each pick's test window is re-run with ``run_single`` (a basket: ``run_basket``, the account's
    equity) from a fresh account, under the intrabar path rule that scored it (the worst rule with
    ``objective.path_rule: worst``); fold k's curve is scaled so it starts where fold k-1 ended.
    Returns ``ts`` (bar open times), ``equity`` (quote currency, starting at the first pick's initial
    balance), ``fold`` (fold number per bar) and ``fold_return_pct`` per fold.
    """
    from gridctl.configs.loader import load_venue
    from gridctl.research.optimize import equity_rows, load_workload, restore_metrics
    from gridctl.research.reproduce import scored_config
    from gridctl.research.studies import best_config, study_profile

    profile = study_profile(study)
    if profile.validation.scheme != "walk_forward":
        from gridctl.configs.errors import GridctlError

        raise GridctlError(f"study {study.study_name!r} has no walk-forward folds (validation scheme none)")
    venue = load_venue(profile.base.venue)
    work = load_workload(profile, data_dir)
    trials = study.get_trials(deepcopy=False)
    level: float | None = None
    ts_parts, eq_parts, fold_parts, fold_returns = [], [], [], []
    for window in (w for w in work.windows if w.kind == "test" and w.fold in picks):
        t = trials[picks[window.fold]]
        stored = restore_metrics(t.user_attrs["gridctl"]["out_of_sample"][window.fold])
        cfg = scored_config(best_config(study, t.number), stored)
        initial = float(cfg.backtest.initial_balance)
        level = initial if level is None else level
        rows = equity_rows(window.market, cfg, venue, detail=window.detail)  # a basket: the account's
        eq = rows["equity"].astype(np.float64)
        scaled = eq / initial * level
        ts_parts.append(rows["ts"])
        eq_parts.append(scaled)
        fold_parts.append(np.full(len(eq), window.fold, dtype=np.int64))
        end = float(eq[-1]) if len(eq) else initial
        fold_returns.append((end / initial - 1.0) * 100.0)
        level = float(scaled[-1]) if len(scaled) else level
    return {
        "ts": np.concatenate(ts_parts) if ts_parts else np.zeros(0, np.int64),
        "equity": np.concatenate(eq_parts) if eq_parts else np.zeros(0),
        "fold": np.concatenate(fold_parts) if fold_parts else np.zeros(0, np.int64),
        "fold_return_pct": fold_returns,
    }


def fold_limits(limits: LimitsSpec, folds: int) -> LimitsSpec:
    """The limits one fold's window must meet: ``min_trades`` (summed over every scored window in the
    study) shared evenly over the folds, rounded up; the other limits as they are (per window)."""
    return limits.model_copy(update={"min_trades": -(-limits.min_trades // max(folds, 1))})


def select_per_fold(study: Any) -> list[dict[str, Any]]:
    """Walk-forward selection: per fold, the trial best on THAT fold's train window, and its test score.

    Candidates are the trials that ran the fold (completed, or pruned after it on earlier folds' train
    scores) and meet ``fold_limits`` on the train window; the pick has the highest (first) objective
    there, ties to the lower trial number. Nothing of the test window, or of any later window, enters
    the pick. Returns one dict per fold: the windows, the pick and its train and test figures.
    """
    import optuna

    from gridctl.research.objectives import feasible, limit_values, objective_values
    from gridctl.research.optimize import ATTR, restore_metrics
    from gridctl.research.studies import study_info, study_profile

    profile = study_profile(study)
    spec = profile.objective
    windows = (study_info(study).get("data") or {}).get("windows") or []
    bounds = {(w["kind"], w["fold"]): (w["start_ms"], w["end_ms"]) for w in windows}
    folds = 1 + max((w["fold"] for w in windows), default=-1)
    limits = fold_limits(profile.limits, folds)
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    trials = [t for t in study.get_trials(deepcopy=False) if t.state in done and ATTR in t.user_attrs]
    out = []
    for k in range(folds):
        best: tuple[float, int, dict[str, float], dict[str, float]] | None = None
        for t in trials:
            attrs = t.user_attrs[ATTR]
            if len(attrs.get("in_sample", [])) <= k or len(attrs.get("out_of_sample", [])) <= k:
                continue
            train = restore_metrics(attrs["in_sample"][k])
            if not feasible(limit_values([train], limits)):
                continue
            value = objective_values(train, spec)[0]
            value = value if math.isfinite(value) else -math.inf
            if best is None or value > best[0]:
                best = (value, t.number, train, restore_metrics(attrs["out_of_sample"][k]))
        row: dict[str, Any] = {
            "fold": k,
            "train": bounds.get(("train", k)),
            "test": bounds.get(("test", k)),
            "trial": None,
        }
        if best is not None:
            value, number, train, test = best
            row.update(
                trial=number,
                train_objective=value,
                test_objective=objective_values(test, spec)[0],
                train_return_pct=train["total_return_pct"],
                test_return_pct=test["total_return_pct"],
                test_trades=test["trades"],
            )
        out.append(row)
    return out


def walk_forward_report(study: Any, data_dir: Path | None = None) -> dict[str, Any]:
    """The study's walk-forward out-of-sample record: per-fold picks and their stitched test windows.

    ``oos_objective_mean`` is the mean of the picks' test objectives; ``oos_total_return_pct`` compounds
    the picks' test windows re-run one after another (``stitched_equity`` gives the curve).
    """
    folds = select_per_fold(study)
    picks = {f["fold"]: f["trial"] for f in folds if f["trial"] is not None}
    curve = stitched_equity(study, picks, data_dir) if picks else None
    tests = [f["test_objective"] for f in folds if f["trial"] is not None]
    total = None
    if curve is not None and len(curve["equity"]):
        from gridctl.research.studies import best_config

        first_pick = picks[min(picks)]
        initial = float(best_config(study, first_pick).backtest.initial_balance)
        total = (float(curve["equity"][-1]) / initial - 1.0) * 100.0
    return {
        "folds": folds,
        "distinct_picks": len(set(picks.values())),
        "oos_objective_mean": float(np.mean(tests)) if tests else None,
        "oos_total_return_pct": total,
        "stitched_fold_return_pct": curve["fold_return_pct"] if curve is not None else [],
    }


def holdout_report(
    study: Any, trial: int | None = None, data_dir: Path | None = None
) -> dict[str, Any] | None:
    """The trial (default: the winner) on the profile's final hold-out, which no trial was scored on.

    Scored exactly as a trial's window is (``research.optimize.evaluation.window_metrics``: every
    intrabar path rule, the worst one with ``objective.path_rule: worst``). None when the profile has
    no hold-out.
    """
    from gridctl.research.objectives import objective_values
    from gridctl.research.optimize import ATTR, bracket_rows, load_workload, run_sets, window_metrics
    from gridctl.research.studies import get_trial, study_profile

    profile = study_profile(study)
    work = load_workload(profile, data_dir)
    if work.holdout is None:
        return None
    t = get_trial(study, trial)
    overrides = dict(t.user_attrs[ATTR]["overrides"])
    window = work.holdout
    rows = run_sets(window.market, work.strategy, work.venue, [overrides], detail=window.detail)
    configured = overrides.get("backtest.intrabar_path", work.strategy.backtest.intrabar_path)
    by_rule = bracket_rows(work, window, [overrides], rows)[0]
    metrics = window_metrics(by_rule, configured, profile.objective, work.market.bar_ms)
    from gridctl.research.reproduce import scored_rule

    return {
        "trial": t.number,
        "start_ms": window.start_ms,
        "end_ms": window.end_ms,
        "objective": list(objective_values(metrics, profile.objective)),
        "metrics": metrics,
        "rule": scored_rule(metrics) or configured,  # the intrabar rule these figures are of
    }
