"""Robustness of a winner: its objective when each parameter moves one step either way.

A *plateau* parameter keeps the objective within ``tolerance`` (10 % of the winner's magnitude, at
least 0.01) on both sides; a *spike* loses more on at least one side - the winner sits on a narrow
peak of that parameter and is likely fitted to noise. All neighbours of a trial run in one batch.
A profile with ``objective.rank_by: worst_neighbour`` ranks the top trials by their worst neighbour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna

from gridctl.research.objectives import feasible
from gridctl.research.optimize import Workload, evaluate
from gridctl.research.space import FRACTION_SUFFIX, neighbours, resolve_draw


@dataclass(frozen=True)
class NeighbourRow:
    """One parameter of the plateau-or-spike table."""

    param: str
    value: Any
    down_value: Any
    down_objective: float | None
    up_value: Any
    up_objective: float | None
    verdict: str


def tolerance(value: float) -> float:
    """How much a neighbour may lose and still count as the same plateau."""
    return max(0.1 * abs(value), 0.01)


def neighbour_table(work: Workload, trial: optuna.trial.FrozenTrial) -> tuple[float, list[NeighbourRow]]:
    """(the trial's re-evaluated objective, one row per parameter) for a single-objective trial.

    A neighbour that breaks a hard limit counts as a spike on that side (objective shown, verdict
    ``spike (limit)``).
    """
    profile = work.profile
    moves = neighbours(profile, dict(trial.params))
    sets = [resolve_draw(profile, dict(trial.params), work.strategy)]
    sets += [resolve_draw(profile, raw, work.strategy) for _, _, raw in moves]
    results = evaluate(work, sets)
    base = results[0].values[0] if results[0].values else float("nan")
    by_param: dict[str, dict[int, tuple[Any, float, bool]]] = {}
    for (name, sign, raw), res in zip(moves, results[1:], strict=True):
        value = res.values[0] if res.values else float("nan")
        by_param.setdefault(name, {})[sign] = (raw[name], value, feasible(res.constraints))
    rows = []
    tol = tolerance(base)
    for name in trial.params:
        sides = by_param.get(name, {})
        down = sides.get(-1)
        up = sides.get(1)
        losses = [base - s[1] for s in (down, up) if s is not None]
        broke = any(not s[2] for s in (down, up) if s is not None)
        if not losses:
            verdict = "n/a (no neighbour in range)"
        elif broke:
            verdict = "spike (limit)"
        else:
            verdict = "plateau" if max(losses) <= tol else "spike"
        rows.append(
            NeighbourRow(
                param=name.replace(FRACTION_SUFFIX, " (fraction)"),
                value=trial.params[name],
                down_value=down[0] if down else None,
                down_objective=down[1] if down else None,
                up_value=up[0] if up else None,
                up_objective=up[1] if up else None,
                verdict=verdict,
            )
        )
    return base, rows


def worst_neighbour(work: Workload, trial: optuna.trial.FrozenTrial) -> float:
    """The lowest objective among the trial and its one-step neighbours (limit breakers count as -inf)."""
    profile = work.profile
    moves = neighbours(profile, dict(trial.params))
    sets = [resolve_draw(profile, dict(trial.params), work.strategy)]
    sets += [resolve_draw(profile, raw, work.strategy) for _, _, raw in moves]
    values = []
    for res in evaluate(work, sets):
        values.append(res.values[0] if res.values and feasible(res.constraints) else float("-inf"))
    return min(values)


def rank_by_worst_neighbour(study: optuna.Study, work: Workload, top_k: int) -> dict[int, float]:
    """Worst-neighbour objective of the top-K feasible trials, stored on the study (best_trial reads it)."""
    from gridctl.research.studies import ROBUST_ATTR, ranked_trials

    scores = {t.number: worst_neighbour(work, t) for t in ranked_trials(study)[:top_k]}
    study.set_user_attr(ROBUST_ATTR, {str(k): v for k, v in scores.items()})
    return scores
