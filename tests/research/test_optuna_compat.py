"""Canaries for gridctl.research.optuna_compat: one per private Optuna hook, each naming it on failure.

An Optuna release that moves an internal the optimizer relies on fails here first, with the hook's
name, instead of halfway through a study or (the lock protocol) by silently letting plain Optuna
processes past gridctl's lock. Nothing outside optuna_compat may touch Optuna's internals (last test).
"""

from __future__ import annotations

import ast
import json
import os
import threading
import time
from pathlib import Path

import optuna
import pytest

from gridctl.research import optuna_compat as oc

REPO = Path(__file__).resolve().parents[2]


def _canary(hook: str, ok: bool, detail: str = "") -> None:
    assert hook in oc.HOOKS
    if not ok:
        pytest.fail(
            f"Optuna private hook {hook!r} no longer holds under Optuna {optuna.__version__} "
            f"(gridctl.research.optuna_compat): {detail}"
        )


def test_every_hook_has_a_canary() -> None:
    names = {n.removeprefix("test_hook_") for n in globals() if n.startswith("test_hook_")}
    assert names == set(oc.HOOKS)


def _taken_in_thread(lock) -> threading.Event:
    got = threading.Event()

    def take() -> None:
        lock.acquire()
        got.set()

    threading.Thread(target=take, daemon=True).start()
    return got


def test_hook_symlink_lock(tmp_path: Path) -> None:
    journal = tmp_path / "s.journal"
    journal.touch()
    plain = optuna.storages.journal.JournalFileSymlinkLock(str(journal))
    for name in ("_lock_file", "_lock_target_file"):
        _canary("symlink_lock", hasattr(plain, name), f"JournalFileSymlinkLock.{name} is gone")
    assert plain.acquire()
    _canary("symlink_lock", os.path.islink(plain._lock_file), "the lock is no longer a symlink")
    # gridctl's lock and plain Optuna's exclude each other on one journal.
    ours = oc.OwnedJournalLock(str(journal), grace_period=None)
    got = _taken_in_thread(ours)
    time.sleep(0.3)
    _canary("symlink_lock", not got.is_set(), "OwnedJournalLock went past a plain Optuna lock")
    plain.release()
    _canary("symlink_lock", got.wait(5), "OwnedJournalLock never took the released lock")
    other = optuna.storages.journal.JournalFileSymlinkLock(str(journal))
    got_plain = _taken_in_thread(other)
    time.sleep(0.3)
    _canary("symlink_lock", not got_plain.is_set(), "plain Optuna went past OwnedJournalLock")
    ours.release()
    _canary("symlink_lock", got_plain.wait(5), "plain Optuna never took the released lock")
    other.release()


def test_hook_journal_backend(tmp_path: Path) -> None:
    from optuna.storages.journal import JournalFileBackend

    path = tmp_path / "b.journal"
    plain = JournalFileBackend(str(path))
    for name in ("_file_path", "_lock", "_log_number_offset"):
        _canary("journal_backend", hasattr(plain, name), f"JournalFileBackend.{name} is gone")
    try:
        from optuna.storages.journal._file import get_lock_file  # noqa: F401
    except ImportError as exc:
        _canary("journal_backend", False, str(exc))
    ours = oc.BatchSyncedJournalBackend(str(path))
    logs = [{"op_code": 0, "n": i} for i in range(3)]
    ours.append_logs(logs[:1])  # outside held(): through Optuna's lock helper
    with ours.held():
        ours.append_logs(logs[1:])
        read = list(ours.read_logs(0))
    _canary("journal_backend", read == logs, f"read back {read}")
    _canary("journal_backend", list(plain.read_logs(1)) == logs[1:], "plain Optuna reads another log")


def test_hook_journal_ops(tmp_path: Path) -> None:
    try:
        codes = oc.journal_op_codes()
    except ImportError as exc:
        _canary("journal_ops", False, str(exc))
    # Every op code a real study writes is one the check knows, and the check knows no others.
    storage = oc.TimedJournalStorage(oc.BatchSyncedJournalBackend(str(tmp_path / "o.journal")))
    study = optuna.create_study(storage=storage, study_name="o")
    study.set_user_attr("k", 1)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    written = {json.loads(line)["op_code"] for line in (tmp_path / "o.journal").read_bytes().splitlines()}
    _canary("journal_ops", written <= codes, f"written {sorted(written)}, known {sorted(codes)}")
    _canary("journal_ops", oc.first_bad_record(tmp_path / "o.journal") is None, "a whole journal flagged")


