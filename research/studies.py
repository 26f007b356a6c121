"""Working with finished (or running) studies: list, load, tabulate, pick the winner, export, overfitting.

Notebook use::

    from gridctl.research.studies import load_study, study_frame, best_config
    study = load_study("wide-1")
    df = study_frame(study)            # one row per trial: number, state, values, params, metrics
    cfg = best_config(study)           # the winner as a StrategyConfig (run it with engine.run.run_single)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import optuna
import yaml

from gridctl.configs.errors import GridctlError
from gridctl.research.optimize.evaluation import mean_metrics, restore_metrics
from gridctl.research.optimize.storage import default_studies_dir, open_storage
from gridctl.research.optimize.trials import (  # the ranking lives with the optimizer; kept importable here
    ATTR,
    STUDY_ATTR,
    best_trial,
    feasible_trial,
    feasible_trials,
    named_constraints,
    pareto_trials,
    study_info,
    study_profile,
)
from gridctl.research.optimize.trials import (
    ROBUST_ATTR as ROBUST_ATTR,
)
from gridctl.research.optimize.trials import (
    ranked_trials as ranked_trials,
)


def list_studies(studies_dir: Path | None = None, storage: str | None = None) -> list[dict[str, Any]]:
    """Name, trial counts, profile and best value of every study in the studies dir (or RDB storage)."""
    out = []
    if storage is None:
        directory = studies_dir or default_studies_dir()
        names = sorted(p.stem for p in directory.glob("*.journal")) if directory.is_dir() else []
        for name in names:
            try:
                out.append(_listing(load_study(name, studies_dir=directory)))
            except GridctlError as err:  # one damaged or foreign journal never hides the others
                out.append({"study_name": name, "error": str(err)})
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


def trial_metrics(trial: optuna.trial.FrozenTrial) -> dict[str, float]:
    """The metrics the trial was scored on (whole window; walk-forward: the mean over its test windows,
    over its train windows where it has none, ``optimize.evaluation.mean_metrics``: a metric undefined
    in every window, e.g. the Sharpe ratio of a configuration that never traded, is NaN)."""
    attrs = trial.user_attrs.get(ATTR, {})
    if "metrics" in attrs:
        return restore_metrics(attrs["metrics"])
    folds = [restore_metrics(m) for m in attrs.get("out_of_sample") or attrs.get("in_sample") or []]
    return mean_metrics(folds)


def study_frame(study: optuna.Study) -> Any:
    """pandas DataFrame, one row per trial: number, state, feasible, value(s), params, metrics, and each
    hard limit's constraint value (``limit.<name>``, > 0: broken)."""
    import pandas as pd

    from gridctl.research.objectives import limit_names

    names = limit_names(study_profile(study).limits)
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
        # False: run under its configured intrabar rule only (told pruned, it could not be the best)
        row["path_checked"] = bool(attrs) and attrs.get("path_checked", True)
        for k, v in attrs.get("overrides", {}).items():
            row[k] = v
        for k, v in trial_metrics(t).items():
            row[f"m.{k}"] = v
        for k, v in named_constraints(t, names).items():
            row[f"limit.{k}"] = v
        if "objective_in_sample" in attrs:
            row["objective_in_sample"] = attrs["objective_in_sample"][0]
        if "objective_out_of_sample" in attrs:
            row["objective_out_of_sample"] = attrs["objective_out_of_sample"][0]
        rows.append(row)
    return pd.DataFrame(rows)


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

    return _trial_config(study, get_trial(study, trial))


def _trial_config(study: optuna.Study, t: optuna.trial.FrozenTrial) -> Any:
    """``best_config`` of a told trial in any state (the configured-rule-only ones are pruned)."""
    from gridctl.configs.loader import load_venue
    from gridctl.configs.overrides import apply_overrides
    from gridctl.research.profiles import profile_strategy

    profile = study_profile(study)
    strategy = profile_strategy(profile)  # a basket study's: the basket strategy (data.symbols)
    venue = load_venue(profile.base.venue)
    strategy, _ = apply_overrides(strategy, venue, t.user_attrs[ATTR]["overrides"])
    label = f"{study.study_name}-trial{t.number}"
    data = strategy.model_dump()
    data["strategy"]["name"] = label
    named = type(strategy).model_validate(data)
    named._origin = f"study {study.study_name} trial {t.number}"
    return named


