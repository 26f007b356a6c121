"""The deflated Sharpe ratio and PBO use only the data a study selected on, never its hold-out.

Two data directories hold the same sample except on the hold-out's days, where one carries a planted
effect (a fast +-4 % oscillation a grid harvests). The studies select on identical data, so they hold the
same trials; the hold-out report sees the effect, the statistics must not.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from gridctl.cli import app
from gridctl.data.sample import SAMPLE_EXCHANGE, SAMPLE_SYMBOL, SAMPLE_TIMEFRAME, generate_sample
from gridctl.data.store import write_candles, write_funding
from gridctl.research import optimize as opt
from gridctl.research.profiles import PROFILES_DIR, load_profile
from gridctl.research.studies import load_study, overfitting_stats
from gridctl.research.walkforward import holdout_report

DAY = 86_400_000
JAN2 = 1_704_153_600_000  # 2024-01-02 00:00 UTC
SELECT_DAYS = 34  # 2024-01-02 .. 2024-02-05, then a 6-day hold-out to 2024-02-11
HOLDOUT_START = JAN2 + SELECT_DAYS * DAY


def _write(path: Path, planted: bool) -> Path:
    candles, mark, funding = generate_sample(44)
    if planted:  # the hold-out's bars only: prices times 1 +- 4 % in a 2-hour cycle

        def plant(df: pl.DataFrame) -> pl.DataFrame:
            ts = df["ts"].to_numpy()
            f = np.where(ts >= HOLDOUT_START, 1.0 + 0.04 * np.sin(2 * np.pi * ts / (2 * 3_600_000)), 1.0)
            return df.with_columns(*(pl.col(c) * pl.Series(f) for c in ("open", "high", "low", "close")))

        candles, mark = plant(candles), plant(mark)
    write_candles(path, SAMPLE_EXCHANGE, SAMPLE_SYMBOL, SAMPLE_TIMEFRAME, candles)
    write_candles(path, SAMPLE_EXCHANGE, SAMPLE_SYMBOL, SAMPLE_TIMEFRAME, mark, kind="mark")
    write_funding(path, SAMPLE_EXCHANGE, SAMPLE_SYMBOL, funding)
    return path


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    base = tmp_path_factory.mktemp("holdout")
    tree = yaml.safe_load((PROFILES_DIR / "wide.yaml").read_text())
    tree.update(name="hostat", trials=12, batch_size=12)
    tree["data"].update(start="2024-01-02", end="2024-02-11")
    tree["limits"].update(min_trades=1, max_path_return_spread_pct=None, max_same_bar_profit_share_pct=None)
    tree["validation"] = {"scheme": "none", "holdout_days": 6}
    prof = base / "hostat.yaml"
    prof.write_text(yaml.safe_dump(tree, sort_keys=False))
    out = {}
    for kind in ("plain", "planted"):
        data = _write(base / f"data-{kind}", planted=kind == "planted")
        work = opt.load_workload(load_profile(prof), data)
        assert (work.holdout.start_ms, work.holdout.end_ms) == (HOLDOUT_START, HOLDOUT_START + 6 * DAY)
        opt.optimize(work.profile, "hostat", studies_dir=base / f"s-{kind}", work=work)
        out[kind] = (data, base / f"s-{kind}")
    return out


def test_statistics_never_see_a_planted_effect_in_the_hold_out(studies: dict[str, tuple[Path, Path]]) -> None:
    got = {}
    for kind, (data, sdir) in studies.items():
        study = load_study("hostat", sdir)
        got[kind] = (study, overfitting_stats(study, data), holdout_report(study, None, data))
    (plain, plain_stats, plain_hold), (planted, planted_stats, planted_hold) = got["plain"], got["planted"]
    # the same trials were selected on the same data
    assert [t.values for t in plain.trials] == [t.values for t in planted.trials]
    # the hold-out report sees the planted effect: the winner's hold-out return moves (here -0.1 -> +0.2 %)
    moved = planted_hold["metrics"]["total_return_pct"] - plain_hold["metrics"]["total_return_pct"]
    assert abs(moved) > 0.2, (plain_hold["metrics"], planted_hold["metrics"])
    # the statistics do not: daily returns over the 34 selection days only, identical in both
    window = {"start_ms": JAN2, "end_ms": HOLDOUT_START, "days": SELECT_DAYS, "holdout_excluded": True}
    assert plain_stats["returns_window"] == window == planted_stats["returns_window"]
    assert plain_stats["periods"] == SELECT_DAYS
    assert plain_stats["pbo"] is not None and plain_stats["deflated_sharpe"] is not None
    for key in ("deflated_sharpe", "sharpe", "sr0", "pbo", "clusters", "trials_used"):
        assert planted_stats[key] == plain_stats[key], key


def test_study_show_states_the_window_the_statistics_used(studies: dict[str, tuple[Path, Path]]) -> None:
    data, sdir = studies["planted"]
    base = ["study", "show", "hostat", "--studies-dir", str(sdir), "--data", str(data)]
    res = CliRunner().invoke(app, [*base, "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["returns_window"]["end_ms"] == HOLDOUT_START
    text = CliRunner().invoke(app, base, catch_exceptions=False)
    flat = " ".join(text.stdout.split())  # the console wraps long lines
    assert "daily returns over 2024-01-02..2024-02-05 (34 days; the hold-out left out" in flat


def test_the_window_reported_is_the_window_the_returns_were_cut_to(
    studies: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    """One window, worked out once from the data the trials are re-run on: a study whose stored data
    description lacks its hold-out (an older record) still reports the days its returns cover."""
    import shutil

    from gridctl.research.optimize import STUDY_ATTR

    data, sdir = studies["plain"]
    shutil.copytree(sdir, tmp_path / "s")
    study = load_study("hostat", tmp_path / "s")
    info = study.user_attrs[STUDY_ATTR]
    info["data"] = {k: v for k, v in info["data"].items() if k != "holdout"}
    study.set_user_attr(STUDY_ATTR, info)
    got = overfitting_stats(load_study("hostat", tmp_path / "s"), data)
    window = {"start_ms": JAN2, "end_ms": HOLDOUT_START, "days": SELECT_DAYS, "holdout_excluded": True}
    assert got["returns_window"] == window
    assert got["periods"] == SELECT_DAYS
