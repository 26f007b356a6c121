"""Many workers on one study in a real PostgreSQL: every trial counted once, a SIGKILLed worker never sticks.

The server comes from ``GRIDCTL_TEST_PG_URL`` (.ci/run starts one). Without it, locally, the fixture
starts a throwaway server itself when PostgreSQL's initdb is installed; under CI=true a missing URL is
a failure, never a skip.
"""

from __future__ import annotations

import datetime
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from gridctl.data.sample import write_sample
from gridctl.research import optimize as opt
from gridctl.research.optimize import open_storage, sqlalchemy_url
from gridctl.research.profiles import PROFILES_DIR

REPO = Path(__file__).resolve().parents[2]
#: Trials a worker told: wide prunes the ones that ran their configured intrabar rule only because they
#: could not beat the best (optimize.contenders_only); both count towards the target.
TOLD = ("COMPLETE", "PRUNED")
HOW = (
    "set GRIDCTL_TEST_PG_URL to a PostgreSQL database, e.g. as .ci/run does: initdb -D DIR -A trust -U "
    "postgres (as user postgres), pg_ctl -D DIR -o '-h 127.0.0.1 -p PORT' start, createdb -h 127.0.0.1 "
    "-p PORT gridctl_test, export GRIDCTL_TEST_PG_URL=postgresql://postgres@127.0.0.1:PORT/gridctl_test"
)


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    url = os.environ.get("GRIDCTL_TEST_PG_URL")
    if url:
        yield url
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"GRIDCTL_TEST_PG_URL is not set under CI: {HOW}")
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        pytest.fail(f"no PostgreSQL server found (apt-get install postgresql) and {HOW}")
    bindir = Path(bins[-1]).parent
    tmp = Path(tempfile.mkdtemp(prefix="gridctl-test-pg-"))
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def run(*c: str) -> None:
        subprocess.run(_as_postgres([str(bindir / c[0]), *c[1:]]), check=True, capture_output=True)

    run("initdb", "-D", str(tmp / "data"), "-A", "trust", "-U", "postgres")
    run("pg_ctl", "-D", str(tmp / "data"), "-o", f"-h 127.0.0.1 -p {port} -k {tmp}", "-l", str(tmp / "log"),
        "-w", "start")  # fmt: skip
    try:
        run("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "gridctl_test")
        yield f"postgresql://postgres@127.0.0.1:{port}/gridctl_test"
    finally:
        stop = [str(bindir / "pg_ctl"), "-D", str(tmp / "data"), "-m", "immediate", "stop"]
        subprocess.run(_as_postgres(stop), capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data dir with a small sample, a small profile file)."""
    base = tmp_path_factory.mktemp("dist")
    write_sample(base / "data", days=6)
    tree = yaml.safe_load((PROFILES_DIR / "wide.yaml").read_text())
    tree.update(name="dist", trials=64, batch_size=4)
    tree["data"].update(start="2024-01-02", end="2024-01-04")
    path = base / "dist.yaml"
    path.write_text(yaml.safe_dump(tree))
    return base / "data", path


def _worker(
    setup: tuple[Path, Path], url: str, study: str, trials: int, heartbeat: int = 10
) -> subprocess.Popen:
    data, profile = setup
    cmd = [sys.executable, "-m", "gridctl.cli", "optimize", "--profile", str(profile), "--data", str(data),
           "--storage", url, "--study-name", study, "--trials", str(trials), "--heartbeat", str(heartbeat),
           "--json"]  # fmt: skip
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _study(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=optuna.storages.RDBStorage(sqlalchemy_url(url)))


def test_two_workers_count_every_trial_exactly_once(setup: tuple[Path, Path], pg_url: str) -> None:
    name = f"two-{uuid.uuid4().hex[:8]}"
    workers = [_worker(setup, pg_url, name, 64) for _ in range(2)]
    outs = []
    for w in workers:
        stdout, stderr = w.communicate(timeout=600)
        assert w.returncode == 0, stderr
        outs.append(json.loads(stdout))
    study = _study(pg_url, name)
    trials = study.get_trials(deepcopy=False)
    states = [t.state.name for t in trials]
    assert "RUNNING" not in states and "FAIL" not in states
    complete = [t for t in trials if t.state.name in TOLD]
    assert sorted(t.number for t in complete) == list(range(len(complete)))  # no gaps, no duplicates
    # each worker's own count adds up to the study's: nothing counted twice or lost
    assert sum(o["told_here"] for o in outs) == len(complete)
    assert all(o["told_here"] > 0 for o in outs), "one worker did all the work: they did not share the study"
    # each trial was told by one worker, recorded on the trial
    owners = {t.system_attrs["gridctl_worker"] for t in complete}
    assert len(owners) == 2
    # the target is reached; racing workers may overshoot by at most one batch each
    assert 64 <= len(complete) <= 64 + 2 * 4
    # workers drew different points (distinct sampler seeds)
    params = [tuple(sorted(t.params.items())) for t in complete]
    assert len(set(params)) == len(params)


def _kill_in_flight(
    setup: tuple[Path, Path], url: str, name: str, min_done: int
) -> tuple[int, list[int], datetime.datetime]:
    """SIGKILL a worker (heartbeat 1 s) while it has trials in flight; (its pid, its trials left RUNNING,
    the local time it was frozen: its last chance to beat).

    A batch is asked and told in one transaction each and runs in milliseconds, so the worker is first
    frozen (SIGSTOP) and its trials read while it cannot tell them: RUNNING ones are then surely in
    flight and it is killed; none, and it runs on (SIGCONT) until the next poll sees some.
    """
    victim = _worker(setup, url, name, 100000, heartbeat=1)

    def running() -> list[int]:
        return [
            t.number
            for t in _study(url, name).get_trials(deepcopy=False)
            if t.state.name == "RUNNING"
            and t.system_attrs.get("gridctl_worker", "").endswith(f":{victim.pid}")
        ]

    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            try:
                trials = _study(url, name).get_trials(deepcopy=False)
            except KeyError:  # not created yet
                trials = []
            if sum(t.state.name in TOLD for t in trials) >= min_done:
                os.kill(victim.pid, signal.SIGSTOP)
                frozen_at = datetime.datetime.now()
                stuck = running()
                if stuck:
                    os.kill(victim.pid, signal.SIGKILL)
                    victim.communicate(timeout=60)
                    return victim.pid, stuck, frozen_at
                os.kill(victim.pid, signal.SIGCONT)
            time.sleep(0.005)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.communicate(timeout=60)
    raise AssertionError("the worker never had a trial in flight when frozen; the test proves nothing")


def test_sigkilled_worker_leaves_a_usable_study(setup: tuple[Path, Path], pg_url: str) -> None:
    name = f"kill-{uuid.uuid4().hex[:8]}"
    _, stuck, _ = _kill_in_flight(setup, pg_url, name, 8)
    before = _study(pg_url, name).get_trials(deepcopy=False)
    n_done = sum(t.state.name in TOLD for t in before)
    # a new worker joins, fails the stale trials (heartbeat 1 s, grace 2 s) and finishes the study
    survivor = _worker(setup, pg_url, name, n_done + 8, heartbeat=1)
    stdout, stderr = survivor.communicate(timeout=600)
    assert survivor.returncode == 0, stderr
    after = {t.number: t for t in _study(pg_url, name).get_trials(deepcopy=False)}
    assert all(after[n].state.name == "FAIL" for n in stuck)
    assert not [t for t in after.values() if t.state.name == "RUNNING"]
    assert sum(t.state.name in TOLD for t in after.values()) >= n_done + 8
    assert json.loads(stdout)["n_trials"] >= n_done + 8


def _wait_for_running(url: str, name: str, min_done: int) -> list[int]:
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            trials = _study(url, name).get_trials(deepcopy=False)
        except KeyError:  # not created yet
            trials = []
        if sum(t.state.name in TOLD for t in trials) >= min_done:
            running = [t.number for t in trials if t.state.name == "RUNNING"]
            if running:
                return running
        time.sleep(0.05)
    raise AssertionError("no worker got going")


def test_a_live_worker_fails_a_killed_workers_trials_while_it_runs(
    setup: tuple[Path, Path], pg_url: str
) -> None:
    """Any live worker fails a dead worker's trials while it runs, not when its own run ends, and the
    study's views show them failed (the two-heartbeat bound itself: test_heartbeat_schedule.py)."""
    name = f"stale-{uuid.uuid4().hex[:8]}"
    survivor = _worker(setup, pg_url, name, 100000, heartbeat=1)  # runs until stopped
    try:
        _wait_for_running(pg_url, name, 8)
        _, stuck, frozen_at = _kill_in_flight(setup, pg_url, name, 8)
        killed_at = time.monotonic()
        while time.monotonic() - killed_at < 120:
            after = {t.number: t for t in _study(pg_url, name).get_trials(deepcopy=False)}
            if all(after[n].state.name == "FAIL" for n in stuck):
                break
            time.sleep(0.1)
        assert all(after[n].state.name == "FAIL" for n in stuck), {n: after[n].state.name for n in stuck}
        assert survivor.poll() is None, "the survivor ended: its end-of-run check did it, not the live one"
        # failed by the survivor (the only live worker) while it ran; none of its own trials failed
        failed = sorted(t.number for t in after.values() if t.state.name == "FAIL")
        assert failed == sorted(stuck)
        took = max((after[n].datetime_complete - frozen_at).total_seconds() for n in stuck)
        print(f"dead worker's {len(stuck)} trials failed {took:.2f} s after it was frozen (heartbeat 1 s)")
        # the views read the database: the dead worker's trials are failed there too
        data, _ = setup
        listed = subprocess.run(
            [sys.executable, "-m", "gridctl.cli", "study", "list", "--storage", pg_url, "--json"],
            cwd=REPO, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert listed.returncode == 0, listed.stderr
        (row,) = [r for r in json.loads(listed.stdout) if r["study_name"] == name]
        assert row["failed"] == len(stuck)
        shown = subprocess.run(
            [sys.executable, "-m", "gridctl.cli", "study", "show", name, "--storage", pg_url,
             "--data", str(data), "--json"],
            cwd=REPO, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["states"]["fail"] == len(stuck)
    finally:
        survivor.send_signal(signal.SIGINT)
        survivor.communicate(timeout=120)


def test_a_trial_left_without_owner_mid_ask_is_failed_after_one_grace_period(pg_url: str) -> None:
    name = f"orphan-{uuid.uuid4().hex[:8]}"
    study = optuna.create_study(study_name=name, storage=open_storage(name, pg_url, heartbeat_s=10))
    storage = study._storage
    # what a worker killed between creating a trial and its first heartbeat leaves: no heartbeat, no owner
    orphan = storage.create_new_trial(study._study_id)
    # a live worker's trial, created at the same moment: owned and beating
    owned = storage.create_new_trial(study._study_id)
    storage.set_trial_system_attr(owned, opt.WORKER_ATTR, "elsewhere:1")
    storage.record_heartbeat(owned)
    seen: dict[int, float] = {}

    def states() -> tuple[str, str]:
        return storage.get_trial(orphan).state.name, storage.get_trial(owned).state.name

    assert opt.stale_grace_s(10) == 10 and opt.stale_grace_s(1) == 1  # one heartbeat period
    opt.fail_stale_trials(study, 10, seen, now_mono=1000.0)  # first seen now; grace is 10 s
    assert states() == ("RUNNING", "RUNNING")
    opt.fail_stale_trials(study, 10, seen, now_mono=1009.0)  # still within the grace period
    assert states() == ("RUNNING", "RUNNING")
    opt.fail_stale_trials(study, 10, seen, now_mono=1011.0)  # watched unowned for longer than it
    assert states() == ("FAIL", "RUNNING")
    assert seen == {}  # the failed trial is forgotten


def _storage_traffic(
    setup: tuple[Path, Path], url: str, batch: int, batches: int, sampler: Any = None
) -> dict[str, int]:
    """SQL statements and commits of one in-process worker running ``batches`` batches of ``batch``."""
    import sqlalchemy
    from sqlalchemy import event

    from gridctl.research.profiles import load_profile

    data, path = setup
    profile = load_profile(path).model_copy(update={"batch_size": batch})
    if sampler is not None:
        profile = profile.model_copy(update={"sampler": sampler})
    work = opt.load_workload(profile, data)
    opt.evaluate(work, [{}])  # kernels compiled before counting
    seen = {"statements": 0, "commits": 0}

    def statement(*_args: object) -> None:
        seen["statements"] += 1

    def commit(*_args: object) -> None:
        seen["commits"] += 1

    event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", statement)
    event.listen(sqlalchemy.engine.Engine, "commit", commit)
    try:
        # a long heartbeat: neither the heartbeat thread nor the stale check runs during the count
        result = opt.optimize(
            profile,
            f"trips-{uuid.uuid4().hex[:8]}",
            n_trials=batch * batches,
            storage=url,
            heartbeat_s=600,
            work=work,
        )
    finally:
        event.remove(sqlalchemy.engine.Engine, "before_cursor_execute", statement)
        event.remove(sqlalchemy.engine.Engine, "commit", commit)
    assert result.told_here == batch * batches
    trials = _study(url, result.study_name).get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == list(range(batch * batches))
    assert all(t.state.name in TOLD and len(t.params) == len(profile.search_space) for t in trials)
    return seen


def test_a_shared_study_asks_and_tells_a_batch_in_a_fixed_number_of_round_trips(
    setup: tuple[Path, Path], pg_url: str
) -> None:
    # Optuna's own ask/tell writes one transaction per parameter, attr and state change: 13 parameters,
    # owner, constraints, metrics and state make about 20 commits per trial. Batched, a batch of 32
    # trials costs what a batch of 4 costs.
    small = _storage_traffic(setup, pg_url, 4, 3)
    large = _storage_traffic(setup, pg_url, 32, 3)
    print(f"3 batches of 4: {small}; 3 batches of 32: {large}")
    # 8 times the trials, the same traffic (give or take a read: reads commit too, and whether the
    # first chunk's heartbeat or a cache refresh lands inside the count varies by a statement or two)
    assert large["commits"] <= small["commits"] + 3
    assert large["statements"] <= small["statements"] + 6
    assert large["commits"] <= 3 * 12 + 8  # per batch: create, tell, beat and a few reads; plus opening


def test_a_learning_sampler_batches_too_and_sees_every_workers_finished_trials(
    setup: tuple[Path, Path], pg_url: str
) -> None:
    from gridctl.research.profiles import SamplerSpec

    tpe = SamplerSpec(kind="tpe", n_startup_trials=4)
    small = _storage_traffic(setup, pg_url, 4, 3, tpe)
    large = _storage_traffic(setup, pg_url, 16, 3, tpe)
    assert large["commits"] <= small["commits"] + 3
    assert large["statements"] <= small["statements"] + 6


def test_local_draws_copy_other_workers_finished_trials_once(tmp_path: Path) -> None:
    from gridctl.research.optimize.samplers import LocalDraws
    from gridctl.research.optuna_compat import trial_id

    dist = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    shared = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    for i, state in enumerate(["COMPLETE", "PRUNED", "FAIL"]):  # another worker's trials
        t = shared.ask(dist)
        shared.tell(t, float(i) if state == "COMPLETE" else None, state=optuna.trial.TrialState[state])
    running = shared.ask(dist)  # still running: not a result yet
    local = LocalDraws(optuna.samplers.TPESampler(seed=1), shared.directions, learns=True)
    (mine,) = local.ask(dist, 1)
    own = shared.ask({"x": optuna.distributions.FloatDistribution(0.0, 1.0)})  # this worker's, in both
    local.own([trial_id(own)])
    shared.tell(own, 0.5)
    assert local.sync(shared) == 2  # the complete and the pruned trial
    assert local.sync(shared) == 0  # never twice
    copied = [t for t in local.study.get_trials() if t.number != mine.number]
    assert [(t.state.name, t.params, t.values) for t in copied] == [
        (s.state.name, s.params, s.values) for s in shared.get_trials()[:2]
    ]
    assert running.number not in {t.number for t in copied if t.params == running.params}
    quiet = LocalDraws(optuna.samplers.RandomSampler(seed=1), shared.directions, learns=False)
    assert quiet.sync(shared) == 0 and quiet.study.get_trials() == []  # random draws need no history


def test_a_worker_looks_for_stale_trials_once_at_its_start(
    setup: tuple[Path, Path], pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first look runs as the heartbeat starts, before the first ask; the next is a tick (a quarter
    of --heartbeat, here 15 min) later, so a short run reads the study's running trials exactly once."""
    from gridctl.research.optimize import workers
    from gridctl.research.profiles import load_profile

    data, path = setup
    reads: list[int] = []
    real = workers.running_trial_beats

    def counted(storage: Any, study_id: int) -> Any:
        reads.append(study_id)
        return real(storage, study_id)

    monkeypatch.setattr(workers, "running_trial_beats", counted)
    name = f"once-{uuid.uuid4().hex[:8]}"
    res = opt.optimize(load_profile(path), name, n_trials=8, storage=pg_url, data_dir=data, heartbeat_s=3600)
    assert res.n_trials == 8
    assert len(reads) == 1
