"""Stats recomputed from the ledgers and the equity curve equal the kernel's online accumulators.

Three real runs on a 10-day sample market: the default strategy, one that trips the drawdown halt and
the circuit breaker, and one that is liquidated. If the ledgers and the accumulators ever disagree,
one of them is lying (a missing ledger row, a double-counted fee, a day booked twice).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gridctl.configs.loader import load_strategy, load_venue
from gridctl.data.market import load_market
from gridctl.data.sample import SAMPLE_EXCHANGE, SAMPLE_SYMBOL, SAMPLE_TIMEFRAME, write_sample
from gridctl.engine.enums import EventKind
from gridctl.engine.run import run_single
from gridctl.research.stats import compute_stats

SCENARIOS = {
    "default": [],
    # Big rungs and a 2 % drawdown limit: flatten + HALTED; 6 + 6 rungs of 0.05 BTC against a 0.1 BTC
    # position cap make 10 SIZE_QTY rejections that trip the circuit breaker.
    "halt_and_breaker": [
        "grid.base_qty=0.05",
        "grid.grid_levels_long=6",
        "grid.grid_levels_short=6",
        "position.max_position_size=0.1",
        "risk_management.max_drawdown_pct=2",
    ],
    # Huge rungs with the bot's size limits and the drawdown halt off, wide exits, leverage 50 (the
    # exchange's initial-margin check still applies): the account is liquidated.
    "liquidated": [
        "grid.base_qty=1.5",
        "grid.grid_step_bps=50",
        "exit.sl_steps=20",
        "exit.tp_steps=20",
        "risk_management.enable_position_validation=false",
        "risk_management.enable_drawdown_protection=false",
        "position.max_leverage_used=125",
        "position.emergency_liquidation_buffer=0.05",
    ],
}
VENUES = {"liquidated": ["risk.max_leverage=50", "trading.leverage=50"]}


@pytest.fixture(scope="module")
def sample_market(tmp_path_factory: pytest.TempPathFactory):
    data_dir: Path = tmp_path_factory.mktemp("sample10")
    write_sample(data_dir, days=10)
    return load_market(data_dir, SAMPLE_EXCHANGE, SAMPLE_SYMBOL, SAMPLE_TIMEFRAME)


@pytest.fixture(scope="module", params=list(SCENARIOS))
def scenario(request: pytest.FixtureRequest, sample_market) -> tuple[str, Any, dict[str, Any]]:
    strategy = load_strategy("default", SCENARIOS[request.param])
    venue = load_venue("binance_futures", VENUES.get(request.param, ["trading.leverage=20"]))
    run = run_single(sample_market, strategy, venue, curves=True)
    return request.param, run, compute_stats(run, sample_market, strategy, venue)


def close(a: float, b: float) -> bool:
    return bool(np.isclose(a, b, rtol=1e-9, atol=1e-9))


def test_scenarios_reach_the_states_they_are_for(scenario) -> None:
    name, _, s = scenario
    if name == "halt_and_breaker":
        assert s["halted_at"] is not None and s["events"]["circuit_breaker_trip"] > 0
        assert s["exits_by_kind"]["flatten"] >= 1 and s["halted_pct"] > 0
    elif name == "liquidated":
        assert s["liquidated"] and s["exits_by_kind"]["liquidation"] >= 1 and s["bars_run"] < s["bars"]
    else:
        assert not s["liquidated"] and s["halted_at"] is None and s["n_fills"] > 0


def test_money_stats_equal_the_kernel_accumulators(scenario) -> None:
    _, run, s = scenario
    k = run.summary
    for stat, acc in [
        ("final_equity", "final_equity"),
        ("realized_pnl", "realized_pnl"),
        ("fees_paid", "fees"),
        ("funding_paid", "funding_paid"),
        ("funding_received", "funding_received"),
        ("total_return_pct", "total_return_pct"),
        ("max_drawdown_daily_close_pct", "max_drawdown_daily_close_pct"),
        ("max_drawdown_bar_close_pct", "max_drawdown_bar_close_pct"),
        ("max_drawdown_intrabar_pct", "max_drawdown_intrabar_pct"),
        ("n_lots_closed", "n_lots_closed"),
    ]:
        assert close(s[stat], k[acc]), (stat, s[stat], acc, k[acc])
    # The ledgers rebuild the wallet: initial + realized - fees + funding.
    wallet = (
        s["initial_balance"] + s["realized_pnl"] - s["fees_paid"] + s["funding_received"] - s["funding_paid"]
    )
    assert close(wallet, k["wallet_balance"])


def test_ratio_stats_equal_the_kernel_accumulators(scenario) -> None:
    _, run, s = scenario
    k = run.summary
    assert s["days"] == k["days"]
    for stat, acc in [("sharpe", "sharpe"), ("sortino", "sortino"), ("profit_factor", "profit_factor")]:
        if s[stat] is None:
            assert not np.isfinite(k[acc]), (stat, k[acc])
        else:
            assert close(s[stat], k[acc]), (stat, s[stat], k[acc])
    if s["win_rate_pct"] is None:
        assert np.isnan(k["win_rate"])
    else:
        assert close(s["win_rate_pct"], k["win_rate"] * 100.0)


def test_counts_equal_the_kernel_accumulators(scenario) -> None:
    _, run, s = scenario
    k = run.summary
    assert s["n_fills"] == k["n_fills"]
    assert s["n_entries"] == k["n_entries"] and s["n_exits"] == k["n_exits"]
    assert close(s["maker_share_pct"] * s["n_fills"] / 100.0, k["n_fills_maker"])
    assert s["funding_payments"] == k["funding_payments"]
    assert s["bars_run"] == k["bars"]
    for pct, acc in [
        ("exposure_pct", "bars_exposure"),
        ("halted_pct", "bars_halted"),
        ("cooldown_pct", "bars_cooldown"),
        ("reducing_pct", "bars_reducing"),
    ]:
        assert close(s[pct] * s["bars_run"] / 100.0, k[acc]), (pct, acc)
    rejected = s["rejections"]
    for reason in ("size_pct", "size_qty", "size_inventory", "size_order", "size_bracket", "size_margin"):
        assert rejected.get(reason, 0) == k[f"rejected_{reason}"], reason
    assert rejected.get("post_only", 0) == k["post_only_rejects"]
    events = s["events"]
    assert events.get("circuit_breaker_trip", 0) == k["circuit_breaker_trips"]
    assert events.get("recenter", 0) == k["recenters"]
    assert events.get("retry_limit", 0) == k["retry_limits"]
    assert s["liquidated"] == bool(k["liquidated"]) and (s["halted_at"] is not None) == bool(k["halted"])
    assert s["orders_deferred"] == k["orders_deferred"] and s["skipped_precision"] == k["skipped_precision"]
    halts = run.events[run.events["kind"] == EventKind.DRAWDOWN_HALT]
    if len(halts):
        assert halts["ts"][0] == k["halted_ts"]
