"""The optimizer: a profile's Optuna study, evaluated in batches through the engine's batch driver.

Loop: ask up to ``batch_size`` trials, draw their parameters, run ONE ``engine.batch.run_batch`` per
scored window across all of them (the kernel spreads the sets over the cores), tell the results.
Hard limits become Optuna constraints (a ``constraints_func`` reading the trial's stored limit
values). Interrupting (Ctrl-C, SIGTERM) fails only the asked-but-unfinished trials; running the same
command with the same study name resumes until the target trial count is reached.

Storage: by default one Optuna journal file per study in the studies directory (no server needed);
``storage="postgresql://..."`` lets many workers on many machines share one study, with heartbeats
so a killed worker's running trials are failed (``fail_stale_trials``) instead of staying RUNNING.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import math
import os
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from gridctl.configs.errors import GridctlError
from gridctl.research.objectives import (
    CONSTRAINT_NAMES,
    WORST_PATH_METRIC,
    combine_windows,
    feasible,
    limit_values,
    objective_values,
    row_metrics,
)
from gridctl.research.optuna_compat import (
    BatchSyncedJournalBackend,
    TimedJournalStorage,
    draw,
    fail_trial,
    first_bad_record,
    heartbeat_enabled,
    pid_alive,
    record_heartbeat,
    set_system_attr,
    storage_held,
    storage_io_s,
    sync_storage,
    trial_id,
)
from gridctl.research.profiles import Profile
from gridctl.research.space import distributions, resolve_draw

ATTR = "gridctl"  # the one user attr holding a trial's metrics (one storage write per trial)
STUDY_ATTR = "gridctl_profile"
#: Longest a worker waits for a new, empty study to get its profile from the worker that created it.
CREATING_WAIT_S = 5.0
WORKER_ATTR = "gridctl_worker"  # host:pid of the worker that asked the trial (system attr)
DAY_MS = 86_400_000
DEFAULT_HEARTBEAT_S = 10

optuna.logging.set_verbosity(optuna.logging.WARNING)


# ----------------------------------------------------------------------------------------------------
# Storage
# ----------------------------------------------------------------------------------------------------


def default_studies_dir() -> Path:
    """``$GRIDCTL_STUDIES_DIR``, else ``gridctl-studies`` beside the default data directory."""
    explicit = os.environ.get("GRIDCTL_STUDIES_DIR")
    if explicit:
        return Path(explicit).expanduser()
    from gridctl.data.store import default_data_dir

    data = default_data_dir()
    return data.parent / "gridctl-studies"


def journal_path(study_name: str, studies_dir: Path | None = None) -> Path:
    """The journal file of a study in the studies directory."""
    if not study_name or "/" in study_name or study_name.startswith("."):
        raise GridctlError(f"study name {study_name!r}: use letters, digits, '-', '_' (no '/')")
    return (studies_dir or default_studies_dir()) / f"{study_name}.journal"


def sqlalchemy_url(url: str) -> str:
    """``postgresql://`` URLs use the psycopg (v3) driver gridctl declares."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def stale_grace_s(heartbeat_s: int) -> int:
    """Seconds without a heartbeat after which a trial's worker counts as gone (shared studies).

    One and a half heartbeats (at least one second more than a heartbeat); live workers look for
    such trials every half heartbeat while they run, so a dead worker's trials are failed within two
    heartbeat periods of its last beat.
    """
    return max(heartbeat_s + 1, math.ceil(1.5 * heartbeat_s))


