"""The drivers: single run ledgers and summary, overflow re-runs, stop_at, batch == single, refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gridctl.engine.run as run_mod
from gridctl.configs.errors import GridctlError
from gridctl.configs.loader import load_strategy, load_venue
from gridctl.configs.overrides import apply_overrides
from gridctl.data.market import market_from_arrays
from gridctl.engine.batch import run_batch
from gridctl.engine.enums import EventKind, FillKind, Liquidity, RiskState
from gridctl.engine.records import SUMMARY_FIELDS
from gridctl.engine.run import run_single, run_summary

from effects import effect
from market_builders import T0, make_market, strategy, venue

P0 = 10_000.0
FLAT = (P0, P0, P0, P0)
DIP = (P0, P0, 9850.0, 9950.0)
TP_BAR = (9950.0, 10050.0, 9950.0, 10000.0)


def random_market(n: int, seed: int = 7):
    """A 1m random walk around 60 000 with 8 h funding (rates around 1 bp, a few large ones)."""
    rng = np.random.default_rng(seed)
    ts = T0 + np.arange(n, dtype=np.int64) * 60_000
    c = 60_000 * np.exp(np.cumsum(rng.normal(0, 0.0012, n)))
    o = np.r_[60_000.0, c[:-1]]
    h = np.maximum(o, c) * (1 + np.abs(rng.normal(0, 0.0006, n)))
    lo = np.minimum(o, c) * (1 - np.abs(rng.normal(0, 0.0006, n)))
    fts = np.arange(T0 - 8 * 3_600_000, ts[-1] + 8 * 3_600_000, 8 * 3_600_000, dtype=np.int64)
    rate = rng.normal(0.0001, 0.0004, fts.size)
    return market_from_arrays("BTC/USDT:USDT", "1m", ts, o, h, lo, c, np.ones(n), fts, rate)


def test_single_run_ledgers_and_summary_by_hand() -> None:
    # Long rung 1 at 9900 fills in the dip (maker fee 9900*0.01*0.0002 = 0.0198); its TP at
    # ceil(9900*1.01) = 9999 fills on the next bar's way up: realized 0.01*(9999-9900) = 0.99,
    # fee 9999*0.01*0.0002 = 0.019998. Wallet = 10000 + 0.99 - 0.0198 - 0.019998 = 10000.950202.
    out = run_single(make_market([FLAT, DIP, TP_BAR]), strategy(), venue())
    f = out.fills
    assert list(f["kind"]) == [FillKind.ENTRY, FillKind.TP]
    assert list(f["price"]) == pytest.approx([9900.0, 9999.0])
    assert list(f["fee"]) == pytest.approx([0.0198, 0.019998])
    assert list(f["liquidity"]) == [Liquidity.MAKER, Liquidity.MAKER]
    assert list(f["realized_pnl"]) == pytest.approx([0.0, 0.99])
    s = out.summary
    assert s["final_equity"] == pytest.approx(10000.950202)
    assert s["wallet_balance"] == pytest.approx(10000.950202)
    assert s["realized_pnl"] == pytest.approx(0.99) and s["fees"] == pytest.approx(0.039798)
    assert s["n_fills"] == 2 and s["n_fills_maker"] == 2 and s["n_wins"] == 1 and s["n_losses"] == 0
    assert s["win_rate"] == 1.0 and s["profit_factor"] == math.inf and s["n_lots_closed"] == 1
    # The lot after both fees: 0.99 - 0.0198 - 0.019998 = 0.950202.
    assert s["gross_profit"] == pytest.approx(0.950202) and s["gross_loss"] == 0.0
    # Drawdowns: closes only rise (daily and bar close 0); bar 1's low 9850 with the lot held at its
    # close: 10000.4802 - 0.01*(9950-9850) = 9999.4802, 1/10000.4802 below the bar-close peak.
    assert s["max_drawdown_daily_close_pct"] == 0.0 and s["max_drawdown_bar_close_pct"] == 0.0
    assert s["max_drawdown_intrabar_pct"] == pytest.approx(1.0 / 10000.4802 * 100.0)
    assert s["traded_notional"] == pytest.approx(99.0 + 99.99)
    assert s["bars"] == 3 and s["bars_exposure"] == 1  # the long was held at bar 1's close only
    # Equity curve: bar 1 closes at 9950 with the lot: 10000 - 0.0198 + 0.01*(9950-9900) = 10000.4802.
    assert list(out.equity["equity"]) == pytest.approx([10000.0, 10000.4802, 10000.950202])
    assert list(out.equity["state"]) == [RiskState.NORMAL] * 3
    assert out.meta["bars"] == 3 and out.meta["fees_source"] == "venue config"


def test_overflowing_buffers_rerun_with_more_room(monkeypatch: pytest.MonkeyPatch) -> None:
    market = random_market(3000)
    s, v = load_strategy("default"), load_venue("binance_futures")
    roomy = run_single(market, s, v)
    monkeypatch.setattr(run_mod, "INITIAL_CAPACITY", 1)
    monkeypatch.setattr(run_mod, "BARS_PER_FILL_ROW", 10**9)
    monkeypatch.setattr(run_mod, "BARS_PER_EVENT_ROW", 10**9)
    tight = run_single(market, s, v)
    assert roomy.meta["reruns"] == 0 and tight.meta["reruns"] > 0
    assert len(tight.fills) == len(roomy.fills) > 16  # more fills than the first buffer held
    for name in ("fills", "events", "funding", "equity"):
        assert np.array_equal(getattr(tight, name), getattr(roomy, name)), name
    assert all(same(tight.summary[k], roomy.summary[k]) for k in SUMMARY_FIELDS)


def test_stop_at_runs_a_prefix() -> None:
    market = random_market(2000)
    s, v = load_strategy("default"), load_venue("binance_futures")
    full = run_single(market, s, v)
    part = run_single(market, s, v, stop_at=1200)
    cut = market.ts[1200]
    assert len(part.equity) == 1200 and part.summary["bars"] == 1200
    assert np.array_equal(part.fills, full.fills[full.fills["ts"] < cut])
    assert np.array_equal(part.equity, full.equity[:1200])
    with pytest.raises(GridctlError, match="stop_at"):
        run_single(market, s, v, stop_at=2001)


def test_no_curves_means_no_equity_rows_but_the_same_summary() -> None:
    market = random_market(1500)
    s, v = load_strategy("default"), load_venue("binance_futures")
    with_curves = run_single(market, s, v)
    without = run_single(market, s, v, curves=False)
    assert len(without.equity) == 0 and len(with_curves.equity) == 1500
    assert all(same(without.summary[k], with_curves.summary[k]) for k in SUMMARY_FIELDS)


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def test_batch_summaries_equal_single_runs() -> None:
    market = random_market(4000, seed=3)
    s, v = load_strategy("default"), load_venue("binance_futures")
    sets = [
        {},
        {"grid.grid_step_bps": 25.0},
        {"regime.ema_fast": 5, "regime.ema_slow": 12, "regime.adx_len": 6, "regime.adx_threshold": 10.0},
        {"policy.strategy": "core-and-scalp", "grid.grid_levels_long": 9},
        {"execution.maker_only": 0, "rate_limits.orders_per_second": 2},
        {"policy.throttle": 0.5},
        {"grid.base_qty": 0.1, "position.max_position_size": 10.0, "risk_management.max_drawdown_pct": 1.0},
    ]
    rows = run_batch(market, s, v, sets)
    assert rows.dtype.names == SUMMARY_FIELDS and len(rows) == len(sets)
    for i, ov in enumerate(sets):
        ss, vv = apply_overrides(s, v, ov)
        single = run_single(market, ss, vv, curves=False).summary
        bad = [k for k in SUMMARY_FIELDS if not same(float(rows[i][k]), single[k])]
        assert not bad, (i, bad)
        # Records off: the same summary again (what the path bracket runs).
        quiet = run_summary(market, ss, vv)
        assert not [k for k in SUMMARY_FIELDS if not same(quiet[k], single[k])], i
    # The sets really differ (the overrides reached the kernels).
    assert len({tuple(r.tolist()) for r in rows}) == len(sets)
    assert rows[6]["halted"] == 1.0 and rows[0]["halted"] == 0.0


def test_batch_refuses_bad_overrides() -> None:
    market = random_market(100)
    s, v = load_strategy("default"), load_venue("binance_futures")
    with pytest.raises(GridctlError, match=r"parameter set 1: override key 'grid\.nope'"):
        run_batch(market, s, v, [{}, {"grid.nope": 1.0}])
    with pytest.raises(GridctlError, match=r"grid\.grid_levels_long"):
        run_batch(market, s, v, [{"grid.grid_levels_long": 0}])
    with pytest.raises(GridctlError, match="whole number"):
        run_batch(market, s, v, [{"grid.grid_levels_long": 2.5}])
    with pytest.raises(GridctlError, match="at least one"):
        run_batch(market, s, v, [])


@effect("venue.venue_type", "venue.account_type", "symbols")
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"venue.venue_type": "spot"}, "venue_type"),
        ({"venue.account_type": "PERPETUAL_INVERSE"}, "account_type"),
        ({"symbols": "[ETHUSDT-PERP]"}, "symbols"),
    ],
)
def test_unsupported_venues_are_refused(change: dict, field: str) -> None:
    ven = load_venue("binance_futures", overrides=[f"{k}={v}" for k, v in change.items()])
    with pytest.raises(GridctlError, match=field):
        run_single(make_market([FLAT, DIP]), strategy(), ven)


def test_market_of_another_symbol_is_refused() -> None:
    with pytest.raises(GridctlError, match="ETH/USDT:USDT"):
        run_single(make_market([FLAT, DIP], symbol="ETH/USDT:USDT"), strategy(), venue())


def test_liquidation_stops_the_run() -> None:
    # 1 BTC long at 9900 on a 1000 USDT account at leverage 20 (gates loosened). Wallet after the
    # maker fee (1.98): 998.02; maintenance margin at price x: 0.004*x (bracket 1, notional < 50 000).
    # Equity at x = 998.02 + (x - 9900) <= 0.004 x  <=>  x <= 8901.98/0.996 = 8937.73: the crash bar's
    # path o=9950 -> x1 = 9950 (high) -> x2 = 8000 (low): the check fails at x2 = 8000 and the exchange
    # closes at LP = (998.02 - 9900)/(0.004 - 1) = 8937.7309..., inside [8000, 9950]; no trading fee but
    # the remaining maintenance margin 0.004*8937.7309 = 35.7509 is lost. (The short rung is refused with
    # SIZE_MARGIN: (1 + 1)*10100/20 = 1010 > equity 1000.)
    s = strategy(
        **{
            "backtest.initial_balance": 1000.0,
            "grid.base_qty": 1.0,
            "exit.sl_steps": 50,
            "exit.tp_steps": 50,
            "position.max_position_size": 100.0,
            "position.max_leverage_used": 125.0,
            "risk_management.enable_drawdown_protection": False,
        }
    )
    v = venue(**{"trading.leverage": 20})
    crash = (9950.0, 9950.0, 8000.0, 8100.0)
    out = run_single(make_market([FLAT, DIP, crash, FLAT, FLAT]), s, v)
    assert out.meta["liquidated"] and out.meta["liquidated_at"] == int(out.equity["ts"][2])
    assert len(out.equity) == 3 and out.equity["state"][-1] == RiskState.LIQUIDATED
    liq = out.fills[out.fills["kind"] == FillKind.LIQUIDATION]
    lp = 8901.98 / 0.996
    assert list(liq["qty"]) == [1.0] and liq["price"][0] == pytest.approx(lp, rel=1e-12)
    assert liq["fee"][0] == pytest.approx(lp * 0.004, rel=1e-12)
    assert EventKind.LIQUIDATION in set(out.events["kind"].tolist())
    # Wallet: 1000 - 1.98 + (8937.7309 - 9900) - 35.7509 = 0: the maintenance margin left at LP goes to
    # the insurance fund, not the -905.98 of a close at the low.
    assert out.summary["wallet_balance"] == pytest.approx(0.0, abs=1e-9)
    assert out.meta["liquidation_rule"] == "maintenance margin lost (insurance fund)"


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    step_bps=st.floats(10.0, 80.0),
    maker_only=st.booleans(),
    touch=st.booleans(),
)
def test_ledgers_add_up(seed: int, step_bps: float, maker_only: bool, touch: bool) -> None:
    """wallet = initial + realized - fees + funding, positions = entries - exits, fees >= 0, qty > 0."""
    market = random_market(600, seed=seed)
    s = load_strategy(
        "default",
        overrides=[
            f"grid.grid_step_bps={step_bps}",
            f"execution.maker_only={str(maker_only).lower()}",
            f"backtest.fill_on_touch={str(touch).lower()}",
        ],
    )
    out = run_single(market, s, load_venue("binance_futures"))
    f, fund, summ = out.fills, out.funding, out.summary
    assert (f["fee"] >= 0).all() and (f["qty"] > 0).all()
    expect = 10_000.0 + f["realized_pnl"].sum() - f["fee"].sum() + fund["amount"].sum()
    assert summ["wallet_balance"] == pytest.approx(expect, rel=1e-12, abs=1e-9)
    for side, key in ((0, "long_qty"), (1, "short_qty")):
        mine = f[f["side"] == side]
        opened = mine["qty"][mine["kind"] == FillKind.ENTRY].sum()
        closed = mine["qty"][mine["kind"] != FillKind.ENTRY].sum()
        assert summ[key] == pytest.approx(opened - closed, abs=1e-9)
    # The equity curve's last row is the summary's final equity; the peak bounds every row.
    assert out.equity["equity"][-1] == pytest.approx(summ["final_equity"])
    assert out.equity["equity"].max() <= summ["peak_equity"] + 1e-9


def test_overrides_are_validated_together_whatever_their_order() -> None:
    s, v = load_strategy("default"), load_venue("binance_futures")  # ema_fast 10, ema_slow 30
    # Key by key, ema_slow = 8 first would meet ema_fast 10 >= 8; together the config is valid.
    ss, _ = apply_overrides(s, v, {"regime.ema_slow": 8 + 4, "regime.ema_fast": 5})
    assert (ss.regime.ema_fast, ss.regime.ema_slow) == (5, 12)
    both, _ = apply_overrides(s, v, {"regime.ema_fast": 5, "regime.ema_slow": 12})
    assert both == ss
    # An invalid result still names the key that breaks it.
    with pytest.raises(GridctlError, match=r"override regime\.ema_fast=40: .*ema_slow"):
        apply_overrides(s, v, {"grid.grid_step_bps": 30.0, "regime.ema_fast": 40})
    # Overrides of strategy and venue at once; the base configs are not changed.
    ss, vv = apply_overrides(s, v, {"grid.grid_step_bps": 30.0, "fees.maker": 0.0001})
    assert ss.grid.grid_step_bps == 30.0 and vv.fees.maker == 0.0001
    assert s.grid.grid_step_bps != 30.0 and v.fees.maker != 0.0001


def test_regime_cache_reuses_series_and_changes_nothing() -> None:
    from gridctl.engine.batch import RegimeCache, regime_series_batch
    from gridctl.engine.params import REGIME_SLOTS, build_params
    from gridctl.engine.run import market_arrays, regime_series

    market = random_market(3000, seed=5)
    other = random_market(3000, seed=6)
    s, v = load_strategy("default"), load_venue("binance_futures")
    sets = [
        {"regime.ema_fast": f, "regime.ema_slow": sl, "grid.grid_step_bps": step}
        for f, sl in ((5, 12), (8, 20), (10, 30))
        for step in (20.0, 40.0)
    ]
    plain = run_batch(market, s, v, sets)
    cache = RegimeCache()
    first = run_batch(market, s, v, sets, regimes=cache)
    assert len(cache) == 3 and cache.computed == 3 and cache.hits == 0
    again = run_batch(market, s, v, sets, regimes=cache)
    assert cache.computed == 3 and cache.hits == 3
    assert plain.tobytes() == first.tobytes() == again.tobytes()
    # the series computed together (in parallel) are the ones regime_series computes one by one
    arrays = market_arrays(other)
    vecs = [build_params(*apply_overrides(s, v, ov), other).vector for ov in sets[::2]]
    keys = [tuple(float(x) for x in vec[list(REGIME_SLOTS)]) for vec in vecs]
    regs = regime_series_batch(other, arrays, keys, cache)
    for row, vec in zip(regs, vecs, strict=True):
        assert np.array_equal(row, regime_series(arrays, vec))
    # another market with the same regime tuples got its own series (no hit from the first market)
    assert cache.computed == 6 and cache.hits == 3
    assert run_batch(other, s, v, sets, regimes=cache).tobytes() == run_batch(other, s, v, sets).tobytes()
    # bounded: past max_bytes the least recently used series go
    small = RegimeCache(max_bytes=2 * 3000)
    run_batch(market, s, v, sets, regimes=small)
    assert len(small) == 2 and small.nbytes <= small.max_bytes
