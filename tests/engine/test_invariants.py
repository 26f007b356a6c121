"""Invariants checked from the ledgers alone, on random markets/configs and on real Binance data.

- Accounting: every bar, equity == initial + realized - fees + funding + unrealized, with realized and
  unrealized recomputed by replaying the fills ledger (hedge mode, average entry) and marking at the
  bar close; positions in the equity curve equal the replayed ones.
- Fills: qty > 0, fee == price*qty*(maker|taker rate) >= 0; an exit never exceeds the open position.
- No lookahead: the ledgers of bars [0, k) are the same whether the run stops at bar k, the market is
  cut after bar k-1, or the run continues.
- Real data: a month and a half of real BTCUSDT 1m bars run end to end, and the funding ledger holds
  every settlement in range that found an open position, with the series' rate and mark.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gridctl.configs.loader import load_strategy, load_venue
from gridctl.data.market import Market, market_from_arrays
from gridctl.engine.run import run_single

from market_builders import IMPLS, Ledgers, configs, markets, rows_of, run, strategy, truncated, venue
from reference_sim import simulate

PROFILE = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def close_enough(a: float, b: float, scale: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9 * max(1.0, scale))


def check_ledger_invariants(market: Market, led: Ledgers, initial: float, maker: float, taker: float) -> None:
    """Replay fills and funding bar by bar and compare with every equity row."""
    qty, avg = [0.0, 0.0], [0.0, 0.0]
    realized = fees = funding = 0.0
    fills = sorted(led.fills, key=lambda f: f["ts"])  # stable: keeps the in-bar order
    fi = ui = 0
    last_close = math.nan
    for row in led.equity:
        ts = row["ts"]
        while fi < len(fills) and fills[fi]["ts"] <= ts:
            f = fills[fi]
            fi += 1
            side, q, p = f["side"], f["qty"], f["price"]
            assert q > 0
            rate = maker if f["liquidity"] == 0 else taker
            assert f["fee"] >= 0
            if f["kind"] == 4:
                # A liquidation pays its clearance (maintenance margin or the venue's clearance fee),
                # never a trading fee, and at most half the notional (the schema's cap on the fee).
                assert f["fee"] <= 0.5 * p * q
            else:
                assert close_enough(f["fee"], p * q * rate, p * q)
            fees += f["fee"]
            if f["kind"] == 0:
                avg[side] = (qty[side] * avg[side] + q * p) / (qty[side] + q)
                qty[side] += q
                assert f["realized_pnl"] == 0.0
            else:
                assert q <= qty[side] * (1 + 1e-9), f"exit {f} exceeds the open position {qty[side]}"
                r = q * (p - avg[side]) if side == 0 else q * (avg[side] - p)
                assert close_enough(f["realized_pnl"], r, abs(q * p))
                realized += r
                qty[side] = max(qty[side] - q, 0.0)
                if qty[side] <= 1e-12:
                    qty[side], avg[side] = 0.0, 0.0
        while ui < len(led.funding) and led.funding[ui]["ts"] <= ts:
            funding += led.funding[ui]["amount"]
            ui += 1
        k = int(np.searchsorted(market.ts, ts))
        c = float(market.close[k])
        if math.isfinite(c):
            last_close = c
        unreal = (
            qty[0] * (last_close - avg[0]) + qty[1] * (avg[1] - last_close) if qty[0] + qty[1] > 0 else 0.0
        )
        scale = initial + abs(realized) + (qty[0] + qty[1]) * abs(last_close if qty[0] + qty[1] > 0 else 0.0)
        assert close_enough(row["long_qty"], qty[0], 1.0) and close_enough(row["short_qty"], qty[1], 1.0)
        assert close_enough(row["wallet_balance"], initial + realized - fees + funding, scale), (
            row,
            realized,
        )
        assert close_enough(row["unrealized_pnl"], unreal, scale), (row, unreal)
        assert close_enough(row["equity"], initial + realized - fees + funding + unreal, scale)
    assert fi == len(fills), "fills after the last equity row"


@pytest.mark.parametrize("impl", IMPLS)
@PROFILE
@given(market=markets(), cfg=configs())
def test_equity_is_replayable_from_the_ledgers(impl, market, cfg):
    s, v = cfg
    strat, ven = strategy(**s), venue(**v)
    led = run(impl, market, strat, ven)
    assert len(led.equity) >= 1
    check_ledger_invariants(market, led, strat.backtest.initial_balance, ven.fees.maker, ven.fees.taker)


def prefixrows_of(led: Ledgers, market: Market, k: int) -> dict[str, list[dict]]:
    """Rows produced while processing bars [0, k): fills/events of those bars, funding applied by then."""
    if k == 0:
        return {"fills": [], "events": [], "funding": [], "equity": []}
    tk = int(market.ts[k - 1])
    return {
        "fills": [f for f in led.fills if f["ts"] <= tk],
        "events": [e for e in led.events if e["ts"] <= tk],
        "funding": [u for u in led.funding if u["ts"] <= tk],
        "equity": [q for q in led.equity if q["ts"] <= tk],
    }


@PROFILE
@given(market=markets(), cfg=configs(), frac=st.floats(0.0, 1.0))
def test_no_lookahead(market, cfg, frac):
    s, v = cfg
    strat, ven = strategy(**s), venue(**v)
    n = len(market.ts)
    k = int(frac * n)
    full = run("kernel", market, strat, ven)
    want = prefixrows_of(full, market, k)
    stopped = run_single(market, strat, ven, curves=True, stop_at=k)
    cut = run("kernel", truncated(market, k - 1), strat, ven) if k > 0 else None
    for name in ("fills", "events", "funding", "equity"):
        assert rows_of(getattr(stopped, name)) == want[name], f"{name}: stop_at={k} differs from the full run"
        if cut is not None:
            assert getattr(cut, name) == want[name], f"{name}: market cut at {k} differs from the full run"
    ref_stopped = simulate(market, strat, ven, stop_at=k)
    assert ref_stopped.fills == prefixrows_of(run("reference", market, strat, ven), market, k)["fills"]


# ----------------------------------------------------------------------------------------------------
# Real data
# ----------------------------------------------------------------------------------------------------


def real_market(real_data: Path) -> Market:
    """The main 1m file (2025-05-04 .. 2025-06-24, no gaps) and the funding settlements covering it."""
    bars = pd.read_parquet(real_data / "binanceusdm_BTCUSDT_1m_2025-05_2025-06.parquet")
    fund = pd.read_parquet(real_data / "binanceusdm_BTCUSDT_funding_2019-09_2025-12.parquet")
    first, last = int(bars["ts"].iloc[0]), int(bars["ts"].iloc[-1])
    before = fund[fund["ts"] < first]["ts"].max()
    fund = fund[(fund["ts"] >= before) & (fund["ts"] <= last + 60_000)]
    return market_from_arrays(
        "BTC/USDT:USDT",
        "1m",
        bars["ts"].to_numpy(),
        bars["open"].to_numpy(),
        bars["high"].to_numpy(),
        bars["low"].to_numpy(),
        bars["close"].to_numpy(),
        bars["volume"].to_numpy(),
        fund["ts"].to_numpy(),
        fund["rate"].to_numpy(),
        fund["mark_price"].to_numpy(),
        source="real 1m",
    )


@pytest.fixture(scope="module")
def real_run(real_data: Path):
    market = real_market(real_data)
    # Tighter ladder than the shipped default so the 7 weeks hold positions across many settlements.
    strat = load_strategy("default", overrides=["grid.grid_step_bps=20", "exit.sl_steps=10"])
    ven = load_venue("binance_futures")
    out = run_single(market, strat, ven, curves=True)
    return market, strat, ven, out


def test_real_data_runs_end_to_end(real_run):
    market, strat, ven, out = real_run
    assert len(out.equity) == len(market.ts) == 73_138
    assert len(out.fills) > 100  # a 20 bps grid on 7 weeks of BTC trades a lot
    led = Ledgers(
        rows_of(out.fills), rows_of(out.funding), rows_of(out.events), rows_of(out.equity), out.summary
    )
    check_ledger_invariants(market, led, strat.backtest.initial_balance, ven.fees.maker, ven.fees.taker)


def test_real_funding_ledger_matches_the_series(real_run):
    market, _strat, _ven, out = real_run
    eq = out.equity
    rows = {(int(r["ts"]), int(r["side"])): r for r in out.funding}
    expected = 0
    for T, rate, mark in zip(market.funding_ts, market.funding_rate, market.funding_mark, strict=True):
        if market.ts[0] > T or market.ts[-1] < T:
            continue
        k = int(np.searchsorted(market.ts, T))  # first bar with ts >= T: where it is paid
        held = (0.0, 0.0) if k == 0 else (float(eq["long_qty"][k - 1]), float(eq["short_qty"][k - 1]))
        for side in (0, 1):
            if held[side] <= 0:
                assert (int(T), side) not in rows
                continue
            expected += 1
            r = rows[(int(T), side)]
            assert r["rate"] == rate
            assert math.isfinite(mark) and r["mark_source"] == 0 and r["mark_price"] == mark
            assert r["qty"] == pytest.approx(held[side], rel=1e-12)
            # long pays a positive rate, short receives it
            sign = -1.0 if side == 0 else 1.0
            assert r["amount"] == pytest.approx(sign * held[side] * mark * rate, rel=1e-12)
    assert expected == len(out.funding) > 10
