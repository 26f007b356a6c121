"""Damaged study journals: a torn last record is healed on the next write; other damage is one line
naming the journal and the record, and never hides the other studies from `gridctl study list`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from gridctl.cli import app
from gridctl.configs.errors import GridctlError
from gridctl.research.optimize import STUDY_ATTR, open_storage
from gridctl.research.optuna_compat import first_bad_record, heal_torn_tail
from gridctl.research.studies import list_studies, load_study


def _study(studies: Path, name: str, trials: int = 3) -> Path:
    store = open_storage(name, studies_dir=studies)
    study = optuna.create_study(study_name=name, storage=store, direction="maximize")
    study.set_user_attr(STUDY_ATTR, {"name": "hand-made"})
    for i in range(trials):
        t = study.ask()
        t.suggest_float("x", 0.0, 1.0)
        study.tell(t, float(i))
    return studies / f"{name}.journal"


def test_a_torn_last_record_is_cut_off_and_the_study_goes_on(tmp_path: Path) -> None:
    journal = _study(tmp_path, "torn")
    whole = journal.read_bytes()
    journal.write_bytes(whole[:-7])  # a writer killed mid-append: the last record has no newline
    # Readers skip the torn record: the last trial's final state is lost, nothing else.
    assert len(load_study("torn", tmp_path).trials) == 3
    store = open_storage("torn", studies_dir=tmp_path, create=False)
    study = optuna.load_study(study_name="torn", storage=store)
    t = study.ask()  # the first write cuts the torn record off before appending
    t.suggest_float("x", 0.0, 1.0)
    study.tell(t, 9.0)
    data = journal.read_bytes()
    assert data.endswith(b"\n") and all(json.loads(line) for line in data.splitlines())
    reread = load_study("torn", tmp_path)
    assert [tr.value for tr in reread.trials if tr.value is not None][-1] == 9.0
    assert len(reread.trials) == 4


def test_heal_cuts_exactly_the_partial_line(tmp_path: Path) -> None:
    f = tmp_path / "j"
    f.write_bytes(b'{"a":1}\n{"b":2}\n{"c":')
    assert heal_torn_tail(f) == 5 and f.read_bytes() == b'{"a":1}\n{"b":2}\n'
    assert heal_torn_tail(f) == 0
    f.write_bytes(b'{"only":')  # nothing whole at all
    assert heal_torn_tail(f) == 8 and f.read_bytes() == b""


def _with_op(line: bytes, op: int) -> bytes:
    return json.dumps({**json.loads(line), "op_code": op}).encode() + b"\n"


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda lines: [*lines[:2], b"\x00\xff garbage\n", *lines[2:]], "record 3: not a JSON record"),
        (
            lambda lines: [
                *lines[:-1],
                json.dumps({**json.loads(lines[-1]), "op_code": 99}).encode() + b"\n",
            ],
            "unknown operation 99",
        ),
        # Records that are JSON but no object, or an op code of the wrong type: a list gave a TypeError.
        (lambda lines: [*lines, b"[1, 2, 3]\n"], "a JSON list, not a record object"),
        (lambda lines: [*lines, b'"op_code"\n'], "a JSON str, not a record object"),
        (lambda lines: [*lines, b"7\n"], "a JSON int, not a record object"),
        (lambda lines: [*lines, b'{"op_code": null}\n'], "unknown operation None"),
        (lambda lines: [*lines, b'{"op_code": true}\n'], "unknown operation True"),
        (lambda lines: [*lines, b'{"op_code": 4.0}\n'], "unknown operation 4.0"),
    ],
)
def test_a_damaged_record_is_named_and_the_other_studies_still_list(tmp_path: Path, damage, reason) -> None:
    journal = _study(tmp_path, "bad")
    _study(tmp_path, "good", trials=2)
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(damage(lines)))
    assert first_bad_record(journal) is not None
    with pytest.raises(GridctlError, match=reason) as err:
        load_study("bad", tmp_path)
    assert str(journal) in str(err.value) and "\n" not in str(err.value)
    rows = {r["study_name"]: r for r in list_studies(tmp_path)}
    assert rows["good"]["n_trials"] == 2 and reason in rows["bad"]["error"]
    res = CliRunner().invoke(app, ["study", "list", "--studies-dir", str(tmp_path)])
    assert res.exit_code == 0 and "good" in res.stdout and reason in res.stderr


def test_a_directory_named_like_a_journal_and_a_file_as_studies_dir_are_refused(tmp_path: Path) -> None:
    (tmp_path / "dir.journal").mkdir()
    with pytest.raises(GridctlError, match="not a journal file"):
        load_study("dir", tmp_path)
    assert list_studies(tmp_path)[0]["study_name"] == "dir"
    afile = tmp_path / "plain"
    afile.write_text("x")
    with pytest.raises(GridctlError, match="is a file, not a directory"):
        open_storage("s", studies_dir=afile)


def test_trials_of_killed_workers_are_failed_on_the_next_run_owned_or_not(tmp_path: Path) -> None:
    """A worker SIGKILLed between asking a trial and recording itself as its owner left the trial RUNNING
    through every later resume (seen: 1 of 7 after a kill -9 and a resume). Owned trials of dead
    processes fail at once; unowned ones once they are older than UNOWNED_JOURNAL_TRIAL_S."""
    import datetime
    import socket

    from gridctl.research.optimize.trials import WORKER_ATTR
    from gridctl.research.optimize.workers import UNOWNED_JOURNAL_TRIAL_S, fail_dead_local_trials
    from gridctl.research.optuna_compat import trial_id

    store = open_storage("killed", studies_dir=tmp_path)
    study = optuna.create_study(study_name="killed", storage=store, direction="maximize")
    study.set_user_attr(STUDY_ATTR, {"name": "hand-made"})
    dead = subprocess_pid_that_exited()
    owners = {
        "unowned": None,
        "dead": f"{socket.gethostname()}:{dead}",
        "alive": f"{socket.gethostname()}:{os.getpid()}",
        "other-host": f"not-{socket.gethostname()}:{dead}",
    }
    trials = {}
    for name, owner in owners.items():
        trials[name] = study.ask()
        if owner is not None:
            store.set_trial_system_attr(trial_id(study.trials[-1]), WORKER_ATTR, owner)
    start = max(t.datetime_start for t in study.trials)

    def states() -> dict[str, str]:
        by_number = {t.number: t.state.name for t in load_study("killed", tmp_path).trials}
        return {name: by_number[t.number] for name, t in trials.items()}

    younger = start + datetime.timedelta(seconds=UNOWNED_JOURNAL_TRIAL_S - 1)
    assert fail_dead_local_trials(study, now=younger) == 1
    assert states() == {"unowned": "RUNNING", "dead": "FAIL", "alive": "RUNNING", "other-host": "RUNNING"}
    older = start + datetime.timedelta(seconds=UNOWNED_JOURNAL_TRIAL_S + 1)
    assert fail_dead_local_trials(study, now=older) == 1
    assert states() == {"unowned": "FAIL", "dead": "FAIL", "alive": "RUNNING", "other-host": "RUNNING"}


def subprocess_pid_that_exited() -> int:
    """The id of a process that has exited (and was reaped)."""
    import subprocess

    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.mark.parametrize(("size", "refused"), [(190, False), (191, True), (300, True)])
def test_a_study_name_too_long_for_its_lock_files_is_refused(
    tmp_path: Path, size: int, refused: bool
) -> None:
    """A 300-byte study name raised ENAMETOOLONG when optimize created its journal."""
    from gridctl.research.optimize.storage import journal_path

    if refused:
        with pytest.raises(GridctlError, match=rf"is {size} bytes; at most 190"):
            journal_path("s" * size, tmp_path)
    else:
        assert journal_path("s" * size, tmp_path).name == "s" * size + ".journal"
        _study(tmp_path, "s" * size, trials=1)  # its journal and lock files can be made