def test_hook_journal_storage(tmp_path: Path) -> None:
    storage = oc.TimedJournalStorage(oc.BatchSyncedJournalBackend(str(tmp_path / "t.journal")))
    study = optuna.create_study(storage=storage, study_name="t")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    _canary("journal_storage", storage.io_s > 0, "_write_log / _sync_with_backend never called")
    _canary("journal_storage", isinstance(getattr(storage, "_backend", None), oc.BatchSyncedJournalBackend))
    oc.sync_storage(storage)  # reaches the backend through _backend
    with oc.storage_held(storage):
        _canary("journal_storage", storage._backend._out is not None, "storage_held did not hold")


def test_hook_heartbeat(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        beating = optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=2)
    plain = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'p.db'}")
    _canary("heartbeat", oc.heartbeat_enabled(beating), "a heartbeat RDB storage is not seen as one")
    _canary("heartbeat", not oc.heartbeat_enabled(plain), "a plain RDB storage is seen as beating")
    study = optuna.create_study(storage=beating, study_name="h")
    trial = study.ask()
    oc.record_heartbeats(beating, [oc.trial_id(trial)])
    time.sleep(3.5)  # past the grace period with no further beat: Optuna's stale check fails it
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        optuna.storages.fail_stale_trials(study)
    _canary("heartbeat", study.trials[0].state == optuna.trial.TrialState.FAIL, str(study.trials[0].state))


def test_hook_trial_id() -> None:
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name="i")
    study.ask()
    second = study.ask()
    study_id = storage.get_study_id_from_name("i")
    expected = storage.get_trial_id_from_study_id_trial_number(study_id, second.number)
    _canary("trial_id", oc.trial_id(second) == expected, f"{oc.trial_id(second)} != {expected}")
    _canary("trial_id", oc.trial_id(study.trials[1]) == expected, "FrozenTrial id differs")


def test_hook_study_storage(tmp_path: Path) -> None:
    rdb = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}")
    shared = optuna.create_study(storage=rdb, study_name="s")
    _canary("study_storage", oc.study_storage(shared) is rdb, type(oc.study_storage(shared)).__name__)
    study = optuna.create_study()
    trial = study.ask()
    oc.set_system_attr(study, trial, "gridctl_worker", "host:1")
    _canary("study_storage", study.trials[0].system_attrs.get("gridctl_worker") == "host:1")
    storage = oc.study_storage(study)
    _canary("study_storage", storage.get_study_id_from_name(study.study_name) == oc.study_id(study))
    storage.set_trial_state_values(oc.trial_id(trial), state=optuna.trial.TrialState.FAIL)
    _canary(
        "study_storage", study.trials[0].state == optuna.trial.TrialState.FAIL, str(study.trials[0].state)
    )


def test_hook_suggest() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    trial = study.ask()
    dist = optuna.distributions.IntDistribution(5, 9)
    value = oc.draw(trial, "rungs", dist)
    _canary("suggest", 5 <= value <= 9 and trial.params == {"rungs": value}, f"drew {value}, {trial.params}")
    _canary("suggest", oc.draw(trial, "rungs", dist) == value, "a second draw of one name changed it")
    study.tell(trial, 1.0)
    _canary("suggest", study.trials[0].distributions == {"rungs": dist}, str(study.trials[0].distributions))


