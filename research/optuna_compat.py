"""The one module that reaches into Optuna's private API (tested with Optuna 5.0; pyproject bounds it).

Every use of an Optuna internal is here, named in ``HOOKS``, and each hook has a canary test
(``tests/research/test_optuna_compat.py``) that fails naming the hook when an Optuna release changes under it:

* ``symlink_lock``: ``JournalFileSymlinkLock``'s ``_lock_file`` / ``_lock_target_file`` and its
  symlink protocol (the lock file is a symlink to ``<journal>.lock``-target; release unlinks it), so
  ``OwnedJournalLock`` and plain Optuna processes exclude each other on one journal.
* ``journal_backend``: ``JournalFileBackend``'s ``_file_path``, ``_lock``, ``_log_number_offset`` and
  ``optuna.storages.journal._file.get_lock_file``.
* ``journal_ops``: ``optuna.storages.journal._storage.JournalOperation`` (the op codes a record may carry).
* ``journal_storage``: ``JournalStorage._write_log`` / ``_sync_with_backend`` / ``_backend``.
* ``heartbeat``: ``optuna.storages._heartbeat.BaseHeartbeat`` / ``is_heartbeat_enabled``.
* ``trial_id``: ``Trial._trial_id`` / ``FrozenTrial._trial_id`` (the storage's key of a trial).
* ``study_storage``: ``Study._storage`` (system attrs and state written by trial id), ``Study._study_id``
  and ``optuna.storages._cached_storage._CachedStorage._backend`` (the RDB storage under Optuna's cache).
* ``suggest``: ``Trial._suggest(name, distribution)``, drawing one parameter with a given distribution.
* ``rdb_batch``: ``optuna.storages._rdb.models`` (the trial, param, attr, value, intermediate-value and
  heartbeat tables), ``optuna.storages._rdb.storage._create_scoped_session`` and
  ``RDBStorage.scoped_session``: a batch of trials created, finished or beaten in ONE transaction
  (Optuna writes one transaction per parameter, attr and state change).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from typing import Any

import optuna

#: The private Optuna APIs this module uses (see the module docstring); the canary tests cover each.
HOOKS = (
    "symlink_lock",
    "journal_backend",
    "journal_ops",
    "journal_storage",
    "heartbeat",
    "trial_id",
    "study_storage",
    "suggest",
    "rdb_batch",
)


def trial_id(trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
    """The storage's id of ``trial`` (not its number within the study)."""
    return trial._trial_id


def set_system_attr(study: optuna.Study, trial: optuna.Trial, key: str, value: Any) -> None:
    """Write a system attribute of a running trial (what optuna-dashboard and gridctl's workers read)."""
    study._storage.set_trial_system_attr(trial._trial_id, key, value)


