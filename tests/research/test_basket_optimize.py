"""The optimizer over a basket (issue #16): profiles naming a basket, shared and per-symbol parameters,
the basket batch driver, `gridctl optimize` / `study show` / `study export` and walk-forward.

Two symbols are stored under the exchange name ``synth`` (as in test_basket_backtest.py): BTC/USDT:USDT
(the sample generator's path near 60,000) and ETH/USDT:USDT (another seed's path divided by 20 on
ETH's 0.01 tick, starting four hours later). Expected values come from ``engine.basket.run_basket``
(the recording driver, one config at a time), never from the batch driver under test.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from gridctl.cli import app
from gridctl.configs.errors import GridctlError
from gridctl.configs.loader import load_strategy, load_venue
from gridctl.configs.overrides import apply_overrides, basket_strategies
from gridctl.data.sample import generate_sample
from gridctl.data.store import write_candles, write_funding
from gridctl.engine.basket import run_basket
from gridctl.engine.batch import run_basket_batch
from gridctl.engine.records import SUMMARY_FIELDS
from gridctl.research import optimize as opt
from gridctl.research.objectives import objective_values, row_metrics
from gridctl.research.profiles import load_profile
from gridctl.research.reproduce import scored_rule
from gridctl.research.space import resolve_draw
from gridctl.research.stats import daily_equity, daily_returns
from gridctl.research.studies import load_study, trial_daily_returns

BTC, ETH, SOL = "BTC/USDT:USDT", "ETH/USDT:USDT", "SOL/USDT:USDT"
DAYS = 4
ETH_LATE_BARS = 240


def store_basket(root: Path) -> None:
    for symbol, seed, scale, tick, skip in ((BTC, 7, 1.0, 0.1, 0), (ETH, 11, 20.0, 0.01, ETH_LATE_BARS)):
        candles, _mark, funding = generate_sample(days=DAYS, seed=seed)
        prices = ("open", "high", "low", "close")
        candles = candles.with_columns(((pl.col(c) / scale / tick).round() * tick).round(2) for c in prices)
        write_candles(root, "synth", symbol, "1m", candles.slice(skip))
        write_funding(root, "synth", symbol, funding.with_columns(pl.col("mark_price") / scale))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("basket-opt-data")
    store_basket(path)
    return path


def profile_file(tmp_path: Path, name: str = "bask", **changes: Any) -> Path:
    """A small basket profile: grid step shared, sl_steps per symbol, ETH's counter_qty_scale its own."""
    tree: dict[str, Any] = {
        "name": name,
        "base": {"strategy": "default", "venue": "binance_futures"},
        "data": {"exchange": "synth", "symbols": [BTC, ETH], "timeframe": "1m"},
        "search_space": {
            "grid.grid_step_bps": {"type": "float", "low": 20, "high": 80},
            "exit.sl_steps": {"type": "int", "low": 3, "high": 8, "per_symbol": True},
            f"symbol_overrides.{ETH}.policy.counter_qty_scale": {"type": "float", "low": 0.2, "high": 1.0},
        },
        "trials": 6,
        "batch_size": 6,
        "sampler": {"kind": "random"},
        "objective": {"kind": "total_return", "path_rule": "worst"},
        "limits": {"min_trades": 1, "max_drawdown_bar_close_pct": 60},
        "seed": 5,
    }
    for key, value in changes.items():
        if key in ("base", "data"):  # merged into the defaults; any other key replaced
            tree[key] = {**tree[key], **value}
        else:
            tree[key] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def account_of(
    work: Any, market: Any, overrides: dict[str, Any], rule: str | None = None
) -> dict[str, float]:
    """The account summary ``run_basket`` gives for a trial's overrides on ``market`` (a BasketMarket)."""
    ov = dict(overrides)
    if rule is not None:
        ov["backtest.intrabar_path"] = rule
    strategy, venue = apply_overrides(work.strategy, work.venue, ov)
    return run_basket(market.markets, basket_strategies(strategy), venue, curves=False).summary


def same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


# ----------------------------------------------------------------------------------------------------
# Profiles: a basket, shared and per-symbol parameters, one-line refusals
# ----------------------------------------------------------------------------------------------------


