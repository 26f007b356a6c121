"""`gridctl live --live` against the emulator fills exactly as `gridctl backtest` on the same bars and config.

The live side is the whole production path: ``runner.prepare`` (readiness, warm-up, the account read)
and ``Bridge.on_bar`` per closed bar, real orders through the real ccxt client over HTTP on 127.0.0.1,
the emulator matching them with ``FillModel.like_backtest`` (the backtest's fill settings, new entries
checked at the next open). The backtest is ``engine.run.run_single``, the run ``gridctl backtest``
makes, over the same bars, funding and configs. Compared per fill, in order: bar, side, kind, level,
price, quantity, maker/taker and fee, on the exchange's trades and on the live engine's own ledger;
then the final position per side.

Alignment. Live, readiness feeds the last ``W = engine.regime.warmup_bars(...)`` closed bars to the
regime indicators only (no trading); the first decision is at the close of the next bar, ``start``,
and its orders trade from bar ``start + 1``. The backtest over bars ``[start - W, end)`` trades from its
first bar, with the regime not yet warm (SIDEWAYS) for ``W`` bars. So the ``W`` warm-up bars and bar
``start`` are flat at one price P: the backtest centres its ladder on P at its first close and nothing
fills on flat bars (the rungs are away from P; a limit fills only when the price trades through it);
the live run centres on P at bar ``start``'s close. From there both hold the same ladder, the same regime
state (the same bars through the same ``regime_fill_nb``), the same wallet (the emulator's account is
``backtest.initial_balance``) and no position. The backtest built its ladder during the warm-up bars, so
the live run must place the whole ladder in its first decision: the venue's ``orders_per_second`` is
above the rung count (the bridge then never defers an order; asserted). A settlement before the flat
bars makes the funding rate known at the start (readiness requires one; the backtest blocks entries
without one).

Known differences, kept out of the parity scenarios (asserted absent) and shown on their own:
* Exits are attached after the fill is seen. The engine attaches a lot's TP/SL at its fill, so they can
  fill later in the same bar; live sees the fill at the bar close and places them then (Binance USD-M
  has no order that arms exits when an entry fills). ``test_an_exit_in_its_entrys_bar_...``.
Rate pacing is not a difference: the engine paces entry submissions per decision (``orders_per_second``,
``orders_per_minute``) for both; the bridge's request pacer only keeps the sends within the exchange's
windows (10 x orders_per_second per 10 s, orders_per_minute per 60 s) and re-decides nothing per bar.
``test_the_engines_entry_pacing_is_the_only_pacing_...``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from gridctl.configs.loader import load_strategy
from gridctl.configs.schema import StrategyConfig
from gridctl.data.market import market_from_arrays
from gridctl.data.sample import SAMPLE_SYMBOL, generate_sample
from gridctl.engine.enums import EventKind, FillKind, Liquidity, Regime, Side
from gridctl.engine.regime import warmup_bars
from gridctl.engine.run import RunOutput, run_single
from gridctl.live_bridge.orders import parse_client_id

from live_helpers import EMU_ENV, SYMBOL_ID, emulator_venue, prepare_live_on_emulator

MIN = 60_000
HOUR = 3_600_000
TICK, STEP = 0.1, 0.001  # the emulator's BTCUSDT filters (the venue file's too)
_KIND = {"entry": FillKind.ENTRY, "tp": FillKind.TP, "sl": FillKind.SL}

# A tight ladder so a few hours of 1m bars trade both sides, take profits, stop out and re-centre; the
# EMA spread hysteresis is low enough for 1m bars to leave SIDEWAYS (the throttled-counter policy acts).
PARITY = ["grid.grid_step_bps=10", "exit.tp_steps=2", "rebalance.recenter_trigger_bps=60",
          "grid.grid_levels_long=4", "grid.grid_levels_short=4", "regime.hysteresis_bps=5"]  # fmt: skip
VENUE = ("rate_limits.orders_per_second=10",)  # above the 8 rungs: the ladder goes out in one decision


@dataclass
class Fill:
    """One fill as both sides can say it: prices and sizes as floats, fee in quote."""

    ts: int
    side: int
    kind: int
    level: int
    price: float
    qty: float
    liquidity: int
    fee: float


@dataclass
class LiveRun:
    trades: list[Fill]  # the exchange's executions of our orders, kind and level from the client ids
    ledger: np.ndarray  # the live engine's own fills ledger (FILL_DTYPE)
    exchange_position: tuple[float, float]  # (long, short) on the exchange at the end
    engine_position: tuple[float, float]
    deferred: int
    post_only_errors: int
    entries_placed: list[tuple[int, int, int, float, float]]  # (time, side, level, price, qty), in order


def _entries_placed(acct: Any) -> list[tuple[int, int, int, float, float]]:
    """Every entry order the bridge placed on the emulator (resting, filled or cancelled), in order."""
    out = []
    for o in acct.orders.values():
        cid = parse_client_id(o.client_id)
        if cid is not None and cid.kind == "entry":
            out.append((o.time, cid.side, cid.level, o.price, o.qty))
    return out


def _market_frames(
    flat: int, price: float, bars: pl.DataFrame, funding: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``flat`` bars at ``price`` before ``bars`` (1m, same columns), and a settlement 8 h before
    ``bars`` (the first bar is on the whole hour, as settlements are)."""
    t0 = int(bars["ts"][0])
    pre = pl.DataFrame(
        {
            "ts": [t0 - (flat - i) * MIN for i in range(flat)],
            **{c: [price] * flat for c in ("open", "high", "low", "close")},
            "volume": [1.0] * flat,
        }
    ).cast(bars.schema)
    first = pl.DataFrame({"ts": [t0 - 8 * HOUR], "rate": [0.0001], "mark_price": [price]})
    return pl.concat([pre, bars]), pl.concat([first.cast(funding.schema), funding])