def study_storage(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage ``study`` reads and writes: an RDB storage itself, not the cache Optuna wraps it in."""
    from optuna.storages._cached_storage import _CachedStorage

    storage = study._storage
    return storage._backend if isinstance(storage, _CachedStorage) else storage


def study_id(study: optuna.Study) -> int:
    """The storage's id of ``study``."""
    return study._study_id


def draw(trial: optuna.Trial, name: str, distribution: optuna.distributions.BaseDistribution) -> Any:
    """Draw parameter ``name`` from ``distribution`` (what ``study.ask(distributions)`` does per name)."""
    return trial._suggest(name, distribution)


def heartbeat_enabled(storage: optuna.storages.BaseStorage) -> bool:
    """True for a storage that records trial heartbeats (RDB with ``heartbeat_interval``)."""
    from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled

    return isinstance(storage, BaseHeartbeat) and is_heartbeat_enabled(storage)


def heal_torn_tail(path: str | os.PathLike[str]) -> int:
    """Cut a torn last record (a writer killed mid-append) off a journal; returns the bytes dropped.

    Call it only while holding the journal's lock: every writer appends whole lines under the lock, so
    a last line without its newline belongs to a writer that died. Left in place, the next append
    would be glued to it and the study could no longer be read.
    """
    with open(path, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        keep = size
        chunk = 65536
        while keep > 0:
            start = max(0, keep - chunk)
            f.seek(start)
            block = f.read(keep - start)
            nl = block.rfind(b"\n")
            if nl >= 0:
                keep = start + nl + 1
                break
            keep = start
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
        return size - keep


def journal_op_codes() -> set[int]:
    """The op codes Optuna's journal replay knows."""
    from optuna.storages.journal._storage import JournalOperation

    return {int(op) for op in JournalOperation}


def first_bad_record(path: str | os.PathLike[str]) -> tuple[int, str] | None:
    """(1-based line, reason) of the first record Optuna could not replay, or None when all are whole.

    A last line without its newline is a torn append (healed on the next write), not damage.
    """
    known = journal_op_codes()
    with open(path, "rb") as f:
        for n, line in enumerate(f, start=1):
            if not line.endswith(b"\n"):
                return None
            try:
                record = json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError):
                return n, "not a JSON record"
            if not isinstance(record, dict):  # a list was looked up in the op-code set: a TypeError
                return n, f"a JSON {type(record).__name__}, not a record object"
            op = record.get("op_code")
            if isinstance(op, bool) or not isinstance(op, int) or op not in known:
                return n, f"unknown operation {op!r}"
    return None


class OwnedJournalLock(optuna.storages.journal.JournalFileSymlinkLock):
    """Optuna's symlink lock on a journal file, with its holder (host:pid) recorded beside it.

    Optuna breaks a lock only once the journal file has stayed unchanged for ``grace_period`` (30 s)
    as timed by the waiter, so a worker killed while holding it (SIGKILL, the OOM killer) made the
    next worker on the study, or the resume, wait 30 s. Here the holder writes ``<journal>.lock.owner``
    right after taking the lock and removes it before letting go; a waiter that finds the lock held
    by a process of this host that no longer exists breaks it at once. Breaking is serialised by an
    flock on ``<journal>.lock.break`` (the kernel drops it if its holder dies), so two waiters never
    both break. Locks of other hosts, of owners still alive, and locks taken by plain Optuna (no
    owner file) keep Optuna's grace period. The lock file itself is Optuna's, so plain Optuna
    processes on the same journal (a notebook, the dashboard) still exclude and are excluded.
    """

    #: Longest sleep between two tries while waiting (Optuna backs off to 1 s).
    MAX_WAIT_STEP_S = 0.05

    def __init__(self, filepath: str, grace_period: int | None = 30) -> None:
        super().__init__(filepath, grace_period)
        self._owner_file = self._lock_file + ".owner"
        self._break_file = self._lock_file + ".break"

    def acquire(self) -> bool:
        """Take the lock, waiting while a live process holds it (see the class docstring)."""
        step = 0.001
        mtime: float | None = None
        unchanged_since = time.monotonic()
        while True:
            try:
                os.symlink(self._lock_target_file, self._lock_file)
            except FileExistsError:
                pass
            else:
                try:
                    self._write_owner()
                except BaseException:
                    optuna.storages.journal.JournalFileSymlinkLock.release(self)
                    raise
                return True
            if self._break_if_owner_dead():
                continue
            if self.grace_period is not None:
                try:
                    current: float | None = os.stat(self._lock_file).st_mtime  # the journal's mtime
                except OSError:
                    current = None  # released meanwhile
                if current != mtime:
                    mtime, unchanged_since = current, time.monotonic()
                elif time.monotonic() - unchanged_since > self.grace_period:
                    # Optuna's rule: nothing written for a whole grace period, the holder is gone
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self._owner_file)
                    with contextlib.suppress(RuntimeError):
                        optuna.storages.journal.JournalFileSymlinkLock.release(self)
                    mtime = None
                    continue
            time.sleep(step)
            step = min(step * 2, self.MAX_WAIT_STEP_S)

    def release(self) -> None:
        """Let go: the owner record first, then Optuna's release of the lock file."""
        if self._read_owner() == self._me():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._owner_file)
        super().release()

    @staticmethod
    def _me() -> str:
        return f"{socket.gethostname()}:{os.getpid()}"

    def _write_owner(self) -> None:
        tmp = f"{self._owner_file}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(self._me())
        os.replace(tmp, self._owner_file)

    def _read_owner(self) -> str | None:
        try:
            with open(self._owner_file, encoding="utf-8") as f:
                return f.read().strip()
        except OSError:
            return None

    def _owner_dead(self, owner: str | None) -> bool:
        host, _, pid = (owner or "").rpartition(":")
        return host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid))

    def _break_if_owner_dead(self) -> bool:
        """Break the lock if its recorded holder is a dead process of this host; True if it did."""
        if not self._owner_dead(self._read_owner()):
            return False
        import fcntl

        with open(self._break_file, "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            owner = self._read_owner()
            if not self._owner_dead(owner):
                return True  # another waiter broke it first: try to take it again
            os.unlink(self._owner_file)
            with contextlib.suppress(RuntimeError):
                optuna.storages.journal.JournalFileSymlinkLock.release(self)
        return True


class BatchSyncedJournalBackend(optuna.storages.journal.JournalFileBackend):
    """Optuna's journal file backend, fsync'ed once per batch instead of once per operation.

    Every operation is still appended (under the journal's lock) and flushed to the OS at once, so a
    killed process (Ctrl-C, SIGKILL) loses nothing it wrote; only a power cut could lose the
    operations since the last :meth:`sync` (the optimizer syncs after telling each batch). Per-op
    fsync costs ~3 ms on this class of machine and ~20 ops are written per trial.

    :meth:`held` keeps the journal's lock (and one append handle) for a run of operations, such as
    asking or telling a whole batch: taking the lock costs a symlink, an unlink and an open per
    operation otherwise. Other processes on the same journal wait at most :data:`HOLD_S` seconds.
    """

    #: Longest a held lock is kept before it is released and taken again (lets other workers in;
    #: a waiter breaks a lock whose journal has not changed for 30 s, and at once one of a dead
    #: local process: OwnedJournalLock).
    HOLD_S = 2.0

    def __init__(self, file_path: str) -> None:
        super().__init__(file_path, lock_obj=OwnedJournalLock(file_path))
        self._out: Any = None  # the append handle while the lock is held
        self._in: Any = None  # a read handle while the lock is held
        self._held_since = 0.0
        self.takes = 0  # times the lock was taken by held() or re-taken within it (other workers' window)
        self._pinned = False  # inside pinned(): the held lock is not let go between operations

    @contextlib.contextmanager
    def held(self) -> Any:
        """Hold the lock for the operations inside the ``with`` block (re-entrant: nested is a no-op)."""
        if self._out is not None:
            yield
            return
        self._take()
        try:
            yield
        finally:
            self._give()

    @contextlib.contextmanager
    def pinned(self) -> Any:
        """Inside :meth:`held`: let other writers in now if the lock was held ``HOLD_S`` already, then
        keep it, without letting go, until the block ends (a count and the writes that rely on it)."""
        if self._out is None or self._pinned:
            yield
            return
        if time.monotonic() - self._held_since > self.HOLD_S:
            self._give()
            self._take()
        self._pinned = True
        try:
            yield
        finally:
            self._pinned = False

    def _take(self) -> None:
        self._lock.acquire()
        try:
            heal_torn_tail(self._file_path)
            self._out = open(self._file_path, "ab")  # noqa: SIM115 - kept open while the lock is held
            self._in = open(self._file_path, "rb")  # noqa: SIM115
        except BaseException:
            self._close_handles()
            self._lock.release()
            raise
        self._held_since = time.monotonic()
        self.takes += 1

    def _close_handles(self) -> None:
        for handle in (self._out, self._in):
            if handle is not None:
                handle.close()
        self._out = self._in = None

    def _give(self) -> None:
        try:
            self._close_handles()
        finally:
            self._lock.release()

    def read_logs(self, log_number_from: int) -> Any:
        """The logs from ``log_number_from`` on; while the lock is held, read through one open handle.

        Under the lock only this process appends, and it writes whole lines, so everything after the
        last known offset is complete; anything unusual (an unknown offset, a partial line left by a
        killed writer, a line that is not JSON) goes through Optuna's own reader.
        """
        start = self._log_number_offset.get(log_number_from)
        if self._in is None or start is None:
            return super().read_logs(log_number_from)
        self._in.seek(start)
        data = self._in.read()
        if not data:
            return iter(())
        if not data.endswith(b"\n"):
            return super().read_logs(log_number_from)
        lines = data.splitlines(keepends=True)
        try:
            logs = [json.loads(line) for line in lines]
        except json.JSONDecodeError:
            return super().read_logs(log_number_from)
        offset, number = start, log_number_from
        for line in lines:
            offset += len(line)
            number += 1
            self._log_number_offset[number] = offset
        return iter(logs)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        """Append ``logs`` under the lock and flush them to the OS (no fsync)."""
        payload = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n").encode()
        if self._out is not None:
            if not self._pinned and time.monotonic() - self._held_since > self.HOLD_S:
                self._give()  # let another worker append between our operations
                self._take()
            self._out.write(payload)
            self._out.flush()
            return
        from optuna.storages.journal._file import get_lock_file

        with get_lock_file(self._lock):
            heal_torn_tail(self._file_path)
            with open(self._file_path, "ab") as f:
                f.write(payload)
                f.flush()

    def sync(self) -> None:
        """fsync the journal file (durable on disk)."""
        with open(self._file_path, "ab") as f:
            os.fsync(f.fileno())


class TimedJournalStorage(optuna.storages.JournalStorage):
    """Optuna's journal storage, counting the seconds spent writing and replaying its log.

    Every storage operation goes through ``_write_log`` and/or ``_sync_with_backend``, so
    ``io_s`` is the storage's share of any stretch of work (the optimizer splits ask time into
    sampler and storage with it).
    """

    def __init__(self, backend: optuna.storages.journal.BaseJournalBackend) -> None:
        self.io_s = 0.0
        super().__init__(backend)

    def _write_log(self, op_code: int, extra_fields: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        try:
            super()._write_log(op_code, extra_fields)
        finally:
            self.io_s += time.perf_counter() - t0

    def _sync_with_backend(self) -> None:
        t0 = time.perf_counter()
        try:
            super()._sync_with_backend()
        finally:
            self.io_s += time.perf_counter() - t0


def sync_storage(storage: optuna.storages.BaseStorage) -> None:
    """Make a journal storage durable on disk (RDB storages commit per operation)."""
    backend = getattr(storage, "_backend", None)
    if isinstance(backend, BatchSyncedJournalBackend):
        backend.sync()


def storage_held(storage: optuna.storages.BaseStorage) -> contextlib.AbstractContextManager[Any]:
    """Hold a journal's lock for a run of operations (RDB storages: nothing to hold)."""
    backend = getattr(storage, "_backend", None)
    if isinstance(backend, BatchSyncedJournalBackend):
        return backend.held()
    return contextlib.nullcontext()


def storage_pinned(storage: optuna.storages.BaseStorage) -> contextlib.AbstractContextManager[Any]:
    """Within :func:`storage_held`: keep a journal's lock without letting go for the block (see
    :meth:`BatchSyncedJournalBackend.pinned`; other storages: nothing to hold)."""
    backend = getattr(storage, "_backend", None)
    if isinstance(backend, BatchSyncedJournalBackend):
        return backend.pinned()
    return contextlib.nullcontext()


def lock_takes(storage: optuna.storages.BaseStorage) -> int:
    """How often a journal's held lock was taken so far: a change means other writers may have written
    in between (0 for storages without :meth:`BatchSyncedJournalBackend.held`)."""
    backend = getattr(storage, "_backend", None)
    return backend.takes if isinstance(backend, BatchSyncedJournalBackend) else 0


def storage_io_s(storage: optuna.storages.BaseStorage) -> float | None:
    """Seconds a journal storage has spent on its log so far (None when not measured)."""
    return getattr(storage, "io_s", None)


def pid_alive(pid: int) -> bool:
    """True while a process ``pid`` of this host exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ----------------------------------------------------------------------------------------------------
# rdb_batch: a batch of trials per transaction on an RDB storage
# ----------------------------------------------------------------------------------------------------


def is_rdb(storage: optuna.storages.BaseStorage) -> bool:
    """True for Optuna's RDB storage (PostgreSQL, SQLite, MySQL), whose batch writes are below."""
    return isinstance(storage, optuna.storages.RDBStorage)


def create_running_trials(
    storage: optuna.storages.RDBStorage,
    study_id: int,
    drawn: list[dict[str, Any]],
    distributions: dict[str, optuna.distributions.BaseDistribution],
    system_attrs: list[dict[str, Any]],
    target: int | None = None,
) -> list[tuple[int, int]]:
    """Create one RUNNING trial per parameter dict in ``drawn`` in one transaction; ``(trial id, number)``.

    Each trial holds its parameters, its ``system_attrs`` entry and (on a heartbeat storage) its first
    heartbeat from the start, as Optuna's ``create_new_trial(template_trial=...)`` writes them one trial at a
    time. Numbers are assigned as Optuna assigns them (trials of the study with a lower id), under
    the same lock on the study row Optuna's trial creation takes.

    With ``target``, only the first ``target - n`` dicts are created, where ``n`` is the study's
    COMPLETE, PRUNED and RUNNING trials counted inside the transaction after the study row is locked:
    two workers claiming at once are serialised by that lock, and the second sees the first's trials
    (PostgreSQL reads committed rows per statement), so together they never create more than the target.
    The result may then be shorter than ``drawn`` (empty when the study is full).
    """
    import datetime

    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    beat = heartbeat_enabled(storage)
    with _create_scoped_session(storage.scoped_session) as session:
        models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
        if target is not None:
            counted = (
                session.query(models.TrialModel.trial_id)
                .filter(
                    models.TrialModel.study_id == study_id,
                    models.TrialModel.state.in_(
                        [
                            optuna.trial.TrialState.COMPLETE,
                            optuna.trial.TrialState.PRUNED,
                            optuna.trial.TrialState.RUNNING,
                        ]
                    ),
                )
                .count()
            )
            drawn = drawn[: max(target - counted, 0)]
            if not drawn:
                return []
        now = datetime.datetime.now()
        rows = [
            models.TrialModel(
                study_id=study_id, number=None, state=optuna.trial.TrialState.RUNNING, datetime_start=now
            )
            for _ in drawn
        ]
        session.add_all(rows)
        session.flush()
        ordered = sorted(rows, key=lambda r: r.trial_id)
        before = ordered[0].count_past_trials(session) if ordered else 0
        for i, row in enumerate(ordered):
            row.number = before + i
        for row, params, attrs in zip(rows, drawn, system_attrs[: len(drawn)], strict=True):
            session.add_all(
                models.TrialParamModel(
                    trial_id=row.trial_id,
                    param_name=name,
                    param_value=distributions[name].to_internal_repr(value),
                    distribution_json=optuna.distributions.distribution_to_json(distributions[name]),
                )
                for name, value in params.items()
            )
            session.add_all(
                models.TrialSystemAttributeModel(trial_id=row.trial_id, key=key, value_json=json.dumps(value))
                for key, value in attrs.items()
            )
            if beat:
                session.add(models.TrialHeartbeatModel(trial_id=row.trial_id))
        session.flush()
        return [(row.trial_id, row.number) for row in rows]


def finish_trials(storage: optuna.storages.RDBStorage, finishes: list[dict[str, Any]]) -> set[int]:
    """Finish trials in one transaction; returns the ids finished (those still RUNNING).

    Each item: ``trial_id``, ``state`` (a finished TrialState), ``values`` (list or None),
    ``user_attrs``, ``system_attrs`` and ``intermediate`` (step -> value), written as Optuna's
    ``set_trial_*`` calls and ``set_trial_state_values`` write them. A trial another worker has
    finished meanwhile (failed as stale) is left as it is and not in the result.
    """
    import datetime

    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    if not finishes:
        return set()
    ids = [f["trial_id"] for f in finishes]
    with _create_scoped_session(storage.scoped_session) as session:
        rows = (
            session.query(models.TrialModel)
            .filter(models.TrialModel.trial_id.in_(ids))
            .with_for_update()
            .all()
        )
        running = {r.trial_id: r for r in rows if r.state == optuna.trial.TrialState.RUNNING}
        now = datetime.datetime.now()
        for f in finishes:
            row = running.get(f["trial_id"])
            if row is None:
                continue
            tid = row.trial_id
            session.add_all(
                models.TrialUserAttributeModel(trial_id=tid, key=k, value_json=json.dumps(v))
                for k, v in f.get("user_attrs", {}).items()
            )
            session.add_all(
                models.TrialSystemAttributeModel(trial_id=tid, key=k, value_json=json.dumps(v))
                for k, v in f.get("system_attrs", {}).items()
            )
            for step, value in f.get("intermediate", {}).items():
                stored, kind = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(value)
                session.add(
                    models.TrialIntermediateValueModel(
                        trial_id=tid, step=step, intermediate_value=stored, intermediate_value_type=kind
                    )
                )
            for objective, value in enumerate(f.get("values") or ()):
                stored, kind = models.TrialValueModel.value_to_stored_repr(value)
                session.add(
                    models.TrialValueModel(trial_id=tid, objective=objective, value=stored, value_type=kind)
                )
            row.state = f["state"]
            row.datetime_complete = now
        return set(running)


#: First key of the PostgreSQL advisory lock :func:`claim_lock` takes (the second is the study id).
CLAIM_LOCK_KEY = 0x67726964  # "grid"


@contextlib.contextmanager
def claim_lock(storage: optuna.storages.BaseStorage, study_id: int) -> Any:
    """Hold a PostgreSQL advisory lock on ``study_id`` for the block (other storages: nothing held).

    Workers asking one trial at a time through Optuna (profiles with a pruner) count the study's
    trials and create the next one under it, so two of them cannot both take the last place.
    Optuna's own writes never take it, so it cannot deadlock with them.
    """
    if not is_rdb(storage) or storage.engine.dialect.name != "postgresql":  # type: ignore[attr-defined]
        yield
        return
    import sqlalchemy

    keys = {"a": CLAIM_LOCK_KEY, "b": study_id}
    with storage.engine.connect() as conn:  # type: ignore[attr-defined]
        conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:a, :b)"), keys)
        conn.commit()
        try:
            yield
        finally:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:a, :b)"), keys)
            conn.commit()