def open_storage(
    study_name: str,
    storage: str | None = None,
    studies_dir: Path | None = None,
    heartbeat_s: int = DEFAULT_HEARTBEAT_S,
    create: bool = True,
) -> optuna.storages.BaseStorage:
    """The study's storage: a journal file in the studies dir, or an RDB URL (with heartbeats)."""
    if storage is None:
        path = journal_path(study_name, studies_dir)
        if not path.exists() and not create:
            raise GridctlError(f"no study {study_name!r} in {path.parent} (gridctl study list shows them)")
        if path.exists() and not path.is_file():
            raise GridctlError(f"study {study_name!r}: {path} is not a journal file (a directory or device)")
        if path.parent.exists() and not path.parent.is_dir():
            raise GridctlError(f"studies directory {path.parent} is a file, not a directory")
        path.parent.mkdir(parents=True, exist_ok=True)
        backend = BatchSyncedJournalBackend(str(path))
        try:
            return TimedJournalStorage(backend)
        except Exception as err:  # Optuna's replay of a damaged journal: many exception types
            bad = first_bad_record(path)
            where = f"record {bad[0]}: {bad[1]}" if bad else f"{type(err).__name__}: {err}"
            raise GridctlError(
                f"study {study_name!r}: journal {path} is damaged ({where}); gridctl cannot replay it"
            ) from None
    try:
        for attempt in range(5):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    return optuna.storages.RDBStorage(
                        sqlalchemy_url(storage),
                        heartbeat_interval=heartbeat_s,
                        grace_period=stale_grace_s(heartbeat_s),
                        engine_kwargs={"pool_pre_ping": True},
                    )
            except ImportError:
                raise
            except Exception:
                # Workers starting together on an empty database race to create Optuna's tables;
                # the loser sees a unique violation and succeeds once the tables exist.
                if attempt == 4:
                    raise
                time.sleep(0.5 + attempt)
        raise AssertionError("unreachable")  # pragma: no cover
    except ImportError as err:
        raise GridctlError(
            f"--storage {storage}: the database driver is missing ({err}); "
            "install gridctl with the postgres extra: pip install -e '.[postgres]'"
        ) from None
    except Exception as err:  # sqlalchemy's OperationalError and friends: one clear line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise GridctlError(f"--storage: cannot open {_redact(storage)}: {first}") from None


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':')[0]}:***@{host}" if ":" in creds else url
    return url


# ----------------------------------------------------------------------------------------------------
# Workload: configs, data and the scored windows
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """One scored stretch of data: ``full`` (no validation), or a walk-forward ``train``/``test``."""

    kind: str
    fold: int
    start_ms: int
    end_ms: int
    market: Any
    detail: Any = None  # the same window's backtest.detail_timeframe bars, when the strategy sets one


@dataclass
class Workload:
    """Everything a batch evaluation needs: the profile, base configs, market and windows."""

    profile: Profile
    strategy: Any
    venue: Any
    market: Any
    windows: list[Window]
    data_dir: Path
    symbol: str
    regime_cache: Any = None  # engine.batch.RegimeCache shared by every batch of this workload
    detail: Any = None  # the whole window's detail bars (backtest.detail_timeframe), else None
    holdout: Window | None = None  # validation.holdout_days: never scored by a trial, reported apart

    def regimes(self) -> Any:
        """The batch driver's regime-series cache (one per workload: every window, every batch)."""
        if self.regime_cache is None:
            from gridctl.engine.batch import RegimeCache

            self.regime_cache = RegimeCache()
        return self.regime_cache

    @property
    def folds(self) -> int:
        """Number of walk-forward folds (1 without validation)."""
        return max(w.fold for w in self.windows) + 1

    def describe(self) -> dict[str, Any]:
        """The data window and folds, as stored on the study (for reports and resume checks)."""
        return {
            "exchange": self.profile.data.exchange,
            "symbol": self.symbol,
            "timeframe": self.profile.data.timeframe,
            "start_ms": int(self.market.ts[0]),
            "end_ms": int(self.market.ts[-1] + self.market.bar_ms),
            "bars": len(self.market.ts),
            "prices_sha256": hashlib.sha256(np.ascontiguousarray(self.market.close).tobytes()).hexdigest()[
                :16
            ],
            "windows": [
                {"kind": w.kind, "fold": w.fold, "start_ms": w.start_ms, "end_ms": w.end_ms}
                for w in self.windows
            ],
            "holdout": None
            if self.holdout is None
            else {"start_ms": self.holdout.start_ms, "end_ms": self.holdout.end_ms},
        }


def _day_ms(text: str | None, what: str) -> int | None:
    if text is None:
        return None
    from datetime import UTC, datetime

    try:
        return int(datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC).timestamp() * 1000)
    except ValueError:
        raise GridctlError(f"{what}: {text!r} is not a date (expected YYYY-MM-DD)") from None


