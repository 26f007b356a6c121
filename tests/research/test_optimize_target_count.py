"""Workers started together on one study stop at exactly ``--trials`` counted trials, not a batch more.

``--trials`` is the study's total (COMPLETE and PRUNED trials; FAIL ones do not count). Each worker
claims its batch within the target under a lock (PostgreSQL: the study row, journal: the journal's
lock), re-counting there, so two workers that both saw room for a full batch cannot both take it.
Before, two PostgreSQL workers on a 128-trial target with batches of 16 ended at 144 (reproduced
twice in two tries). The targets here are not multiples of the batch size, so a claim must shrink.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import optuna
import pytest
import yaml
from test_optimize_distributed import pg_url  # noqa: F401 - the PostgreSQL server fixture

from gridctl.data.sample import write_sample
from gridctl.research.optimize import sqlalchemy_url
from gridctl.research.optuna_compat import claim_lock, create_running_trials
from gridctl.research.profiles import PROFILES_DIR

REPO = Path(__file__).resolve().parents[2]
BATCH = 16


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data dir with a small sample, a small ``wide`` profile asking batches of 16)."""
    base = tmp_path_factory.mktemp("count")
    write_sample(base / "data", days=6)
    tree = yaml.safe_load((PROFILES_DIR / "wide.yaml").read_text())
    tree.update(name="count", trials=64, batch_size=BATCH)
    tree["data"].update(start="2024-01-02", end="2024-01-03")
    path = base / "count.yaml"
    path.write_text(yaml.safe_dump(tree))
    return base / "data", path


def _run_together(
    setup: tuple[Path, Path], where: list[str], study: str, trials: int, n: int, jobs: int
) -> int:
    """Start ``n`` optimize workers at once on one study; the trials they told, summed."""
    data, profile = setup
    cmd = [sys.executable, "-m", "gridctl.cli", "optimize", "--profile", str(profile), "--data", str(data),
           *where, "--study-name", study, "--trials", str(trials), "--jobs", str(jobs), "--json"]  # fmt: skip
    procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    procs += [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for _ in range(n - 1)]  # fmt: skip
    told = 0
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        told += json.loads(out)["told_here"]
    return told


def _states(storage: optuna.storages.BaseStorage, study: str) -> dict[str, int]:
    trials = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    return dict(collections.Counter(t.state.name for t in trials))


# (workers, target, --jobs): targets of 1, 2 and 4 batches plus a remainder; 3 workers race for the last
PG_ROUNDS = [(3, 37, 1), (2, 69, 2)]
JOURNAL_ROUNDS = [(2, 37, 1), (3, 21, 1)]


def test_postgres_workers_started_together_reach_the_target_exactly(
    setup: tuple[Path, Path],
    pg_url: str,  # noqa: F811
) -> None:
    for workers, target, jobs in PG_ROUNDS:
        name = f"count-{uuid.uuid4().hex[:8]}"
        told = _run_together(setup, ["--storage", pg_url], name, target, workers, jobs)
        states = _states(optuna.storages.RDBStorage(sqlalchemy_url(pg_url)), name)
        done = states.get("COMPLETE", 0) + states.get("PRUNED", 0)
        assert (done, states.get("RUNNING", 0), states.get("FAIL", 0)) == (target, 0, 0), (workers, states)
        assert told == target


def test_journal_workers_started_together_reach_the_target_exactly(
    setup: tuple[Path, Path], tmp_path: Path
) -> None:
    for workers, target, jobs in JOURNAL_ROUNDS:
        name = f"count-{uuid.uuid4().hex[:8]}"
        told = _run_together(setup, ["--studies-dir", str(tmp_path)], name, target, workers, jobs)
        backend = optuna.storages.journal.JournalFileBackend(str(tmp_path / f"{name}.journal"))
        states = _states(optuna.storages.JournalStorage(backend), name)
        done = states.get("COMPLETE", 0) + states.get("PRUNED", 0)
        assert (done, states.get("RUNNING", 0), states.get("FAIL", 0)) == (target, 0, 0), (workers, states)
        assert told == target


