"""A live basket session steps the account exactly as a basket backtest does (issue #16, "Live on several
symbols").

``live_bridge.basket.BasketSession`` feeds one aligned closed bar at a time, every symbol's funding
revealed only up to that close (``live_bridge.replay.basket_replay``), through the engine's own
``engine.basket.basket_bar_nb``; the backtest is ``engine.basket.run_basket`` over the whole markets.
Two symbols on different ticks and prices, ETH starting four hours after BTC and with a gap: every
symbol's fills, funding rows, events and equity rows, the account's equity rows and summary must be
equal, field by field.
"""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from gridctl.cli import app
from gridctl.configs.errors import GridctlError
from gridctl.configs.loader import load_strategy, load_venue
from gridctl.configs.overrides import basket_strategies
from gridctl.data.market import market_from_arrays
from gridctl.data.sample import generate_sample
from gridctl.data.store import write_candles, write_funding
from gridctl.engine.basket import BAR_GO, run_basket
from gridctl.engine.enums import EventKind, FillKind
from gridctl.engine.records import FILL_DTYPE
from gridctl.engine.state import S_EQUITY, S_WALLET
from gridctl.live_bridge import killpoint
from gridctl.live_bridge.basket import BasketBridge, BasketSession
from gridctl.live_bridge.bridge import Bridge, BridgeOptions
from gridctl.live_bridge.journal import BasketJournal, Journal
from gridctl.live_bridge.ops import BasketOps
from gridctl.live_bridge.replay import basket_replay
from gridctl.live_bridge.runner import member_prefix
from gridctl.live_bridge.session import EngineSession
from gridctl.research.results import BASKET_RESULT_FILES

BTC, ETH = "BTC/USDT:USDT", "ETH/USDT:USDT"
ETH_LATE = 240  # ETH's first bar is 4 h after BTC's
ETH_GAP = (900, 960)  # and it has no bars for an hour later on (indexes into BTC's bars)
TIGHT = ["grid.grid_step_bps=15", "exit.tp_steps=2", "rebalance.recenter_trigger_bps=80"]


def _market(symbol: str, seed: int, scale: float, tick: float, keep: np.ndarray, days: int):
    candles, _mark, funding = generate_sample(days=days, seed=seed)
    prices = ("open", "high", "low", "close")
    candles = candles.with_columns(((pl.col(c) / scale / tick).round() * tick).round(2) for c in prices)
    candles = candles.filter(pl.Series(keep[: candles.height]))
    return market_from_arrays(
        symbol, "1m", *(candles[c].to_numpy() for c in ("ts", *prices, "volume")),
        funding["ts"].to_numpy(), funding["rate"].to_numpy(), funding["mark_price"].to_numpy() / scale,
    )  # fmt: skip


def _basket(days: int = 2, overrides: list[str] | None = None):
    n = days * 1440
    every = np.ones(n, bool)
    eth = np.ones(n, bool)
    eth[:ETH_LATE] = False
    eth[ETH_GAP[0] : ETH_GAP[1]] = False
    markets = {BTC: _market(BTC, 7, 1.0, 0.1, every, days), ETH: _market(ETH, 11, 20.0, 0.01, eth, days)}
    strategy = load_strategy("default", [f'strategy.symbols=["{BTC}", "{ETH}"]', *(overrides or [])])
    return markets, basket_strategies(strategy), load_venue("binance_futures")


def _live(markets, strategies, venue, capacity: int = 4096) -> tuple[BasketSession, int]:
    session = BasketSession(strategies, venue, "1m", capacity=capacity)
    steps = 0
    for t, bars in basket_replay(markets):
        for sym, bar in bars.items():
            session.set_funding(sym, bar.settled, bar.next_funding_ms)
        code = session.step_paper(t, {sym: (b.open, b.high, b.low, b.close) for sym, b in bars.items()})
        steps += 1
        if code != BAR_GO:
            break
    return session, steps