def load_workload(profile: Profile, data_dir: Path | None = None) -> Workload:
    """Load the profile's base configs and market and cut its scored windows."""
    from gridctl.configs.loader import load_strategy, load_venue
    from gridctl.data.market import load_market
    from gridctl.data.sample import SAMPLE_EXCHANGE, SAMPLE_SYMBOL, ensure_sample
    from gridctl.data.store import default_data_dir

    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    strategy = load_strategy(profile.base.strategy)
    venue = load_venue(profile.base.venue)
    spec = profile.data
    symbol = spec.symbol or strategy.ccxt_symbol
    if (spec.exchange, symbol) == (SAMPLE_EXCHANGE, SAMPLE_SYMBOL):
        ensure_sample(data_dir)
    start = _day_ms(spec.start, f"profile {profile.name}: data.start")
    end = _day_ms(spec.end, f"profile {profile.name}: data.end")
    market = load_market(data_dir, spec.exchange, symbol, spec.timeframe, start, end)
    if len(market.ts) < 2:
        raise GridctlError(f"profile {profile.name}: the data window holds {len(market.ts)} bars")
    first = int(market.ts[0])
    last = int(market.ts[-1] + market.bar_ms)
    detail_tf = strategy.backtest.detail_timeframe

    def detail_of(part: Any) -> Any:
        """The detail bars over ``part``'s bars (fills walk them, as in ``gridctl backtest``)."""
        if detail_tf is None:
            return None
        end_ms = int(part.ts[-1]) + part.bar_ms
        return load_market(data_dir, spec.exchange, symbol, detail_tf, int(part.ts[0]), end_ms)

    full_detail = detail_of(market)
    windows: list[Window] = []
    val = profile.validation

    def cut(kind: str, fold: int, a: int, b: int) -> Window:
        part = load_market(data_dir, spec.exchange, symbol, spec.timeframe, a, b)
        return Window(kind, fold, a, b, part, detail_of(part))

    select_end = last  # the end of the data any trial is scored on
    holdout = None
    if val.holdout_days is not None:
        select_end = -(-last // DAY_MS) * DAY_MS - val.holdout_days * DAY_MS
        if select_end - first < DAY_MS:
            raise GridctlError(
                f"profile {profile.name}: validation.holdout_days {val.holdout_days} leaves less than a day "
                f"of the {(last - first) / DAY_MS:.1f}-day data window to select on"
            )
        holdout = cut("holdout", -1, select_end, last)
    if val.scheme == "none":
        if holdout is None:
            windows.append(Window("full", 0, first, last, market, full_detail))
        else:
            windows.append(cut("full", 0, first, select_end))
    else:
        from gridctl.research.walkforward import check_no_leakage, fold_bounds

        bounds = fold_bounds(first, select_end, val)
        check_no_leakage(bounds, select_end if holdout is not None else None)
        windows = [cut(kind, fold, a, b) for kind, fold, a, b in bounds]
        if not windows:
            days = (select_end - first) / DAY_MS
            raise GridctlError(
                f"profile {profile.name}: walk-forward needs train_days + purge_days + test_days = "
                f"{val.train_days + val.purge_days + val.test_days} days, the data window "
                f"{'before the hold-out ' if holdout is not None else ''}has {days:.1f}"
            )
    work = Workload(
        profile, strategy, venue, market, windows, data_dir, symbol, detail=full_detail, holdout=holdout
    )
    _check_limits_reachable(work)
    return work


#: A generous bound on exit fills per rung and bar: a rung closes at most its lot and one lot entered in
#: the bar (its entry order is placed at decisions, once per bar), doubled for margin; plus a flatten or
#: liquidation fill per side. Only a limit above this bound is refused, so it errs towards admitting.
EXITS_PER_RUNG_PER_BAR = 4


def _check_limits_reachable(work: Workload) -> None:
    """Refuse hard limits no trial could ever satisfy on this data (every trial would be infeasible)."""
    profile = work.profile
    space = profile.search_space

    def most(key: str) -> int:
        if key in space and space[key].type != "categorical" and space[key].fraction_of is None:
            return int(space[key].high or 0)
        section, name = key.split(".")
        return int(getattr(getattr(work.strategy, section), name))

    rungs = most("grid.grid_levels_long") + most("grid.grid_levels_short")
    scored = scored_windows(work)
    bars = sum(len(w.market.ts) for w in scored)
    bound = bars * (EXITS_PER_RUNG_PER_BAR * rungs + 2)
    if profile.limits.min_trades > bound:
        raise GridctlError(
            f"profile {profile.name}: limits.min_trades {profile.limits.min_trades} can never hold: "
            f"the {len(scored)} scored window(s) hold {bars} bars, in which at most {bound} lots can close"
        )


def scored_windows(work: Workload) -> list[Window]:
    """The windows a trial's objective and limits are computed on (train windows in walk-forward)."""
    if work.profile.validation.scheme == "none":
        return [w for w in work.windows if w.kind == "full"]
    kind = "test" if work.profile.objective.target == "out_of_sample" else "train"
    return [w for w in work.windows if w.kind == kind]


# ----------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------


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


def _mean_metrics(windows: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over windows (NaN windows ignored; NaN when every window is NaN)."""
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
    each (the kernel holds the GIL, so heartbeats to a shared study can only be sent between calls).

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
            side["is_metrics"] = _clean(_mean_metrics(p["train"]))
            if p["test"]:
                side["oos_metrics"] = _clean(_mean_metrics(p["test"]))
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
    """Summary rows of ``sets`` on ``window``: ``run_batch`` calls of at most ``chunk`` sets."""
    from gridctl.engine.batch import run_batch

    step = chunk or len(sets)
    rows: list[Any] = []
    for c in range(0, len(sets), step):
        rows.extend(
            run_batch(
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


# ----------------------------------------------------------------------------------------------------
# Samplers and studies
# ----------------------------------------------------------------------------------------------------


def make_sampler(profile: Profile, seed: int, shared: bool = False) -> optuna.samplers.BaseSampler:
    """The profile's sampler, seeded (``shared``: a server study other workers may join).

    Hard limits reach the samplers as Optuna constraints recorded on each trial before it is told
    (``write_constraints``: the trial system attr ``constraints``, which Optuna 5 reads in TPE,
    NSGA-II and ``best_trial`` and optuna-dashboard reads too; the older ``constraints_func`` sampler
    argument is deprecated there and feeds the same trial attribute).
    """
    spec = profile.sampler
    if spec.kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.kind == "qmc":
        # Optuna keeps the sequence position on the study, keyed by the scramble seed. A local study
        # scrambles with the PROFILE seed, so a resume continues the same sequence. Workers of a
        # shared study each scramble with their own (derived) seed: Optuna's position counter is
        # read and written without a transaction, so workers sharing one sequence would draw some
        # points twice; each worker's own points are still a low-discrepancy sequence.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(
                qmc_type="sobol",
                scramble=True,
                seed=seed if shared else profile.seed,
                independent_sampler=optuna.samplers.RandomSampler(seed=seed),
                warn_independent_sampling=False,
            )
    if spec.kind == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=spec.n_startup_trials or 10, multivariate=spec.multivariate
        )
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=spec.population_size or 50)


def make_pruner(profile: Profile) -> optuna.pruners.BasePruner:
    """The profile's pruner (walk-forward folds are its steps)."""
    if profile.pruner.kind == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=profile.pruner.n_startup_trials, n_warmup_steps=profile.pruner.n_warmup_steps
        )
    return optuna.pruners.NopPruner()


def _sampler_seed(profile: Profile, existing: int, shared: bool) -> int:
    """The profile seed on a fresh local study; a derived seed when resuming or joining a server study.

    Resuming with the original seed would redraw the first trials' points; workers on one server
    must not draw the same points either, so those mix in the trial count and the process id.
    """
    if existing == 0 and not shared:
        return profile.seed
    mix = f"{profile.seed}:{existing}:{os.getpid() if shared else 0}:{socket.gethostname() if shared else ''}"
    return int.from_bytes(hashlib.sha256(mix.encode()).digest()[:4], "little") & 0x7FFFFFFF


def check_same_data(study_name: str, stored: dict[str, Any] | None, work: Workload) -> None:
    """Refuse to resume or re-evaluate a study on different data than it was run on."""
    if stored is None:
        return
    now = work.describe()
    keys = ("exchange", "symbol", "timeframe", "start_ms", "end_ms", "bars", "prices_sha256")
    diff = [k for k in keys if k in stored and stored[k] != now.get(k)]
    if diff:
        was = ", ".join(f"{k}={stored.get(k)}" for k in diff)
        is_ = ", ".join(f"{k}={now.get(k)}" for k in diff)
        raise GridctlError(
            f"study {study_name!r} was run on different data ({was}) than --data-dir gives now ({is_}); "
            "point --data-dir at the study's data directory"
        )


def create_or_load_study(
    profile: Profile,
    work: Workload | None,
    study_name: str,
    storage: optuna.storages.BaseStorage,
    shared: bool = False,
) -> optuna.Study:
    """Create the study (recording the profile) or load it, refusing one made by a different profile."""
    directions = profile.objective.directions
    try:
        existing = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        existing = None
    if existing is not None:
        stored = existing.user_attrs.get(STUDY_ATTR)
        # Workers started together race: another may have created the study a moment ago and not yet
        # recorded its profile (it does so milliseconds later). A study with trials is never that.
        deadline = time.monotonic() + CREATING_WAIT_S
        while stored is None and time.monotonic() < deadline and not existing.get_trials(deepcopy=False):
            time.sleep(0.05)
            stored = existing.user_attrs.get(STUDY_ATTR)
        if stored is None:
            raise GridctlError(f"study {study_name!r} was not created by gridctl optimize (no profile)")
        if stored["fingerprint"] != profile.fingerprint():
            raise GridctlError(
                f"study {study_name!r} was created with profile {stored['name']!r} "
                f"(fingerprint {stored['fingerprint']}), which differs from profile {profile.name!r} now "
                f"({profile.fingerprint()}); use another --study-name"
            )
        if work is not None:
            check_same_data(study_name, stored.get("data"), work)
        n = len(existing.get_trials(deepcopy=False))
        return optuna.load_study(
            study_name=study_name,
            storage=storage,
            sampler=make_sampler(profile, _sampler_seed(profile, n, shared), shared),
            pruner=make_pruner(profile),
        )
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        sampler=make_sampler(profile, _sampler_seed(profile, 0, shared), shared),
        pruner=make_pruner(profile),
        directions=directions,
        load_if_exists=True,
    )
    if not study.metric_names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(objective_metric_names(profile))
    if STUDY_ATTR not in study.user_attrs:
        study.set_user_attr(
            STUDY_ATTR,
            {
                "name": profile.name,
                "fingerprint": profile.fingerprint(),
                "profile": profile.model_dump(mode="json"),
                "data": work.describe() if work is not None else None,
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
        )
    return study


# ----------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------

DONE_STATES = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


@dataclass
class Progress:
    """What the optimizer reports after each batch (the CLI draws a progress bar from it)."""

    done: int
    target: int
    best: float | None
    trials_per_s: float
    told_here: int


@dataclass
class OptimizeResult:
    """Summary of one ``optimize`` call."""

    study_name: str
    storage: str
    n_trials: int
    told_here: int
    elapsed_s: float
    interrupted: bool
    best_value: float | list[float] | None
    best_params: dict[str, Any] | None
    best_trial: int | None
    pareto_size: int | None
    timings: dict[str, float] = field(default_factory=dict)
    cpu_s: float = 0.0  # CPU seconds of this process (all threads) over elapsed_s
    overlap_s: float = 0.0  # asking (sampler + storage) done while the kernel ran, inside those figures
    load_average: float | None = None  # the machine's 1-minute load average when the call ended

    @property
    def trials_per_s(self) -> float:
        """Trials evaluated by this call per second of wall time."""
        return self.told_here / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``--json``)."""
        return {
            "study_name": self.study_name,
            "storage": self.storage,
            "n_trials": self.n_trials,
            "told_here": self.told_here,
            "interrupted": self.interrupted,
            "best_value": self.best_value,
            "best_params": self.best_params,
            "best_trial": self.best_trial,
            "pareto_size": self.pareto_size,
            "elapsed_s": round(self.elapsed_s, 3),
            "trials_per_s": round(self.trials_per_s, 2),
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            "cpu_s": round(self.cpu_s, 3),
            "asked_during_kernel_s": round(self.overlap_s, 3),
            "load_average_1m": self.load_average,
        }


class _StopSignals:
    """Ctrl-C / SIGTERM ask the loop to stop after the batch in flight (told, so nothing is wasted).

    The signal never interrupts storage code halfway (the journal's file lock is not interrupt-safe);
    a second Ctrl-C raises KeyboardInterrupt at once and the asked trials are failed.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> _StopSignals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread: leave signals alone
                break
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


def _counts(study: optuna.Study) -> tuple[int, int]:
    trials = study.get_trials(deepcopy=False, states=(*DONE_STATES, optuna.trial.TrialState.RUNNING))
    done = sum(t.state in DONE_STATES for t in trials)
    return done, len(trials) - done


def best_summary(study: optuna.Study) -> tuple[Any, dict[str, Any] | None, int | None, int | None]:
    """(best value(s), best strategy overrides, best trial number, Pareto size) of feasible trials."""
    from gridctl.research.studies import best_trial, pareto_trials

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


class _Heartbeat:
    """Records heartbeats of the trials in flight (RDB storages only), from a thread and on demand.

    The kernel holds the GIL while a batch runs, so the thread may pause for the length of one batch;
    in shared studies the batch runs in chunks with a beat between them, far shorter than the grace
    period (``stale_grace_s``).
    """

    def __init__(self, storage: optuna.storages.BaseStorage, interval_s: int) -> None:
        self._storage = storage
        self._on = heartbeat_enabled(storage)
        self._interval = interval_s
        self._trials: list[optuna.Trial] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> _Heartbeat:
        if self._on:
            self._thread = threading.Thread(target=self._run, name="gridctl-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def beat(self, trials: list[optuna.Trial]) -> None:
        """Record a heartbeat for ``trials`` now and keep beating for them."""
        self._trials = list(trials)
        if self._on:
            for trial in self._trials:
                with contextlib.suppress(Exception):
                    record_heartbeat(self._storage, trial)

    def beat_now(self) -> None:
        """Record a heartbeat for the trials in flight."""
        self.beat(self._trials)

    def track(self, trial: optuna.Trial) -> None:
        """Add one trial to the beating set and record its first heartbeat now."""
        self._trials = [*self._trials, trial]
        if self._on:
            with contextlib.suppress(Exception):
                record_heartbeat(self._storage, trial)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.beat(self._trials)


def _fail_stale(
    study: optuna.Study,
    shared: bool,
    heartbeat_s: int,
    unowned_seen: dict[int, float] | None = None,
    now_mono: float | None = None,
) -> None:
    """Fail trials whose worker is gone, so they never stay RUNNING.

    Server storages: Optuna's heartbeat check (no heartbeat for ``stale_grace_s``), plus
    trials a worker died on between creating them and their first heartbeat (killed while asking:
    no worker attr, so Optuna's check never sees them). A live worker records the heartbeat and the
    attr milliseconds after creating a trial, so such a trial is failed once this worker has watched
    it stay unowned for one grace period on its own monotonic clock (``unowned_seen`` remembers when
    each was first seen; the same rule Optuna applies to a silent heartbeat, and no clocks of other
    machines involved), or at once when its start (the creating worker's clock) is 10 grace periods
    old. Journal files: trials of dead local processes.
    """
    if not shared:
        _fail_dead_local_trials(study)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    grace = stale_grace_s(heartbeat_s)
    now = datetime.datetime.now()
    mono = time.monotonic() if now_mono is None else now_mono
    unowned: set[int] = set()
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if WORKER_ATTR in t.system_attrs:
            continue
        first_seen = mono if unowned_seen is None else unowned_seen.setdefault(trial_id(t), mono)
        started = t.datetime_start
        old = started is not None and (now - started).total_seconds() > 10 * grace
        if old or mono - first_seen > grace:
            with contextlib.suppress(Exception):
                fail_trial(study, t)
                continue
        unowned.add(trial_id(t))
    if unowned_seen is not None:
        for gone in set(unowned_seen) - unowned:  # owned, finished or failed since: forget them
            del unowned_seen[gone]


def _fail_dead_local_trials(study: optuna.Study) -> int:
    """Journal studies have no heartbeat: fail RUNNING trials whose worker process on this host is gone."""
    host = socket.gethostname()
    failed = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner = t.system_attrs.get(WORKER_ATTR)
        if not owner:
            continue
        h, _, pid = owner.rpartition(":")
        if h == host and not pid_alive(int(pid)):
            with contextlib.suppress(Exception):
                study.tell(t.number, state=optuna.trial.TrialState.FAIL)
                failed += 1
    return failed


def optimize(
    profile: Profile,
    study_name: str,
    n_trials: int | None = None,
    storage: str | None = None,
    studies_dir: Path | None = None,
    data_dir: Path | None = None,
    jobs: int | None = None,
    heartbeat_s: int = DEFAULT_HEARTBEAT_S,
    on_progress: Callable[[Progress], None] | None = None,
    work: Workload | None = None,
) -> OptimizeResult:
    """Run (or resume) the profile's study until it holds ``n_trials`` (default: the profile's) trials.

    Completed and pruned trials count; failed ones do not. A KeyboardInterrupt stops after failing the
    trials asked but not told; the result says ``interrupted``.
    """
    import numba

    t_start = time.perf_counter()
    cpu_start = time.process_time()
    target = int(n_trials if n_trials is not None else profile.trials)
    if target < 1:
        raise GridctlError(f"--trials must be at least 1, got {target}")
    if jobs is not None:
        if not 1 <= jobs <= numba.config.NUMBA_NUM_THREADS:
            raise GridctlError(f"--jobs must be 1..{numba.config.NUMBA_NUM_THREADS}, got {jobs}")
        numba.set_num_threads(jobs)
    # sampler_s: asking minus the asks' storage I/O; storage_s: that I/O plus telling; kernel_s: the
    # batch driver (validation, regime series and the kernel); params_s: draws -> overrides.
    timings = {"load_s": 0.0, "sampler_s": 0.0, "storage_s": 0.0, "kernel_s": 0.0, "params_s": 0.0}
    t0 = time.perf_counter()
    work = work or load_workload(profile, data_dir)
    timings["load_s"] = time.perf_counter() - t0
    shared = storage is not None
    fresh = None if shared else journal_path(study_name, studies_dir)
    if fresh is not None and fresh.exists():
        fresh = None
    store = open_storage(study_name, storage, studies_dir, heartbeat_s)
    try:
        study = create_or_load_study(profile, work, study_name, store, shared=shared)
    except BaseException:
        if fresh is not None and fresh.exists() and fresh.stat().st_size == 0:
            fresh.unlink()  # a journal this call created and never wrote to: leave nothing behind
        raise
    unowned_seen: dict[int, float] = {}  # RUNNING trials with no worker attr: when first seen
    _fail_stale(study, shared, heartbeat_s, unowned_seen)
    dists = distributions(profile)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    told_here = 0
    interrupted = False
    overlap_s = 0.0
    pending: list[optuna.Trial] = []  # asked, being evaluated
    ahead: list[optuna.Trial] = []  # asked for the next batch while the kernel runs
    # Random and quasi-random draws do not depend on results, so the next batch is asked while the
    # kernel runs this one (the kernel releases the GIL): the same trials as asking after the tell,
    # with the sampler's and storage's time hidden behind the kernel's. Samplers that learn from
    # results (TPE, NSGA-II), pruning (reports from the kernel's thread) and shared studies
    # (heartbeats between chunks) ask after each tell.
    prefetch = profile.sampler.kind in ("random", "qmc") and profile.pruner.kind == "none" and not shared
    pool = (
        ThreadPoolExecutor(1, initializer=numba.set_num_threads, initargs=(numba.get_num_threads(),))
        if prefetch
        else None
    )

    if shared:
        # Compile (or load) the kernels before this worker asks its first trial: a cold compile keeps
        # the process busy for up to a minute, long enough for other workers to judge trials stale.
        evaluate(work, [{}])
    contenders = contenders_only(profile)
    started_at = datetime.datetime.now()
    reseeded = False

    def joined_by_another_worker() -> bool:
        """True once a trial of another worker is running, or was asked since this worker started."""
        for t in study.get_trials(deepcopy=False):
            owner = t.system_attrs.get(WORKER_ATTR)
            if owner and owner != worker:
                if t.state == optuna.trial.TrialState.RUNNING:
                    return True
                if t.datetime_start is not None and t.datetime_start >= started_at:
                    return True
        return False

    def ask_batch(k: int) -> list[optuna.Trial]:
        nonlocal reseeded
        t0 = time.perf_counter()
        io0 = storage_io_s(store) or 0.0
        asked: list[optuna.Trial] = []
        with storage_held(store):
            # Two workers that opened one study together hold the same seeded sampler and would draw
            # the same points; the first to see the other's trials (asks are serialised by the lock)
            # reseeds its sampler at random. A worker alone keeps its seeded, reproducible draws.
            if not reseeded and joined_by_another_worker():
                study.sampler.reseed_rng()
                reseeded = True
            for _ in range(k):
                # What study.ask(dists) does, with the first heartbeat and the owner recorded between
                # creating the trial and drawing its parameters: a worker killed while drawing leaves
                # a trial Optuna's heartbeat check fails, not an unowned one (see _fail_stale).
                trial = study.ask()
                asked.append(trial)
                heartbeat.track(trial)
                set_system_attr(study, trial, WORKER_ATTR, worker)
                for pname, dist in dists.items():
                    draw(trial, pname, dist)
        io = (storage_io_s(store) or 0.0) - io0  # the asks' own storage writes and reads
        timings["sampler_s"] += time.perf_counter() - t0 - io
        timings["storage_s"] += io
        return asked

    last_stale_check = time.monotonic()

    def check_stale() -> None:
        """Shared studies: fail other workers' stale trials every half heartbeat, not only at the end."""
        nonlocal last_stale_check
        if shared and time.monotonic() - last_stale_check >= heartbeat_s / 2:
            last_stale_check = time.monotonic()
            _fail_stale(study, shared, heartbeat_s, unowned_seen)

    def beat_and_check() -> None:
        heartbeat.beat_now()
        check_stale()

    loop_start = time.perf_counter()
    with _StopSignals() as stop, _Heartbeat(store, heartbeat_s) as heartbeat:
        try:
            while not stop.requested:
                if ahead:
                    pending, ahead = ahead, []
                else:
                    done, running = _counts(study)
                    room = target - done - running
                    if room <= 0:
                        if running == 0 or not shared:
                            break
                        time.sleep(min(0.25, heartbeat_s / 4))  # other workers are finishing the last trials
                        _fail_stale(study, shared, heartbeat_s, unowned_seen)
                        continue
                    pending = ask_batch(min(profile.batch_size, room))
                t0 = time.perf_counter()
                overrides = [resolve_draw(profile, t.params, work.strategy) for t in pending]
                timings["params_s"] += time.perf_counter() - t0

                def prune(i: int, fold: int, so_far: tuple[float, ...], pending: list = pending) -> bool:
                    trial = pending[i]
                    trial.report(so_far[0], fold)
                    return trial.should_prune()

                # the best path-checked value so far (a trial told below it is never the winner)
                beat_to = best_checked_value(study) if contenders else None
                t0 = time.perf_counter()
                if pool is not None:
                    running_batch = pool.submit(evaluate, work, overrides, beat_to=beat_to)
                    t_ask = time.perf_counter()
                    done, running = _counts(study)  # running: this batch's trials
                    room = target - done - running
                    if room > 0:
                        ahead = ask_batch(min(profile.batch_size, room))
                    asked_s = time.perf_counter() - t_ask
                    results = running_batch.result()
                    # the kernel's share is the wait beyond the asks (which are counted as asks)
                    timings["kernel_s"] += time.perf_counter() - t0 - asked_s
                    overlap_s += min(asked_s, time.perf_counter() - t0)
                else:
                    results = evaluate(
                        work,
                        overrides,
                        prune if profile.pruner.kind != "none" else None,
                        chunk=max(4 * numba.get_num_threads(), 8) if shared else None,
                        beat=beat_and_check if shared else None,
                        beat_to=beat_to,
                    )
                    timings["kernel_s"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                heartbeat.beat(pending)
                refused: list[tuple[int, Any]] = []
                with storage_held(store):
                    for trial, res in zip(pending, results, strict=True):
                        try:
                            # another worker may have judged this trial stale and failed it (this one
                            # was slow to beat): every write to it then raises, and it is not counted
                            trial.set_user_attr(ATTR, res.attrs)
                            for key, value in res.side_attrs.items():
                                trial.set_user_attr(key, value)
                            if res.attrs.get("path_checked", True):
                                write_constraints(study, trial, res.constraints)
                            else:  # configured rule only: its (upper-bound) value as step 0, no limits
                                trial.report(res.attrs["configured_value"], 0)
                            if res.pruned_at is not None:
                                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                            else:
                                told = study.tell(trial, list(res.values or ()))
                                if told.state == optuna.trial.TrialState.FAIL:  # Optuna refused the values
                                    refused.append((trial.number, res.values))
                        except optuna.exceptions.UpdateFinishedTrialError:
                            continue
                        told_here += 1
                if refused and len(refused) == len(pending):
                    number, values = refused[0]
                    raise GridctlError(
                        f"study {study_name!r}: Optuna refused every trial of a batch (trial {number} "
                        f"told {values}, not finite numbers); stopping instead of asking for ever"
                    )
                pending = []
                sync_storage(store)
                check_stale()
                # telling runs the sampler's after_trial hooks too, a small part next to the writes
                timings["storage_s"] += time.perf_counter() - t0
                heartbeat.beat(ahead)
                if on_progress is not None:
                    elapsed = time.perf_counter() - loop_start
                    best, _, _, _ = best_summary(study)
                    shown = best if not isinstance(best, list) else best[0]
                    done_now = min(_counts(study)[0], target)
                    on_progress(Progress(done_now, target, shown, told_here / elapsed, told_here))
            interrupted = stop.requested
        except KeyboardInterrupt:
            interrupted = True
            for trial in [*pending, *ahead]:
                with contextlib.suppress(Exception):
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
            ahead = []
        finally:
            if pool is not None:
                pool.shutdown(wait=True)  # a kernel in flight cannot be stopped: let it finish
            for trial in ahead:  # asked ahead of a stop: never run
                with contextlib.suppress(Exception):
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
            sync_storage(store)
    elapsed = time.perf_counter() - t_start
    timings["other_s"] = max(elapsed - sum(timings.values()), 0.0)
    done, _ = _counts(study)
    best_value, best_params, best_number, pareto = best_summary(study)
    return OptimizeResult(
        study_name=study_name,
        storage=_redact(storage) if storage else str(journal_path(study_name, studies_dir)),
        n_trials=done,
        told_here=told_here,
        elapsed_s=elapsed,
        interrupted=interrupted,
        best_value=best_value,
        best_params=best_params,
        best_trial=best_number,
        pareto_size=pareto,
        timings=timings,
        cpu_s=time.process_time() - cpu_start,
        overlap_s=overlap_s,
        load_average=round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    )


# ----------------------------------------------------------------------------------------------------
# Feasibility and objective names where Optuna and optuna-dashboard read them
# ----------------------------------------------------------------------------------------------------

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
