"""Scoring parameter sets: one ``engine.batch.run_batch`` call per window, every intrabar path rule.

A trial's objective and limits are computed on its scored windows under the worst intrabar rule
(``objective.path_rule: worst``), and every trial records its spread across the rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna

from gridctl.research.objectives import (
    WORST_PATH_METRIC,
    combine_windows,
    feasible,
    limit_values,
    objective_values,
    row_metrics,
)
from gridctl.research.optimize.trials import feasible_trial
from gridctl.research.optimize.workload import Window, Workload, scored_windows
from gridctl.research.profiles import Profile


@dataclass
class Evaluation:
    """One trial's result: told values, limit values and the per-window metrics."""

    values: tuple[float, ...] | None
    constraints: list[float]
    attrs: dict[str, Any]
    pruned_at: int | None = None
    side_attrs: dict[str, Any] = field(default_factory=dict)


def _clean(metrics: dict[str, float]) -> dict[str, float | None]:
    """JSON-safe metrics (NaN -> None; inf stays as a large sentinel is NOT used: kept as 'inf')."""
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        out[k] = v if math.isfinite(v) else (None if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    return out


def mean_metrics(windows: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over windows, without a warning: windows where it is NaN or infinite are
    left out; NaN where no window has a finite value (a configuration that never traded in any window
    has no Sharpe ratio or profit factor: NaN, not a mean of nothing)."""
    if not windows:
        return {}
    out = {}
    for key in windows[0]:
        vals = np.asarray([w[key] for w in windows], dtype=np.float64)
        finite = vals[np.isfinite(vals)]
        out[key] = float(finite.mean()) if len(finite) else float("nan")
    return out


#: Metric names stored by older studies -> today's names.
RENAMED_METRICS = {"max_drawdown_pct": "max_drawdown_bar_close_pct"}


def restore_metrics(stored: dict[str, Any]) -> dict[str, float]:
    """Inverse of the JSON cleaning: None -> NaN, 'inf' -> inf (old metric names read as today's)."""
    return {RENAMED_METRICS.get(k, k): math.nan if v is None else float(v) for k, v in stored.items()}


#: The label of a trial run under its configured intrabar rule only (see ``contenders_only``).
CONFIGURED_ONLY = "configured rule only, cannot be best"


def contenders_only(profile: Profile) -> bool:
    """True when the optimizer runs the other intrabar rules only for trials that could be the best.

    The worst rule's objective is at most the configured rule's, so a trial whose configured-rule
    objective does not exceed the best path-checked feasible value so far can never be the winner.
    Only where nothing else reads such a trial's value: one objective ranked by value
    (``rank_by: value``), ``path_rule: worst``, no walk-forward and a sampler that does not learn from
    told values (``random``, ``qmc``). Such trials are told PRUNED, labelled ``CONFIGURED_ONLY``.
    """
    obj = profile.objective
    return (
        obj.path_rule == "worst"
        and len(obj.directions) == 1
        and obj.rank_by == "value"
        and profile.validation.scheme == "none"
        and profile.sampler.kind in ("random", "qmc")
        and profile.pruner.kind == "none"
    )


def best_checked_value(study: optuna.Study) -> float:
    """The best told value among completed feasible trials (all path-checked), -inf when none."""
    best = -math.inf
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if feasible_trial(t) and t.values and not math.isnan(t.values[0]):
            best = max(best, float(t.values[0]))
    return best


def evaluate(
    work: Workload,
    overrides: Sequence[dict[str, Any]],
    prune: Callable[[int, int, tuple[float, ...]], bool] | None = None,
    chunk: int | None = None,
    beat: Callable[[], None] | None = None,
    beat_to: float | None = None,
) -> list[Evaluation]:
    """Score parameter sets (strategy overrides) with one ``run_batch`` call per window.

    ``chunk`` splits each window's call into calls of at most that many sets, with ``beat()`` after
    each (a heartbeat between calls, should the heartbeat thread have been kept from running).

    ``prune(i, fold, values_so_far)`` is asked after each walk-forward fold; a set it prunes is not
    run on later folds.

    ``beat_to`` (only where ``contenders_only(profile)``): the best path-checked feasible value so
    far; a set whose configured-rule objective cannot exceed it is not run under the other rules
    (``_evaluate_contenders``).
    """
    if beat_to is not None:
        if not contenders_only(work.profile):
            raise ValueError("beat_to needs a profile where contenders_only() holds")
        return _evaluate_contenders(work, overrides, beat_to, chunk, beat)
    spec = work.profile.objective
    target = "test" if spec.target == "out_of_sample" else "train"
    bar_ms = work.market.bar_ms
    base_rule = work.strategy.backtest.intrabar_path
    per: list[dict[str, list[dict[str, float]]]] = [{"train": [], "test": [], "full": []} for _ in overrides]
    alive = list(range(len(overrides)))
    pruned: dict[int, int] = {}
    for fold in range(work.folds):
        for window in (w for w in work.windows if w.fold == fold):
            if not alive:
                break
            sets = [overrides[i] for i in alive]
            rows = _run_chunked(work, window, sets, chunk, beat)
            # every trial runs every intrabar path rule: its spread across them is always recorded
            by_rule = bracket_rows(work, window, sets, rows, chunk, beat)
            for j, i in enumerate(alive):
                configured = sets[j].get("backtest.intrabar_path", base_rule)
                per[i][window.kind].append(window_metrics(by_rule[j], configured, spec, bar_ms))
        last = fold == work.folds - 1  # a trial that ran every fold is complete, never pruned
        if prune is not None and work.profile.validation.scheme == "walk_forward" and not last:
            for i in list(alive):
                so_far = combine_windows([objective_values(m, spec) for m in per[i][target]], spec)
                if prune(i, fold, so_far):
                    pruned[i] = fold
                    alive.remove(i)
    out = []
    for i, p in enumerate(per):
        scored = p["full"] if work.profile.validation.scheme == "none" else p[target]
        values = combine_windows([objective_values(m, spec) for m in scored], spec)
        attrs: dict[str, Any] = {"overrides": dict(overrides[i])}
        side: dict[str, Any] = {}
        if work.profile.validation.scheme == "none":
            attrs["metrics"] = _clean(p["full"][0])
        else:
            attrs["in_sample"] = [_clean(m) for m in p["train"]]
            attrs["out_of_sample"] = [_clean(m) for m in p["test"]]
            attrs["objective_in_sample"] = list(
                combine_windows([objective_values(m, spec) for m in p["train"]], spec)
            )
            if p["test"]:
                attrs["objective_out_of_sample"] = list(
                    combine_windows([objective_values(m, spec) for m in p["test"]], spec)
                )
            # fold means side by side, in the user attrs research.study_report reads
            side["is_metrics"] = _clean(mean_metrics(p["train"]))
            if p["test"]:
                side["oos_metrics"] = _clean(mean_metrics(p["test"]))
        constraints = limit_values(scored, work.profile.limits)
        out.append(Evaluation(values, constraints, attrs, pruned.get(i), side))
    return out


def _evaluate_contenders(
    work: Workload,
    overrides: Sequence[dict[str, Any]],
    beat_to: float,
    chunk: int | None,
    beat: Callable[[], None] | None,
) -> list[Evaluation]:
    """``evaluate`` running the other intrabar rules only for sets that can still be the best.

    Every set runs its configured rule. Then, highest configured-rule objective first, groups of
    sets whose configured objective exceeds ``beat_to`` (raised by each feasible path-checked set)
    run the other rules and are scored exactly as ``evaluate`` scores them. A set left over has a
    worst-rule objective <= its configured one <= a feasible path-checked value: it is returned
    pruned (step 0) with its configured-rule metrics, ``path_checked: False`` and no constraints.
    """
    import numba

    spec = work.profile.objective
    limits = work.profile.limits
    bar_ms = work.market.bar_ms
    base_rule = work.strategy.backtest.intrabar_path
    (window,) = scored_windows(work)
    rows = _run_chunked(work, window, overrides, chunk, beat)
    configured = [ov.get("backtest.intrabar_path", base_rule) for ov in overrides]
    own = [window_metrics({configured[i]: rows[i]}, configured[i], spec, bar_ms) for i in range(len(rows))]
    keys = [_objective_key(m, spec) for m in own]
    order = sorted(range(len(rows)), key=lambda i: (-keys[i], i))
    group = max(numba.get_num_threads(), 2)  # sets per re-run: one per core, 3 rules each
    out: list[Evaluation | None] = [None] * len(rows)
    pos = 0
    while pos < len(order) and keys[order[pos]] > beat_to:
        take = [i for i in order[pos : pos + group] if keys[i] > beat_to]
        pos += group
        sets = [overrides[i] for i in take]
        by_rule = bracket_rows(work, window, sets, [rows[i] for i in take], chunk, beat)
        for j, i in enumerate(take):
            metrics = window_metrics(by_rule[j], configured[i], spec, bar_ms)
            values = objective_values(metrics, spec)
            constraints = limit_values([metrics], limits)
            out[i] = Evaluation(
                values, constraints, {"overrides": dict(overrides[i]), "metrics": _clean(metrics)}
            )
            if feasible(constraints) and not math.isnan(values[0]):
                beat_to = max(beat_to, float(values[0]))
    for i, res in enumerate(out):
        if res is None:
            attrs = {
                "overrides": dict(overrides[i]),
                "metrics": _clean(own[i]),
                "path_checked": False,
                "note": CONFIGURED_ONLY,
                "configured_value": keys[i],
            }
            out[i] = Evaluation(objective_values(own[i], spec), [], attrs, pruned_at=0)
    return [res for res in out if res is not None]


def _run_chunked(
    work: Workload,
    window: Window,
    sets: Sequence[dict[str, Any]],
    chunk: int | None,
    beat: Callable[[], None] | None,
) -> list[Any]:
    """Summary rows of ``sets`` on ``window``: batch-driver calls (``run_sets``: a basket's rows are its
    account's) of at most ``chunk`` sets."""
    from gridctl.research.optimize.markets import run_sets

    step = chunk or len(sets)
    rows: list[Any] = []
    for c in range(0, len(sets), step):
        rows.extend(
            run_sets(
                window.market,
                work.strategy,
                work.venue,
                sets[c : c + step],
                detail=window.detail,
                regimes=work.regimes(),
            )
        )
        if beat is not None:
            beat()
    return rows


def bracket_rows(
    work: Workload,
    window: Window,
    sets: Sequence[dict[str, Any]],
    rows: Sequence[Any],
    chunk: int | None = None,
    beat: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """Per set, its summary row under every intrabar path rule (``research.stats.BRACKET_RULES``).

    The batch form of ``research.stats.path_bracket``: each set's configured rule is its row in
    ``rows``; the other rules re-run the same sets through the batch driver with
    ``backtest.intrabar_path`` overridden, all in one batch.
    """
    from gridctl.research.stats import BRACKET_RULES

    base_rule = work.strategy.backtest.intrabar_path
    out: list[dict[str, Any]] = []
    extra_sets: list[dict[str, Any]] = []
    owner: list[tuple[int, str]] = []
    for k, (ov, row) in enumerate(zip(sets, rows, strict=True)):
        configured = ov.get("backtest.intrabar_path", base_rule)
        out.append({configured: row})
        for rule in BRACKET_RULES:
            if rule != configured:
                extra_sets.append({**ov, "backtest.intrabar_path": rule})
                owner.append((k, rule))
    factor = max(len(BRACKET_RULES) - 1, 1)
    extra = _run_chunked(work, window, extra_sets, chunk and chunk * factor, beat)
    for (k, rule), row in zip(owner, extra, strict=True):
        out[k][rule] = row
    return out


def same_bar_profit_share_pct(row: Any) -> float:
    """Percent of a run's gross profit (winning closed lots, after fees) from same-bar round trips."""
    gross = float(row["gross_profit"])
    return float(row["same_bar_gross_profit"]) / gross * 100.0 if gross > 0.0 else 0.0


def window_metrics(rows: dict[str, Any], configured: str, spec: Any, bar_ms: int) -> dict[str, float]:
    """One window's metrics of one set from its summary row under each rule run (``rule -> row``).

    ``objective.path_rule: worst`` scores the rule whose (first) objective is lowest (ties: the first
    in ``BRACKET_RULES``), else the configured rule; ``path_rule_index`` says which (an index into
    ``BRACKET_RULES``). With more than one rule run: the worst bar-close drawdown over the rules
    (``WORST_PATH_METRIC``), the spreads of total return and of the objective (best minus worst rule),
    and the highest same-bar share of gross profit over the rules (with one rule, its own share).
    """
    from gridctl.research.stats import BRACKET_RULES

    per_rule = {rule: row_metrics(row, bar_ms) for rule, row in rows.items()}
    rule = configured
    if spec.path_rule == "worst" and len(rows) > 1:
        order = [r for r in BRACKET_RULES if r in per_rule]
        rule = min(order, key=lambda r: (_objective_key(per_rule[r], spec), order.index(r)))
    metrics = dict(per_rule[rule])
    metrics["path_rule_index"] = float(BRACKET_RULES.index(rule))
    metrics["same_bar_profit_share_pct"] = max(same_bar_profit_share_pct(row) for row in rows.values())
    metrics["same_bar_round_trips"] = float(rows[rule]["same_bar_round_trips"])
    if len(rows) > 1:
        metrics[WORST_PATH_METRIC] = max(m["max_drawdown_bar_close_pct"] for m in per_rule.values())
        returns = [m["total_return_pct"] for m in per_rule.values()]
        metrics["path_return_spread_pct"] = max(returns) - min(returns)
        objectives = [_objective_key(m, spec) for m in per_rule.values()]
        metrics["path_objective_spread"] = max(objectives) - min(objectives)
    return metrics


def _objective_key(metrics: dict[str, float], spec: Any) -> float:
    """The first objective of ``metrics`` (maximised in every kind), NaN counted as the lowest."""
    value = objective_values(metrics, spec)[0]
    return value if not math.isnan(value) else -math.inf
