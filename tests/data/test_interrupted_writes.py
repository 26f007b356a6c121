"""What a killed write leaves is cleared by the next run: atomic temp files, result and sample staging.

A SIGKILL runs no ``finally``: the temporary file or folder stays, hidden beside the target (which was
never half-written). Temporary names carry the writer's process id, so the next write into that folder
removes the leftovers of dead processes and keeps those of a write in progress.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from gridctl.data.atomic import atomic_write, atomic_write_text
from gridctl.data.sample import SAMPLE_EXCHANGE, ensure_sample, write_sample
from gridctl.data.store import candle_dir, write_candles
from gridctl.research.results import check_out_dir

T0 = 1_704_067_200_000
SYM = "BTC/USDT:USDT"


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _age(path: Path, seconds: float) -> Path:
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)
    return path


def _hung_writer(target: Path, marker: Path) -> subprocess.Popen:
    """A process inside atomic_write's write callback: its temp file exists, the target does not yet."""
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from gridctl.data.atomic import atomic_write\n"
        "def write(tmp):\n"
        "    tmp.write_bytes(b'half')\n"
        "    Path(sys.argv[2]).write_text('ready')\n"
        "    time.sleep(60)\n"
        "atomic_write(sys.argv[1], write)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(target), str(marker)])
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert time.monotonic() < deadline and child.poll() is None, "writer did not start"
        time.sleep(0.05)
    return child


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_sigkilled_atomic_write_leaves_a_temp_file_the_next_write_removes(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    child = _hung_writer(folder / "a.json", tmp_path / "ready")
    (leftover,) = _hidden(folder)
    assert leftover.startswith(f".a.json.{child.pid}-") and leftover.endswith(".tmp")
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert _hidden(folder) == [leftover] and not (folder / "a.json").exists()  # the target never half-written
    atomic_write_text(folder / "b.json", "{}")  # any later write into the folder
    assert _hidden(folder) == [] and (folder / "b.json").read_text() == "{}"


def test_a_sigint_during_an_atomic_write_leaves_nothing(tmp_path: Path) -> None:
    child = _hung_writer(tmp_path / "a.json", tmp_path / "ready")
    child.send_signal(signal.SIGINT)
    child.wait(timeout=30)
    assert [p.name for p in tmp_path.iterdir()] == ["ready"]


def test_temp_files_of_live_writers_are_kept(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        kept = [
            f".a.json.{os.getpid()}-abcd1234.tmp",  # this process (another thread's write)
            f".b.json.{sleeper.pid}-abcd1234.tmp",  # another running process
            ".d.json.abcd1234.tmp",  # no pid, two hours old: outside the store it is never guessed at
        ]
        for name in kept:
            (tmp_path / name).write_text("x")
        _age(tmp_path / ".d.json.abcd1234.tmp", 7200)
        (tmp_path / f".c.json.{_dead_pid()}-abcd1234.tmp").write_text("x")
        atomic_write_text(tmp_path / "e.json", "{}")
        assert _hidden(tmp_path) == sorted(kept)
    finally:
        sleeper.kill()
        sleeper.wait()


def _bars(n: int) -> pl.DataFrame:
    ts = T0 + np.arange(n, dtype=np.int64) * 60_000
    return pl.DataFrame({"ts": ts, "open": 100.0, "high": 101.0, "low": 99.0, "close": 100.0, "volume": 1.0})


def test_the_store_also_clears_old_temp_files_without_a_pid(tmp_path: Path) -> None:
    folder = candle_dir(tmp_path, "binanceusdm", SYM, "1m")
    folder.mkdir(parents=True)
    old = folder / ".2024-01.parquet.abcd1234.tmp"  # left by a version before process ids
    old.write_bytes(b"x")
    _age(old, 7200)
    young = folder / ".2024-02.parquet.efgh5678.tmp"  # could be a write in progress of that version
    young.write_bytes(b"x")
    dead = folder / f".2024-03.parquet.{_dead_pid()}-abcd1234.tmp"
    dead.write_bytes(b"x")
    write_candles(tmp_path, "binanceusdm", SYM, "1m", _bars(3))
    assert _hidden(folder) == [".2024-02.parquet.efgh5678.tmp"]


def test_results_of_a_killed_replace_come_back_and_staging_goes(tmp_path: Path) -> None:
    pid = _dead_pid()
    out = tmp_path / "out"
    aside = tmp_path / f".out.old-{pid}-abcd1234"  # the previous results, moved aside before the kill
    aside.mkdir()
    (aside / "stats.json").write_text("{}")
    staging = tmp_path / f".out.new-{pid}-efgh5678"  # the new results, half written
    staging.mkdir()
    legacy = tmp_path / ".out.new-ijkl9012"  # a version before process ids, two hours old
    legacy.mkdir()
    _age(legacy, 7200)
    with pytest.raises(Exception, match="already holds results; pass --force"):
        check_out_dir(out)  # the old results are back, so a plain run must not replace them
    assert (out / "stats.json").read_text() == "{}" and _hidden(tmp_path) == []
    aside2 = tmp_path / f".out.old-{pid}-mnop3456"  # out exists now: a stale aside copy just goes
    aside2.mkdir()
    check_out_dir(out, force=True)
    assert _hidden(tmp_path) == [] and (out / "stats.json").exists()


def test_a_killed_sample_write_is_cleared_and_the_previous_sample_restored(tmp_path: Path) -> None:
    write_sample(tmp_path, days=1)
    exchange = tmp_path / SAMPLE_EXCHANGE
    pid = _dead_pid()
    stored = exchange / "BTC_USDT_USDT"
    before = sorted(p.relative_to(stored) for p in stored.rglob("*.parquet"))
    stored.rename(exchange / f".old-.staging-{pid}-abcd1234")  # killed between the two renames
    (exchange / f".staging-{pid}-abcd1234").mkdir()
    ensure_sample(tmp_path)  # restores instead of generating a fresh 180-day market
    assert sorted(p.relative_to(stored) for p in stored.rglob("*.parquet")) == before
    assert _hidden(exchange) == []
    (exchange / f".staging-{pid}-qrst7890").mkdir()
    write_sample(tmp_path, days=1)  # the same sample again: no change, leftovers cleared
    assert _hidden(exchange) == []


def test_atomic_write_still_leaves_nothing_when_write_raises(tmp_path: Path) -> None:
    def broken(tmp: Path) -> None:
        tmp.write_bytes(b"x")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(tmp_path / "a", broken)
    assert list(tmp_path.iterdir()) == []