def _sample_frames(n: int, warmup: int, gap_sd: float) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The first ``n`` bars of the generated sample after ``warmup + 1`` flat bars at its first open.

    ``gap_sd`` > 0 moves each open away from the previous close by a normal amount (USDT, on the tick;
    fixed seed) and widens high/low to hold it: gaps make new entries cross the next open (post-only
    rejections and retries) and open beyond resting orders (gap fills).
    """
    candles, _mark, funding = generate_sample(1, seed=7)
    bars = candles.head(n).select("ts", "open", "high", "low", "close", "volume")
    funding = funding.select("ts", "rate", "mark_price")
    if gap_sd > 0:
        shift = np.round(np.random.default_rng(3).normal(0.0, gap_sd, n) / TICK) * TICK
        shift[0] = 0.0
        bars = bars.with_columns(pl.col("open") + pl.Series(shift)).with_columns(
            pl.max_horizontal("high", "open").alias("high"), pl.min_horizontal("low", "open").alias("low")
        )
    return _market_frames(warmup + 1, float(bars["open"][0]), bars, funding)


def _warmup(strategy: StrategyConfig) -> int:
    r = strategy.regime
    return warmup_bars(r.adx_len, r.ema_slow, r.atr_len)


def _exchange_fills(acct: Any) -> list[Fill]:
    """The emulator's trades of our orders, in execution order, named by the orders' client ids."""
    by_exec_id = {(o.actual_order_id or o.order_id): o for o in acct.orders.values()}
    out = []
    for t in acct.trades:
        cid = parse_client_id(by_exec_id[t.order_id].client_id)
        assert cid is not None and cid.kind in _KIND, (t, cid)
        assert t.position_side == ("LONG", "SHORT")[cid.side], (t, cid)
        closing = cid.kind != "entry"
        assert t.side == ("BUY" if (cid.side == Side.LONG) != closing else "SELL"), (t, cid)
        liq = Liquidity.MAKER if t.maker else Liquidity.TAKER
        out.append(Fill(t.time, cid.side, _KIND[cid.kind], cid.level, t.price, t.qty, liq, t.commission))
    return out


def _ledger_fills(rows: np.ndarray) -> list[Fill]:
    return [
        Fill(int(r["ts"]), int(r["side"]), int(r["kind"]), int(r["level"]), float(r["price"]),
             float(r["qty"]), int(r["liquidity"]), float(r["fee"]))
        for r in rows
    ]  # fmt: skip


def _live(
    frame: pl.DataFrame,
    funding: pl.DataFrame,
    start: int,
    overrides: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    venue_overrides: tuple[str, ...] = VENUE,
) -> tuple[LiveRun, Any, Any]:
    """``--live`` through the emulator replaying ``frame``: bars before ``start`` are history, then
    every bar is traded by the emulator, polled by the feed and run by the bridge.

    Returns (the run, the strategy, the venue aimed at the emulator)."""
    from emulator.binance_usdm import BinanceUsdmEmulator, EmulatorState
    from emulator.private import FillModel

    for k, v in EMU_ENV.items():
        monkeypatch.setenv(k, v)
    strategy = load_strategy("default", overrides)
    state = EmulatorState()
    state.set_funding(SYMBOL_ID, funding.rename({"ts": "funding_time"}))
    state.replay(SYMBOL_ID, "1m", frame, start_ms=int(frame["ts"][start]))
    state.account.wallet = strategy.backtest.initial_balance
    with BinanceUsdmEmulator(state) as emu:
        venue = emulator_venue(emu.url, list(venue_overrides))
        state.account.fill_model = FillModel.like_backtest(strategy, venue)
        token = EMU_ENV["GRIDCTL_OPS_TOKEN"]
        ready, ctx = prepare_live_on_emulator(
            strategy, venue, tmp_path / "j.sqlite", token, symbol=SAMPLE_SYMBOL
        )
        try:
            ready.require()
            bridge = ctx.bridge
            assert bridge.s.warm_bars == start == bridge.s.warmup_needed
            while state.account.replays[SYMBOL_ID].cursor < frame.height:
                state.advance_bar(SYMBOL_ID)
                for bar in ctx.feed.poll():
                    bridge.on_bar(bar)
            assert bridge.s.n == frame.height - start  # every bar from `start` on was run live
            acct = state.account
            run = LiveRun(
                trades=_exchange_fills(acct),
                ledger=bridge.s.output().fills,
                exchange_position=(
                    acct.position(SYMBOL_ID, "LONG")[0],
                    -acct.position(SYMBOL_ID, "SHORT")[0],
                ),
                engine_position=bridge.s.position(),
                deferred=bridge.deferred,
                post_only_errors=bridge.errors["post_only"],
                entries_placed=_entries_placed(acct),
            )
        finally:
            ctx.close()
    return run, strategy, venue


def _backtest(frame: pl.DataFrame, funding: pl.DataFrame, strategy: Any, venue: Any) -> RunOutput:
    """``engine.run.run_single`` over the whole frame (bars ``[start - W, end)``), as `gridctl backtest`."""
    market = market_from_arrays(
        SAMPLE_SYMBOL, "1m", *(frame[c].to_numpy() for c in ("ts", "open", "high", "low", "close", "volume")),
        *(funding[c].to_numpy() for c in ("ts", "rate", "mark_price")),
    )  # fmt: skip
    return run_single(market, strategy, venue)


def _units(x: float, unit: float) -> int:
    """``x`` as a whole number of ``unit`` (fails when it is off the grid beyond float noise)."""
    n = round(x / unit)
    assert abs(x - n * unit) < 1e-6 * unit, (x, unit)
    return n


def _assert_same_fills(got: list[Fill], want: list[Fill], what: str) -> None:
    assert len(got) == len(want), f"{what}: {len(got)} fills, the backtest {len(want)}"
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        where = f"{what} fill {i}: {g} vs backtest {w}"
        assert (g.ts, g.side, g.kind, g.level) == (w.ts, w.side, w.kind, w.level), where
        assert g.liquidity == w.liquidity, where
        assert _units(g.qty, STEP) == _units(w.qty, STEP), where
        if w.liquidity == Liquidity.MAKER:  # a limit fills at its own price, on the tick grid
            assert _units(g.price, TICK) == _units(w.price, TICK), where
        # a stop fills at its trigger (on the grid) moved by the slippage: equal up to float noise
        assert g.price == pytest.approx(w.price, rel=1e-12, abs=0.0), where
        assert g.fee == pytest.approx(w.fee, rel=1e-9, abs=0.0), where


def _exits_in_entry_bar(fills: np.ndarray) -> list[tuple[int, int, int]]:
    """(bar ts, side, level) of every lot the backtest closed in the bar that opened it."""
    opened: dict[tuple[int, int], int] = {}
    out = []
    for r in fills:
        key = (int(r["side"]), int(r["level"]))
        if r["kind"] == FillKind.ENTRY:
            opened[key] = int(r["ts"])
        elif opened.get(key) == int(r["ts"]):
            out.append((int(r["ts"]), *key))
    return out


@pytest.mark.parametrize(
    ("n_bars", "gap_sd"),
    [(240, 0.0), (200, 35.0)],
    ids=["sample", "gapped-opens"],
)
def test_live_fills_equal_the_backtest_fills(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n_bars: int, gap_sd: float
) -> None:
    start = _warmup(load_strategy("default", PARITY))
    frame, funding = _sample_frames(n_bars, start, gap_sd)
    live, strategy, venue = _live(frame, funding, start, PARITY, tmp_path, monkeypatch)
    bt = _backtest(frame, funding, strategy, venue)
    fills = bt.fills

    # the alignment holds: nothing filled before the first live bar; nothing was deferred live
    assert len(fills) and fills["ts"].min() > int(frame["ts"][start])
    assert live.deferred == 0
    # the known difference is absent: no lot closed in the bar that opened it
    assert _exits_in_entry_bar(fills) == [], "the scenario must keep exits out of their entry's bar"
    # the scenario means something: both sides enter, take profits, stop out, re-centre, trend
    kinds = {(int(r["side"]), int(r["kind"])) for r in fills}
    assert {(Side.LONG, FillKind.ENTRY), (Side.SHORT, FillKind.ENTRY)} <= kinds, kinds
    assert {(Side.LONG, FillKind.TP), (Side.SHORT, FillKind.TP), (Side.LONG, FillKind.SL)} <= kinds, kinds
    assert len(fills) >= 20
    assert (bt.events["kind"] == EventKind.RECENTER).sum() >= 2
    assert {Regime.SIDEWAYS, Regime.DOWN} <= {int(x) for x in bt.equity["regime"]}

    want = _ledger_fills(fills)
    _assert_same_fills(live.trades, want, "exchange")
    _assert_same_fills(_ledger_fills(live.ledger), want, "live engine")
    assert live.ledger["realized_pnl"] == pytest.approx(fills["realized_pnl"], rel=1e-9, abs=1e-9)
    # every post-only rejection (first attempts and retries) is one in the backtest too
    rejects = int((bt.events["kind"] == EventKind.POST_ONLY_REJECT).sum())
    assert live.post_only_errors == rejects
    if gap_sd > 0:
        assert rejects > 0, "the gapped opens must make entries cross the next open"
        # and some take-profit was filled by an open beyond it (at its limit, maker: it was resting)
        opens = dict(zip(frame["ts"].to_list(), frame["open"].to_list(), strict=True))
        assert any(
            f.kind == FillKind.TP
            and (opens[f.ts] > f.price if f.side == Side.LONG else opens[f.ts] < f.price)
            for f in want
        )
    last = bt.equity[-1]
    want_pos = (_units(last["long_qty"], STEP), _units(last["short_qty"], STEP))
    assert tuple(_units(q, STEP) for q in live.exchange_position) == want_pos
    assert tuple(_units(q, STEP) for q in live.engine_position) == want_pos
    print(f"\n{len(want)} fills equal ({n_bars} bars, gap sd {gap_sd}); final position {want_pos} steps")


def test_an_exit_in_its_entrys_bar_fills_live_only_after_that_bar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The known difference, hand-derived: the backtest takes a lot's profit in the bar that opened it;
    live places the take-profit at that bar's close and it fills then, against the close.

    One rung per side, step 40 bps, tp 1 step, base 0.003 (BTCUSDT tick 0.1, step 0.001). Centre
    C = 40000: long rung 1 floor_tick(40000 * 0.996) = 39840.0, short rung 1 40160.0. The bar
    40000 -> 40100 (high first: 100 <= 200) -> 39800 -> 40050 fills the long at 39840.0 (maker) and
    then passes its TP ceil_tick(39840 * 1.004) = 39999.4 (39999.36): the backtest fills it there, maker.
    Live the TP goes out at the close, 40050 is already above it: it fills at once as taker at the
    close moved by the 1 bp slippage, 40050 * 0.9999 = 40045.995, stamped with the close time.
    """
    overrides = ["grid.grid_levels_long=1", "grid.grid_levels_short=1", "grid.grid_step_bps=40",
                 "grid.base_qty=0.003", "exit.tp_steps=1"]  # fmt: skip
    start = _warmup(load_strategy("default", overrides))
    t0 = 1_704_067_200_000
    rows = [(40000.0, 40100.0, 39800.0, 40050.0)] + [(40050.0,) * 4] * 2
    bars = pl.DataFrame(
        {
            "ts": [t0 + i * MIN for i in range(len(rows))],
            **{c: [r[j] for r in rows] for j, c in enumerate(("open", "high", "low", "close"))},
            "volume": [1.0] * len(rows),
        }
    )
    funding = pl.DataFrame({"ts": [t0 + 8 * HOUR], "rate": [0.0001], "mark_price": [40000.0]})
    frame, funding = _market_frames(start + 1, 40000.0, bars, funding)
    live, strategy, venue = _live(frame, funding, start, overrides, tmp_path, monkeypatch)
    bt = _backtest(frame, funding, strategy, venue)
    # fees: maker 0.02 %, taker 0.05 % of price x 0.003
    entry = Fill(t0, Side.LONG, FillKind.ENTRY, 1, 39840.0, 0.003, Liquidity.MAKER, 39840.0 * 6e-7)
    _assert_same_fills(
        _ledger_fills(bt.fills),
        [entry, Fill(t0, Side.LONG, FillKind.TP, 1, 39999.4, 0.003, Liquidity.MAKER, 39999.4 * 6e-7)],
        "backtest",
    )
    assert _exits_in_entry_bar(bt.fills) == [(t0, Side.LONG, 1)]
    tp_live = Fill(t0 + MIN, Side.LONG, FillKind.TP, 1, 40045.995, 0.003, Liquidity.TAKER, 40045.995 * 1.5e-6)
    _assert_same_fills(live.trades, [entry, tp_live], "exchange")
    _assert_same_fills(_ledger_fills(live.ledger), [entry, tp_live], "live engine")
    assert live.exchange_position == live.engine_position == (0.0, 0.0)


