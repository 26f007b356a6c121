"""Walk-forward fold windows and the leakage check every set of windows passes.

Folds are whole UTC days from the first day of the data window (see ``research.walkforward`` for the
scheme); the workload cuts its scored windows from :func:`fold_bounds`.
"""

from __future__ import annotations

import itertools

from gridctl.research.profiles import ValidationSpec

DAY_MS = 86_400_000


def fold_bounds(first_ms: int, last_ms: int, spec: ValidationSpec) -> list[tuple[str, int, int, int]]:
    """``(kind, fold, start_ms, end_ms)`` of every train and test window inside ``[first_ms, last_ms)``.

    ``last_ms`` is the end of the data the folds may use (the hold-out's start when there is one). Each
    test window starts ``purge_days`` after its train window ends.
    """
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
        test_start = train_end + spec.purge_days * DAY_MS
        test_end = test_start + spec.test_days * DAY_MS
        if test_end > last_ms:
            check_no_leakage(out)
            return out
        out.append(("train", fold, train_start, train_end))
        out.append(("test", fold, test_start, test_end))
        fold += 1


def check_no_leakage(windows: list[tuple[str, int, int, int]], holdout_start: int | None = None) -> None:
    """Refuse fold windows that would leak: test windows overlapping each other, a test window inside a
    train window of the same or an earlier fold (which selects on it), or anything reaching into the
    hold-out (``holdout_start``). ``windows`` are ``(kind, fold, start_ms, end_ms)``."""
    from gridctl.configs.errors import GridctlError

    tests = sorted((a, b, f) for kind, f, a, b in windows if kind == "test")
    for (_, b0, f0), (a1, _, f1) in itertools.pairwise(tests):
        if a1 < b0:
            raise GridctlError(f"walk-forward: test windows of folds {f0} and {f1} overlap")
    for kind, fold, a, b in windows:
        if b <= a:
            raise GridctlError(f"walk-forward: the {kind} window of fold {fold} is empty")
        if holdout_start is not None and b > holdout_start:
            raise GridctlError(f"walk-forward: the {kind} window of fold {fold} reaches into the hold-out")
        if kind != "train":
            continue
        for ta, tb, tf in tests:
            if tf >= fold and ta < b and a < tb:
                raise GridctlError(
                    f"walk-forward: the test window of fold {tf} lies inside the train window of fold "
                    f"{fold}, which selects for fold {fold} (out-of-sample data would be selected on)"
                )