def _same_rows(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.dtype == want.dtype, what
    assert got.shape == want.shape, f"{what}: {got.shape} rows, the backtest {want.shape}"
    for name in want.dtype.names:
        np.testing.assert_array_equal(got[name], want[name], err_msg=f"{what}.{name}")


def _same_summary(got: dict, want: dict, what: str) -> None:
    assert got.keys() == want.keys(), what
    for name, w in want.items():
        g = got[name]
        assert (math.isnan(g) and math.isnan(w)) or g == w, f"{what}.{name}: {g} vs backtest {w}"


HALT = [*TIGHT, "backtest.initial_balance=1000", "risk_management.max_drawdown_pct=1"]  # ~1.9 % drawdown


@pytest.mark.parametrize(
    ("overrides", "capacity"),
    [(TIGHT, 4096), (HALT, 4096), (TIGHT, 16)],
    ids=["tight", "halt", "growing"],  # growing: bar arrays and ledgers reallocated many times on the way
)
def test_a_paper_basket_writes_the_basket_backtests_ledgers(overrides: list[str], capacity: int) -> None:
    markets, strategies, venue = _basket(overrides=overrides)
    bt = run_basket(markets, strategies, venue)
    session, steps = _live(markets, strategies, venue, capacity)
    live = session.output()

    assert live.symbols == bt.symbols == (BTC, ETH)
    assert steps == bt.meta["bars"] == 2 * 1440  # every aligned minute (BTC has them all)
    for sym in (BTC, ETH):
        g, w = live.per_symbol[sym], bt.per_symbol[sym]
        for ledger in ("fills", "funding", "events", "equity"):
            _same_rows(getattr(g, ledger), getattr(w, ledger), f"{sym} {ledger}")
        _same_summary(g.summary, w.summary, f"{sym} summary")
        assert session.sessions[sym].position() == (w.summary["long_qty"], w.summary["short_qty"])
    _same_rows(live.account_equity, bt.account_equity, "account equity")
    _same_summary(live.summary, bt.summary, "account summary")

    # the scenario means something: both symbols trade both sides and take profits; ETH says it had no
    # bar before its first and in its gap; funding is paid or received on both
    for sym in (BTC, ETH):
        fills = bt.per_symbol[sym].fills
        assert {int(k) for k in fills["kind"]} >= {FillKind.ENTRY, FillKind.TP}, sym
        assert {int(s) for s in fills["side"]} == {0, 1}, sym
        assert len(bt.per_symbol[sym].funding) > 0, sym
    missing = bt.per_symbol[ETH].events["kind"] == EventKind.INPUT_MISSING
    assert missing.sum() >= ETH_LATE + (ETH_GAP[1] - ETH_GAP[0]) - 1
    assert not (bt.per_symbol[BTC].events["kind"] == EventKind.INPUT_MISSING).any()
    if overrides is HALT:
        # the account's drawdown halt reaches both symbols in one step
        assert bt.meta["halted_by"] in (BTC, ETH)
        halts = [bt.per_symbol[s].summary["halted_ts"] for s in (BTC, ETH)]
        assert halts[0] == halts[1] and not math.isnan(halts[0])


def test_the_symbols_share_the_accounts_wallet_and_rings() -> None:
    """Each symbol's session works on its row of the account's arrays, with the account's rings."""
    _markets, strategies, venue = _basket(days=1, overrides=TIGHT)
    session = BasketSession(strategies, venue, "1m")
    for i, sym in enumerate(session.symbols):
        ks = session.sessions[sym].ks
        assert np.shares_memory(ks.state, session.states[i]) and np.shares_memory(ks.slots, session.slots[i])
        assert ks.err_ring is session.errs and ks.ord_ring is session.ords
    with pytest.raises(Exception, match="not in the basket"):
        session.step_paper(0, {"XRP/USDT:USDT": (1.0, 1.0, 1.0, 1.0)})


def test_a_members_ledgers_are_the_baskets_rows_and_cannot_be_reassigned() -> None:
    """A member's ledgers and counters are views of its row of the basket's buffers. Assigning one
    would leave the member writing where no checkpoint or output reads: it raises (it used to be
    dropped without a word), and the views stay the basket's rows."""
    _markets, strategies, venue = _basket(days=1, overrides=TIGHT)
    session = BasketSession(strategies, venue, "1m")
    eth = session.sessions[ETH]
    for attr, owner in (("fills", "fills"), ("fund", "fund"), ("ev", "ev"), ("eq", "eq"), ("cnt", "cnts")):
        dtype = getattr(session, owner).dtype
        with pytest.raises(AttributeError):
            setattr(eth, attr, np.zeros(4, dtype))
        assert np.shares_memory(getattr(eth, attr), getattr(session, owner)[1]), attr


def test_both_session_kinds_load_journaled_ledger_rows_through_load_ledger() -> None:
    """``Journal.restore`` hands each ledger to ``load_ledger``, which both session kinds have: a single
    run's session takes the rows as its ledger's first rows; a basket member puts them into its row of
    the basket's buffer, widened for every symbol when they do not fit, the other symbols' rows kept."""
    _markets, strategies, venue = _basket(days=1, overrides=TIGHT)
    recs = np.zeros(3, FILL_DTYPE)
    recs["qty"] = [1.0, 2.0, 3.0]
    single = EngineSession(strategies[BTC], venue, BTC, "1m")
    single.load_ledger("fills", recs)
    assert single.fills["qty"][:3].tolist() == [1.0, 2.0, 3.0]

    session = BasketSession(strategies, venue, "1m")
    width = session.fills.shape[1]
    session.fills[0, :2]["qty"] = [7.0, 8.0]  # BTC's rows: kept
    many = np.zeros(width + 10, FILL_DTYPE)
    many["qty"] = np.arange(1, width + 11)
    session.sessions[ETH].load_ledger("fills", many)
    assert session.fills.shape[1] >= width + 10
    assert session.fills[1, : width + 10]["qty"].tolist() == many["qty"].tolist()
    assert session.sessions[ETH].fills[: width + 10]["qty"].tolist() == many["qty"].tolist()
    assert session.fills[0, :2]["qty"].tolist() == [7.0, 8.0]


def test_a_paper_baskets_status_total_is_the_accounts_not_its_first_symbols() -> None:
    """``/status`` of a paper basket (bridges on ``BasketOps``, stepped by ``BasketBridge``) after 610
    aligned bars, both symbols trading: the total's equity, wallet and margin ratio are the account's
    row at that bar as the basket backtest writes it (every symbol at its close), and equity = wallet +
    every symbol's unrealized PnL. They used to be the first symbol's (BTC's) row: its wallet before
    ETH's bookings of that bar and its equity with ETH's previous close, here 0.76 and 0.20 USDT off."""
    markets, strategies, venue = _basket(days=1, overrides=TIGHT)
    bt = run_basket(markets, strategies, venue)
    session = BasketSession(strategies, venue, "1m")
    ops = BasketOps(session.symbols)
    clock = [0]  # the bridges' clock: each bar is processed at its close (the feed is never stale)

    def now() -> int:
        return clock[0]

    bridges = {
        sym: Bridge(
            session.sessions[sym], BridgeOptions("paper", "r1"), ops.members[sym], now_ms=lambda: clock[0]
        )
        for sym in session.symbols
    }
    basket = BasketBridge(session, bridges)
    k = 610
    for t, bars in list(basket_replay(markets))[:k]:
        clock[0] = t + 60_000
        assert basket.on_bars(t, bars) == BAR_GO
    status = ops.snapshot()
    total, per = status["total"], status["symbols"]
    want = bt.account_equity[bt.account_equity["ts"] == t][0]
    assert total["equity"] == want["equity"]
    assert total["wallet_balance"] == want["wallet_balance"]
    assert total["margin_ratio"] == want["margin_ratio"]
    unreal = per[BTC]["unrealized_pnl"] + per[ETH]["unrealized_pnl"]
    assert total["equity"] == pytest.approx(total["wallet_balance"] + unreal, rel=0, abs=1e-9)
    # the scenario means something: both symbols hold positions, and BTC's row is not the account
    for sym in (BTC, ETH):
        assert per[sym]["position_long"] + per[sym]["position_short"] > 0.0, sym
    btc = session.sessions[BTC].state
    assert abs(btc[S_EQUITY] - want["equity"]) > 0.1 and abs(btc[S_WALLET] - want["wallet_balance"]) > 0.5


def test_a_paper_baskets_bar_latency_is_one_per_account() -> None:
    """A paper basket steps the account once per bar time (one simulated venue for every symbol), so its
    latency has one sample per bar: ``/status`` ``total.latency``. The symbols' own latencies stay empty
    on paper (each used to get a copy of the account's one sample: N samples per bar)."""
    markets, strategies, venue = _basket(days=1, overrides=TIGHT)
    session = BasketSession(strategies, venue, "1m")
    ops = BasketOps(session.symbols)
    bridges = {
        sym: Bridge(session.sessions[sym], BridgeOptions("paper", "r1"), ops.members[sym])
        for sym in session.symbols
    }
    basket = BasketBridge(session, bridges, ops=ops)
    assert ops.snapshot()["total"]["latency"] is None  # no bar yet
    for t, bars in list(basket_replay(markets))[:25]:
        basket.on_bars(t, bars)
    status = ops.snapshot()
    assert status["total"]["latency"]["n"] == 25 == len(basket.latency.samples_ms)
    assert [status["symbols"][sym]["latency"]["n"] for sym in (BTC, ETH)] == [0, 0]
    with pytest.raises(GridctlError, match="members of the basket's ops state"):
        BasketBridge(session, bridges, ops=BasketOps(session.symbols))


# --- `gridctl live --paper --replay DATA --symbols ...`: the CLI end to end


def _store(root: Path) -> None:
    """BTC (seed 7, tick 0.1) and ETH (seed 11 / 20, tick 0.01, from 4 h later) as stored 1m data."""
    for symbol, seed, scale, tick, skip in ((BTC, 7, 1.0, 0.1, 0), (ETH, 11, 20.0, 0.01, ETH_LATE)):
        candles, _mark, funding = generate_sample(days=2, seed=seed)
        prices = ("open", "high", "low", "close")
        candles = candles.with_columns(((pl.col(c) / scale / tick).round() * tick).round(2) for c in prices)
        write_candles(root, "synth", symbol, "1m", candles.slice(skip))
        write_funding(root, "synth", symbol, funding.with_columns(pl.col("mark_price") / scale))


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_live_replay_of_a_basket_writes_what_backtest_symbols_writes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _store(data)
    basket = f"{BTC},{ETH}"
    common = ["--exchange", "synth", "--symbols", basket, *[x for o in TIGHT for x in ("--set", o)], "--json"]
    bt = _cli("backtest", "--data-dir", str(data), *common, "--out", str(tmp_path / "bt"))
    assert bt.exit_code == 0, bt.output
    rp = _cli("live", "--paper", "--replay", str(data), *common, "--out", str(tmp_path / "rp"))
    assert rp.exit_code == 0, rp.output
    bt_stats, rp_stats = json.loads(bt.stdout), json.loads(rp.stdout)
    speed = rp_stats.pop("replay")
    assert speed["bars"] == 2 * 1440 and speed["bars_per_second"] > 0
    assert rp_stats == bt_stats
    assert bt_stats["basket"] == [BTC, ETH] and bt_stats["account"]["n_fills"] > 20
    for name in BASKET_RESULT_FILES:
        if name.endswith(".parquet"):
            a, b = pl.read_parquet(tmp_path / "bt" / name), pl.read_parquet(tmp_path / "rp" / name)
            assert a.equals(b), name
            assert a.height > 0, name
    assert (tmp_path / "bt" / "stats.json").read_bytes() == (tmp_path / "rp" / "stats.json").read_bytes()


def test_a_windowed_basket_replay_writes_what_the_windowed_backtest_writes(tmp_path: Path) -> None:
    """`live --replay --symbols --start/--end` replays the window `backtest --start/--end` runs: the store
    holds 2024-01-01..01-02 (2 days of 1m bars); --start 2024-01-02 leaves the second day, 1,440 bars."""
    data = tmp_path / "data"
    _store(data)
    basket = f"{BTC},{ETH}"
    common = ["--exchange", "synth", "--symbols", basket, "--start", "2024-01-02", "--end", "2024-01-03"]
    common += [*[x for o in TIGHT for x in ("--set", o)], "--json"]
    bt = _cli("backtest", "--data-dir", str(data), *common, "--out", str(tmp_path / "bt"))
    assert bt.exit_code == 0, bt.output
    rp = _cli("live", "--paper", "--replay", str(data), *common, "--out", str(tmp_path / "rp"))
    assert rp.exit_code == 0, rp.output
    bt_stats, rp_stats = json.loads(bt.stdout), json.loads(rp.stdout)
    assert rp_stats.pop("replay")["bars"] == 1440
    assert rp_stats == bt_stats
    assert bt_stats["account"]["data_start"].startswith("2024-01-02T00:00")
    assert bt_stats["account"]["n_fills"] > 0
    a, b = (pl.read_parquet(tmp_path / d / "fills.parquet") for d in ("bt", "rp"))
    assert a.equals(b) and a.height > 0


def test_a_replay_with_symbol_trades_that_symbol_as_backtest_symbol_does(tmp_path: Path) -> None:
    """`live --replay --symbol ETH` retargets the (BTC) strategy to ETH as `backtest --symbol ETH` does
    (it refused: 'market data is for ETH/USDT:USDT but strategy.instrument_id ... trades BTC')."""
    data = tmp_path / "data"
    _store(data)
    common = ["--exchange", "synth", "--symbol", ETH, *[x for o in TIGHT for x in ("--set", o)], "--json"]
    bt = _cli("backtest", "--data-dir", str(data), *common)
    assert bt.exit_code == 0, bt.output
    rp = _cli("live", "--paper", "--replay", str(data), *common)
    assert rp.exit_code == 0, rp.output
    bt_stats, rp_stats = json.loads(bt.stdout), json.loads(rp.stdout)
    assert rp_stats.pop("replay")["bars"] == 2 * 1440 - ETH_LATE  # ETH's stored bars
    assert rp_stats == bt_stats and bt_stats["symbol"] == ETH and bt_stats["n_fills"] > 0


def test_a_basket_against_an_unreachable_exchange_fails_readiness_per_symbol(tmp_path: Path) -> None:
    """A basket against an exchange runs the basket start-up, never the strategy's first symbol alone:
    with the exchange unreachable every symbol's own items fail, one line each, exit 2, and the
    journal keeps no run (nothing was sent)."""
    journal = tmp_path / "j.sqlite"
    for how in (["--symbols", f"{BTC},{ETH}"], ["--set", f'strategy.symbols=["{BTC}", "{ETH}"]']):
        r = _cli("live", "--paper", *how, "--api-url", "http://127.0.0.1:9", "--journal", str(journal),
                 "--ops-port", "0")  # fmt: skip
        assert r.exit_code == 2, r.output
        for sym in (BTC, ETH):
            for item in ("symbol and filters", "warm-up", "funding rate"):
                assert f"FAIL {sym}: {item}: exchange not reachable" in r.output, (sym, item, r.output)
        assert "not ready to start" in r.output
        db = sqlite3.connect(str(journal))
        assert db.execute("SELECT value FROM meta WHERE key='basket'").fetchall() == []
        db.close()
    # a basket's journal is not a single-symbol run's, nor the other way round
    db = sqlite3.connect(str(journal))
    db.execute("INSERT INTO meta VALUES ('basket', ?)", (f"{BTC},{ETH}",))
    db.execute("INSERT OR REPLACE INTO meta VALUES ('mode', 'live')")
    db.commit()
    meta_before = sorted(db.execute("SELECT key, value FROM meta").fetchall())
    db.close()
    r = _cli(
        "live", "--paper", "--api-url", "http://127.0.0.1:9", "--journal", str(journal), "--ops-port", "0"
    )
    assert (
        r.exit_code == 2 and f"FAIL journal: {journal} is the journal of the basket {BTC},{ETH}" in r.output
    )
    db = sqlite3.connect(str(journal))  # the refused single-symbol start left the basket's meta alone
    assert sorted(db.execute("SELECT key, value FROM meta").fetchall()) == meta_before
    db.close()
    # a basket restarts only as the basket its journal holds (the symbols and their order)
    r = _cli("live", "--paper", "--symbols", f"{ETH},{BTC}", "--api-url", "http://127.0.0.1:9", "--journal",
             str(journal), "--ops-port", "0")  # fmt: skip
    assert r.exit_code == 2, r.output
    assert f"FAIL journal: {journal} belongs to the basket {BTC},{ETH}, not {ETH},{BTC}" in r.output
    single = tmp_path / "single.sqlite"
    j = Journal(single)  # a single-symbol run's journal holds its engine state
    j.db.execute("INSERT INTO kstate (id) VALUES (1)")
    j.close()
    r = _cli("live", "--paper", "--symbols", f"{BTC},{ETH}", "--api-url", "http://127.0.0.1:9", "--journal",
             str(single), "--ops-port", "0")  # fmt: skip
    assert r.exit_code == 2 and "is the journal of a single-symbol run, not of a basket" in r.output
    r = _cli("live", "--paper", "--replay", str(tmp_path), "--symbols", BTC, "--symbol", BTC)
    assert r.exit_code == 2 and "--symbol and --symbols" in r.output
    # A symbol named twice was merged into a basket of one; it is refused as strategy.symbols refuses it.
    r = _cli("live", "--paper", "--replay", str(tmp_path), "--symbols", f"{BTC},{ETH},{BTC}")
    assert r.exit_code == 2 and f"error: --symbols: {BTC} given more than once" in r.output
    r = _cli("live", "--paper", "--replay", str(tmp_path), "--symbols", " , ")
    assert r.exit_code == 2 and "names no symbol" in r.output


# --- the basket's journal: one checkpoint for every symbol and the account, and a restart from it


def _step(session: BasketSession, t: int, bars: dict) -> int:
    for sym, bar in bars.items():
        session.set_funding(sym, bar.settled, bar.next_funding_ms)
    return session.step_paper(t, {sym: (b.open, b.high, b.low, b.close) for sym, b in bars.items()})


def _basket_journal(path: Path, symbols: tuple[str, ...]) -> BasketJournal:
    return BasketJournal(path, {sym: member_prefix(sym) for sym in symbols})


def _restored(path: Path, strategies, venue) -> BasketSession:
    session = BasketSession(strategies, venue, "1m")
    journal = _basket_journal(path, session.symbols)
    try:
        for sym in session.symbols:
            journal.members[sym].restore(session.sessions[sym])
        journal.restore_account(session)
    finally:
        journal.close()
    return session


def test_a_basket_restarted_from_its_checkpoint_writes_the_backtests_ledgers(tmp_path: Path) -> None:
    """Checkpointed every bar into one basket journal up to bar K (after ETH's late start, inside its gap:
    missing bars journaled too), restored into a fresh session and stepped on: the ledgers, the account
    curve and the summaries equal ``run_basket`` over all bars, as an unbroken paper basket does."""
    markets, strategies, venue = _basket(overrides=TIGHT)
    bt = run_basket(markets, strategies, venue)
    k_stop = ETH_GAP[0] + 20
    replay = list(basket_replay(markets))
    first = BasketSession(strategies, venue, "1m", capacity=16)  # grown on the way, journaled rows kept
    journal = _basket_journal(tmp_path / "b.sqlite", first.symbols)
    extras = {sym: {} for sym in first.symbols}
    for t, bars in replay[:k_stop]:
        assert _step(first, t, bars) == BAR_GO
        journal.save(first, extras)
    journal.close()
    session = _restored(tmp_path / "b.sqlite", strategies, venue)
    assert session.n == k_stop and all(s.n == k_stop for s in session.sessions.values())
    for t, bars in replay[k_stop:]:
        if _step(session, t, bars) != BAR_GO:
            break
    live = session.output()
    for sym in (BTC, ETH):
        g, w = live.per_symbol[sym], bt.per_symbol[sym]
        for ledger in ("fills", "funding", "events", "equity"):
            _same_rows(getattr(g, ledger), getattr(w, ledger), f"{sym} {ledger}")
        _same_summary(g.summary, w.summary, f"{sym} summary")
    _same_rows(live.account_equity, bt.account_equity, "account equity")
    _same_summary(live.summary, bt.summary, "account summary")
    assert len(bt.per_symbol[ETH].fills) > 0 and len(bt.per_symbol[BTC].fills) > 0


def test_a_basket_restart_whose_restore_fails_is_listed_and_refused_not_a_traceback(tmp_path: Path) -> None:
    """A restart on a basket journal the current config cannot restore (here ``rate_limits.
    orders_per_minute`` raised from 100 to 2000 between runs: the journaled order ring holds 100 slots)
    fails its "warm-up / restart" item, the start-up lists it and exits 2 (found walking issue #16: the
    basket start-up crashed with ``KeyError`` on the symbols' missing journaled extras), and the journal
    is left as it was."""
    markets, strategies, venue = _basket(days=1, overrides=TIGHT)
    path = tmp_path / "b.sqlite"
    first = BasketSession(strategies, venue, "1m")
    journal = _basket_journal(path, first.symbols)
    for t, bars in list(basket_replay(markets))[:300]:
        _step(first, t, bars)
    journal.save(first, {sym: {} for sym in first.symbols})
    for key, value in (("run_id", "r1"), ("mode", "paper"), ("basket", f"{BTC},{ETH}")):
        journal.set_meta(key, value)
    journal.close()
    db = sqlite3.connect(str(path))
    before = db.execute("SELECT data FROM account").fetchall()
    db.close()
    r = _cli("live", "--paper", "--symbols", f"{BTC},{ETH}", *[x for o in TIGHT for x in ("--set", o)],
             "--venue-set", "rate_limits.orders_per_minute=2000", "--api-url", "http://127.0.0.1:9",
             "--journal", str(path), "--ops-port", "0")  # fmt: skip
    assert r.exit_code == 2, r.output
    assert "FAIL warm-up / restart: " in r.output and "order ring has 100 values, this config needs 2000" in (
        r.output
    )
    assert "not ready to start" in r.output
    db = sqlite3.connect(str(path))
    assert db.execute("SELECT data FROM account").fetchall() == before
    db.close()


def test_a_kill_inside_the_basket_checkpoint_leaves_every_symbol_and_the_account_at_the_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The basket checkpoint dies after the first symbol's writes: SQLite rolls the whole transaction
    back, so the journal holds every symbol and the account at the checkpoint before, not BTC a bar on."""
    markets, strategies, venue = _basket(days=1, overrides=TIGHT)
    replay = list(basket_replay(markets))
    first = BasketSession(strategies, venue, "1m")
    journal = _basket_journal(tmp_path / "b.sqlite", first.symbols)
    extras = {sym: {} for sym in first.symbols}
    for t, bars in replay[:300]:
        _step(first, t, bars)
        journal.save(first, extras)  # every bar, as the live loop does
    wallet_at_300 = float(first.acc[0])
    rows_at_300 = first.rows[:300].copy()
    for t, bars in replay[300:400]:
        _step(first, t, bars)

    def die(point: str) -> None:
        if point == "journal":
            raise KeyboardInterrupt("killed inside the checkpoint")

    monkeypatch.setattr(killpoint, "hit", die)
    with pytest.raises(KeyboardInterrupt):
        journal.save(first, extras)
    journal.close()
    session = _restored(tmp_path / "b.sqlite", strategies, venue)
    assert session.n == 300 and {s.n for s in session.sessions.values()} == {300}
    assert float(session.acc[0]) == wallet_at_300
    _same_rows(session.rows[:300], rows_at_300, "account equity")
