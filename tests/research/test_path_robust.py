"""Rankings that cannot reward the fill model: trials scored on their worst intrabar path rule, with the
spread across the rules and the same-bar share of gross profit recorded (engine counters checked
against the fills ledger) and limited."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from gridctl.configs.loader import load_strategy, load_venue
from gridctl.data.market import load_market
from gridctl.data.sample import write_sample
from gridctl.engine.batch import apply_overrides, run_batch
from gridctl.engine.enums import FillKind
from gridctl.engine.run import run_single
from gridctl.research import optimize as opt
from gridctl.research.objectives import limit_names
from gridctl.research.profiles import PROFILES_DIR, load_profile
from gridctl.research.stats import BRACKET_RULES


def _profile(tmp_path: Path, objective: dict, limits: dict) -> Path:
    tree = yaml.safe_load((PROFILES_DIR / "wide.yaml").read_text())
    tree.update(name="pr", trials=8, batch_size=8, objective=objective, limits=limits)
    path = tmp_path / "pr.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def test_worst_rule_scores_the_trial_and_spread_and_same_bar_share_are_recorded(tmp_path: Path) -> None:
    """tests/market_builders.ISOLATED, hand-derived in test_optimize's worst-path test: bar 1 trades 150
    either side of 10000, bar 2 rises to 10250. nearer_first and high_first go high first here (150 up
    and down: high first on a tie), farther_first and low_first low first.

    high first: both round trips open and close in bar 1 (+2.00 less fees 0.0002 * 0.01 * 39998 =
    0.079996: gross profit 1.920004, all of it same-bar); the short refills at 10100 in bar 2 (fee
    0.0202) and is marked at 10250: equity 10001.920004 - 0.0202 - 1.50 = 10000.399804.
    low first: the long round trip closes in bar 1 (0.99 less fees 0.0002 * 0.01 * 19899 = 0.039798:
    gross profit 0.950202, all same-bar); the short from 10100 stays open: marked at 10250 it leaves
    10000 + 0.99 + 1.00 - 0.059998 - 2.50 = 9999.430002.
    """
    from market_builders import flat, make_market
    from market_builders import strategy as iso_strategy
    from market_builders import venue as iso_venue

    market = make_market(
        [*flat(10000.0, 1), (10000.0, 10150.0, 9850.0, 10000.0), (10000.0, 10250.0, 10000.0, 10250.0)]
    )
    high = (10000.399804 / 10000.0 - 1.0) * 100.0
    low = (9999.430002 / 10000.0 - 1.0) * 100.0
    limits = {"min_trades": 0, "max_drawdown_bar_close_pct": 50, "max_path_return_spread_pct": 0.005,
              "max_same_bar_profit_share_pct": 99}  # fmt: skip
    objective = {"kind": "total_return", "target": "in_sample", "rank_by": "value", "path_rule": "worst"}
    prof = load_profile(_profile(tmp_path, objective, limits))
    first, last = int(market.ts[0]), int(market.ts[-1] + market.bar_ms)
    work = opt.Workload(
        prof, iso_strategy(), iso_venue(), market, [opt.Window("full", 0, first, last, market)], tmp_path, "X"
    )
    for chunk in (None, 1):
        (res,) = opt.evaluate(work, [{}], chunk=chunk)
        m = res.attrs["metrics"]
        assert res.values == pytest.approx(
            (low,), rel=1e-9
        )  # the worst rule's return, not the configured one
        assert BRACKET_RULES[int(m["path_rule_index"])] == "farther_first"  # first of the two low-first rules
        assert m["path_return_spread_pct"] == pytest.approx(high - low, rel=1e-9)
        assert m["path_objective_spread"] == pytest.approx(high - low, rel=1e-9)
        assert m["same_bar_profit_share_pct"] == pytest.approx(100.0)
        assert m["same_bar_round_trips"] == 1.0  # under the scored (low-first) rule: the long round trip
        c = dict(zip(limit_names(prof.limits), res.constraints, strict=True))
        assert c["max_path_return_spread_pct"] == pytest.approx(high - low - 0.005, rel=1e-9)
        assert c["max_same_bar_profit_share_pct"] == pytest.approx(1.0)
    # with the configured rule the same set is scored high first, as before
    configured = load_profile(_profile(tmp_path, {**objective, "path_rule": "configured"}, limits))
    work = opt.Workload(
        configured,
        iso_strategy(),
        iso_venue(),
        market,
        [opt.Window("full", 0, first, last, market)],
        tmp_path,
        "X",
    )
    (res,) = opt.evaluate(work, [{}])
    assert res.values == pytest.approx((high,), rel=1e-9)
    m = res.attrs["metrics"]
    assert m["same_bar_round_trips"] == 2.0 and BRACKET_RULES[int(m["path_rule_index"])] == "nearer_first"
    # the other rules still ran: the spread is recorded and limited for this trial too
    assert m["path_return_spread_pct"] == pytest.approx(high - low, rel=1e-9)
    c = dict(zip(limit_names(configured.limits), res.constraints, strict=True))
    assert c["max_path_return_spread_pct"] == pytest.approx(high - low - 0.005, rel=1e-9)


def test_shipped_profiles_rank_on_the_worst_rule_and_limit_spread_and_same_bar_share() -> None:
    for name in ("wide", "narrow", "fine", "pareto"):
        prof = load_profile(name)
        assert prof.objective.path_rule == "worst", name
        assert prof.limits.max_path_return_spread_pct is not None, name
        assert prof.limits.max_same_bar_profit_share_pct is not None, name


def _ledger_same_bar(fills: np.ndarray) -> tuple[int, float]:
    """(lots whose entry and TP/SL fill share a ts, the sum of their positive PnL after both fees), read
    from the fills ledger; a flatten or liquidation fill ends every open lot of its side uncounted."""
    open_lots: dict[tuple[int, int], tuple[int, float, float]] = {}
    count, profit = 0, 0.0
    for f in fills:
        side, level, kind, ts = int(f["side"]), int(f["level"]), int(f["kind"]), int(f["ts"])
        price, qty, fee = float(f["price"]), float(f["qty"]), float(f["fee"])
        if kind == FillKind.ENTRY:
            open_lots[(side, level)] = (ts, price, fee)
        elif kind in (FillKind.TP, FillKind.SL):
            entry_ts, entry, entry_fee = open_lots.pop((side, level))
            if entry_ts == ts:
                count += 1
                pnl = ((price - entry) if side == 0 else (entry - price)) * qty - entry_fee - fee
                profit += max(pnl, 0.0)
        else:
            open_lots = {k: v for k, v in open_lots.items() if k[0] != side}
    return count, profit


def test_engine_same_bar_counters_match_the_fills_ledger(tmp_path: Path) -> None:
    from gridctl.data.resample import resample_store

    write_sample(tmp_path, days=12)
    resample_store(tmp_path, "sample", "BTC/USDT:USDT", "1m", "1h")  # hour bars: many same-bar round trips
    market = load_market(tmp_path, "sample", "BTC/USDT:USDT", "1h")
    strategy, venue = load_strategy("default"), load_venue("binance_futures")
    sets = [{"backtest.intrabar_path": rule} for rule in BRACKET_RULES]
    rows = run_batch(market, strategy, venue, sets)
    seen = 0
    for ov, row in zip(sets, rows, strict=True):
        s, v = apply_overrides(strategy, venue, ov)
        run = run_single(market, s, v, curves=False)
        count, same_profit = _ledger_same_bar(run.fills)
        assert run.summary["same_bar_round_trips"] == count
        assert run.summary["same_bar_gross_profit"] == pytest.approx(same_profit, rel=1e-9, abs=1e-12)
        assert float(row["same_bar_round_trips"]) == count  # the batch row carries the same counters
        assert float(row["same_bar_gross_profit"]) == pytest.approx(same_profit, rel=1e-9, abs=1e-12)
        seen += count
    assert seen > 0, "no same-bar round trip on the sample: the check checked nothing"


@pytest.fixture(scope="module")
def wide_pool(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[opt.Workload, list[dict], list[opt.Evaluation]]:
    """24 draws of the wide profile on 3 days of the 1m sample, each scored with every rule run."""
    import optuna

    from gridctl.research.space import distributions, resolve_draw

    data = tmp_path_factory.mktemp("prdata")
    write_sample(data, days=4)
    tree = yaml.safe_load((PROFILES_DIR / "wide.yaml").read_text())
    tree.update(name="prpool", trials=24, batch_size=24)
    tree["data"].update(start="2024-01-02", end="2024-01-05")
    tree["limits"].update(min_trades=1, max_path_return_spread_pct=1.0, max_same_bar_profit_share_pct=60)
    path = tmp_path_factory.mktemp("prprof") / "prpool.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    prof = load_profile(path)
    work = opt.load_workload(prof, data)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=5))
    dists = distributions(prof)
    sets = [resolve_draw(prof, study.ask(dists).params, work.strategy) for _ in range(24)]
    return work, sets, opt.evaluate(work, sets)


def _configured_value(work: opt.Workload, overrides: dict) -> float:
    """The set's objective under its configured rule alone, from a plain run_batch row."""
    from gridctl.research.objectives import objective_values, row_metrics

    (row,) = run_batch(work.market, work.strategy, work.venue, [overrides])
    return objective_values(row_metrics(row, work.market.bar_ms), work.profile.objective)[0]


