"""The optimizer end to end on a small sample: profiles, drawn constraints, objectives, studies, resume."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from gridctl.cli import app
from gridctl.configs.errors import GridctlError
from gridctl.configs.loader import load_strategy, load_venue
from gridctl.configs.overrides import apply_overrides
from gridctl.data.sample import write_sample
from gridctl.engine.run import run_single
from gridctl.research import optimize as opt
from gridctl.research.objectives import (
    WORST_PATH_METRIC,
    composite_score,
    limit_names,
    limit_values,
    objective_values,
    row_metrics,
)
from gridctl.research.optuna_compat import OwnedJournalLock, set_system_attr
from gridctl.research.profiles import PROFILES_DIR, load_profile, shipped_profiles
from gridctl.research.space import distributions, neighbours, resolve_draw
from gridctl.research.studies import best_config, best_trial, export_config, load_study, study_frame

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("optdata")
    write_sample(path, days=12)
    return path


def small_profile(tmp_path: Path, base: str = "wide", name: str = "small", **changes: Any) -> Path:
    """A shipped profile on 6 days of the sample with few trials; ``changes`` replace top-level keys."""
    tree = yaml.safe_load((PROFILES_DIR / f"{base}.yaml").read_text())
    tree["name"] = name
    tree["trials"] = 24
    tree["batch_size"] = 8
    tree["data"]["start"] = "2024-01-02"
    tree["data"]["end"] = "2024-01-08"
    tree["limits"]["min_trades"] = 1
    for key, value in changes.items():
        tree[key] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def run(profile_path: Path, data_dir: Path, studies: Path, name: str, **kw: Any) -> opt.OptimizeResult:
    return opt.optimize(load_profile(profile_path), name, studies_dir=studies, data_dir=data_dir, **kw)


# ----------------------------------------------------------------------------------------------------
# Profiles
# ----------------------------------------------------------------------------------------------------


def test_shipped_profiles_load_and_are_packaged() -> None:
    assert {"wide", "narrow", "fine"} <= set(shipped_profiles())
    for name in shipped_profiles():
        profile = load_profile(name)
        assert profile.name == name
    text = (REPO / "pyproject.toml").read_text()
    assert '"profiles/*.yaml"' in text


def test_misspelled_search_key_names_file_key_and_nearest_field(tmp_path: Path) -> None:
    path = small_profile(tmp_path)
    tree = yaml.safe_load(path.read_text())
    tree["search_space"]["grid.grid_stepbps"] = tree["search_space"].pop("grid.grid_step_bps")
    path.write_text(yaml.safe_dump(tree))
    with pytest.raises(GridctlError) as err:
        load_profile(path)
    msg = str(err.value)
    assert str(path) in msg and "search_space.grid.grid_stepbps" in msg and "'grid.grid_step_bps'" in msg


def test_unknown_profile_key_names_the_closest_valid_key(tmp_path: Path) -> None:
    path = small_profile(tmp_path, samplr={"kind": "random"})
    with pytest.raises(GridctlError) as err:
        load_profile(path)
    assert str(path) in str(err.value) and "samplr" in str(err.value) and "'sampler'" in str(err.value)


def test_renamed_drawdown_limit_key_names_the_new_key(tmp_path: Path) -> None:
    path = small_profile(tmp_path)
    tree = yaml.safe_load(path.read_text())
    tree["limits"]["max_drawdown_pct"] = tree["limits"].pop("max_drawdown_bar_close_pct")
    path.write_text(yaml.safe_dump(tree))
    with pytest.raises(GridctlError) as err:
        load_profile(path)
    msg = str(err.value)
    assert str(path) in msg and "limits.max_drawdown_pct" in msg
    assert "use limits.max_drawdown_bar_close_pct" in msg


def test_drawdown_limit_reads_the_bar_close_drawdown(tmp_path: Path) -> None:
    # the limit compares against the summary's bar-close drawdown, not the intrabar or daily one
    prof = load_profile(small_profile(tmp_path, limits={"max_drawdown_bar_close_pct": 12.5}))
    row = _row(max_drawdown_bar_close_pct=20.0, max_drawdown_intrabar_pct=90.0)
    metrics = row_metrics(row, 60_000)
    assert metrics["max_drawdown_bar_close_pct"] == 20.0
    assert limit_values([metrics], prof.limits)[1] == pytest.approx(20.0 - 12.5)


def test_a_study_stored_with_the_old_key_and_metric_names_still_reads() -> None:
    from gridctl.research.profiles import migrate_profile_tree

    tree = WIDE.model_dump(mode="json")
    tree["limits"]["max_drawdown_pct"] = tree["limits"].pop("max_drawdown_bar_close_pct")
    assert opt.Profile.model_validate(migrate_profile_tree(tree)) == WIDE
    assert opt.restore_metrics({"max_drawdown_pct": 7.0, "sharpe": None}) == {
        "max_drawdown_bar_close_pct": 7.0,
        "sharpe": pytest.approx(math.nan, nan_ok=True),
    }


def test_space_corner_the_schema_refuses_fails_at_load(tmp_path: Path) -> None:
    path = small_profile(tmp_path)
    tree = yaml.safe_load(path.read_text())
    tree["search_space"]["grid.grid_step_bps"] = {"type": "float", "low": 10, "high": 5000}
    path.write_text(yaml.safe_dump(tree))
    with pytest.raises(GridctlError, match=r"grid.grid_step_bps=5000"):
        load_profile(path)


def test_fraction_of_an_undrawn_parameter_is_an_error(tmp_path: Path) -> None:
    path = small_profile(tmp_path)
    tree = yaml.safe_load(path.read_text())
    del tree["search_space"]["exit.sl_steps"]
    path.write_text(yaml.safe_dump(tree))
    with pytest.raises(GridctlError, match=r"exit.tp_steps.fraction_of: 'exit.sl_steps'"):
        load_profile(path)


WIDE = load_profile("wide")
_WIDE_STRATEGY = load_strategy(WIDE.base.strategy)
_VENUE = load_venue(WIDE.base.venue)


def _draw_strategy() -> st.SearchStrategy[dict[str, Any]]:
    parts = {}
    for name, dist in distributions(WIDE).items():
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            parts[name] = st.sampled_from(list(dist.choices))
        elif isinstance(dist, optuna.distributions.IntDistribution):
            parts[name] = st.integers(dist.low, dist.high)
        else:
            parts[name] = st.floats(dist.low, dist.high)
    return st.fixed_dictionaries(parts)


@settings(max_examples=300, deadline=None)
@given(_draw_strategy())
def test_every_draw_is_a_valid_strategy_in_the_order_the_batch_applies_it(raw: dict[str, Any]) -> None:
    values = resolve_draw(WIDE, raw, _WIDE_STRATEGY)
    strategy, _ = apply_overrides(_WIDE_STRATEGY, _VENUE, values)  # applied key by key, each validated
    assert strategy.regime.ema_fast < strategy.regime.ema_slow
    assert strategy.exit.tp_steps <= 3 * strategy.exit.sl_steps


def test_fraction_draw_maps_to_the_dependent_value() -> None:
    raw = {
        name: (d.choices[0] if hasattr(d, "choices") else d.low) for name, d in distributions(WIDE).items()
    }
    raw.update({"exit.sl_steps": 7, "exit.tp_steps@fraction": 0.5, "regime.ema_slow": 100})
    raw["regime.ema_fast@fraction"] = 0.3
    values = resolve_draw(WIDE, raw)
    assert values["exit.tp_steps"] == round(0.5 * 3 * 7)  # 10.5 -> 10 (banker's rounding)
    assert values["regime.ema_fast"] == 30
    raw["regime.ema_slow"] = 20
    raw["regime.ema_fast@fraction"] = 0.2  # 4, below the field's minimum of 5
    assert resolve_draw(WIDE, raw)["regime.ema_fast"] == 5


def test_neighbours_move_one_step_and_stay_in_range() -> None:
    raw = {
        name: (d.choices[0] if hasattr(d, "choices") else d.low) for name, d in distributions(WIDE).items()
    }
    moves = {(n, s): r[n] for n, s, r in neighbours(WIDE, raw)}
    assert ("regime.ema_slow", -1) not in moves  # already at the low end
    assert moves[("regime.ema_slow", 1)] == 30  # step 10
    assert moves[("grid.grid_levels_long", 1)] == 3
    assert moves[("policy.strategy", 1)] == "core-and-scalp"


# ----------------------------------------------------------------------------------------------------
# Objectives
# ----------------------------------------------------------------------------------------------------


def _row(**kw: float) -> dict[str, float]:
    base = {"final_equity": 11000.0, "total_return_pct": 10.0, "bars": 365 * 1440.0,
            "max_drawdown_bar_close_pct": 5.0, "sharpe": 2.0, "profit_factor": 1.75, "n_exits": 40.0,
            "liquidated": 0.0}  # fmt: skip
    base.update(kw)
    return base


def test_composite_score_by_hand() -> None:
    m = row_metrics(_row(), 60_000)
    assert m["cagr_pct"] == pytest.approx(10.0)  # one 365-day year
    assert m["calmar"] == pytest.approx(2.0)
    # sharpe 2 -> (2+1)/6 = 0.5; pf 1.75 -> 1.25/2.5 = 0.5; calmar 2 -> 0.5; dd 5 -> 0.1
    expected = 0.35 * 0.5 + 0.30 * 0.5 + 0.35 * 0.5 - 0.20 * 0.1
    assert composite_score(m, WIDE.objective) == pytest.approx(expected)
    # fixed bounds clip: sharpe 9 counts as 5, no losses (pf inf) as 3, undefined sharpe as -1
    m2 = row_metrics(_row(sharpe=9.0, profit_factor=math.inf), 60_000)
    assert composite_score(m2, WIDE.objective) == pytest.approx(0.35 + 0.30 + 0.35 * 0.5 - 0.02)
    m3 = row_metrics(_row(sharpe=math.nan), 60_000)
    assert composite_score(m3, WIDE.objective) == pytest.approx(0.15 + 0.175 - 0.02)


def test_limits_are_constraint_values() -> None:
    m = row_metrics(_row(n_exits=10.0, max_drawdown_bar_close_pct=45.0, liquidated=1.0), 60_000)
    m.update(path_return_spread_pct=20.0, same_bar_profit_share_pct=30.0)
    # wide limits: 30 trades, 40 % drawdown, no liquidation, 15 points of spread, 25 % same-bar share
    assert limit_values([m], WIDE.limits) == [30 - 10, 45 - 40, 0.5, 20 - 15, 30 - 25]
    assert limit_names(WIDE.limits) == [
        "min_trades",
        "max_drawdown_bar_close_pct",
        "liquidation",
        "max_path_return_spread_pct",
        "max_same_bar_profit_share_pct",
    ]
    ok = row_metrics(_row(), 60_000)
    ok.update(path_return_spread_pct=3.0, same_bar_profit_share_pct=0.0)
    assert all(v <= 0 for v in limit_values([ok], WIDE.limits))


def test_return_drawdown_objective_is_two_values() -> None:
    spec = load_profile("pareto").objective
    assert objective_values(row_metrics(_row(), 60_000), spec) == (10.0, 5.0)
    assert spec.directions == ["maximize", "minimize"]


# ----------------------------------------------------------------------------------------------------
# Studies
# ----------------------------------------------------------------------------------------------------


def test_same_seed_same_study_and_export_reproduces_the_objective(data_dir: Path, tmp_path: Path) -> None:
    prof = small_profile(tmp_path)
    a = run(prof, data_dir, tmp_path / "s", "a")
    b = run(prof, data_dir, tmp_path / "s", "b")
    assert a.n_trials == b.n_trials == 24
    sa, sb = load_study("a", tmp_path / "s"), load_study("b", tmp_path / "s")
    assert [t.params for t in sa.trials] == [t.params for t in sb.trials]
    assert [t.values for t in sa.trials] == [t.values for t in sb.trials]
    # a different seed draws a different study
    c = run(small_profile(tmp_path, name="other", seed=43), data_dir, tmp_path / "s", "c")
    assert c.n_trials == 24
    assert [t.params for t in load_study("c", tmp_path / "s").trials] != [t.params for t in sa.trials]

    winner = best_trial(sa)
    assert winner is not None and winner.number == a.best_trial and winner.value == a.best_value
    out = export_config(sa, tmp_path / "best.yaml")
    strategy = load_strategy(out)  # what `gridctl backtest --strategy FILE` loads
    work = opt.load_workload(load_profile(prof), data_dir)
    summary = run_single(work.market, strategy, load_venue("binance_futures"), curves=False).summary
    again = objective_values(row_metrics(summary, work.market.bar_ms), work.profile.objective)
    assert again == (winner.value,)
    assert best_config(sa).grid == strategy.grid


def test_optuna_prints_nothing_while_gridctl_optimizes(tmp_path: Path) -> None:
    # Optuna's INFO lines ("A new study created in Journal with name: ...") would interleave with the
    # progress bar; gridctl keeps Optuna at WARNING. A fresh process: other tests quiet Optuna too.
    import subprocess
    import sys

    code = (
        "import optuna\n"
        "from gridctl.research.optimize import open_storage, create_or_load_study\n"
        "from gridctl.research.profiles import load_profile\n"
        f"store = open_storage('quiet', None, __import__('pathlib').Path({str(tmp_path)!r}))\n"
        "create_or_load_study(load_profile('wide'), None, 'quiet', store)\n"
    )
    cmd = [sys.executable, "-c", code]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "A new study created" not in proc.stdout + proc.stderr


def test_wide_draws_a_scrambled_sobol_sequence_and_the_same_seed_the_same_study(
    data_dir: Path, tmp_path: Path
) -> None:
    from scipy.stats import qmc

    assert WIDE.sampler.kind == "qmc"
    assert isinstance(opt.make_sampler(WIDE, WIDE.seed), optuna.samplers.QMCSampler)
    space = {
        "grid.grid_step_bps": {"type": "float", "low": 20.0, "high": 80.0},
        "grid.qty_scale": {"type": "float", "low": 0.8, "high": 1.5},
    }
    prof = small_profile(tmp_path, search_space=space, trials=12, batch_size=4)
    run(prof, data_dir, tmp_path / "s", "q1")
    run(prof, data_dir, tmp_path / "s", "q2")
    s1, s2 = load_study("q1", tmp_path / "s"), load_study("q2", tmp_path / "s")
    assert [t.params for t in s1.trials] == [t.params for t in s2.trials]
    # Trial 0 is drawn before the search space is known; trials 1.. are the Sobol points 0.. of a
    # 2-d sequence scrambled with the profile seed, scaled to the ranges (in draw order).
    points = qmc.Sobol(2, scramble=True, seed=WIDE.seed).random(16)[:11]
    got = np.array([[t.params["grid.grid_step_bps"], t.params["grid.qty_scale"]] for t in s1.trials[1:]])
    want = np.column_stack([20.0 + 60.0 * points[:, 0], 0.8 + 0.7 * points[:, 1]])
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # resuming continues the sequence (point 11 next), it does not redraw the first points
    run(prof, data_dir, tmp_path / "s", "q1", n_trials=14)
    more = load_study("q1", tmp_path / "s").trials[12:]
    nxt = qmc.Sobol(2, scramble=True, seed=WIDE.seed).random(16)[11:13]
    np.testing.assert_allclose(
        [[t.params["grid.grid_step_bps"], t.params["grid.qty_scale"]] for t in more],
        np.column_stack([20.0 + 60.0 * nxt[:, 0], 0.8 + 0.7 * nxt[:, 1]]),
        rtol=1e-12,
    )


def test_worst_path_limit_reruns_every_path_rule_through_the_batch(tmp_path: Path) -> None:
    """Hand-derived (tests/market_builders.ISOLATED: centre 10000, rungs 9900 / 10100, TP 9999, SL
    two steps, qty 0.01, maker fee 0.0002): bar 1 trades 150 either side of 10000, bar 2 rises to 10250.

    high first (= the configured nearer_first here): both round trips close in bar 1 (+2.00, fees
    0.0002 * 0.01 * 39998), equity 10001.920004; in bar 2 the short rung fills again at 10100 (fee
    0.0202) and is marked at 10250 (-1.50): bar-close drawdown 1.5202 / 10001.920004.
    low first: the short lot from 10100 stays open through bar 1 (equity 10000 + 0.99 + 1.00 - fees
    0.0002 * 0.01 * 29999 = 10001.930002), marked at 10250 after bar 2: drawdown 2.5 / 10001.930002.
    """
    from market_builders import flat, make_market
    from market_builders import strategy as iso_strategy
    from market_builders import venue as iso_venue

    market = make_market(
        [*flat(10000.0, 1), (10000.0, 10150.0, 9850.0, 10000.0), (10000.0, 10250.0, 10000.0, 10250.0)]
    )
    dd_high = 1.5202 / 10001.920004 * 100
    dd_low = 2.5 / 10001.930002 * 100
    limits = {"min_trades": 0, "max_drawdown_bar_close_pct": 0.02, "max_worst_path_drawdown_pct": 0.02}
    objective = {
        **yaml.safe_load((PROFILES_DIR / "wide.yaml").read_text())["objective"],
        "path_rule": "configured",
    }
    prof = load_profile(small_profile(tmp_path, limits=limits, objective=objective))
    first, last = int(market.ts[0]), int(market.ts[-1] + market.bar_ms)
    work = opt.Workload(
        prof, iso_strategy(), iso_venue(), market, [opt.Window("full", 0, first, last, market)], tmp_path, "X"
    )
    sets = [{}, {"grid.grid_step_bps": 300.0}, {"backtest.intrabar_path": "low_first"}]
    for chunk in (None, 1):
        res = opt.evaluate(work, sets, chunk=chunk)
        names = limit_names(prof.limits)
        a, far, low = (dict(zip(names, r.constraints, strict=True)) for r in res)
        # set 0 runs high first: within the bar-close limit, but its worst path rule breaks the limit
        assert a["max_drawdown_bar_close_pct"] == pytest.approx(dd_high - 0.02, rel=1e-9)
        assert a["max_worst_path_drawdown_pct"] == pytest.approx(dd_low - 0.02, rel=1e-9)
        assert a["max_drawdown_bar_close_pct"] <= 0 < a["max_worst_path_drawdown_pct"]
        # rungs 300 bps away never fill: no drawdown under any rule
        assert far["max_worst_path_drawdown_pct"] == pytest.approx(-0.02)
        # a set configured low first is itself the worst rule; its bracket's worst is the same number
        assert low["max_drawdown_bar_close_pct"] == pytest.approx(dd_low - 0.02, rel=1e-9)
        assert low["max_worst_path_drawdown_pct"] == pytest.approx(dd_low - 0.02, rel=1e-9)
        assert res[0].attrs["metrics"][WORST_PATH_METRIC] == pytest.approx(dd_low, rel=1e-9)


def test_a_strategy_with_detail_bars_is_optimized_on_them_and_exports_what_reproduces(tmp_path: Path) -> None:
    from gridctl.data.market import load_market
    from gridctl.data.resample import resample_store
    from gridctl.data.sample import SAMPLE_EXCHANGE, SAMPLE_SYMBOL

    data = tmp_path / "data"
    write_sample(data, days=12)
    resample_store(data, SAMPLE_EXCHANGE, SAMPLE_SYMBOL, "1m", "1h")  # hour bars: the path often matters
    base = (REPO / "configs" / "strategies" / "default.yaml").read_text()
    assert "  detail_timeframe: null" in base
    (tmp_path / "strategies").mkdir()
    detailed = tmp_path / "strategies" / "detailed.yaml"
    detailed.write_text(base.replace("  detail_timeframe: null", "  detail_timeframe: 1m"))
    coarse = tmp_path / "strategies" / "coarse.yaml"
    coarse.write_text(base)
    runs = {}
    for name, strat in (("det", detailed), ("coarse", coarse)):
        prof = small_profile(
            tmp_path, name=name, trials=8,
            data={"exchange": "sample", "symbol": None, "timeframe": "1h", "start": None, "end": None},
        )  # fmt: skip
        tree = yaml.safe_load(prof.read_text())
        tree["base"]["strategy"] = str(strat)
        prof.write_text(yaml.safe_dump(tree, sort_keys=False))
        res = run(prof, data, tmp_path / "s", name)
        assert res.n_trials == 8
        runs[name] = load_study(name, tmp_path / "s")
    det, crs = runs["det"], runs["coarse"]
    assert [t.params for t in det.trials] == [t.params for t in crs.trials]  # same seed, same draws
    assert [t.values for t in det.trials] != [t.values for t in crs.trials]  # the 1m path changed fills
    winner = best_trial(det)
    strategy = load_strategy(export_config(det, tmp_path / "best.yaml"))
    assert strategy.backtest.detail_timeframe == "1m"
    work = opt.load_workload(load_profile(tmp_path / "det.yaml"), data)
    assert work.detail is not None and work.detail.timeframe == "1m"
    fine = load_market(data, SAMPLE_EXCHANGE, SAMPLE_SYMBOL, "1m", int(work.market.ts[0]),
                       int(work.market.ts[-1]) + work.market.bar_ms)  # fmt: skip
    venue = load_venue("binance_futures")
    summary = run_single(work.market, strategy, venue, curves=False, detail=fine).summary
    again = objective_values(row_metrics(summary, work.market.bar_ms), work.profile.objective)
    assert again == (winner.value,)


def test_sampler_options_the_kind_does_not_read_are_errors(tmp_path: Path) -> None:
    path = small_profile(tmp_path, sampler={"kind": "qmc", "n_startup_trials": 8})
    with pytest.raises(GridctlError, match=r"sampler kind qmc does not read n_startup_trials"):
        load_profile(path)


def test_best_is_the_best_feasible_trial(data_dir: Path, tmp_path: Path) -> None:
    prof = small_profile(
        tmp_path, limits={"min_trades": 60, "max_drawdown_bar_close_pct": 40, "allow_liquidation": False}
    )
    run(prof, data_dir, tmp_path / "s", "lim")
    study = load_study("lim", tmp_path / "s")
    # wide runs the other intrabar rules only for trials that can still win: the rest are told pruned,
    # with no limit values, under a value no higher than the best's (optimize.contenders_only)
    unchecked = [t for t in study.trials if t.state.name == "PRUNED"]
    assert all(t.user_attrs[opt.ATTR]["path_checked"] is False and not t.constraints for t in unchecked)
    checked = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(checked) + len(unchecked) == 24
    feasible = [t for t in checked if all(v <= 0 for v in t.constraints.values())]
    infeasible = [t for t in checked if t not in feasible]
    assert feasible and infeasible  # the limit splits this study
    assert best_trial(study).value == max(t.value for t in feasible)
    assert all(opt.named_constraints(t)["min_trades"] > 0 for t in infeasible)
    assert all(t.intermediate_values[0] <= best_trial(study).value for t in unchecked)
    # One list in the system attr optuna-dashboard reads, in CONSTRAINT_NAMES order; Optuna reads it too.
    for t in checked:
        listed = t.system_attrs["constraints"]
        assert listed == [opt.named_constraints(t)[n] for n in opt.CONSTRAINT_NAMES[: len(listed)]]
    assert study.best_trial.number == best_trial(study).number  # Optuna's own best is feasible too
    assert study.metric_names == ["composite"]
    frame = study_frame(study)
    assert frame["feasible"].sum() == len(feasible)
    assert list(frame.loc[~frame["path_checked"], "number"]) == [t.number for t in unchecked]
    broken = frame.loc[~frame["feasible"] & frame["path_checked"], "limit.min_trades"]
    assert (broken > 0).all()  # why each one is infeasible


def test_interrupt_fails_only_unfinished_trials_and_resume_completes(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prof = small_profile(tmp_path)
    real = opt.evaluate
    calls = {"n": 0}

    def flaky(*args: Any, **kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(opt.loop, "evaluate", flaky)
    first = run(prof, data_dir, tmp_path / "s", "r")
    assert first.interrupted and first.n_trials == 8
    study = load_study("r", tmp_path / "s")
    states = [t.state for t in study.trials]
    # the batch in flight and the one asked ahead while it ran are failed, nothing else (told trials are
    # complete, or pruned when they could not beat the best: optimize.contenders_only)
    told = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    assert all(s in told for s in states[:8]) and states[8:] == [optuna.trial.TrialState.FAIL] * 16
    kept = [(t.params, t.values) for t in study.trials[:8]]
    monkeypatch.setattr(opt.loop, "evaluate", real)
    second = run(prof, data_dir, tmp_path / "s", "r")
    assert not second.interrupted and second.n_trials == 24 and second.told_here == 16
    study = load_study("r", tmp_path / "s")
    assert [(t.params, t.values) for t in study.trials[:8]] == kept  # nothing lost or redone
    done = [t for t in study.trials if t.state in told]
    assert len(done) == 24 and len({t.number for t in done}) == 24
    # asking for more later extends the same study
    third = run(prof, data_dir, tmp_path / "s", "r", n_trials=32)
    assert third.told_here == 8 and third.n_trials == 32


def test_resume_with_a_changed_profile_is_refused(data_dir: Path, tmp_path: Path) -> None:
    run(small_profile(tmp_path), data_dir, tmp_path / "s", "x", n_trials=8)
    changed = small_profile(tmp_path, name="small", seed=5)
    with pytest.raises(GridctlError, match="differs from profile"):
        run(changed, data_dir, tmp_path / "s", "x")
    other_data = tmp_path / "other"
    write_sample(other_data, days=7)  # same window Jan 2..8, other prices (the sample depends on its length)
    with pytest.raises(GridctlError, match="different data"):
        run(small_profile(tmp_path), other_data, tmp_path / "s", "x")


def test_walk_forward_windows_and_in_and_out_of_sample_attrs(data_dir: Path, tmp_path: Path) -> None:
    val = {"scheme": "walk_forward", "mode": "rolling", "train_days": 3, "test_days": 1, "step_days": 1}
    prof = small_profile(tmp_path, base="fine", name="wf", validation=val, pruner={"kind": "none"})
    work = opt.load_workload(load_profile(prof), data_dir)
    # 6 days (Jan 2..8): folds train [2,5) test [5,6); [3,6) [6,7); [4,7) [7,8)
    day = 86_400_000
    jan2 = 1_704_153_600_000
    got = [(w.kind, w.fold, (w.start_ms - jan2) // day, (w.end_ms - jan2) // day) for w in work.windows]
    assert got == [("train", 0, 0, 3), ("test", 0, 3, 4), ("train", 1, 1, 4), ("test", 1, 4, 5),
                   ("train", 2, 2, 5), ("test", 2, 5, 6)]  # fmt: skip
    anchored = small_profile(tmp_path, base="fine", name="wfa", validation={**val, "mode": "anchored"},
                             pruner={"kind": "none"})  # fmt: skip
    got = [(w.kind, (w.start_ms - jan2) // day, (w.end_ms - jan2) // day)
           for w in opt.load_workload(load_profile(anchored), data_dir).windows]  # fmt: skip
    assert got[:4] == [("train", 0, 3), ("test", 3, 4), ("train", 0, 4), ("test", 4, 5)]
    res = opt.optimize(work.profile, "wf", n_trials=8, studies_dir=tmp_path / "s", work=work)
    trial = load_study("wf", tmp_path / "s").trials[0]
    attrs = trial.user_attrs[opt.ATTR]
    assert len(attrs["in_sample"]) == len(attrs["out_of_sample"]) == 3
    # fold means side by side for the study report
    oos_mean = np.mean([opt.restore_metrics(m)["total_return_pct"] for m in attrs["out_of_sample"]])
    assert trial.user_attrs["oos_metrics"]["total_return_pct"] == pytest.approx(oos_mean)
    assert "sharpe" in trial.user_attrs["is_metrics"]
    # the told value is the in-sample mean (train windows); the test windows' mean is kept apart
    spec = work.profile.objective
    ins = [objective_values(opt.restore_metrics(m), spec)[0] for m in attrs["in_sample"]]
    oos = [objective_values(opt.restore_metrics(m), spec)[0] for m in attrs["out_of_sample"]]
    assert trial.value == pytest.approx(np.mean(ins))
    assert attrs["objective_out_of_sample"][0] == pytest.approx(np.mean(oos))
    assert res.n_trials == 8
    # the stitched out-of-sample curve compounds the folds the batch scored (each under its scored rule)
    from gridctl.research.walkforward import stitched_equity

    study = load_study("wf", tmp_path / "s")
    curve = stitched_equity(study, {0: trial.number, 1: trial.number, 2: trial.number}, data_dir)
    folds = [opt.restore_metrics(m)["total_return_pct"] for m in attrs["out_of_sample"]]
    assert curve["fold_return_pct"] == pytest.approx(folds)
    assert curve["equity"][-1] == pytest.approx(10_000.0 * np.prod([1 + r / 100 for r in folds]))
    assert list(np.unique(curve["fold"])) == [0, 1, 2] and len(curve["ts"]) == 3 * 1440


def test_median_pruner_skips_later_folds(data_dir: Path, tmp_path: Path) -> None:
    val = {"scheme": "walk_forward", "mode": "rolling", "train_days": 2, "test_days": 1, "step_days": 1}
    prune = {"kind": "median", "n_startup_trials": 4, "n_warmup_steps": 0}
    prof = small_profile(tmp_path, base="fine", name="pr", validation=val, pruner=prune, trials=32)
    run(prof, data_dir, tmp_path / "s", "pr")
    study = load_study("pr", tmp_path / "s")
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert pruned, "the median pruner pruned nothing"
    folds = len(complete[0].user_attrs[opt.ATTR]["out_of_sample"])
    assert all(len(t.user_attrs[opt.ATTR]["out_of_sample"]) < folds for t in pruned)


def test_rank_by_worst_neighbour_picks_the_best_worst_case(data_dir: Path, tmp_path: Path) -> None:
    from gridctl.research.robustness import neighbour_table, rank_by_worst_neighbour

    prof = small_profile(tmp_path, name="rb")
    tree = yaml.safe_load(prof.read_text())
    tree["objective"]["rank_by"] = "worst_neighbour"
    tree["objective"]["rank_top_k"] = 3
    prof.write_text(yaml.safe_dump(tree))
    run(prof, data_dir, tmp_path / "s", "rb")
    study = load_study("rb", tmp_path / "s")
    top_by_value = best_trial(study)  # nothing ranked yet: the best value
    work = opt.load_workload(load_profile(prof), data_dir)
    scores = rank_by_worst_neighbour(study, work, 3)
    study = load_study("rb", tmp_path / "s")
    assert len(scores) == 3 and top_by_value.number in scores
    assert best_trial(study).number == max(scores, key=lambda n: (scores[n], -n))
    base, rows = neighbour_table(work, best_trial(study))
    assert base == pytest.approx(best_trial(study).value)
    assert {r.param.split(" ")[0] for r in rows} == {
        n.removesuffix("@fraction") for n in best_trial(study).params
    }
    lowest = min([base] + [v for r in rows for v in (r.down_objective, r.up_objective) if v is not None])
    assert scores[best_trial(study).number] <= lowest + 1e-12


def test_pareto_profile_keeps_a_front(data_dir: Path, tmp_path: Path) -> None:
    from gridctl.research.studies import pareto_trials

    prof = small_profile(tmp_path, base="pareto", name="par", batch_size=12)
    res = run(prof, data_dir, tmp_path / "s", "par")
    study = load_study("par", tmp_path / "s")
    front = pareto_trials(study)
    assert front and res.pareto_size == len(front)
    for t in front:  # no feasible trial dominates a front member
        for o in study.trials:
            if o.state.name == "COMPLETE" and all(v <= 0 for v in o.constraints.values()):
                assert not (o.values[0] > t.values[0] and o.values[1] < t.values[1])


# ----------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_cli_json_and_study_commands(data_dir: Path, tmp_path: Path) -> None:
    prof = small_profile(tmp_path)
    sd = str(tmp_path / "s")
    res = _cli("optimize", "--profile", str(prof), "--data", str(data_dir), "--studies-dir", sd,
               "--study-name", "cli", "--trials", "16", "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    for key in ("study_name", "n_trials", "best_value", "best_params", "elapsed_s", "trials_per_s"):
        assert key in out
    assert out["n_trials"] == 16 and out["study_name"] == "cli" and out["objective"] == "composite"
    # the time breakdown adds up to the elapsed time (the CLI loads the data before optimize())
    t = out["timings_s"]
    assert {"sampler_s", "storage_s", "kernel_s", "other_s", "load_s"} <= set(t)
    assert all(t[k] > 0 for k in ("sampler_s", "storage_s", "kernel_s", "load_s"))
    assert sum(v for k, v in t.items() if k != "load_s") == pytest.approx(out["elapsed_s"], abs=0.01)
    assert out["cpu_s"] > 0
    assert (tmp_path / "s" / "cli.journal").is_file()
    listing = json.loads(_cli("study", "list", "--studies-dir", sd, "--json").stdout)
    assert [r["study_name"] for r in listing] == ["cli"] and listing[0]["n_trials"] == 16
    show = _cli("study", "show", "cli", "--studies-dir", sd, "--data", str(data_dir), "--json", "--top", "4")
    assert show.exit_code == 0, show.stderr
    shown = json.loads(show.stdout)
    assert "deflated_sharpe" in shown and "pbo" in shown
    assert shown["configured_rule_only"] == shown["states"]["pruned"]  # wide prunes only those
    assert shown["states"]["complete"] + shown["states"]["pruned"] == 16
    assert shown["best_value"] == out["best_value"] and shown["best_params"] == out["best_params"]
    assert shown["robustness"]["objective"] == pytest.approx(out["best_value"])
    text = _cli("study", "show", "cli", "--studies-dir", sd, "--data", str(data_dir)).stdout
    assert "plateau" in text or "spike" in text
    n = min(t.number for t in load_study("cli", tmp_path / "s").trials if t.state.name == "COMPLETE")
    exp = _cli(
        "study", "export", "cli", "--studies-dir", sd, "--out", str(tmp_path / "e.yaml"), "--trial", str(n)
    )
    assert exp.exit_code == 0, exp.stderr
    assert load_strategy(tmp_path / "e.yaml").strategy.name == f"cli-trial{n}"
    rep = _cli(
        "study", "report", "cli", "--studies-dir", sd, "--data", str(data_dir), "--out", str(tmp_path / "rep")
    )
    assert rep.exit_code == 0, rep.stderr
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "cli" in page and "<table" in page
    # The report wrote nothing to the study; its DSR inputs are show's (6 days: too few for CSCV).
    assert "daily_returns" not in load_study("cli", tmp_path / "s").user_attrs
    assert shown["periods"] == 6 and shown["pbo"] is None
    assert any("not enough data for PBO" in n for n in shown["notes"])


def test_cli_user_errors_exit_2(data_dir: Path, tmp_path: Path) -> None:
    res = _cli("optimize", "--profile", "wid")
    assert res.exit_code == 2 and "no profile named 'wid'" in res.stderr and "wide" in res.stderr
    res = _cli("study", "show", "nope", "--studies-dir", str(tmp_path))
    assert res.exit_code == 2 and "no study 'nope'" in res.stderr
    res = _cli("optimize", "--profile", "wide", "--trials", "0", "--data", str(data_dir),
               "--studies-dir", str(tmp_path))  # fmt: skip
    assert res.exit_code == 2 and "--trials" in res.stderr


def test_ctrl_c_in_a_real_process_keeps_completed_trials(data_dir: Path, tmp_path: Path) -> None:
    prof = small_profile(tmp_path, trials=100000, batch_size=4)
    env = {**os.environ, "GRIDCTL_STUDIES_DIR": str(tmp_path / "s")}
    cmd = [sys.executable, "-m", "gridctl.cli", "optimize", "--profile", str(prof), "--data", str(data_dir),
           "--study-name", "sig", "--json"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal = tmp_path / "s" / "sig.journal"
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            if journal.exists():
                try:
                    trials = load_study("sig", tmp_path / "s").trials
                except GridctlError:  # created a moment ago, its profile not recorded yet
                    time.sleep(0.1)
                    continue
                done = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
                if len(done) >= 8:
                    break
            time.sleep(0.1)
    except BaseException:
        proc.kill()  # never leave a 100,000-trial study running behind a failed test
        proc.communicate()
        raise
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    out = json.loads(stdout)
    assert out["interrupted"] is True
    study = load_study("sig", tmp_path / "s")
    states = [t.state.name for t in study.trials]
    assert "RUNNING" not in states
    assert states.count("COMPLETE") + states.count("PRUNED") == out["n_trials"] >= 8


def test_journal_trials_of_a_dead_local_worker_are_failed_on_resume(data_dir: Path, tmp_path: Path) -> None:
    prof = small_profile(tmp_path)
    run(prof, data_dir, tmp_path / "s", "dead", n_trials=8)
    study = load_study("dead", tmp_path / "s")
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    orphan = study.ask(distributions(load_profile(prof)))  # what a SIGKILLed worker leaves behind
    set_system_attr(study, orphan, opt.WORKER_ATTR, f"{socket.gethostname()}:{gone.stdout.strip()}")
    alive = study.ask(distributions(load_profile(prof)))  # a live worker's trial (this process) is left alone
    set_system_attr(study, alive, opt.WORKER_ATTR, f"{socket.gethostname()}:{os.getpid()}")
    res = run(prof, data_dir, tmp_path / "s", "dead", n_trials=12)
    trials = load_study("dead", tmp_path / "s").trials
    assert trials[orphan.number].state == optuna.trial.TrialState.FAIL
    assert trials[alive.number].state == optuna.trial.TrialState.RUNNING
    # the live worker's trial in flight counts toward the target, so no worker overshoots it
    assert res.n_trials == 11 and res.told_here == 3


def test_jobs_outside_the_core_count_is_an_error(data_dir: Path, tmp_path: Path) -> None:
    prof = str(small_profile(tmp_path))
    res = _cli(
        "optimize",
        "--profile",
        prof,
        "--jobs",
        "999",
        "--data",
        str(data_dir),
        "--studies-dir",
        str(tmp_path),
    )
    assert res.exit_code == 2 and "--jobs must be 1.." in res.stderr


def _journal_lock_holder(journal: Path) -> subprocess.Popen:
    """A process that takes the journal's lock the way gridctl does and keeps it until killed."""
    code = (
        "import time; from gridctl.research.optuna_compat import OwnedJournalLock; "
        f"OwnedJournalLock({str(journal)!r}).acquire(); print('held', flush=True); time.sleep(600)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def _acquiring(lock: OwnedJournalLock) -> threading.Event:
    """Start taking ``lock`` in a thread; the event is set once it is taken."""
    taken = threading.Event()
    threading.Thread(target=lambda: (lock.acquire(), taken.set()), daemon=True).start()
    return taken


def test_a_journal_lock_is_kept_while_its_holder_lives_and_broken_once_it_is_killed(tmp_path: Path) -> None:
    journal = tmp_path / "s.journal"
    journal.touch()
    holder = _journal_lock_holder(journal)
    # grace_period=None: Optuna's rule (break a lock unchanged for 30 s) never fires, only the owner's
    lock = OwnedJournalLock(str(journal), grace_period=None)
    taken = _acquiring(lock)
    try:
        assert not taken.wait(1.0), "the lock of a live holder was taken"
        os.kill(holder.pid, signal.SIGKILL)  # killed holding it: nothing released
        holder.wait(timeout=30)
        assert taken.wait(60), "the lock of a dead holder was never broken"
        owner = Path(f"{journal}.lock.owner").read_text(encoding="utf-8")
        assert owner == f"{socket.gethostname()}:{os.getpid()}"
    finally:
        holder.kill()
        holder.wait(timeout=30)
    lock.release()
    assert not Path(f"{journal}.lock").exists() and not Path(f"{journal}.lock.owner").exists()
    # a lock left by a process killed before this one started waiting is broken at once too
    holder = _journal_lock_holder(journal)
    holder.kill()
    holder.wait(timeout=30)
    assert Path(f"{journal}.lock").is_symlink()
    assert _acquiring(lock).wait(60), "a lock left by a dead process was never broken"
    lock.release()


def test_a_worker_joining_a_study_being_created_waits_for_its_profile(tmp_path: Path) -> None:
    prof = load_profile(small_profile(tmp_path))
    store = opt.open_storage("racing", None, tmp_path / "s")
    record = opt.create_or_load_study(prof, None, "ref", opt.open_storage("ref", None, tmp_path / "s"))
    # what a worker that started a moment earlier has done so far: created the study, not yet its profile
    optuna.create_study(study_name="racing", storage=store, directions=prof.objective.directions)

    def finish_creating() -> None:
        time.sleep(0.3)
        optuna.load_study(study_name="racing", storage=store).set_user_attr(
            opt.STUDY_ATTR, record.user_attrs[opt.STUDY_ATTR]
        )

    creator = threading.Thread(target=finish_creating)
    creator.start()
    try:
        joined = opt.create_or_load_study(prof, None, "racing", store)
    finally:
        creator.join()
    assert joined.user_attrs[opt.STUDY_ATTR] == record.user_attrs[opt.STUDY_ATTR]
    # a study with trials and no profile was made by something else: refused
    foreign = optuna.create_study(study_name="foreign", storage=store)
    foreign.tell(foreign.ask(), 1.0)
    with pytest.raises(GridctlError, match="not created by gridctl optimize"):
        opt.create_or_load_study(prof, None, "foreign", store)


def test_a_worker_joined_on_one_journal_study_reseeds_instead_of_drawing_the_same_points(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two processes that open a fresh study together both seed the sampler with the profile's seed.
    # Here the other worker's first trial appears between this worker's create and its first ask
    # (as when the other took the journal lock first); the random sampler then must not repeat the
    # draws a lone worker with that seed makes.
    prof = small_profile(tmp_path, sampler={"kind": "random"}, trials=8, batch_size=4)
    alone = run(prof, data_dir, tmp_path / "a", "alone", n_trials=8)
    assert alone.n_trials == 8
    solo_points = {tuple(sorted(t.params.items())) for t in load_study("alone", tmp_path / "a").trials}
    real_create = opt.create_or_load_study

    def create_then_other_worker_asks(*a: Any, **kw: Any) -> optuna.Study:
        study = real_create(*a, **kw)
        other = study.ask(distributions(load_profile(prof)))  # drawn by a worker seeded like this one
        set_system_attr(study, other, opt.WORKER_ATTR, f"{socket.gethostname()}:{os.getppid()}")
        return study

    monkeypatch.setattr(opt.loop, "create_or_load_study", create_then_other_worker_asks)
    run(prof, data_dir, tmp_path / "b", "joined", n_trials=9)
    told = ("COMPLETE", "PRUNED")  # pruned: could not beat the best (optimize.contenders_only)
    mine = [t for t in load_study("joined", tmp_path / "b").trials if t.state.name in told]
    assert len(mine) == 8
    assert not {tuple(sorted(t.params.items())) for t in mine} & solo_points


def test_a_lone_worker_keeps_its_seeded_draws(data_dir: Path, tmp_path: Path) -> None:
    prof = small_profile(tmp_path, sampler={"kind": "random"}, trials=8, batch_size=4)
    run(prof, data_dir, tmp_path / "a", "one", n_trials=8)
    run(prof, data_dir, tmp_path / "b", "two", n_trials=8)
    first = [t.params for t in load_study("one", tmp_path / "a").trials]
    assert first == [t.params for t in load_study("two", tmp_path / "b").trials]