def test_per_symbol_entries_expand_to_one_key_per_basket_symbol_in_basket_order(tmp_path: Path) -> None:
    prof = load_profile(profile_file(tmp_path))
    assert list(prof.search_space) == [
        "grid.grid_step_bps",
        f"symbol_overrides.{BTC}.exit.sl_steps",
        f"symbol_overrides.{ETH}.exit.sl_steps",
        f"symbol_overrides.{ETH}.policy.counter_qty_scale",
    ]
    assert not any(spec.per_symbol for spec in prof.search_space.values())
    # a per-symbol fraction_of follows its own symbol's parent
    space = {
        "exit.sl_steps": {"type": "int", "low": 3, "high": 8, "per_symbol": True},
        "exit.tp_steps": {"type": "int", "fraction_of": "exit.sl_steps", "scale": 3, "low": 0.2, "high": 1.0,
                          "per_symbol": True},
    }  # fmt: skip
    frac = load_profile(profile_file(tmp_path, name="frac", search_space=space))
    assert frac.search_space[f"symbol_overrides.{ETH}.exit.tp_steps"].fraction_of == (
        f"symbol_overrides.{ETH}.exit.sl_steps"
    )


def test_per_symbol_draws_land_in_their_own_symbols_strategy(tmp_path: Path, data_dir: Path) -> None:
    prof = load_profile(profile_file(tmp_path))
    work = opt.load_workload(prof, data_dir)
    raw = {
        "grid.grid_step_bps": 44.0,
        f"symbol_overrides.{BTC}.exit.sl_steps": 7,
        f"symbol_overrides.{ETH}.exit.sl_steps": 4,
        f"symbol_overrides.{ETH}.policy.counter_qty_scale": 0.25,
    }
    overrides = resolve_draw(prof, raw, work.strategy)
    strategy, _ = apply_overrides(work.strategy, work.venue, overrides)
    own = basket_strategies(strategy)
    assert list(own) == [BTC, ETH]
    assert (own[BTC].grid.grid_step_bps, own[ETH].grid.grid_step_bps) == (44.0, 44.0)  # shared
    assert (own[BTC].exit.sl_steps, own[ETH].exit.sl_steps) == (7, 4)
    default_scale = load_strategy("default").policy.counter_qty_scale
    assert (own[BTC].policy.counter_qty_scale, own[ETH].policy.counter_qty_scale) == (default_scale, 0.25)
    assert strategy.symbol_overrides == {
        BTC: {"exit.sl_steps": 7},
        ETH: {"exit.sl_steps": 4, "policy.counter_qty_scale": 0.25},
    }
    # the same config written by hand (per-symbol --set texts) runs the same account as the batch row
    by_hand = load_strategy(
        "default",
        [
            f"strategy.symbols={json.dumps([BTC, ETH])}",
            "grid.grid_step_bps=44",
            f"symbol_overrides={json.dumps(strategy.symbol_overrides)}",
        ],
    )
    venue = load_venue("binance_futures")
    want = run_basket(work.market.markets, basket_strategies(by_hand), venue, curves=False).summary
    (row,) = run_basket_batch(work.market.markets, work.strategy, venue, [overrides])
    for name in SUMMARY_FIELDS:
        assert same(float(row[name]), want[name]), name


def test_the_basket_batch_row_is_run_baskets_account_summary_field_by_field(
    data_dir: Path, tmp_path: Path
) -> None:
    work = opt.load_workload(load_profile(profile_file(tmp_path)), data_dir)
    sets = [
        {},
        {"grid.grid_step_bps": 30.0},
        {"grid.grid_step_bps": 60.0, "regime.ema_slow": 80, f"symbol_overrides.{ETH}.exit.sl_steps": 3},
        {"backtest.intrabar_path": "farther_first", f"symbol_overrides.{BTC}.grid.grid_levels_long": 2},
    ]
    rows = run_basket_batch(work.market.markets, work.strategy, work.venue, sets)
    fills = set()
    for ov, row in zip(sets, rows, strict=True):
        want = account_of(work, work.market, ov)
        for name in SUMMARY_FIELDS:
            assert same(float(row[name]), want[name]), (ov, name)
        fills.add(want["n_fills"])
    assert len(fills) == len(sets)  # the sets really differ


def _refused(tmp_path: Path, **changes: Any) -> str:
    path = profile_file(tmp_path, name="bad", **changes)
    with pytest.raises(GridctlError) as err:
        load_profile(path)
    text = str(err.value)
    assert "\n" not in text and str(path) in text
    return text


