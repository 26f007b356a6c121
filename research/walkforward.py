"""Walk-forward validation: cutting train/test folds and rebuilding a trial's stitched out-of-sample curve.

Folds are whole UTC days from the first day of the data window. ``rolling``: the train window of
``train_days`` slides by ``step_days``; ``anchored``: it always starts at the window start and grows by
``step_days``. The test window (``test_days``) follows its train window; folds whose test window would
run past the data are dropped. Each window is backtested from a fresh account (indicators warm up
inside the window), so a fold's result does not depend on the folds before it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gridctl.research.profiles import ValidationSpec

DAY_MS = 86_400_000


def fold_bounds(first_ms: int, last_ms: int, spec: ValidationSpec) -> list[tuple[str, int, int, int]]:
    """``(kind, fold, start_ms, end_ms)`` of every train and test window inside ``[first_ms, last_ms)``."""
    assert spec.train_days and spec.test_days and spec.step_days
    origin = first_ms - first_ms % DAY_MS
    out: list[tuple[str, int, int, int]] = []
    fold = 0
    while True:
        if spec.mode == "rolling":
            train_start = origin + fold * spec.step_days * DAY_MS
            train_end = train_start + spec.train_days * DAY_MS
        else:
            train_start = origin
            train_end = origin + (spec.train_days + fold * spec.step_days) * DAY_MS
        test_end = train_end + spec.test_days * DAY_MS
        if test_end > last_ms:
            return out
        out.append(("train", fold, train_start, train_end))
        out.append(("test", fold, train_end, test_end))
        fold += 1


def stitched_oos_equity(study: Any, trial: int | None = None, data_dir: Path | None = None) -> dict[str, Any]:
    """The trial's out-of-sample equity, fold after fold, compounded into one curve.

    Each test window is re-run with ``run_single``; fold k's curve is scaled so it starts where fold
    k-1 ended. Returns ``ts`` (bar open times), ``equity`` (in the strategy's quote currency, starting
    at its initial balance), ``fold`` (fold number per bar) and ``fold_return_pct`` per fold.
    """
    from gridctl.configs.loader import load_venue
    from gridctl.engine.run import run_single
    from gridctl.research.optimize import load_workload
    from gridctl.research.studies import best_config, get_trial, study_profile

    profile = study_profile(study)
    if profile.validation.scheme != "walk_forward":
        from gridctl.configs.errors import GridctlError

        raise GridctlError(f"study {study.study_name!r} has no walk-forward folds (validation scheme none)")
    t = get_trial(study, trial)
    cfg = best_config(study, t.number)
    venue = load_venue(profile.base.venue)
    work = load_workload(profile, data_dir)
    initial = float(cfg.backtest.initial_balance)
    level = initial
    ts_parts, eq_parts, fold_parts, fold_returns = [], [], [], []
    for window in (w for w in work.windows if w.kind == "test"):
        run = run_single(window.market, cfg, venue, curves=True, detail=window.detail)
        eq = run.equity["equity"].astype(np.float64)
        scaled = eq / initial * level
        ts_parts.append(run.equity["ts"])
        eq_parts.append(scaled)
        fold_parts.append(np.full(len(eq), window.fold, dtype=np.int64))
        end = float(eq[-1]) if len(eq) else initial
        fold_returns.append((end / initial - 1.0) * 100.0)
        level = scaled[-1] if len(scaled) else level
    return {
        "ts": np.concatenate(ts_parts) if ts_parts else np.zeros(0, np.int64),
        "equity": np.concatenate(eq_parts) if eq_parts else np.zeros(0),
        "fold": np.concatenate(fold_parts) if fold_parts else np.zeros(0, np.int64),
        "fold_return_pct": fold_returns,
    }