def test_hook_rdb_batch(tmp_path: Path) -> None:
    # Trials created, beaten and finished in batches read back exactly as Optuna's own ask/tell writes them.
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        ours = optuna.storages.RDBStorage(
            f"sqlite:///{tmp_path / 'b.db'}", heartbeat_interval=1, grace_period=2
        )
    theirs = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'o.db'}")
    dists = {
        "rungs": optuna.distributions.IntDistribution(2, 9),
        "step": optuna.distributions.FloatDistribution(10.0, 200.0, log=True),
        "policy": optuna.distributions.CategoricalDistribution(["a", "b"]),
    }
    drawn = [{"rungs": 3, "step": 12.5, "policy": "b"}, {"rungs": 9, "step": 190.0, "policy": "a"}] * 2
    a = optuna.create_study(storage=ours, study_name="batch")
    b = optuna.create_study(storage=theirs, study_name="batch")
    a.enqueue_trial({})  # a waiting trial of the study's own: numbers continue after it
    b.enqueue_trial({})
    made = oc.create_running_trials(
        ours, ours.get_study_id_from_name("batch"), drawn, dists, [{"w": "h:1"}] * 4
    )
    _canary("rdb_batch", [n for _, n in made] == [1, 2, 3, 4], f"numbers {made}")
    beaten = time.monotonic()
    oc.record_heartbeats(ours, [tid for tid, _ in made])
    done = oc.finish_trials(
        ours,
        [
            {"trial_id": made[0][0], "state": optuna.trial.TrialState.COMPLETE, "values": [0.5],
             "user_attrs": {"m": {"x": 1}}, "system_attrs": {"constraints": [-1.0, 2.0]}},
            {"trial_id": made[1][0], "state": optuna.trial.TrialState.PRUNED, "values": [-0.25],
             "intermediate": {0: -0.25}, "user_attrs": {"m": {"x": 2}}},
            {"trial_id": made[2][0], "state": optuna.trial.TrialState.FAIL},
        ],
    )  # fmt: skip
    _canary("rdb_batch", done == {made[0][0], made[1][0], made[2][0]}, f"finished {done}")
    again = oc.finish_trials(ours, [{"trial_id": made[0][0], "state": optuna.trial.TrialState.FAIL}])
    _canary("rdb_batch", again == set(), "a finished trial was finished again")
    # the same trials through Optuna's public calls, one write at a time
    sid = theirs.get_study_id_from_name("batch")
    for params in drawn:
        theirs.create_new_trial(
            sid,
            template_trial=optuna.trial.FrozenTrial(
                number=-1, state=optuna.trial.TrialState.RUNNING, value=None, values=None,
                datetime_start=None, datetime_complete=None, params=params, distributions=dists,
                user_attrs={}, system_attrs={"w": "h:1"}, intermediate_values={}, trial_id=-1,
            ),
        )  # fmt: skip
    tb = b.get_trials(deepcopy=False)
    theirs.set_trial_user_attr(oc.trial_id(tb[1]), "m", {"x": 1})
    theirs.set_trial_system_attr(oc.trial_id(tb[1]), "constraints", [-1.0, 2.0])
    b.tell(1, 0.5)
    theirs.set_trial_user_attr(oc.trial_id(tb[2]), "m", {"x": 2})
    theirs.set_trial_intermediate_value(oc.trial_id(tb[2]), 0, -0.25)
    b.tell(2, state=optuna.trial.TrialState.PRUNED)
    b.tell(3, state=optuna.trial.TrialState.FAIL)

    def seen(t: optuna.trial.FrozenTrial) -> tuple:
        return (t.number, t.state, t.values, t.params, t.distributions, t.user_attrs, t.system_attrs,
                t.intermediate_values, t.constraints)  # fmt: skip

    got, want = [seen(t) for t in a.get_trials()], [seen(t) for t in b.get_trials()]
    _canary("rdb_batch", got == want, f"{got} != {want}")
    running = [t for t in a.get_trials() if t.state == optuna.trial.TrialState.RUNNING]
    _canary("rdb_batch", [t.number for t in running] == [4], str(running))
    # the running trials, their heartbeats and the database's clock, as Optuna's stale check reads them
    now, beats = oc.running_trial_beats(ours, ours.get_study_id_from_name("batch"))
    _canary("rdb_batch", [tid for tid, _, _ in beats] == [made[3][0]], str(beats))
    _canary("rdb_batch", beats[0][1] is not None and beats[0][2] == a.trials[4].datetime_start, str(beats))
    age = (now - beats[0][1]).total_seconds()  # one clock (SQLite's has whole seconds: +-1)
    _canary("rdb_batch", -1 <= age <= time.monotonic() - beaten + 1, f"{now} vs {beats[0][1]}")
    time.sleep(3.5)  # past the grace period: the batch's heartbeat rows are what Optuna's check reads
    now, beats = oc.running_trial_beats(ours, ours.get_study_id_from_name("batch"))
    stale = [tid for tid, beat, _ in beats if (now - beat).total_seconds() > 2]
    _canary("rdb_batch", stale == ours._get_stale_trial_ids(ours.get_study_id_from_name("batch")), str(stale))
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        optuna.storages.fail_stale_trials(a)
    _canary("rdb_batch", a.trials[4].state == optuna.trial.TrialState.FAIL, str(a.trials[4].state))


def test_no_module_but_optuna_compat_touches_optuna_internals() -> None:
    private = {
        "_trial_id",
        "_storage",
        "_study_id",
        "_suggest",
        "_lock_file",
        "_lock",
        "_log_number_offset",
        "_backend",
    }
    offenders = []
    for pkg in ("configs", "data", "engine", "research", "live_bridge"):
        for path in sorted((REPO / pkg).rglob("*.py")):
            if path.name == "optuna_compat.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("optuna"):
                    if any(part.startswith("_") for part in node.module.split(".")):
                        offenders.append(f"{path.relative_to(REPO)}: from {node.module}")
                elif isinstance(node, ast.Attribute) and node.attr in private:
                    is_self = isinstance(node.value, ast.Name) and node.value.id == "self"
                    if not is_self:
                        offenders.append(f"{path.relative_to(REPO)}:{node.lineno} .{node.attr}")
    assert offenders == []
