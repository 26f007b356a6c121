"""The ask/tell loop: ask a batch of trials, draw their parameters, evaluate them in one batch, tell.

Interrupting (Ctrl-C, SIGTERM) fails only the asked-but-unfinished trials; running the same command
with the same study name resumes until the target trial count is reached.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from gridctl.configs.errors import GridctlError
from gridctl.research.optimize.evaluation import best_checked_value, contenders_only, evaluate
from gridctl.research.optimize.samplers import LocalDraws
from gridctl.research.optimize.storage import DEFAULT_HEARTBEAT_S, _redact, journal_path, open_storage
from gridctl.research.optimize.study import create_or_load_study
from gridctl.research.optimize.trials import (
    ATTR,
    CONSTRAINTS_KEY,
    WORKER_ATTR,
    _counts,
    best_summary,
    write_constraints,
)
from gridctl.research.optimize.workers import _fail_stale, _Heartbeat, _StopSignals
from gridctl.research.optimize.workload import Workload, load_workload
from gridctl.research.optuna_compat import (
    create_running_trials,
    draw,
    finish_trials,
    is_rdb,
    set_system_attr,
    storage_held,
    storage_io_s,
    sync_storage,
    trial_id,
)
from gridctl.research.profiles import Profile
from gridctl.research.space import distributions, resolve_draw


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


@dataclass
class AskedTrial:
    """A trial of a shared study asked in a batch: its storage id, number, draw and the local copy."""

    trial_id: int
    number: int
    params: dict[str, Any]
    local: optuna.Trial


def _ids(trials: list[Any]) -> list[int]:
    """Storage ids of asked trials (``optuna.Trial`` or ``AskedTrial``)."""
    return [t.trial_id if isinstance(t, AskedTrial) else trial_id(t) for t in trials]


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
    unowned_seen: dict[int, float] = {}  # RUNNING trials with no heartbeat yet: when first seen
    _fail_stale(study, shared, heartbeat_s, unowned_seen)
    dists = distributions(profile)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    told_here = 0
    interrupted = False
    overlap_s = 0.0
    pending: list[Any] = []  # asked, being evaluated (optuna.Trial, or AskedTrial when batched)
    ahead: list[Any] = []  # asked for the next batch while the kernel runs
    # Shared RDB studies without a pruner ask and tell in batches: parameters are drawn by the worker's
    # sampler on an in-memory study (LocalDraws), each batch is created in one transaction and told in
    # one (optuna_compat.create_running_trials, finish_trials), instead of one transaction per
    # parameter, attr and state change. A pruner reports from inside the kernel's folds: one at a time.
    batched = shared and is_rdb(store) and profile.pruner.kind == "none"
    learns = profile.sampler.kind in ("tpe", "nsga2")
    local = LocalDraws(study.sampler, study.directions, learns) if batched else None
    study_id = store.get_study_id_from_name(study_name) if batched else -1
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

    def ask_batched(k: int) -> list[AskedTrial]:
        """Draw ``k`` trials on the local copy, create them in the shared study in one transaction."""
        assert local is not None
        t0 = time.perf_counter()
        local.sync(study)
        drawn = local.ask(dists, k)
        t1 = time.perf_counter()
        attrs = [{**a, WORKER_ATTR: worker} for a in local.system_attrs(drawn)]
        made = create_running_trials(store, study_id, [t.params for t in drawn], dists, attrs)
        local.own([tid for tid, _ in made])
        asked = [
            AskedTrial(tid, number, dict(t.params), t) for (tid, number), t in zip(made, drawn, strict=True)
        ]
        heartbeat.track([a.trial_id for a in asked], recorded=True)  # the first beat came with the trials
        timings["sampler_s"] += t1 - t0
        timings["storage_s"] += time.perf_counter() - t1
        return asked

    def tell_batched(asked: list[AskedTrial], results: list[Any]) -> tuple[int, list[tuple[int, Any]]]:
        """Tell a batch in one transaction as ``study.tell`` tells each; (trials told, values refused)."""
        assert local is not None
        finishes: list[dict[str, Any]] = []
        refused: list[tuple[int, Any]] = []
        for a, res in zip(asked, results, strict=True):
            item: dict[str, Any] = {"trial_id": a.trial_id, "user_attrs": {ATTR: res.attrs, **res.side_attrs}}
            if res.attrs.get("path_checked", True):
                item["system_attrs"] = {CONSTRAINTS_KEY: [float(v) for v in res.constraints]}
            else:  # configured rule only: its (upper-bound) value as step 0, no limits
                item["intermediate"] = {0: float(res.attrs["configured_value"])}
            values = [float(v) for v in res.values or ()]
            if res.pruned_at is not None:  # Optuna gives a pruned trial its last intermediate value
                last = item.get("intermediate", {}).get(0)
                item["state"] = optuna.trial.TrialState.PRUNED
                item["values"] = [last] if last is not None and not math.isnan(last) else None
            elif len(values) == len(study.directions) and not any(math.isnan(v) for v in values):
                item["state"] = optuna.trial.TrialState.COMPLETE
                item["values"] = values
            else:  # what Optuna's tell does with a NaN or a missing value: the trial fails
                item["state"] = optuna.trial.TrialState.FAIL
                item["values"] = None
                refused.append((a.number, res.values))
            finishes.append(item)
        # another worker may have judged a trial stale and failed it: it is left failed, not counted
        told = finish_trials(store, finishes)
        for a, item in zip(asked, finishes, strict=True):
            complete = item["state"] == optuna.trial.TrialState.COMPLETE
            local.study.tell(a.local, item["values"] if complete else None, state=item["state"])
        return len(told), refused

    def fail_asked(trials: list[Any]) -> None:
        """Fail trials asked but never told (a stop or an interrupt)."""
        mine = [t.trial_id for t in trials if isinstance(t, AskedTrial)]
        with contextlib.suppress(Exception):
            finish_trials(store, [{"trial_id": i, "state": optuna.trial.TrialState.FAIL} for i in mine])
        for trial in trials:
            if not isinstance(trial, AskedTrial):
                with contextlib.suppress(Exception):
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)

    def ask_batch(k: int) -> list[Any]:
        nonlocal reseeded
        if batched:
            return ask_batched(k)
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
                heartbeat.track([trial_id(trial)])
                set_system_attr(study, trial, WORKER_ATTR, worker)
                for pname, dist in dists.items():
                    draw(trial, pname, dist)
        io = (storage_io_s(store) or 0.0) - io0  # the asks' own storage writes and reads
        timings["sampler_s"] += time.perf_counter() - t0 - io
        timings["storage_s"] += io
        return asked

    def check_stale() -> None:
        """Shared studies: fail other workers' stale trials (the heartbeat thread calls this on schedule)."""
        _fail_stale(study, shared, heartbeat_s, unowned_seen)

    loop_start = time.perf_counter()
    with (
        _StopSignals() as stop,
        _Heartbeat(store, heartbeat_s, check_stale if shared else None) as heartbeat,
    ):
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
                        # other workers are finishing the last trials (or the heartbeat thread fails them)
                        time.sleep(min(0.25, heartbeat_s / 4))
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
                        beat=heartbeat.beat_now if shared else None,
                        beat_to=beat_to,
                    )
                    timings["kernel_s"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                heartbeat.beat(_ids(pending))
                refused: list[tuple[int, Any]] = []
                if batched:
                    told_now, refused = tell_batched(pending, results)
                    told_here += told_now
                with storage_held(store):
                    for trial, res in zip(pending, results, strict=True) if not batched else ():
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
                # telling runs the sampler's after_trial hooks too, a small part next to the writes
                timings["storage_s"] += time.perf_counter() - t0
                heartbeat.beat(_ids(ahead))
                if on_progress is not None:
                    elapsed = time.perf_counter() - loop_start
                    best, _, _, _ = best_summary(study)
                    shown = best if not isinstance(best, list) else best[0]
                    done_now = min(_counts(study)[0], target)
                    on_progress(Progress(done_now, target, shown, told_here / elapsed, told_here))
            interrupted = stop.requested
        except KeyboardInterrupt:
            interrupted = True
            fail_asked([*pending, *ahead])
            ahead = []
        finally:
            if pool is not None:
                pool.shutdown(wait=True)  # a kernel in flight cannot be stopped: let it finish
            fail_asked(ahead)  # asked ahead of a stop: never run
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