def test_a_claim_creates_only_what_fits_under_the_target_counting_running_not_failed(
    pg_url: str,  # noqa: F811
) -> None:
    storage = optuna.storages.RDBStorage(sqlalchemy_url(pg_url))
    study = optuna.create_study(study_name=f"claim-{uuid.uuid4().hex[:8]}", storage=storage)
    sid = storage.get_study_id_from_name(study.study_name)
    dists = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    study.add_trial(optuna.trial.create_trial(params={"x": 0.1}, distributions=dists, value=1.0))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    running = study.ask(dists)  # counts: a live worker's trial holds its place

    def claim(k: int, target: int) -> list[tuple[int, int]]:
        drawn = [{"x": 0.5 + i / 100} for i in range(k)]
        return create_running_trials(storage, sid, drawn, dists, [{"w": i} for i in range(k)], target=target)

    # 1 complete + 1 running count, the failed one does not: 5 - 2 = 3 of 4 fit, numbered after the 3 rows
    made = claim(4, 5)
    assert [number for _, number in made] == [3, 4, 5]
    got = {t.number: t for t in study.get_trials(deepcopy=False)}
    assert [got[n].params["x"] for n in (3, 4, 5)] == [0.5, 0.51, 0.52]
    assert [got[n].system_attrs["w"] for n in (3, 4, 5)] == [0, 1, 2]
    assert claim(4, 5) == []  # full
    study.tell(running, state=optuna.trial.TrialState.FAIL)  # a failed trial gives its place back
    assert [number for _, number in claim(4, 5)] == [6]
    assert len(claim(2, None)) == 2  # no target: every draw is created


def test_the_claim_lock_of_one_study_admits_one_worker_at_a_time(pg_url: str) -> None:  # noqa: F811
    """Profiles with a pruner ask through Optuna one trial at a time, each counted under this lock."""
    storage = optuna.storages.RDBStorage(sqlalchemy_url(pg_url))
    sids = [
        storage.get_study_id_from_name(
            optuna.create_study(study_name=f"lock-{uuid.uuid4().hex[:8]}", storage=storage).study_name
        )
        for _ in range(2)
    ]
    entered = threading.Event()

    def other_worker() -> None:
        with claim_lock(storage, sids[0]):
            entered.set()

    with claim_lock(storage, sids[0]):
        with claim_lock(storage, sids[1]):  # another study's lock is free meanwhile
            pass
        waiting = threading.Thread(target=other_worker)
        waiting.start()
        assert not entered.wait(0.5)
    assert entered.wait(10)
    waiting.join()


def test_the_claim_lock_is_let_go_before_the_sampler_draws(
    setup: tuple[Path, Path],
    pg_url: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One-at-a-time asks (a profile with a pruner) count and create each trial under the claim lock;
    the trial is then RUNNING and counted by every other worker, so the lock is free while the sampler
    draws its parameters: another worker's claim is never kept waiting for this worker's sampler."""
    import sqlalchemy

    from gridctl.research.optimize import loop
    from gridctl.research.optuna_compat import CLAIM_LOCK_KEY
    from gridctl.research.profiles import load_profile

    data, path = setup
    tree = yaml.safe_load((PROFILES_DIR / "fine.yaml").read_text())
    tree.update(name="drawfree", trials=6, batch_size=3)
    tree["data"].update(start="2024-01-02", end="2024-01-06")
    tree["validation"].update(train_days=2, test_days=1, step_days=1)
    tree["pruner"].update(n_startup_trials=2, n_warmup_steps=0)
    prof = path.parent / "drawfree.yaml"
    prof.write_text(yaml.safe_dump(tree))
    name = f"drawfree-{uuid.uuid4().hex[:8]}"
    engine = sqlalchemy.create_engine(sqlalchemy_url(pg_url))
    free: list[bool] = []
    real_draw = loop.draw

    def draw_and_probe(trial: optuna.Trial, pname: str, dist: object) -> object:
        sid = trial.study._study_id
        with engine.connect() as conn:  # another session: what another worker's claim would try
            keys = {"a": CLAIM_LOCK_KEY, "b": sid}
            got = conn.execute(sqlalchemy.text("SELECT pg_try_advisory_lock(:a, :b)"), keys).scalar()
            if got:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:a, :b)"), keys)
            conn.commit()
        free.append(bool(got))
        return real_draw(trial, pname, dist)

    monkeypatch.setattr(loop, "draw", draw_and_probe)
    res = loop.optimize(load_profile(prof), name, storage=pg_url, data_dir=data, jobs=1)
    engine.dispose()
    assert res.n_trials == 6 and len(free) == 6 * len(tree["search_space"])
    assert all(free)
