"""The optimizer: a profile's Optuna study, evaluated in batches through the engine's batch driver.

Loop: ask up to ``batch_size`` trials, draw their parameters, run ONE ``engine.batch.run_batch`` per
scored window across all of them (the kernel spreads the sets over the cores), tell the results.
Hard limits become Optuna constraints (the trial system attr ``constraints``). Interrupting (Ctrl-C,
SIGTERM) fails only the asked-but-unfinished trials; running the same command with the same study
name resumes until the target trial count is reached.

One job per module, each importing only the ones listed before it:

* ``storage``: journal files and RDB URLs (``open_storage``), heartbeat grace periods;
* ``folds``: walk-forward fold windows and the leakage check;
* ``markets``: one market or a basket (``BasketMarket``), and running parameter sets or a config on it;
* ``workload``: the profile's configs, market and scored windows (``load_workload``);
* ``trials``: what studies and trials record, feasibility, the winner (``best_trial``);
* ``evaluation``: scoring parameter sets under every intrabar rule (``evaluate``);
* ``samplers``: the profile's sampler and pruner and their seeds;
* ``study``: creating or joining a study, refused on another profile or other data;
* ``workers``: stop signals, heartbeats, failing a dead worker's trials;
* ``loop``: the ask/tell loop (``optimize``).

Everything callers use is importable from this package (``from gridctl.research.optimize import X``).
"""

import optuna

from gridctl.research.objectives import CONSTRAINT_NAMES, feasible
from gridctl.research.optimize.evaluation import (
    CONFIGURED_ONLY,
    RENAMED_METRICS,
    Evaluation,
    best_checked_value,
    bracket_rows,
    contenders_only,
    evaluate,
    restore_metrics,
    same_bar_profit_share_pct,
    window_metrics,
)
from gridctl.research.optimize.folds import DAY_MS, check_no_leakage, fold_bounds
from gridctl.research.optimize.loop import OptimizeResult, Progress, optimize
from gridctl.research.optimize.markets import BasketMarket, equity_rows, run_sets
from gridctl.research.optimize.samplers import make_pruner, make_sampler
from gridctl.research.optimize.storage import (
    DEFAULT_HEARTBEAT_S,
    default_studies_dir,
    journal_path,
    open_storage,
    sqlalchemy_url,
    stale_grace_s,
)
from gridctl.research.optimize.study import CREATING_WAIT_S, check_same_data, create_or_load_study
from gridctl.research.optimize.trials import (
    ATTR,
    CONSTRAINTS_KEY,
    DONE_STATES,
    ROBUST_ATTR,
    STUDY_ATTR,
    WORKER_ATTR,
    best_summary,
    best_trial,
    feasible_trial,
    feasible_trials,
    named_constraints,
    objective_metric_names,
    pareto_trials,
    ranked_trials,
    study_info,
    study_profile,
    write_constraints,
)
from gridctl.research.optimize.workers import fail_dead_local_trials, fail_stale_trials
from gridctl.research.optimize.workload import (
    EXITS_PER_RUNG_PER_BAR,
    Window,
    Workload,
    load_workload,
    scored_windows,
)
from gridctl.research.profiles import Profile

# Optuna logs a line per study created or loaded at INFO; gridctl prints its own progress instead.
optuna.logging.set_verbosity(optuna.logging.WARNING)

__all__ = [
    "ATTR",
    "CONFIGURED_ONLY",
    "CONSTRAINTS_KEY",
    "CONSTRAINT_NAMES",
    "CREATING_WAIT_S",
    "DAY_MS",
    "DEFAULT_HEARTBEAT_S",
    "DONE_STATES",
    "EXITS_PER_RUNG_PER_BAR",
    "RENAMED_METRICS",
    "ROBUST_ATTR",
    "STUDY_ATTR",
    "WORKER_ATTR",
    "BasketMarket",
    "Evaluation",
    "OptimizeResult",
    "Profile",
    "Progress",
    "Window",
    "Workload",
    "best_checked_value",
    "best_summary",
    "best_trial",
    "bracket_rows",
    "check_no_leakage",
    "check_same_data",
    "contenders_only",
    "create_or_load_study",
    "default_studies_dir",
    "equity_rows",
    "evaluate",
    "fail_dead_local_trials",
    "fail_stale_trials",
    "feasible",
    "feasible_trial",
    "feasible_trials",
    "fold_bounds",
    "journal_path",
    "load_workload",
    "make_pruner",
    "make_sampler",
    "named_constraints",
    "objective_metric_names",
    "open_storage",
    "optimize",
    "pareto_trials",
    "ranked_trials",
    "restore_metrics",
    "run_sets",
    "same_bar_profit_share_pct",
    "scored_windows",
    "sqlalchemy_url",
    "stale_grace_s",
    "study_info",
    "study_profile",
    "window_metrics",
    "write_constraints",
]
