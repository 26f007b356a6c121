"""What `gridctl optimize` and `gridctl study show` compute, without printing: callable from notebooks.

The shell (``research/optimize_cli.py``) parses flags into ``research.options`` objects, calls these and
prints what they return.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gridctl.research.options import OptimizeOptions, StudyOptions


def run_optimize(
    prof: Any,
    work: Any,
    opts: OptimizeOptions,
    on_progress: Callable[[Any], None] | None = None,
    on_status: Callable[[str], None] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Run (or resume) the study ``opts.study_name`` (default: the profile's name) on ``work``.

    A profile ranked by worst neighbour re-ranks its top trials once the study is complete. Returns the
    optimizer's result and the command's JSON object (the result plus the profile, objective and
    directions). ``on_status`` receives a line before a slow step.
    """
    from gridctl.research.optimize import best_summary, create_or_load_study, open_storage, optimize

    name = opts.study_name or prof.name
    result = optimize(
        prof,
        name,
        n_trials=opts.trials,
        storage=opts.storage,
        studies_dir=opts.studies_dir,
        data_dir=opts.data_dir,
        jobs=opts.jobs,
        heartbeat_s=opts.heartbeat_s,
        on_progress=on_progress,
        work=work,
    )
    if not result.interrupted and prof.objective.rank_by == "worst_neighbour":
        from gridctl.research.robustness import rank_by_worst_neighbour

        if on_status is not None:
            on_status(f"ranking the top {prof.objective.rank_top_k} trials by their worst neighbour ...")
        store = open_storage(name, opts.storage, opts.studies_dir, opts.heartbeat_s)
        study = create_or_load_study(prof, work, name, store)
        rank_by_worst_neighbour(study, work, prof.objective.rank_top_k)
        result.best_value, result.best_params, result.best_trial, result.pareto_size = best_summary(study)
    out = result.as_dict()
    out["profile"] = prof.name
    out["objective"] = prof.objective.kind
    out["directions"] = prof.objective.directions
    return result, out


@dataclass
class StudySummary:
    """`study show`: the JSON object (``out``) and what its tables are printed from."""

    out: dict[str, Any]
    profile: Any
    multi: bool
    winner: Any
    infeasible: int
    robust_rows: list[Any] = field(default_factory=list)


def study_summary(name: str, opts: StudyOptions, top: int) -> StudySummary:
    """Leaderboard (``top`` feasible trials, or the Pareto front), the winner's robustness table,
    walk-forward and hold-out figures, deflated Sharpe and PBO of study ``name``."""
    from gridctl.research.optimize import ATTR, check_same_data, load_workload
    from gridctl.research.robustness import neighbour_table
    from gridctl.research.studies import (
        best_trial,
        configured_only,
        feasible_trials,
        load_study,
        overfitting_stats,
        pareto_trials,
        ranked_trials,
        study_info,
        study_profile,
        trial_metrics,
    )

    study = load_study(name, opts.studies_dir, opts.storage)
    prof = study_profile(study)
    info = study_info(study)
    multi = len(study.directions) > 1
    trials = study.get_trials(deepcopy=False)
    board = list(reversed(pareto_trials(study))) if multi else ranked_trials(study)[: max(top, 1)]
    winner = None if multi else best_trial(study)
    out: dict[str, Any] = {
        "study_name": name,
        "profile": info["name"],
        "fingerprint": info["fingerprint"],
        "objective": prof.objective.kind,
        "directions": prof.objective.directions,
        "n_trials": sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials),
        "states": {
            s: sum(t.state.name.lower() == s for t in trials)
            for s in ("complete", "pruned", "fail", "running")
        },
        # pruned trials told under their configured intrabar rule only (optimize.contenders_only)
        "configured_rule_only": sum(configured_only(t) for t in trials),
        "best_trial": winner.number if winner else None,
        "best_value": winner.value if winner else None,
        "best_params": winner.user_attrs[ATTR]["overrides"] if winner else None,
        "leaderboard": [
            {
                "number": t.number,
                "values": list(t.values),
                "params": t.user_attrs[ATTR]["overrides"],
                "metrics": trial_metrics(t),
                "objective_in_sample": t.user_attrs[ATTR].get("objective_in_sample"),
                "objective_out_of_sample": t.user_attrs[ATTR].get("objective_out_of_sample"),
            }
            for t in board
        ],
    }
    robust_rows: list[Any] = []
    if winner is not None:
        from gridctl.research.walkforward import holdout_report, walk_forward_report

        work = load_workload(prof, opts.data_dir)
        check_same_data(name, info.get("data"), work)
        base, robust_rows = neighbour_table(work, winner)
        out["robustness"] = {"objective": base, "rows": [r.__dict__ for r in robust_rows]}
        if prof.validation.scheme == "walk_forward":
            # per fold: the trial best on that fold's train window, scored on its test window
            out["walk_forward"] = walk_forward_report(study, opts.data_dir)
        out["holdout"] = holdout_report(study, winner.number, opts.data_dir)
    out.update(overfitting_stats(study, data_dir=opts.data_dir))
    infeasible = sum(t.state.name == "COMPLETE" for t in trials) - len(feasible_trials(study))
    return StudySummary(out, prof, multi, winner, infeasible, robust_rows)