def test_a_profile_naming_a_symbol_outside_the_basket_is_refused_in_one_line(tmp_path: Path) -> None:
    space = {f"symbol_overrides.{SOL}.grid.grid_step_bps": {"type": "float", "low": 20, "high": 80}}
    text = _refused(tmp_path, search_space=space)
    assert f"search_space.symbol_overrides.{SOL}.grid.grid_step_bps" in text
    assert f"{SOL} is not in the basket ['{BTC}', '{ETH}']" in text
    # a per-symbol key in a single-symbol study names the symbol
    text = _refused(tmp_path, search_space=space, data={"exchange": "synth", "symbols": None, "symbol": BTC})
    assert f"names {SOL} but this study trades one symbol" in text
    # per_symbol needs a basket
    per = {"exit.sl_steps": {"type": "int", "low": 3, "high": 8, "per_symbol": True}}
    text = _refused(tmp_path, search_space=per, data={"symbols": None})
    assert "search_space.exit.sl_steps: per_symbol needs a basket" in text
    # the account's fields are one per basket
    acct = {
        f"symbol_overrides.{ETH}.risk_management.max_drawdown_pct": {"type": "float", "low": 5, "high": 20}
    }
    text = _refused(tmp_path, search_space=acct)
    assert f"search_space.symbol_overrides.{ETH}.risk_management.max_drawdown_pct" in text
    assert "the account's gates" in text


def test_a_parameter_drawn_twice_per_symbol_and_by_its_own_key_is_refused(tmp_path: Path) -> None:
    """``grid.grid_step_bps`` with ``per_symbol: true`` draws ``symbol_overrides.<ETH>.grid.grid_step_bps``;
    an entry of that very name as well would define ETH's parameter twice, with two ranges. Found walking
    issue #16: the profile loaded and the later entry's range silently replaced the other's (ETH drawn in
    20..50 only, the per_symbol entry's 20..120 ignored). Refused in one line naming both, in either order."""
    own = {"type": "float", "low": 20, "high": 50}
    per = {"type": "float", "low": 20, "high": 120, "per_symbol": True}
    name = f"symbol_overrides.{ETH}.grid.grid_step_bps"
    for space in ({"grid.grid_step_bps": per, name: own}, {name: own, "grid.grid_step_bps": per}):
        text = _refused(tmp_path, search_space=space)
        assert f"search_space.{name}: drawn twice" in text, text
        assert "'grid.grid_step_bps' (per_symbol: true)" in text, text
    # the other symbol's own entry beside a shared (not per-symbol) draw still loads
    ok = load_profile(
        profile_file(tmp_path, name="ok", search_space={"grid.grid_step_bps": {**per, "per_symbol": False},
                                                      name: own})
    )  # fmt: skip
    assert list(ok.search_space) == ["grid.grid_step_bps", name]


def test_a_shared_key_the_strategy_overrides_for_a_symbol_is_refused(tmp_path: Path) -> None:
    base = load_strategy(
        "default",
        [
            f"strategy.symbols={json.dumps([BTC, ETH])}",
            f'symbol_overrides={{"{ETH}": {{"exit.sl_steps": 5}}}}',
        ],
    )
    strat = tmp_path / "basket.yaml"
    strat.write_text(yaml.safe_dump(base.model_dump(mode="json"), sort_keys=False))
    space = {"exit.sl_steps": {"type": "int", "low": 3, "high": 8}}
    text = _refused(tmp_path, base={"strategy": str(strat)}, search_space=space, data={"symbols": None})
    assert f"search_space.exit.sl_steps: the strategy's symbol_overrides.{ETH} sets exit.sl_steps" in text
    # naming one symbol of a basket strategy as a single market is refused too
    text = _refused(tmp_path, base={"strategy": str(strat)}, data={"symbols": None, "symbol": BTC})
    assert f"data.symbol: {BTC} with the basket strategy" in text
    # the strategy's own basket, drawn per symbol, loads (its basket from strategy.symbols)
    per = {"exit.sl_steps": {"type": "int", "low": 3, "high": 8, "per_symbol": True}}
    ok = load_profile(profile_file(tmp_path, name="own", base={"strategy": str(strat)}, search_space=per,
                                   data={"symbols": None}))  # fmt: skip
    assert list(ok.search_space) == [
        f"symbol_overrides.{BTC}.exit.sl_steps",
        f"symbol_overrides.{ETH}.exit.sl_steps",
    ]


