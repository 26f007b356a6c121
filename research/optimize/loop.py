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
from gridctl.research.optimize.workers import (
    Heartbeat,
    StopSignals,
    fail_dead_local_trials,
    fail_stale_trials,
)
from gridctl.research.optimize.workload import Workload, load_workload
from gridctl.research.optuna_compat import (
    claim_lock,
    create_running_trials,
    draw,
    finish_trials,
    is_rdb,
    lock_takes,
    set_system_attr,
    storage_held,
    storage_io_s,
    storage_pinned,
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
    t_start = time.perf_counter()
    cpu_start = time.process_time()
    target = _check_target_and_jobs(profile, n_trials, jobs)
    # sampler_s: asking minus the asks' storage I/O; storage_s: that I/O plus telling; kernel_s: the
    # batch driver (validation, regime series and the kernel); params_s: draws -> overrides.
    timings = {"load_s": 0.0, "sampler_s": 0.0, "storage_s": 0.0, "kernel_s": 0.0, "params_s": 0.0}
    t0 = time.perf_counter()
    work = work or load_workload(profile, data_dir)
    timings["load_s"] = time.perf_counter() - t0
    study, store = _open_study(profile, work, study_name, storage, studies_dir, heartbeat_s)
    run = _Run(profile, study_name, target, work, study, store, storage is not None, heartbeat_s, timings)
    interrupted = run.run(on_progress)
    elapsed = time.perf_counter() - t_start
    timings["other_s"] = max(elapsed - sum(timings.values()), 0.0)
    done, _ = _counts(study)
    best_value, best_params, best_number, pareto = best_summary(study)
    return OptimizeResult(
        study_name=study_name,
        storage=_redact(storage) if storage else str(journal_path(study_name, studies_dir)),
        n_trials=done,
        told_here=run.told_here,
        elapsed_s=elapsed,
        interrupted=interrupted,
        best_value=best_value,
        best_params=best_params,
        best_trial=best_number,
        pareto_size=pareto,
        timings=timings,
        cpu_s=time.process_time() - cpu_start,
        overlap_s=run.overlap_s,
        load_average=round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    )


def _check_target_and_jobs(profile: Profile, n_trials: int | None, jobs: int | None) -> int:
    """The trial target (``n_trials`` or the profile's), checked; sets numba's threads to ``jobs``."""
    import numba

    target = int(n_trials if n_trials is not None else profile.trials)
    if target < 1:
        raise GridctlError(f"--trials must be at least 1, got {target}")
    if jobs is not None:
        if not 1 <= jobs <= numba.config.NUMBA_NUM_THREADS:
            raise GridctlError(f"--jobs must be 1..{numba.config.NUMBA_NUM_THREADS}, got {jobs}")
        numba.set_num_threads(jobs)
    return target


def _open_study(
    profile: Profile,
    work: Workload,
    study_name: str,
    storage: str | None,
    studies_dir: Path | None,
    heartbeat_s: int,
) -> tuple[optuna.Study, optuna.storages.BaseStorage]:
    """Open the storage and create or load the study; a journal this call created and never wrote to is
    removed when that fails, so nothing is left behind."""
    fresh = None if storage is not None else journal_path(study_name, studies_dir)
    if fresh is not None and fresh.exists():
        fresh = None
    store = open_storage(study_name, storage, studies_dir, heartbeat_s)
    try:
        study = create_or_load_study(profile, work, study_name, store, shared=storage is not None)
    except BaseException:
        if fresh is not None and fresh.exists() and fresh.stat().st_size == 0:
            fresh.unlink()
        raise
    return study, store


class _Run:
    """One ``optimize`` call's loop: ask a batch, evaluate it, tell it, until the study is full.

    Holds what the steps share: the study and its storage, the batch being evaluated (``pending``) and
    the one asked ahead while the kernel runs (``ahead``), the timings and the counts of this call.
    """

    def __init__(
        self,
        profile: Profile,
        study_name: str,
        target: int,
        work: Workload,
        study: optuna.Study,
        store: optuna.storages.BaseStorage,
        shared: bool,
        heartbeat_s: int,
        timings: dict[str, float],
    ) -> None:
        import numba

        self.profile, self.study_name, self.target, self.work = profile, study_name, target, work
        self.study, self.store, self.shared, self.heartbeat_s = study, store, shared, heartbeat_s
        self.timings = timings
        self.unowned_seen: dict[int, float] = {}  # RUNNING trials with no heartbeat yet: when first seen
        if not shared:  # a journal's trials of dead local workers; shared: the heartbeat's first check
            fail_dead_local_trials(study)
        self.dists = distributions(profile)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.told_here = 0
        self.overlap_s = 0.0
        self.pending: list[Any] = []  # asked, being evaluated (optuna.Trial, or AskedTrial when batched)
        self.ahead: list[Any] = []  # asked for the next batch while the kernel runs
        # Shared RDB studies without a pruner ask and tell in batches: parameters are drawn by the
        # worker's sampler on an in-memory study (LocalDraws), each batch is created in one transaction
        # and told in one (optuna_compat.create_running_trials, finish_trials), instead of one
        # transaction per parameter, attr and state change. A pruner reports from inside the kernel's
        # folds: one at a time.
        self.batched = shared and is_rdb(store) and profile.pruner.kind == "none"
        learns = profile.sampler.kind in ("tpe", "nsga2")
        self.local = LocalDraws(study.sampler, study.directions, learns) if self.batched else None
        self.study_id = store.get_study_id_from_name(study_name) if shared and is_rdb(store) else -1
        # Random and quasi-random draws do not depend on results, so the next batch is asked while the
        # kernel runs this one (the kernel releases the GIL): the same trials as asking after the tell,
        # with the sampler's and storage's time hidden behind the kernel's. Samplers that learn from
        # results (TPE, NSGA-II), pruning (reports from the kernel's thread) and shared studies
        # (heartbeats between chunks) ask after each tell.
        prefetch = profile.sampler.kind in ("random", "qmc") and profile.pruner.kind == "none" and not shared
        self.pool = (
            ThreadPoolExecutor(1, initializer=numba.set_num_threads, initargs=(numba.get_num_threads(),))
            if prefetch
            else None
        )
        if shared:
            # Compile (or load) the kernels before this worker asks its first trial: a cold compile
            # keeps the process busy for up to a minute, long enough for other workers to judge trials
            # stale.
            evaluate(work, [{}])
        self.contenders = contenders_only(profile)
        self.started_at = datetime.datetime.now()
        self.reseeded = False
        self.heartbeat: Heartbeat

    def run(self, on_progress: Callable[[Progress], None] | None) -> bool:
        """Ask, evaluate and tell batches until the study is full or a stop is asked; True if stopped."""
        loop_start = time.perf_counter()
        interrupted = False
        with (
            StopSignals() as stop,
            Heartbeat(self.store, self.heartbeat_s, self.check_stale if self.shared else None) as heartbeat,
        ):
            self.heartbeat = heartbeat
            try:
                while not stop.requested:
                    if not self.next_batch():
                        break
                    if not self.pending:
                        continue
                    results = self.evaluate_batch()
                    self.tell(results)
                    if on_progress is not None:
                        self.report_progress(on_progress, loop_start)
                interrupted = stop.requested
            except KeyboardInterrupt:
                interrupted = True
                self.fail_asked([*self.pending, *self.ahead])
                self.ahead = []
            finally:
                if self.pool is not None:
                    self.pool.shutdown(wait=True)  # a kernel in flight cannot be stopped: let it finish
                self.fail_asked(self.ahead)  # asked ahead of a stop: never run
                sync_storage(self.store)
        return interrupted

    def next_batch(self) -> bool:
        """Set ``pending`` to the next batch (the one asked ahead, else a new ask); False when done.

        A shared study whose target is reached waits while other workers finish the last trials
        (``pending`` stays empty for that round).
        """
        if self.ahead:
            self.pending, self.ahead = self.ahead, []
            return True
        done, running = _counts(self.study)
        room = self.target - done - running
        if room <= 0:
            if running == 0 or not self.shared:
                return False
            # other workers are finishing the last trials (or the heartbeat thread fails them)
            time.sleep(min(0.25, self.heartbeat_s / 4))
            self.pending = []
            return True
        self.pending = self.ask_batch(min(self.profile.batch_size, room))
        return True

    def evaluate_batch(self) -> list[Any]:
        """Evaluate ``pending`` in one batch; with prefetching, ask the next batch while it runs."""
        import numba

        profile, timings, pending = self.profile, self.timings, self.pending
        t0 = time.perf_counter()
        overrides = [resolve_draw(profile, t.params, self.work.strategy) for t in pending]
        timings["params_s"] += time.perf_counter() - t0

        def prune(i: int, fold: int, so_far: tuple[float, ...]) -> bool:
            trial = pending[i]
            trial.report(so_far[0], fold)
            return trial.should_prune()

        # the best path-checked value so far (a trial told below it is never the winner)
        beat_to = best_checked_value(self.study) if self.contenders else None
        t0 = time.perf_counter()
        if self.pool is not None:
            running_batch = self.pool.submit(evaluate, self.work, overrides, beat_to=beat_to)
            t_ask = time.perf_counter()
            done, running = _counts(self.study)  # running: this batch's trials
            room = self.target - done - running
            if room > 0:
                self.ahead = self.ask_batch(min(profile.batch_size, room))
            asked_s = time.perf_counter() - t_ask
            results = running_batch.result()
            # the kernel's share is the wait beyond the asks (which are counted as asks)
            timings["kernel_s"] += time.perf_counter() - t0 - asked_s
            self.overlap_s += min(asked_s, time.perf_counter() - t0)
            return results
        results = evaluate(
            self.work,
            overrides,
            prune if profile.pruner.kind != "none" else None,
            chunk=max(4 * numba.get_num_threads(), 8) if self.shared else None,
            beat=self.heartbeat.beat_now if self.shared else None,
            beat_to=beat_to,
        )
        timings["kernel_s"] += time.perf_counter() - t0
        return results

    def tell(self, results: list[Any]) -> None:
        """Tell ``pending`` its results (one transaction when batched); stop if Optuna refused them all."""
        t0 = time.perf_counter()
        self.heartbeat.beat(_ids(self.pending))
        if self.batched:
            told_now, refused = self.tell_batched(self.pending, results)
            self.told_here += told_now
        else:
            refused = self.tell_each(results)
        if refused and len(refused) == len(self.pending):
            number, values = refused[0]
            raise GridctlError(
                f"study {self.study_name!r}: Optuna refused every trial of a batch (trial {number} "
                f"told {values}, not finite numbers); stopping instead of asking for ever"
            )
        self.pending = []
        sync_storage(self.store)
        # telling runs the sampler's after_trial hooks too, a small part next to the writes
        self.timings["storage_s"] += time.perf_counter() - t0
        self.heartbeat.beat(_ids(self.ahead))

    def tell_each(self, results: list[Any]) -> list[tuple[int, Any]]:
        """Tell ``pending`` one trial at a time under the storage lock; the values Optuna refused."""
        refused: list[tuple[int, Any]] = []
        study = self.study
        with storage_held(self.store):
            for trial, res in zip(self.pending, results, strict=True):
                try:
                    # another worker may have judged this trial stale and failed it (this one was slow
                    # to beat): every write to it then raises, and it is not counted
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
                self.told_here += 1
        return refused

    def report_progress(self, on_progress: Callable[[Progress], None], loop_start: float) -> None:
        """Call ``on_progress`` with the trials done, the best value and this call's rate."""
        elapsed = time.perf_counter() - loop_start
        best, _, _, _ = best_summary(self.study)
        shown = best if not isinstance(best, list) else best[0]
        done_now = min(_counts(self.study)[0], self.target)
        on_progress(Progress(done_now, self.target, shown, self.told_here / elapsed, self.told_here))

    def joined_by_another_worker(self) -> bool:
        """True once a trial of another worker is running, or was asked since this worker started."""
        for t in self.study.get_trials(deepcopy=False):
            owner = t.system_attrs.get(WORKER_ATTR)
            if owner and owner != self.worker:
                if t.state == optuna.trial.TrialState.RUNNING:
                    return True
                if t.datetime_start is not None and t.datetime_start >= self.started_at:
                    return True
        return False

    def ask_batched(self, k: int) -> list[AskedTrial]:
        """Draw ``k`` trials on the local copy, create them in the shared study in one transaction."""
        local = self.local
        assert local is not None
        t0 = time.perf_counter()
        local.sync(self.study)
        drawn = local.ask(self.dists, k)
        t1 = time.perf_counter()
        attrs = [{**a, WORKER_ATTR: self.worker} for a in local.system_attrs(drawn)]
        # the target is re-checked inside the creating transaction: another worker may have claimed
        # the room this worker's count saw (create_running_trials creates only what still fits)
        made = create_running_trials(
            self.store, self.study_id, [t.params for t in drawn], self.dists, attrs, target=self.target
        )
        for unused in drawn[len(made) :]:  # drawn locally, never created: not this worker's trials
            local.study.tell(unused, state=optuna.trial.TrialState.FAIL)
        drawn = drawn[: len(made)]
        local.own([tid for tid, _ in made])
        asked = [
            AskedTrial(tid, number, dict(t.params), t) for (tid, number), t in zip(made, drawn, strict=True)
        ]
        # none made: the study filled up meanwhile; next_batch's count then waits for the others' last trials
        self.heartbeat.track([a.trial_id for a in asked], recorded=True)  # the first beat came with them
        self.timings["sampler_s"] += t1 - t0
        self.timings["storage_s"] += time.perf_counter() - t1
        return asked

    def tell_batched(self, asked: list[AskedTrial], results: list[Any]) -> tuple[int, list[tuple[int, Any]]]:
        """Tell a batch in one transaction as ``study.tell`` tells each; (trials told, values refused)."""
        local = self.local
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
            elif len(values) == len(self.study.directions) and not any(math.isnan(v) for v in values):
                item["state"] = optuna.trial.TrialState.COMPLETE
                item["values"] = values
            else:  # what Optuna's tell does with a NaN or a missing value: the trial fails
                item["state"] = optuna.trial.TrialState.FAIL
                item["values"] = None
                refused.append((a.number, res.values))
            finishes.append(item)
        # another worker may have judged a trial stale and failed it: it is left failed, not counted
        told = finish_trials(self.store, finishes)
        for a, item in zip(asked, finishes, strict=True):
            complete = item["state"] == optuna.trial.TrialState.COMPLETE
            local.study.tell(a.local, item["values"] if complete else None, state=item["state"])
        return len(told), refused

    def fail_asked(self, trials: list[Any]) -> None:
        """Fail trials asked but never told (a stop or an interrupt)."""
        mine = [t.trial_id for t in trials if isinstance(t, AskedTrial)]
        with contextlib.suppress(Exception):
            finish_trials(self.store, [{"trial_id": i, "state": optuna.trial.TrialState.FAIL} for i in mine])
        for trial in trials:
            if not isinstance(trial, AskedTrial):
                with contextlib.suppress(Exception):
                    self.study.tell(trial, state=optuna.trial.TrialState.FAIL)

    def ask_batch(self, k: int) -> list[Any]:
        """Ask ``k`` trials: batched on the local copy, else one at a time under the storage lock."""
        if self.batched:
            return self.ask_batched(k)
        study, store = self.study, self.store
        t0 = time.perf_counter()
        io0 = storage_io_s(store) or 0.0
        asked: list[optuna.Trial] = []
        with storage_held(store):
            # Two workers that opened one study together hold the same seeded sampler and would draw
            # the same points; the first to see the other's trials (asks are serialised by the lock)
            # reseeds its sampler at random. A worker alone keeps its seeded, reproducible draws.
            if not self.reseeded and self.joined_by_another_worker():
                study.sampler.reseed_rng()
                self.reseeded = True
            # The room seen before taking the lock may have been claimed by another worker since: count
            # again under it, and again whenever the lock was let go meanwhile (a journal lets others in
            # every HOLD_S, only between two trials: storage_pinned; PostgreSQL: each trial is counted
            # and created under the study's claim_lock), so workers together never ask more than the
            # target.
            takes, room = -1, 0
            for _ in range(k):
                with storage_pinned(store):
                    with claim_lock(store, self.study_id):
                        if self.study_id >= 0 or takes != lock_takes(store):
                            takes = lock_takes(store)
                            done, running = _counts(study)
                            room = self.target - done - running
                        if room <= 0:
                            break
                        room -= 1
                        # What study.ask(dists) does, with the first heartbeat and the owner recorded
                        # between creating the trial and drawing its parameters: a worker killed while
                        # drawing leaves a trial Optuna's heartbeat check fails, not an unowned one.
                        trial = study.ask()
                        asked.append(trial)
                        self.heartbeat.track([trial_id(trial)])
                        set_system_attr(study, trial, WORKER_ATTR, self.worker)
                    # The trial is RUNNING, counted by every other worker's claim: PostgreSQL's claim
                    # lock is let go before the sampler draws (TPE reads every trial), so other workers
                    # claim meanwhile (a journal's lock stays held, pinned, as before).
                    for pname, dist in self.dists.items():
                        draw(trial, pname, dist)
        io = (storage_io_s(store) or 0.0) - io0  # the asks' own storage writes and reads
        self.timings["sampler_s"] += time.perf_counter() - t0 - io
        self.timings["storage_s"] += io
        return asked

    def check_stale(self) -> None:
        """Shared studies: fail other workers' stale trials (the heartbeat calls this on entering, then
        on schedule from its thread)."""
        fail_stale_trials(self.study, self.heartbeat_s, self.unowned_seen)