def export_config(study: optuna.Study, out: Path, trial: int | None = None, force: bool = False) -> Path:
    """Write the trial's complete strategy config as YAML that ``gridctl backtest --config`` loads
    (an existing file is replaced only with ``force``)."""
    from gridctl.data.atomic import atomic_write_text
    from gridctl.research.reproduce import reproduce_lines

    out = Path(out)
    if out.is_dir():
        raise GridctlError(f"--out {out} is a directory; give a file name like best.yaml")
    if out.exists() and not force:
        raise GridctlError(f"--out {out} already exists; add --force to replace it")
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
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, "\n".join(header) + body)
    return out


# ----------------------------------------------------------------------------------------------------
# Overfitting: deflated Sharpe ratio and probability of backtest overfitting
# ----------------------------------------------------------------------------------------------------


#: At most this many distinct feasible trials are re-run for the overfitting statistics; a study with
#: more uses a random sample of this size (seeded by the profile's seed, the winner always in it) and
#: says so (``trials_sampled_from``).
OVERFITTING_MAX_TRIALS = 512


def _overrides_key(t: optuna.trial.FrozenTrial) -> str:
    import json

    return json.dumps(t.user_attrs[ATTR]["overrides"], sort_keys=True, default=str)


def distinct_feasible_trials(
    study: optuna.Study, prefer: int | None = None
) -> list[optuna.trial.FrozenTrial]:
    """Completed feasible trials, one per distinct configuration: trial ``prefer`` for its own, the
    lowest trial number for every other."""

    chosen: dict[str, optuna.trial.FrozenTrial] = {}
    for t in sorted(feasible_trials(study), key=lambda t: t.number):
        key = _overrides_key(t)
        if key not in chosen or t.number == prefer:
            chosen[key] = t
    return sorted(chosen.values(), key=lambda t: t.number)


def configured_only(trial: optuna.trial.FrozenTrial) -> bool:
    """A trial run under its configured intrabar rule only (``optimize.CONFIGURED_ONLY``)."""
    return trial.user_attrs.get(ATTR, {}).get("path_checked", True) is False