def test_the_engines_entry_pacing_is_the_only_pacing_live_sends_what_the_backtest_rests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hand-derived: the engine counts entry submissions against ``orders_per_second`` (engine/step.py);
    live, the bridge sends what the engine decided, exits included, within the exchange's windows.

    The parity config (step 10 bps, 4 rungs a side, tp 2 / sl 6 steps), centre C = 60000: long rungs
    floor_tick(60000 * (1 - 0.001 i)) = 59940.0, 59880.0, 59820.0, 59760.0. Bar 1 (60000 -> 60000 ->
    59590 -> 59600) fills all four; its close is 66.7 bps from C (> 60): re-centre at 59600, short rungs
    ceil_tick(59600 * (1 + 0.001 i)) = 59659.6, 59719.2, 59778.8, 59838.4 (the long rungs hold lots;
    their stops, 59580.3 and below, are never reached). That close wants 8 exits (each lot's TP and SL)
    and 4 entries: 12 orders, within 10 x 8 per 10 s. At 8 a second (the old per-second limiter deferred
    the 4 entries) and at 12 the bridge defers nothing; the engine submitted the 4 entries (4 <= 8). Bar 2
    (59600 -> 59600 -> 59670 -> 59650) trades through 59659.6: short rung 1 fills in both.
    """
    start = _warmup(load_strategy("default", PARITY))
    t0 = 1_704_067_200_000
    rows = [(60000.0, 60000.0, 59590.0, 59600.0), (59600.0, 59670.0, 59600.0, 59650.0), (59650.0,) * 4]
    bars = pl.DataFrame(
        {
            "ts": [t0 + i * MIN for i in range(len(rows))],
            **{c: [r[j] for r in rows] for j, c in enumerate(("open", "high", "low", "close"))},
            "volume": [1.0] * len(rows),
        }
    )
    funding = pl.DataFrame({"ts": [t0 + 8 * HOUR], "rate": [0.0001], "mark_price": [60000.0]})
    frame, funding = _market_frames(start + 1, 60000.0, bars, funding)
    longs = [
        Fill(t0, Side.LONG, FillKind.ENTRY, i, px, 0.002, Liquidity.MAKER, px * 4e-7)
        for i, px in enumerate((59940.0, 59880.0, 59820.0, 59760.0), start=1)
    ]
    short = Fill(t0 + MIN, Side.SHORT, FillKind.ENTRY, 1, 59659.6, 0.002, Liquidity.MAKER, 59659.6 * 4e-7)
    for per_second in (8, 12):
        live, strategy, venue = _live(
            frame, funding, start, PARITY, tmp_path / str(per_second), monkeypatch,
            (f"rate_limits.orders_per_second={per_second}",),
        )  # fmt: skip
        bt = _backtest(frame, funding, strategy, venue)
        _assert_same_fills(_ledger_fills(bt.fills), [*longs, short], f"backtest at {per_second}/s")
        assert live.deferred == 0
        _assert_same_fills(live.trades, [*longs, short], f"exchange at {per_second}/s")


def test_an_entry_the_funding_guard_shrinks_within_the_qty_tolerance_rests_on_in_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The live diff keeps an entry within ``order_qty_tolerance_pct`` of the wanted one; the backtest's
    decision step applies the same test, so both keep and replace the same entries (hand-derived).

    One rung a side, step 10 bps, base 0.5, balance 100,000, max position 10 and max inventory 100,000
    (0.5 BTC is ~30,000 USDT, beyond the default 10,000); the funding guard at its
    defaults (window 480 min, cost 12 bps). Centre 60000: long rung floor_tick(60000 * 0.999) = 59940.0,
    short rung 60060.0 (never reached; the short side does not pay, its 0.5 never changes). Settlements:
    t0 - 8 h at 0.0001 (1 bp: the warm-up bars trade unscaled, 0.5), t0 at +0.002 (20 bps > 12: the long
    side pays) and the next at t0 + 4 h. The start bar (the last flat one) closes at t0, where both
    want floor_step(0.5 * 240/480) = 0.250 (the backtest replaces its 0.5, 100 % away; live places it).
    Bar k from t0 closes at t0 + (k + 1) min, wanted floor_step(0.5 * (239 - k)/480):
      k=0: 0.2489583 -> 0.248, |0.250 - 0.248|/0.248 = 0.81 % <= 1: 0.250 rests on;
      k=1: 0.2479167 -> 0.247, |0.250 - 0.247|/0.247 = 1.21 % > 1: replaced by 0.247;
      k=2: 0.246875 -> 0.246, |0.247 - 0.246|/0.246 = 0.41 %: 0.247 rests on;
      k=3 (60000 -> 59900 -> 59950) trades through 59940: fills 0.247 (maker, fee 59940 * 0.247 * 0.0002).
    With the tolerance at 0 both replace the entry at every close and fill 0.246.
    Why the 0.002 settles at t0: live starts with no order, the backtest with whatever its warm-up bars
    left resting. Had the guard already scaled during the warm-up (0.002 settled earlier), the backtest
    would rest 0.251 at t0 (0.250 is within 1 % of it) while live places 0.250, and they would part.
    """
    overrides = ["grid.grid_levels_long=1", "grid.grid_levels_short=1", "grid.grid_step_bps=10",
                 "grid.base_qty=0.5", "backtest.initial_balance=100000", "position.max_position_size=10",
                 "rebalance.max_inventory_quote=100000"]  # fmt: skip
    start = _warmup(load_strategy("default", overrides))
    t0 = 1_704_067_200_000
    rows = [(60000.0,) * 4] * 3 + [(60000.0, 60000.0, 59900.0, 59950.0), (59950.0,) * 4]
    bars = pl.DataFrame(
        {
            "ts": [t0 + i * MIN for i in range(len(rows))],
            **{c: [r[j] for r in rows] for j, c in enumerate(("open", "high", "low", "close"))},
            "volume": [1.0] * len(rows),
        }
    )
    funding = pl.DataFrame(
        {"ts": [t0, t0 + 4 * HOUR], "rate": [0.002, 0.0001], "mark_price": [60000.0, 60000.0]}
    )
    frame, funding = _market_frames(start + 1, 60000.0, bars, funding)
    for tol, placed, filled in (("1", [0.250, 0.247], 0.247), ("0", [0.250, 0.248, 0.247, 0.246], 0.246)):
        cfg = [*overrides, f"execution.order_qty_tolerance_pct={tol}"]
        live, strategy, venue = _live(frame, funding, start, cfg, tmp_path / tol, monkeypatch)
        bt = _backtest(frame, funding, strategy, venue)
        fee = 59940.0 * filled * 0.0002
        want = [Fill(t0 + 3 * MIN, Side.LONG, FillKind.ENTRY, 1, 59940.0, filled, Liquidity.MAKER, fee)]
        _assert_same_fills(_ledger_fills(bt.fills), want, f"backtest at {tol} %")
        _assert_same_fills(live.trades, want, f"exchange at {tol} %")
        _assert_same_fills(_ledger_fills(live.ledger), want, f"live engine at {tol} %")
        # the long entries live placed, at the closes t0, t0 + 1 min, ...: only those the diff replaced
        longs = [e for e in live.entries_placed if e[1] == Side.LONG]
        assert [(e[2], e[3]) for e in longs] == [(1, 59940.0)] * len(placed), longs
        assert [_units(e[4], STEP) for e in longs] == [_units(q, STEP) for q in placed], (tol, longs)
        # and the backtest submitted the same ones after the warm-up (0.5 a side once, in it)
        assert bt.summary["orders_submitted"] == 2 + len(placed), tol