def record_heartbeats(storage: optuna.storages.BaseStorage, trial_ids: list[int]) -> None:
    """Record a heartbeat of every trial in ``trial_ids`` in one transaction (RDB heartbeat storages)."""
    import sqlalchemy
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    if not trial_ids or not is_rdb(storage):
        return
    model = models.TrialHeartbeatModel
    with _create_scoped_session(storage.scoped_session, True) as session:  # type: ignore[attr-defined]
        have = {tid for (tid,) in session.query(model.trial_id).filter(model.trial_id.in_(trial_ids)).all()}
        if have:
            session.execute(
                sqlalchemy.update(model)
                .where(model.trial_id.in_(sorted(have)))
                .values(heartbeat=sqlalchemy.func.now())
            )
        session.add_all(model(trial_id=tid) for tid in trial_ids if tid not in have)


def running_trial_beats(
    storage: optuna.storages.BaseStorage, study_id: int
) -> tuple[Any, list[tuple[int, Any, Any]]]:
    """The database's clock now and every RUNNING trial of the study as ``(trial id, last heartbeat or
    None, datetime_start in local time)``, in one read (RDB heartbeat storages; what Optuna's stale
    check reads).

    Heartbeats and ``now`` are both the database's clock (what ``record_heartbeats`` writes), so no
    worker's clock is involved in judging another worker's trials.
    """
    import datetime

    import sqlalchemy
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    trial, beat = models.TrialModel, models.TrialHeartbeatModel
    with _create_scoped_session(storage.scoped_session) as session:  # type: ignore[attr-defined]
        now = session.execute(sqlalchemy.select(sqlalchemy.func.now())).scalar()
        rows = (
            session.query(trial.trial_id, beat.heartbeat, trial._datetime_start_utc)
            .outerjoin(beat, beat.trial_id == trial.trial_id)
            .filter(trial.study_id == study_id, trial.state == optuna.trial.TrialState.RUNNING)
            .all()
        )

    def strip(d: Any) -> Any:
        return d.replace(tzinfo=None) if d is not None else None

    def local(d: Any) -> Any:  # stored as naive UTC: the local time Optuna's FrozenTrial shows
        return d.replace(tzinfo=datetime.UTC).astimezone().replace(tzinfo=None) if d is not None else None

    return strip(now), [(int(i), strip(h), local(d)) for i, h, d in rows]
