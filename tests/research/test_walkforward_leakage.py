"""Walk-forward without leakage: fold windows, per-fold selection on train windows only, the hold-out
reported apart, and exports whose header commands reproduce what the study stored."""

from __future__ import annotations

import itertools
import json
import shlex
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from gridctl.cli import app
from gridctl.configs.errors import GridctlError
from gridctl.configs.loader import load_strategy, load_venue
from gridctl.data.sample import write_sample
from gridctl.engine.batch import apply_overrides
from gridctl.engine.run import run_single
from gridctl.research import optimize as opt
from gridctl.research.objectives import composite_score
from gridctl.research.profiles import PROFILES_DIR, ValidationSpec, load_profile
from gridctl.research.stats import BRACKET_RULES, INTRABAR_PATHS
from gridctl.research.studies import best_trial, export_config, load_study
from gridctl.research.walkforward import (
    check_no_leakage,
    fold_bounds,
    holdout_report,
    select_per_fold,
    walk_forward_report,
)

DAY = 86_400_000
JAN2 = 1_704_153_600_000  # 2024-01-02 00:00 UTC


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("wfdata")
    write_sample(path, days=12)
    return path


def wf_profile(tmp_path: Path, name: str = "wf", **validation: Any) -> Path:
    """The shipped ``fine`` profile on Jan 2..10 of the sample: rolling 2/1/1-day folds, few trials."""
    tree = yaml.safe_load((PROFILES_DIR / "fine.yaml").read_text())
    tree.update(name=name, trials=24, batch_size=8)
    tree["data"].update(start="2024-01-02", end="2024-01-10")
    tree["limits"].update(min_trades=1, max_path_return_spread_pct=None, max_same_bar_profit_share_pct=None)
    tree["pruner"] = {"kind": "none"}
    tree["objective"]["rank_by"] = "value"
    tree["validation"] = {"scheme": "walk_forward", "mode": "rolling", "train_days": 2, "test_days": 1,
                          "step_days": 1, **validation}  # fmt: skip
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def days(windows: list[tuple[str, int, int, int]]) -> list[tuple[str, int, int, int]]:
    return [(k, f, (a - JAN2) // DAY, (b - JAN2) // DAY) for k, f, a, b in windows]


# ----------------------------------------------------------------------------------------------------
# Fold windows
# ----------------------------------------------------------------------------------------------------


def test_rolling_folds_with_a_purge_gap_by_hand() -> None:
    spec = ValidationSpec(scheme="walk_forward", train_days=3, test_days=2, step_days=2, purge_days=1)
    got = days(fold_bounds(JAN2 + 3_600_000, JAN2 + 12 * DAY, spec))  # data starts 01:00: folds from midnight
    # train [0,3) purge [3,4) test [4,6); train [2,5) test [6,8); train [4,7) test [8,10); [6,9) [10,12)
    assert got == [
        ("train", 0, 0, 3), ("test", 0, 4, 6),
        ("train", 1, 2, 5), ("test", 1, 6, 8),
        ("train", 2, 4, 7), ("test", 2, 8, 10),
        ("train", 3, 6, 9), ("test", 3, 10, 12),
    ]  # fmt: skip
    tests = [(a, b) for k, _, a, b in got if k == "test"]
    assert all(b0 <= a1 for (_, b0), (a1, _) in itertools.pairwise(tests))  # never overlap
    for kind, fold, a, b in got:  # no test window inside a train window of its own or an earlier fold
        if kind == "train":
            assert all(not (ta < b and a < tb) for k, f, ta, tb in got if k == "test" and f >= fold)


def test_anchored_folds_grow_from_the_start_and_stay_before_their_tests() -> None:
    spec = ValidationSpec(scheme="walk_forward", mode="anchored", train_days=4, test_days=2, step_days=2)
    assert days(fold_bounds(JAN2, JAN2 + 9 * DAY, spec)) == [
        ("train", 0, 0, 4), ("test", 0, 4, 6), ("train", 1, 0, 6), ("test", 1, 6, 8),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("windows", "holdout", "message"),
    [
        # two test windows sharing day 3
        ([("train", 0, 0, 2), ("test", 0, 2, 4), ("train", 1, 1, 3), ("test", 1, 3, 5)], None, "overlap"),
        # a test window inside its own fold's train window
        ([("train", 0, 0, 4), ("test", 0, 3, 5)], None, "inside the train window of fold 0"),
        # fold 1's test window inside fold 0's train window: fold 0's pick would have seen it
        ([("train", 0, 0, 6), ("test", 0, 6, 7), ("train", 1, 0, 2), ("test", 1, 4, 5)], None,
         "test window of fold 1 lies inside the train window of fold 0"),
        # a test window running into the hold-out
        ([("train", 0, 0, 2), ("test", 0, 2, 4)], 3, "hold-out"),
    ],
)  # fmt: skip
def test_leaking_fold_windows_are_refused(windows: list, holdout: int | None, message: str) -> None:
    built = [(k, f, JAN2 + a * DAY, JAN2 + b * DAY) for k, f, a, b in windows]
    with pytest.raises(GridctlError, match=message):
        check_no_leakage(built, None if holdout is None else JAN2 + holdout * DAY)


def test_a_later_fold_may_train_on_an_earlier_test_window() -> None:
    # rolling folds do exactly this: fold 1 trains on fold 0's test day, which fold 0's pick never saw
    d = [JAN2 + n * DAY for n in range(5)]
    check_no_leakage(
        [("train", 0, d[0], d[2]), ("test", 0, d[2], d[3]), ("train", 1, d[1], d[3]), ("test", 1, d[3], d[4])]
    )


def test_overlapping_test_windows_and_selecting_on_them_are_refused_at_load(tmp_path: Path) -> None:
    with pytest.raises(GridctlError, match="would make test windows overlap"):
        load_profile(wf_profile(tmp_path, test_days=2))  # step 1 < test 2
    path = wf_profile(tmp_path)
    tree = yaml.safe_load(path.read_text())
    tree["objective"]["target"] = "out_of_sample"
    path.write_text(yaml.safe_dump(tree))
    with pytest.raises(
        GridctlError, match=r"objective.target: out_of_sample would select on the test windows"
    ):
        load_profile(path)
    tree["objective"]["target"] = "in_sample"
    tree["sampler"] = {"kind": "tpe", "n_startup_trials": 8}
    path.write_text(yaml.safe_dump(tree))
    with pytest.raises(GridctlError, match=r"sampler.kind: tpe learns from told values"):
        load_profile(path)


def test_shipped_fine_selects_in_sample_with_draws_independent_of_results() -> None:
    fine = load_profile("fine")
    assert fine.validation.scheme == "walk_forward" and fine.objective.target == "in_sample"
    assert fine.sampler.kind in ("random", "qmc")


# ----------------------------------------------------------------------------------------------------
# Per-fold selection, stitched record, hold-out, export
# ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wf_study(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    tmp = tmp_path_factory.mktemp("wfstudy")
    prof = load_profile(wf_profile(tmp, holdout_days=2))
    opt.optimize(prof, "wf", studies_dir=tmp / "s", data_dir=data_dir)
    return load_study("wf", tmp / "s"), tmp


def test_windows_stop_before_the_hold_out(wf_study: tuple[Any, Path], data_dir: Path) -> None:
    study, _ = wf_study
    data = study.user_attrs[opt.STUDY_ATTR]["data"]
    # selection data Jan 2..8 (6 days), hold-out Jan 8..10: folds train [0,2) test [2,3) ... [3,5) [5,6)
    assert [(w["kind"], w["fold"], (w["start_ms"] - JAN2) // DAY, (w["end_ms"] - JAN2) // DAY)
            for w in data["windows"]] == [
        ("train", 0, 0, 2), ("test", 0, 2, 3), ("train", 1, 1, 3), ("test", 1, 3, 4),
        ("train", 2, 2, 4), ("test", 2, 4, 5), ("train", 3, 3, 5), ("test", 3, 5, 6),
    ]  # fmt: skip
    assert data["holdout"] == {"start_ms": JAN2 + 6 * DAY, "end_ms": JAN2 + 8 * DAY}


def test_each_fold_picks_the_best_on_its_own_train_window(wf_study: tuple[Any, Path]) -> None:
    study, _ = wf_study
    spec = load_profile("fine").objective
    trials = [t for t in study.trials if t.state.name == "COMPLETE"]
    folds = select_per_fold(study)
    assert len(folds) == 4
    for f in folds:
        k = f["fold"]
        # independently: the composite on fold k's stored train metrics, feasible = at least 1 trade
        # (min_trades 1 over 4 folds -> 1 per fold) and within the 30 % drawdown and no liquidation
        scored = []
        for t in trials:
            m = opt.restore_metrics(t.user_attrs[opt.ATTR]["in_sample"][k])
            if m["trades"] >= 1 and m["max_drawdown_bar_close_pct"] <= 30 and m["liquidated"] < 0.5:
                scored.append((composite_score(m, spec), -t.number))
        value, neg = max(scored)
        assert f["trial"] == -neg and f["train_objective"] == pytest.approx(value)
        test = opt.restore_metrics(study.trials[-neg].user_attrs[opt.ATTR]["out_of_sample"][k])
        assert f["test_objective"] == pytest.approx(composite_score(test, spec))
    # the study's global winner (best mean train score) is not what every fold picks
    winner = best_trial(study)
    assert winner is not None
    assert {f["trial"] for f in folds} != {winner.number}


def test_stitched_record_compounds_the_picks_test_windows(wf_study: tuple[Any, Path], data_dir: Path) -> None:
    study, _ = wf_study
    report = walk_forward_report(study, data_dir)
    folds = report["folds"]
    stored = [
        opt.restore_metrics(study.trials[f["trial"]].user_attrs[opt.ATTR]["out_of_sample"][f["fold"]])[
            "total_return_pct"
        ]
        for f in folds
    ]
    # each fold re-run from a fresh account under its scored rule gives what the batch stored
    assert report["stitched_fold_return_pct"] == pytest.approx(stored, rel=1e-9, abs=1e-12)
    assert report["oos_total_return_pct"] == pytest.approx((np.prod([1 + r / 100 for r in stored]) - 1) * 100)
    assert report["oos_objective_mean"] == pytest.approx(np.mean([f["test_objective"] for f in folds]))
    assert report["distinct_picks"] == len({f["trial"] for f in folds})


def test_hold_out_is_reported_apart_for_the_winner(wf_study: tuple[Any, Path], data_dir: Path) -> None:
    study, _ = wf_study
    winner = best_trial(study)
    hold = holdout_report(study, None, data_dir)
    assert hold is not None and hold["trial"] == winner.number
    assert (hold["start_ms"], hold["end_ms"]) == (JAN2 + 6 * DAY, JAN2 + 8 * DAY)
    # independently: the winner on Jan 8..10 under every rule; the hold-out scores the worst composite
    from gridctl.data.market import load_market
    from gridctl.research.objectives import row_metrics

    market = load_market(data_dir, "sample", "BTC/USDT:USDT", "1m", JAN2 + 6 * DAY, JAN2 + 8 * DAY)
    strategy, venue = load_strategy("default"), load_venue("binance_futures")
    spec = load_profile("fine").objective
    scores = []
    for rule in BRACKET_RULES:
        s, v = apply_overrides(strategy, venue, {**winner.user_attrs[opt.ATTR]["overrides"],
                                                 "backtest.intrabar_path": rule})  # fmt: skip
        m = row_metrics(run_single(market, s, v, curves=False).summary, market.bar_ms)
        scores.append((composite_score(m, spec), BRACKET_RULES.index(rule), m))
    worst = min(scores, key=lambda x: (x[0], x[1]))
    assert hold["objective"][0] == pytest.approx(worst[0])
    assert hold["metrics"]["total_return_pct"] == pytest.approx(worst[2]["total_return_pct"])
    # no trial was scored on any bar of the hold-out
    assert all(w["end_ms"] <= hold["start_ms"] for w in study.user_attrs[opt.STUDY_ATTR]["data"]["windows"])


def test_exported_walk_forward_winner_reproduces_every_window_from_its_header(
    wf_study: tuple[Any, Path], data_dir: Path
) -> None:
    study, tmp = wf_study
    winner = best_trial(study)
    out = export_config(study, tmp / "best.yaml")
    header = [line for line in out.read_text().splitlines() if line.startswith("# fold ")]
    assert len(header) == 8  # 4 train + 4 test windows
    attrs = winner.user_attrs[opt.ATTR]
    for line in header:
        label, cmd = line.split(": ", 1)
        _, _, fold, kind = label.split(" ", 3)
        kind = kind.split(" ")[0]
        stored = opt.restore_metrics(attrs["in_sample" if kind == "train" else "out_of_sample"][int(fold)])
        args = shlex.split(cmd.replace("THIS_FILE", str(out)))
        assert args[0] == "gridctl"
        res = CliRunner().invoke(app, [*args[1:], "--data", str(data_dir), "--json"], catch_exceptions=False)
        assert res.exit_code == 0, res.stderr
        stats = json.loads(res.stdout)
        assert stats["total_return_pct"] == pytest.approx(stored["total_return_pct"], rel=1e-9, abs=1e-12)
        assert stats["max_drawdown_bar_close_pct"] == pytest.approx(stored["max_drawdown_bar_close_pct"])
        assert stats["n_exits"] == stored["trades"]
        # the command runs the rule that scored the window (the exported config keeps the base rule)
        rule = BRACKET_RULES[int(stored["path_rule_index"])]
        assert stats["assumptions"]["intrabar_path"] == INTRABAR_PATHS[rule]
    # the told value is the mean of the train windows' objectives
    spec = load_profile("fine").objective
    train = [composite_score(opt.restore_metrics(m), spec) for m in attrs["in_sample"]]
    assert winner.value == pytest.approx(np.mean(train))


def test_study_show_reports_the_walk_forward_record_and_the_hold_out(
    wf_study: tuple[Any, Path], data_dir: Path
) -> None:
    study, tmp = wf_study
    res = CliRunner().invoke(
        app,
        [
            "study",
            "show",
            "wf",
            "--studies-dir",
            str(tmp / "s"),
            "--data",
            str(data_dir),
            "--json",
            "--top",
            "4",
        ],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.stderr
    shown = json.loads(res.stdout)
    assert [f["trial"] for f in shown["walk_forward"]["folds"]] == [
        f["trial"] for f in select_per_fold(study)
    ]
    assert shown["holdout"]["trial"] == shown["best_trial"]
    text = CliRunner().invoke(
        app,
        ["study", "show", "wf", "--studies-dir", str(tmp / "s"), "--data", str(data_dir)],
        catch_exceptions=False,
    )
    assert "walk-forward: per fold" in text.stdout and "hold-out 2024-01-08..2024-01-10" in text.stdout


def test_hold_out_without_walk_forward_shortens_the_scored_window_and_the_export(
    data_dir: Path, tmp_path: Path
) -> None:
    tree = yaml.safe_load((PROFILES_DIR / "wide.yaml").read_text())
    tree.update(name="ho", trials=8, batch_size=8)
    tree["data"].update(start="2024-01-02", end="2024-01-10")
    tree["limits"].update(min_trades=1, max_path_return_spread_pct=None, max_same_bar_profit_share_pct=None)
    tree["validation"] = {"scheme": "none", "holdout_days": 2}
    path = tmp_path / "ho.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    work = opt.load_workload(load_profile(path), data_dir)
    (full,) = work.windows
    assert (full.kind, full.start_ms, full.end_ms) == ("full", JAN2, JAN2 + 6 * DAY)
    assert int(full.market.ts[-1]) + full.market.bar_ms == JAN2 + 6 * DAY  # no bar of the hold-out scored
    assert (work.holdout.start_ms, work.holdout.end_ms) == (JAN2 + 6 * DAY, JAN2 + 8 * DAY)
    opt.optimize(work.profile, "ho", studies_dir=tmp_path / "s", work=work)
    study = load_study("ho", tmp_path / "s")
    winner = best_trial(study)
    out = export_config(study, tmp_path / "best.yaml")
    (line,) = [x for x in out.read_text().splitlines() if x.startswith("# reproduce: ")]
    cmd = line.removeprefix("# reproduce: ").split("  (")[0]
    assert "--start 2024-01-02 --end 2024-01-08" in cmd
    args = shlex.split(cmd.replace("THIS_FILE", str(out)))
    res = CliRunner().invoke(app, [*args[1:], "--data", str(data_dir), "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.stderr
    stored = opt.restore_metrics(winner.user_attrs[opt.ATTR]["metrics"])
    assert json.loads(res.stdout)["total_return_pct"] == pytest.approx(stored["total_return_pct"], rel=1e-9)
    # the exported config carries the rule that scored the window
    assert load_strategy(out).backtest.intrabar_path == BRACKET_RULES[int(stored["path_rule_index"])]


def test_study_statistics_read_no_day_of_the_hold_out(wf_study: tuple[Any, Path], data_dir: Path) -> None:
    """DSR and PBO describe the selection: the winner's daily returns stop where the hold-out starts."""
    from gridctl.data.market import load_market
    from gridctl.research.studies import best_config, overfitting_stats, trial_daily_returns

    study, _ = wf_study
    winner = best_trial(study)
    rets = trial_daily_returns(study, [winner.number], data_dir)[:, 0]
    # independently: the winner run alone on Jan 2..8 (the selection data; hold-out Jan 8..10), its
    # equity at each UTC day's last bar against the day before (the first day against the balance)
    market = load_market(data_dir, "sample", "BTC/USDT:USDT", "1m", JAN2, JAN2 + 6 * DAY)
    cfg = best_config(study, winner.number)
    run = run_single(market, cfg, load_venue("binance_futures"), curves=True)
    eq = run.equity
    closes = []
    for d in range(6):
        in_day = (eq["ts"] >= JAN2 + d * DAY) & (eq["ts"] < JAN2 + (d + 1) * DAY)
        closes.append(float(eq["equity"][in_day][-1]))
    prev = [float(cfg.backtest.initial_balance), *closes[:-1]]
    expected = [c / p - 1 for c, p in zip(closes, prev, strict=True)]
    assert len(rets) == 6  # Jan 2..7: no hold-out day
    assert rets == pytest.approx(expected, rel=1e-12, abs=1e-15)
    stats = overfitting_stats(study, data_dir)
    assert stats["periods"] == 6
    assert any("2-day hold-out is left out" in n for n in stats["notes"])


def test_export_header_gives_the_hold_out_command_study_show_figures_come_from(
    wf_study: tuple[Any, Path], data_dir: Path, tmp_path: Path
) -> None:
    study, _ = wf_study
    hold = holdout_report(study, None, data_dir)
    assert hold["rule"] in INTRABAR_PATHS
    out = export_config(study, tmp_path / "best.yaml")
    lines = out.read_text().splitlines()
    i = next(n for n, x in enumerate(lines) if x.startswith("# hold-out 2024-01-08 .. 2024-01-10"))
    cmd = lines[i + 1].removeprefix("#   ")
    assert cmd.startswith("gridctl backtest ") and "--start 2024-01-08 --end 2024-01-10" in cmd
    args = shlex.split(cmd.replace("THIS_FILE", str(out)))[1:]
    args += ["--set", f"backtest.intrabar_path={hold['rule']}", "--data", str(data_dir), "--json"]
    res = CliRunner().invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["total_return_pct"] == pytest.approx(hold["metrics"]["total_return_pct"], rel=1e-9, abs=1e-12)
    assert got["max_drawdown_bar_close_pct"] == pytest.approx(
        hold["metrics"]["max_drawdown_bar_close_pct"], rel=1e-9, abs=1e-12
    )