def test_contenders_only_is_eligible_for_wide_only_where_no_one_reads_an_unchecked_value() -> None:
    wide = load_profile("wide")
    assert opt.contenders_only(wide)
    for name in ("narrow", "fine", "pareto"):  # tpe / walk-forward / two objectives
        assert not opt.contenders_only(load_profile(name)), name


def test_contenders_only_picks_the_same_winner_and_scores_checked_sets_as_every_rule_does(
    wide_pool: tuple[opt.Workload, list[dict], list[opt.Evaluation]],
) -> None:
    """Differential: against running all four rules for every set (the fixture), for random subsets
    and starting thresholds. Checked sets: identical values, constraints and metrics. Unchecked sets:
    pruned, labelled, told their configured-rule value (recomputed here by a plain run_batch), which
    bounds their every-rule value and does not exceed the best checked feasible value; hence the
    best feasible set (first on ties) is the same."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    work, sets, full = wide_pool
    configured = [_configured_value(work, ov) for ov in sets]
    values = [r.values[0] for r in full]
    ok = [opt.feasible(r.constraints) for r in full]
    assert sum(ok) >= 3 and len({v for v, f in zip(values, ok, strict=True) if f}) >= 3  # a real race
    # the premise: the worst rule's value never exceeds the configured rule's
    assert all(v <= c + 1e-12 for v, c in zip(values, configured, strict=True))
    feasible_values = sorted(v for v, f in zip(values, ok, strict=True) if f)

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        pick=st.lists(st.integers(0, len(sets) - 1), min_size=1, max_size=len(sets), unique=True),
        start=st.sampled_from(
            [-float("inf"), feasible_values[0], feasible_values[len(feasible_values) // 2]]
        ),
    )
    def check(pick: list[int], start: float) -> None:
        got = opt.evaluate(work, [sets[i] for i in pick], beat_to=start)
        best_here = start
        for i, res in zip(pick, got, strict=True):
            if res.attrs.get("path_checked", True):
                assert res.pruned_at is None
                assert res.values == full[i].values and res.constraints == full[i].constraints
                assert res.attrs["metrics"] == full[i].attrs["metrics"]
                if ok[i]:
                    best_here = max(best_here, values[i])
            else:
                assert res.pruned_at == 0 and res.constraints == []
                assert res.attrs["note"] == opt.CONFIGURED_ONLY
                assert res.attrs["configured_value"] == pytest.approx(configured[i], rel=1e-12)
                assert res.values == (res.attrs["configured_value"],)
        # every unchecked set's configured value (>= its every-rule value) is <= the best checked one
        for i, res in zip(pick, got, strict=True):
            if not res.attrs.get("path_checked", True):
                assert values[i] <= configured[i] <= best_here
        # the winner over checked sets equals the winner of the all-rules run when it beats `start`
        full_best = max((values[i] for i in pick if ok[i]), default=-float("inf"))
        if full_best > start:
            checked = [
                i for i, r in zip(pick, got, strict=True) if r.attrs.get("path_checked", True) and ok[i]
            ]
            assert max(values[i] for i in checked) == full_best

    check()


def test_contenders_only_study_tells_unchecked_trials_pruned_and_keeps_the_winner(
    wide_pool: tuple[opt.Workload, list[dict], list[opt.Evaluation]], tmp_path: Path
) -> None:
    """A whole optimize run in contender mode against the same run with every rule for every trial."""
    from gridctl.research.studies import (
        best_trial,
        configured_only_candidates,
        load_study,
        overfitting_stats,
        study_frame,
    )

    work = wide_pool[0]
    a = opt.optimize(work.profile, "c", studies_dir=tmp_path, work=work)
    assert a.n_trials == 24
    study = load_study("c", tmp_path)
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    assert pruned, "with 24 trials some cannot beat the best"
    for t in pruned:
        attrs = t.user_attrs[opt.ATTR]
        assert attrs["path_checked"] is False and attrs["note"] == opt.CONFIGURED_ONLY
        assert t.intermediate_values == {0: attrs["configured_value"]} and "constraints" not in t.system_attrs
    # every view says which trials ran one rule; the overfitting statistics count them as trials the
    # winner was selected from, unless their own rule already breaks a limit
    frame = study_frame(study)
    assert list(frame.loc[~frame["path_checked"], "number"]) == [t.number for t in pruned]
    assert not frame.loc[~frame["path_checked"], "feasible"].any()
    candidates = configured_only_candidates(study)
    for t in pruned:
        m = t.user_attrs[opt.ATTR]["metrics"]
        known_bad = (
            m["trades"] < work.profile.limits.min_trades
            or m["max_drawdown_bar_close_pct"] > work.profile.limits.max_drawdown_bar_close_pct
            or m["liquidated"] > 0.5
            or m["same_bar_profit_share_pct"] > work.profile.limits.max_same_bar_profit_share_pct
        )
        assert (t in candidates) == (not known_bad)
    stats = overfitting_stats(study, work.data_dir)
    checked = [t for t in study.trials if t.state.name == "COMPLETE" and opt.feasible_trial(t)]
    assert stats["trials_configured_rule_only"] == len(candidates) > 0
    assert stats["trials_feasible_distinct"] == len(checked)
    assert stats["trials_used"] + stats["trials_without_dispersion"] == len(checked) + len(candidates)
    # the same draws, every rule for every trial: the same winner and value
    every = opt.evaluate(work, [t.user_attrs[opt.ATTR]["overrides"] for t in study.trials])
    feasible_values = [(r.values[0], -n) for n, r in enumerate(every) if opt.feasible(r.constraints)]
    value, neg = max(feasible_values)
    winner = best_trial(study)
    assert winner is not None and winner.number == -neg and winner.value == value