def configured_only_candidates(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Configured-rule-only trials not known to break a limit, for the overfitting statistics.

    They were drawn and lost to the winner, so they count as trials it was selected from. Their
    configured-rule metrics bound the limits from one side only: trades, drawdown and liquidation are
    checked on them; the worst-rule drawdown and the same-bar share over the rules are at least the
    configured rule's (a break there is certain); the spread over the rules is unknown (not checked).
    """
    from gridctl.research.objectives import WORST_PATH_METRIC, limit_values

    limits = study_profile(study).limits.model_copy(update={"max_path_return_spread_pct": None})
    out = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,)):
        if not configured_only(t):
            continue
        m = restore_metrics(t.user_attrs[ATTR]["metrics"])
        m[WORST_PATH_METRIC] = m["max_drawdown_bar_close_pct"]
        if all(c <= 0.0 for c in limit_values([m], limits)):
            out.append(t)
    return out


def statistics_window(data: dict[str, Any]) -> tuple[int, int]:
    """``(start_ms, end_ms)`` of the data a study selected on, from its data description
    (``Workload.describe``): the whole data window up to the hold-out's start
    (``validation.holdout_days``), which no trial was scored on; end exclusive."""
    hold = data.get("holdout")
    return int(data["start_ms"]), int(hold["start_ms"] if hold else data["end_ms"])


def trial_daily_returns(
    study: optuna.Study,
    numbers: list[int],
    data_dir: Path | None = None,
) -> np.ndarray:
    """Daily returns ``(T, len(numbers))`` of the given trials, each recomputed with ``run_single`` under
    the intrabar rule that scored it (walk-forward: its configured rule) over the data the study
    selected on (``statistics_window``: the hold-out's days are left out; the run is causal, so the
    days before it are those of a run that stops there). A basket: ``run_basket``, the account's
    returns; a liquidated run's later days count as 0 return."""
    work = _study_workload(study, data_dir)
    return _daily_returns(study, numbers, work, statistics_window(work.describe()))


def _study_workload(study: optuna.Study, data_dir: Path | None) -> Any:
    """The study's workload (profile, market, windows), refused on other data than the study's."""
    from gridctl.research.optimize.study import check_same_data
    from gridctl.research.optimize.workload import load_workload

    work = load_workload(study_profile(study), data_dir)
    check_same_data(study.study_name, study_info(study).get("data"), work)
    return work


def _daily_returns(study: optuna.Study, numbers: list[int], work: Any, window: tuple[int, int]) -> np.ndarray:
    """``trial_daily_returns`` on a loaded workload, the days of ``window`` (``statistics_window``) only."""
    from gridctl.configs.loader import load_venue
    from gridctl.research.optimize.markets import equity_rows
    from gridctl.research.reproduce import scored_config
    from gridctl.research.stats import DAY_MS, daily_equity, daily_returns

    venue = load_venue(work.profile.base.venue)
    start_ms, end_ms = window
    start_day = start_ms // DAY_MS
    end_day = -(-end_ms // DAY_MS)  # the hold-out starts on a day boundary: its first day is excluded
    days_all = np.unique(np.asarray(work.market.ts, dtype=np.int64) // DAY_MS)
    days_all = days_all[(days_all >= start_day) & (days_all < end_day)]
    cols = []
    trials = study.get_trials(deepcopy=False)
    for n in numbers:
        cfg = _trial_config(study, trials[n])
        attrs = trials[n].user_attrs.get(ATTR, {})
        # the rule that scored the trial's one window (study show's figures, the export's config);
        # a walk-forward trial's windows each have their own, so it runs its configured rule
        if "metrics" in attrs:
            cfg = scored_config(cfg, restore_metrics(attrs["metrics"]))
        rows = equity_rows(work.market, cfg, venue, detail=work.detail)
        days, eq = daily_equity(rows["ts"], rows["equity"])
        rets = daily_returns(eq, float(cfg.backtest.initial_balance))
        keep = (days >= start_day) & (days < end_day)
        col = np.zeros(len(days_all))
        col[np.searchsorted(days_all, days[keep])] = rets[keep]
        cols.append(col)
    return np.column_stack(cols) if cols else np.zeros((len(days_all), 0))


def overfitting_stats(
    study: optuna.Study, data_dir: Path | None = None, max_trials: int = OVERFITTING_MAX_TRIALS
) -> dict[str, Any]:
    """Deflated Sharpe ratio of the winner and PBO over the distinct feasible trials
    (``research.overfitting.overfitting_report``; every view of a gridctl study calls this).

    Every trial is re-run over the data the study selected on (its whole data window but the
    hold-out: ``returns_window``), so the winner's Sharpe ratio and the cross-trial variance are the
    same kind (daily returns over one window), walk-forward studies too.
    """
    from gridctl.research.overfitting import overfitting_report

    if not feasible_trials(study):
        return {"deflated_sharpe": None, "pbo": None, "notes": ["no feasible completed trial"]}
    winner = get_trial(study, None).number
    trials = distinct_feasible_trials(study, prefer=winner)
    # configured-rule-only trials lost to the winner too: they count, unless known to break a limit
    seen = {_overrides_key(t) for t in trials}
    unchecked = []
    for t in configured_only_candidates(study):
        if _overrides_key(t) not in seen:
            seen.add(_overrides_key(t))
            unchecked.append(t)
    trials = sorted([*trials, *unchecked], key=lambda t: t.number)
    numbers = [t.number for t in trials]
    sampled_from = None
    if len(numbers) > max_trials:
        rng = np.random.default_rng(study_profile(study).seed)
        others = [n for n in numbers if n != winner]
        pick = rng.choice(len(others), size=max_trials - 1, replace=False)
        sampled_from = len(numbers)
        numbers = sorted([winner, *(others[i] for i in pick)])
    work = _study_workload(study, data_dir)
    window = statistics_window(work.describe())  # once: the days re-run and the days reported
    rets = _daily_returns(study, numbers, work, window)
    out = overfitting_report(rets, numbers, winner)
    out["returns_window"] = {
        "start_ms": window[0],
        "end_ms": window[1],
        "days": int(rets.shape[0]),
        "holdout_excluded": work.holdout is not None,
    }
    out["trials_feasible_distinct"] = len(trials) - len(unchecked)
    out["trials_configured_rule_only"] = len(unchecked)
    out["trials_sampled_from"] = sampled_from
    if unchecked:
        out["notes"].append(
            f"{len(unchecked)} of the {len(trials)} distinct trials ran under their configured intrabar "
            "rule only (they could not beat the best; path spread unchecked); every trial here is "
            "re-run under the rule that scored it, so these under their configured rule"
        )
    holdout_days = study_profile(study).validation.holdout_days
    if holdout_days is not None:
        out["notes"].append(
            f"the {holdout_days}-day hold-out is left out: every trial's daily returns end where it starts"
        )
    if sampled_from is not None:
        out["notes"].append(
            f"a random sample of {len(numbers)} of the {sampled_from} distinct "
            f"{'feasible or configured-rule-only ' if unchecked else 'feasible '}trials "
            f"(seed {study_profile(study).seed}, the winner included)"
        )
    return out
