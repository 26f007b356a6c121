"""What a study and its trials record, and reading it back: attrs, constraints, feasibility, the winner.

Every view (``study show``, ``study report``, the notebook, the optimizer's progress) ranks trials with
these functions, so all of them agree on which trials are feasible and which one is best.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna

from gridctl.research.objectives import CONSTRAINT_NAMES, feasible
from gridctl.research.optuna_compat import set_system_attr
from gridctl.research.profiles import Profile, migrate_profile_tree

ATTR = "gridctl"  # the one user attr holding a trial's metrics (one storage write per trial)
STUDY_ATTR = "gridctl_profile"
WORKER_ATTR = "gridctl_worker"  # host:pid of the worker that asked the trial (system attr)
ROBUST_ATTR = "gridctl_worst_neighbour"


#: The trial system attr holding the constraint values as one list (<= 0 satisfied): optuna-dashboard
#: reads exactly this key, and Optuna reads it too (as constraints "0", "1", ... in the order of
#: ``CONSTRAINT_NAMES``), so the samplers, ``best_trial``, Optuna's plots and the dashboard agree.
CONSTRAINTS_KEY = "constraints"


def write_constraints(study: optuna.Study, trial: optuna.Trial, values: list[float]) -> None:
    """Record a trial's hard-limit values (before it is told) in ``CONSTRAINTS_KEY``."""
    set_system_attr(study, trial, CONSTRAINTS_KEY, [float(v) for v in values])


def named_constraints(
    trial: optuna.trial.FrozenTrial, names: Sequence[str] = CONSTRAINT_NAMES
) -> dict[str, float]:
    """A trial's constraint values by limit name: ``names`` are the study profile's limits in order
    (``limit_names(profile.limits)``; all of ``CONSTRAINT_NAMES`` when every limit is on). Studies
    written with Optuna's named keys read the same."""
    values = trial.constraints
    out = {}
    for i, name in enumerate(names):
        for key in (str(i), name):
            if key in values:
                out[name] = float(values[key])
    return out


def objective_metric_names(profile: Profile) -> list[str]:
    """What each objective value is, for Optuna's ``metric_names`` (plots, optuna-dashboard)."""
    kind = profile.objective.kind
    if kind == "return_drawdown":
        return ["total_return_pct", "max_drawdown_bar_close_pct"]
    names = {"total_return": "total_return_pct", "calmar": "calmar_bar_close", "sharpe": "sharpe_annualised"}
    return [names.get(kind, kind)]


def feasible_trial(trial: optuna.trial.FrozenTrial) -> bool:
    """A completed trial whose hard-limit constraints are all satisfied."""
    return trial.state == optuna.trial.TrialState.COMPLETE and feasible(list(trial.constraints.values()))


def study_profile(study: optuna.Study) -> Profile:
    """The profile the study was created with (stored on the study, independent of today's file)."""
    return Profile.model_validate(migrate_profile_tree(study.user_attrs[STUDY_ATTR]["profile"]))


def study_info(study: optuna.Study) -> dict[str, Any]:
    """The stored profile name, fingerprint, data window and creation time."""
    return dict(study.user_attrs[STUDY_ATTR])


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


DONE_STATES = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def _counts(study: optuna.Study) -> tuple[int, int]:
    trials = study.get_trials(deepcopy=False, states=(*DONE_STATES, optuna.trial.TrialState.RUNNING))
    done = sum(t.state in DONE_STATES for t in trials)
    return done, len(trials) - done


def best_summary(study: optuna.Study) -> tuple[Any, dict[str, Any] | None, int | None, int | None]:
    """(best value(s), best strategy overrides, best trial number, Pareto size) of feasible trials."""
    if len(study.directions) > 1:
        front = pareto_trials(study)
        if not front:
            return None, None, None, 0
        pick = max(front, key=lambda t: t.values[0])  # the highest-return Pareto trial
        return list(pick.values), pick.user_attrs[ATTR]["overrides"], pick.number, len(front)
    best = best_trial(study)
    if best is None:
        return None, None, None, None
    return best.value, best.user_attrs[ATTR]["overrides"], best.number, None
