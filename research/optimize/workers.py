"""Worker liveness: stop signals, heartbeats of the trials in flight, and failing a dead worker's trials."""

from __future__ import annotations

import contextlib
import datetime
import math
import signal
import socket
import threading
import time
import warnings
from typing import Any

import optuna

from gridctl.research.optimize.storage import stale_grace_s
from gridctl.research.optimize.trials import WORKER_ATTR
from gridctl.research.optuna_compat import (
    fail_trial,
    heartbeat_enabled,
    pid_alive,
    record_heartbeats,
    trial_id,
)


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


class _Heartbeat:
    """Records heartbeats of the trials in flight (RDB storages only), from a thread and on demand.

    All trials in flight beat in one transaction (``optuna_compat.record_heartbeats``). The kernel
    holds the GIL while a batch runs, so the thread may pause for the length of one batch; in shared
    studies the batch runs in chunks with ``beat_now`` between them, which records at most every
    quarter heartbeat, far more often than the grace period (``stale_grace_s``) needs.
    """

    def __init__(self, storage: optuna.storages.BaseStorage, interval_s: int) -> None:
        self._storage = storage
        self._on = heartbeat_enabled(storage)
        self._interval = interval_s
        self._ids: list[int] = []
        self._last = -math.inf
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

    def beat(self, trial_ids: list[int]) -> None:
        """Record a heartbeat for ``trial_ids`` now and keep beating for them."""
        self._ids = list(trial_ids)
        if self._on:
            self._last = time.monotonic()
            with contextlib.suppress(Exception):
                record_heartbeats(self._storage, self._ids)

    def beat_now(self) -> None:
        """Record a heartbeat for the trials in flight, unless one was recorded a quarter beat ago."""
        if time.monotonic() - self._last >= self._interval / 4:
            self.beat(self._ids)

    def track(self, trial_ids: list[int], recorded: bool = False) -> None:
        """Add trials to the beating set; record their first heartbeat now unless ``recorded``."""
        self._ids = [*self._ids, *trial_ids]
        if self._on and not recorded:
            with contextlib.suppress(Exception):
                record_heartbeats(self._storage, list(trial_ids))

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.beat(self._ids)


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


#: A journal trial still without its owner attr this long after it started was created by a worker killed
#: between the ask and the attr (a live worker records it milliseconds later): nobody will ever tell it.
UNOWNED_JOURNAL_TRIAL_S = 60.0


def _fail_dead_local_trials(study: optuna.Study, now: datetime.datetime | None = None) -> int:
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