# ----------------------------------------------------------------------------------------------------
# A basket study end to end
# ----------------------------------------------------------------------------------------------------


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_a_basket_study_from_the_cli_scores_each_trial_as_run_basket_and_its_export_reproduces_it(
    data_dir: Path, tmp_path: Path
) -> None:
    prof = profile_file(tmp_path)
    sd = str(tmp_path / "s")
    res = _cli("optimize", "--profile", str(prof), "--data-dir", str(data_dir), "--studies-dir", sd,
               "--study-name", "bk", "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["n_trials"] == 6
    study = load_study("bk", tmp_path / "s")
    work = opt.load_workload(load_profile(prof), data_dir)
    assert opt.study_info(study)["data"]["symbol"] == f"{BTC},{ETH}"
    checked = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        attrs = t.user_attrs[opt.ATTR]
        metrics = opt.restore_metrics(attrs["metrics"])
        rule = scored_rule(metrics)
        want = account_of(work, work.market, attrs["overrides"], rule)
        assert metrics["total_return_pct"] == want["total_return_pct"]
        assert t.value == objective_values(row_metrics(want, work.market.bar_ms), work.profile.objective)[0]
        checked += 1
    assert checked >= 1
    # study show: leaderboard, robustness, DSR from the account's daily returns
    show = _cli("study", "show", "bk", "--studies-dir", sd, "--data-dir", str(data_dir), "--json")
    assert show.exit_code == 0, show.stderr
    shown = json.loads(show.stdout)
    assert shown["best_value"] == out["best_value"] and shown["periods"] == DAYS
    winner = opt.best_trial(study)
    assert winner is not None
    (col,) = trial_daily_returns(study, [winner.number], data_dir).T
    strategy, venue = apply_overrides(work.strategy, work.venue, winner.user_attrs[opt.ATTR]["overrides"])
    acct = run_basket(work.market.markets, basket_strategies(strategy), venue, curves=True).account_equity
    days, eq = daily_equity(acct["ts"], acct["equity"])
    assert len(days) == DAYS and np.array_equal(col, daily_returns(eq, 10_000.0))
    # export: the file is the basket with the trial's shared and per-symbol values ...
    exp = _cli("study", "export", "bk", "--studies-dir", sd, "--out", str(tmp_path / "best.yaml"))
    assert exp.exit_code == 0, exp.stderr
    exported = load_strategy(tmp_path / "best.yaml")
    assert exported.strategy.symbols == [BTC, ETH]
    drawn = winner.user_attrs[opt.ATTR]["overrides"]
    assert exported.grid.grid_step_bps == drawn["grid.grid_step_bps"]
    assert exported.symbol_overrides[BTC]["exit.sl_steps"] == drawn[f"symbol_overrides.{BTC}.exit.sl_steps"]
    assert exported.symbol_overrides[ETH] == {
        "exit.sl_steps": drawn[f"symbol_overrides.{ETH}.exit.sl_steps"],
        "policy.counter_qty_scale": drawn[f"symbol_overrides.{ETH}.policy.counter_qty_scale"],
    }
    # ... and `gridctl backtest --strategy FILE` gives the trial's account figures bit for bit
    bt = _cli("backtest", "--strategy", str(tmp_path / "best.yaml"), "--data-dir", str(data_dir),
              "--exchange", "synth", "--json")  # fmt: skip
    assert bt.exit_code == 0, bt.stderr
    account = json.loads(bt.stdout)["account"]
    stored = opt.restore_metrics(winner.user_attrs[opt.ATTR]["metrics"])
    assert account["total_return_pct"] == stored["total_return_pct"] == winner.value
    assert account["max_drawdown_bar_close_pct"] == stored["max_drawdown_bar_close_pct"]
    assert account["n_lots_closed"] == stored["trades"]


def test_walk_forward_on_a_basket_scores_every_fold_as_run_basket_on_its_window(
    data_dir: Path, tmp_path: Path
) -> None:
    val = {"scheme": "walk_forward", "mode": "rolling", "train_days": 1, "test_days": 1, "step_days": 1}
    objective = {"kind": "total_return", "path_rule": "configured"}
    path = profile_file(tmp_path, name="bwf", validation=val, trials=4, batch_size=4, objective=objective)
    prof = load_profile(path)
    work = opt.load_workload(prof, data_dir)
    # 4 days: folds train [d0,d1) test [d1,d2); [d1,d2) [d2,d3); [d2,d3) [d3,d4)
    day = 86_400_000
    first = work.windows[0].start_ms
    got = [(w.kind, w.fold, (w.start_ms - first) // day, (w.end_ms - first) // day) for w in work.windows]
    assert got == [("train", 0, 0, 1), ("test", 0, 1, 2), ("train", 1, 1, 2), ("test", 1, 2, 3),
                   ("train", 2, 2, 3), ("test", 2, 3, 4)]  # fmt: skip
    assert all(
        isinstance(w.market, opt.BasketMarket) and w.market.symbols == (BTC, ETH) for w in work.windows
    )
    # ETH starts 4 h late: its first window holds 20 h of its bars, BTC's 24 h
    w0 = work.windows[0].market.markets
    assert (len(w0[BTC].ts), len(w0[ETH].ts)) == (1440, 1440 - ETH_LATE_BARS)
    res = opt.optimize(work.profile, "bwf", studies_dir=tmp_path / "s", work=work)
    assert res.n_trials == 4
    study = load_study("bwf", tmp_path / "s")
    t = next(t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE)
    attrs = t.user_attrs[opt.ATTR]
    assert len(attrs["in_sample"]) == len(attrs["out_of_sample"]) == 3
    for w in work.windows:
        stored = attrs["in_sample" if w.kind == "train" else "out_of_sample"][w.fold]
        want = account_of(work, w.market, attrs["overrides"])
        assert opt.restore_metrics(stored)["total_return_pct"] == want["total_return_pct"], (w.kind, w.fold)
    ins = [opt.restore_metrics(m)["total_return_pct"] for m in attrs["in_sample"]]
    assert t.value == pytest.approx(np.mean(ins))
    # the stitched out-of-sample curve is the account's, fold after fold
    from gridctl.research.walkforward import stitched_equity

    curve = stitched_equity(study, {0: t.number, 1: t.number, 2: t.number}, data_dir)
    folds = [opt.restore_metrics(m)["total_return_pct"] for m in attrs["out_of_sample"]]
    assert curve["fold_return_pct"] == pytest.approx(folds)
    assert len(curve["ts"]) == 3 * 1440


def test_the_basket_batch_walks_each_symbols_detail_bars_as_run_basket_does(data_dir: Path) -> None:
    from gridctl.data.market import load_market
    from gridctl.data.resample import resample_store

    for symbol in (BTC, ETH):
        resample_store(data_dir, "synth", symbol, "1m", "15m")
    markets = {s: load_market(data_dir, "synth", s, "15m", None, None) for s in (BTC, ETH)}
    fine = {s: load_market(data_dir, "synth", s, "1m", None, None) for s in (BTC, ETH)}
    basket = [f"strategy.symbols={json.dumps([BTC, ETH])}", "grid.grid_step_bps=25"]
    walked = load_strategy("default", [*basket, "backtest.detail_timeframe=1m"])
    own = load_strategy("default", basket)
    venue = load_venue("binance_futures")
    sets = [{}, {"backtest.intrabar_path": "farther_first"}, {f"symbol_overrides.{ETH}.exit.sl_steps": 3}]
    rows = run_basket_batch(markets, walked, venue, sets, detail=fine)
    plain = run_basket_batch(markets, own, venue, sets)
    for ov, row in zip(sets, rows, strict=True):
        s, v = apply_overrides(walked, venue, ov)
        want = run_basket(markets, basket_strategies(s), v, curves=False, detail=fine).summary
        for name in SUMMARY_FIELDS:
            assert same(float(row[name]), want[name]), (ov, name)
    # the 1m walk decides the order within a 15m bar: farther_first on the 15m OHLC alone fills otherwise
    assert rows[1]["final_equity"] != plain[1]["final_equity"]


def test_per_symbol_override_keys_replace_the_files_value_and_refuse_what_no_symbol_has() -> None:
    base = load_strategy(
        "default",
        [
            f"strategy.symbols={json.dumps([BTC, ETH])}",
            f"symbol_overrides={json.dumps({ETH: {'exit.sl_steps': 5}})}",
        ],
    )
    venue = load_venue("binance_futures")
    s, _ = apply_overrides(base, venue, {f"symbol_overrides.{ETH}.exit.sl_steps": 9, "exit.sl_steps": 4})
    own = basket_strategies(s)
    assert (own[BTC].exit.sl_steps, own[ETH].exit.sl_steps) == (4, 9)  # the draw replaced the file's 5
    for key, why in (
        (f"symbol_overrides.{SOL}.exit.sl_steps", f"{SOL} is not in the basket"),
        (f"symbol_overrides.{ETH}.exit", "must look like 'symbol_overrides.<SYMBOL>.section.key'"),
        (f"symbol_overrides.{ETH}.exit.sl_stps", "did you mean 'exit.sl_steps'"),
        (f"symbol_overrides.{ETH}.backtest.initial_balance", "set it for the whole strategy"),
    ):
        with pytest.raises(GridctlError) as err:
            apply_overrides(base, venue, {key: 3})
        assert why in str(err.value) and "\n" not in str(err.value), key
