"""Worker liveness: stop signals, heartbeats of the trials in flight, and failing a dead worker's trials."""

from __future__ import annotations

import contextlib
import datetime
import math
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import optuna

from gridctl.research.optimize.storage import heartbeat_tick_s, stale_grace_s
from gridctl.research.optimize.trials import WORKER_ATTR
from gridctl.research.optuna_compat import (
    finish_trials,
    heartbeat_enabled,
    pid_alive,
    record_heartbeats,
    running_trial_beats,
    study_id,
    study_storage,
)


class StopSignals:
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

    def __enter__(self) -> StopSignals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread: leave signals alone
                break
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


class Heartbeat:
    """Beats for the trials in flight and watches for other workers' stale trials, from one thread.

    RDB storages only. Every tick (``heartbeat_tick_s``) the trials in flight beat in one transaction
    (``optuna_compat.record_heartbeats``) and the thread calls ``check`` (``fail_stale_trials`` in
    shared studies), so a dead worker's trials are failed on schedule whatever the main thread is
    doing. Entering runs the first check before the thread starts (a resumed study's stale trials are
    failed before the worker first counts the study's trials); the thread's next one is a tick later.
    The batch kernels release the GIL (``engine.batch``: ``nogil``), so the thread runs while they do;
    ``beat_now`` between chunks beats too if the thread was kept waiting.
    ``step`` is the whole schedule, driven by the thread with the monotonic clock (and by tests with a
    fake one).
    """

    def __init__(
        self,
        storage: optuna.storages.BaseStorage,
        interval_s: int,
        check: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._storage = storage
        self._on = heartbeat_enabled(storage)
        self.beat_every = self.check_every = heartbeat_tick_s(interval_s)
        self._check = check
        self._clock = clock
        self._ids: list[int] = []
        self._last = -math.inf
        self._next_check = -math.inf
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Heartbeat:
        if self._check is not None:
            self._run_check()
        if self._on or self._check is not None:
            self._thread = threading.Thread(target=self._run, name="gridctl-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def beat(self, trial_ids: list[int]) -> None:
        """Record a heartbeat for ``trial_ids`` now and keep beating for them."""
        self._ids = list(trial_ids)
        self._record()

    def _record(self) -> None:
        """Record a heartbeat for the trials in flight. Reads ``_ids`` and never assigns it, so the
        thread's beats cannot drop trials the main thread adds meanwhile (``track``)."""
        if self._on:
            self._last = self._clock()
            with contextlib.suppress(Exception):
                record_heartbeats(self._storage, list(self._ids))

    def beat_now(self) -> None:
        """Record a heartbeat for the trials in flight, unless one was recorded a beat interval ago."""
        if self._clock() - self._last >= self.beat_every:
            self._record()

    def track(self, trial_ids: list[int], recorded: bool = False) -> None:
        """Add trials to the beating set; record their first heartbeat now unless ``recorded``."""
        self._ids = [*self._ids, *trial_ids]
        if self._on and not recorded:
            with contextlib.suppress(Exception):
                record_heartbeats(self._storage, list(trial_ids))

    def step(self) -> float:
        """Beat if a beat interval has passed, check if a check interval has; the clock time of the next."""
        if self._on and self._clock() >= self._last + self.beat_every:  # the very sum returned below
            self._record()
        if self._check is not None and self._clock() >= self._next_check:
            self._run_check()
        wake = [self._last + self.beat_every] if self._on else []
        return min([*wake, self._next_check]) if self._check is not None else wake[0]

    def _run_check(self) -> None:
        """Call ``check`` now; the next check is a tick later."""
        assert self._check is not None
        with contextlib.suppress(Exception):  # a failed check (database away) is retried at the next
            self._check()
        self._next_check = self._clock() + self.check_every

    def _run(self) -> None:
        while True:
            wake = self.step()
            if self._stop.wait(max(wake - self._clock(), 0.0)):
                return


def fail_stale_trials(
    study: optuna.Study,
    heartbeat_s: int,
    unowned_seen: dict[int, float] | None = None,
    now_mono: float | None = None,
) -> None:
    """Fail the trials of a shared (RDB) study whose worker is gone, so they never stay RUNNING.

    Trials whose last heartbeat is more than ``stale_grace_s`` old by the database's clock (Optuna's
    rule, read and failed in two statements, not one transaction per trial), plus trials a worker
    died on between creating them and their first heartbeat (killed while asking one at a time: no
    heartbeat row, so the heartbeat rule never sees them). A live worker records the heartbeat
    milliseconds after creating a trial, so such a trial is failed once this worker has watched it
    stay without one for a grace period on its own monotonic clock (``unowned_seen`` remembers when
    each was first seen; no clocks of other machines involved), or at once when its start (the
    creating worker's clock) is 10 grace periods old. Journal studies: ``fail_dead_local_trials``.
    """
    grace = stale_grace_s(heartbeat_s)
    store = study_storage(study)
    db_now, running = running_trial_beats(store, study_id(study))
    now = datetime.datetime.now()
    mono = time.monotonic() if now_mono is None else now_mono
    doomed: list[int] = []
    unowned: set[int] = set()
    for tid, beat, started in running:
        if beat is not None:
            if is_stale(beat, db_now, grace):
                doomed.append(tid)
            continue
        first_seen = mono if unowned_seen is None else unowned_seen.setdefault(tid, mono)
        old = started is not None and (now - started).total_seconds() > 10 * grace
        if old or mono - first_seen > grace:
            doomed.append(tid)
        else:
            unowned.add(tid)
    if doomed:  # one transaction; a trial told or failed meanwhile is left as it is
        with contextlib.suppress(Exception):
            finish_trials(store, [{"trial_id": i, "state": optuna.trial.TrialState.FAIL} for i in doomed])
    if unowned_seen is not None:
        for gone in set(unowned_seen) - unowned:  # owned, finished or failed since: forget them
            del unowned_seen[gone]


def is_stale(last_beat: datetime.datetime, now: datetime.datetime, grace_s: float) -> bool:
    """A trial whose last heartbeat was recorded at ``last_beat`` is stale at ``now`` (Optuna's rule)."""
    return (now - last_beat).total_seconds() > grace_s


#: A journal trial still without its owner attr this long after it started was created by a worker killed
#: between the ask and the attr (a live worker records it milliseconds later): nobody will ever tell it.
UNOWNED_JOURNAL_TRIAL_S = 60.0


def fail_dead_local_trials(study: optuna.Study, now: datetime.datetime | None = None) -> int:
    """Journal studies have no heartbeat: fail RUNNING trials whose worker process on this host is gone,
    and trials that have had no owner for ``UNOWNED_JOURNAL_TRIAL_S`` (they stayed RUNNING after a kill
    through every later resume)."""
    host = socket.gethostname()
    now = now or datetime.datetime.now()
    failed = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner = t.system_attrs.get(WORKER_ATTR)
        if not owner:
            started = t.datetime_start
            if started is not None and (now - started).total_seconds() > UNOWNED_JOURNAL_TRIAL_S:
                with contextlib.suppress(Exception):
                    study.tell(t.number, state=optuna.trial.TrialState.FAIL)
                    failed += 1
            continue
        h, _, pid = owner.rpartition(":")
        if h == host and not pid_alive(int(pid)):
            with contextlib.suppress(Exception):
                study.tell(t.number, state=optuna.trial.TrialState.FAIL)
                failed += 1
    return failed
