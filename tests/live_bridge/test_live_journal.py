"""The journal's transaction boundaries and the restart's reconcile, in process against the emulator.

A crash is simulated by closing the journal without the checkpoint (what ``kill -9`` leaves: the
checkpoint is the only transaction that holds fills, order statuses and engine state); the restart is
``prepare`` on the same journal, as ``gridctl live --live`` does.
"""

from __future__ import annotations

import math
import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path

import pytest

from gridctl.configs.loader import load_strategy
from gridctl.engine.enums import FillKind
from gridctl.engine.params import P_MAX_DRAWDOWN_PCT, P_SLIPPAGE_BPS
from gridctl.engine.records import C_FILLS
from gridctl.engine.state import S_HALTED, SL_LOT_ON, SL_LOT_QTY
from gridctl.live_bridge import gateway as gw
from gridctl.live_bridge.metrics import metrics_registry, render
from gridctl.live_bridge.orders import parse_client_id

from effects import effect
from live_helpers import SYMBOL_ID, emulator_venue, prepare_live_on_emulator, running_emulator

ONE_RUNG = ["grid.grid_levels_long=1", "grid.grid_levels_short=1", "grid.grid_step_bps=15"]
# 3 rungs a side 5 bps apart, the ladder re-centred when the close is 10 bps off: fills on most bars
BUSY = [
    "grid.grid_levels_long=3",
    "grid.grid_levels_short=3",
    "grid.grid_step_bps=5",
    "rebalance.recenter_trigger_bps=10",
]
SL_STEPS, STEP = 6, 0.0015  # the default strategy's exit.sl_steps; grid_step_bps=15


@pytest.fixture()
def emu(monkeypatch: pytest.MonkeyPatch):
    with running_emulator(monkeypatch) as e:
        yield e


def _prepare(emu, journal: Path, overrides: list[str]):
    return prepare_live_on_emulator(load_strategy("default", overrides), emulator_venue(emu.url), journal)


def _bar(emu, ctx) -> None:
    emu.state.advance_bar(SYMBOL_ID)
    for bar in ctx.feed.poll():
        ctx.bridge.on_bar(bar)


def _dump(path: Path) -> list[str]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return list(db.iterdump())
    finally:
        db.close()


def _cid_of_trade(acct, trade) -> str:
    return next(
        o.client_id for o in acct.orders.values() if trade.order_id in (o.order_id, o.actual_order_id)
    )


def _ours(acct, run_id: str, kind: str | None = None) -> list:
    return [
        o
        for o in acct.open_orders(SYMBOL_ID)
        if (p := parse_client_id(o.client_id)) and p.run_id == run_id and kind in (None, p.kind)
    ]


def _exit_fills_while_down(emu, entry, qty: float):
    """Bars while the bridge is down until ``entry``'s side is flat; the closing trade, checked to be the
    lot's own TP or SL for ``qty``."""
    acct = emu.state.account
    for _ in range(300):  # the market moves on while the bridge is down, until the lot's exit fills
        emu.state.advance_bar(SYMBOL_ID)
        if abs(acct.position(SYMBOL_ID, entry.position_side)[0]) < 1e-12:
            break
    exit_trade = acct.trades[-1]
    assert _cid_of_trade(acct, exit_trade).split("-")[1][-1] in "TS", "the lot's own TP or SL closed it"
    assert math.isclose(exit_trade.qty, qty)
    return exit_trade


def _checkpointed_fills(journal: Path) -> int:
    """How many engine fills the journal's last checkpoint holds (the restart books after them)."""
    db = sqlite3.connect(journal)
    try:
        return db.execute("SELECT COUNT(*) FROM ledger WHERE tbl='fills'").fetchone()[0]
    finally:
        db.close()


def _started(emu, journal: Path):
    """A ONE_RUNG run journaled at ``journal``, its start checks passed: its context."""
    ready, ctx = _prepare(emu, journal, ONE_RUNG)
    ready.require()
    return ctx


@contextmanager
def _restarted(emu, journal: Path):
    """The ONE_RUNG run restarted on ``journal``; its checks pass with positions agreeing, and after
    the body entries are allowed with nothing unexplained."""
    ready, ctx = _prepare(emu, journal, ONE_RUNG)
    try:
        ready.require()
        detail = {item: d for item, ok, d in ready.rows}["reconcile with the exchange"]
        assert "positions agree" in detail, detail
        yield ctx
        assert ctx.bridge.entries_allowed and not ctx.bridge.unexplained
    finally:
        ctx.close()


def test_entry_and_its_exit_filled_around_a_crash_are_both_booked(emu, tmp_path: Path) -> None:
    """An entry fill booked (its TP/SL sent) but not checkpointed, then its exit fills while the bridge
    is down: net positions match either way, so only the trade history shows what happened. The
    restart books both, in order: the engine's lot opens and closes, its ledger holds both fills."""
    journal = tmp_path / "j.sqlite"
    acct = emu.state.account
    ctx = _started(emu, journal)
    bridge = ctx.bridge
    run_id = bridge.o.run_id
    entry = None
    for _ in range(200):  # bars until an entry rests; then one more bar that fills it (not yet booked)
        _bar(emu, ctx)
        if _ours(acct, run_id, "entry") and entry is None:
            n_trades = len(acct.trades)
            emu.state.advance_bar(SYMBOL_ID)  # the bar closes beyond the entry...
            if len(acct.trades) > n_trades:
                entry, n_new = acct.trades[n_trades], len(acct.trades) - n_trades
                break
            for bar in ctx.feed.poll():
                bridge.on_bar(bar)
    assert entry is not None, "the sample must fill an entry"
    fills_before = int(bridge.s.cnt[0])
    assert bridge.sync_fills() == n_new  # ...its fill is booked between bars and its exits go out
    bridge.sync_orders(refresh=False)
    side = 0 if entry.position_side == "LONG" else 1
    exits = {
        parse_client_id(o.client_id).kind
        for o in _ours(acct, run_id)
        if parse_client_id(o.client_id).side == side
    }
    assert {"tp", "sl"} <= exits
    ctx.close()  # kill -9 before the checkpoint: the booking and the exits' statuses are not journaled
    exit_trade = _exit_fills_while_down(emu, entry, entry.qty)

    with _restarted(emu, journal) as ctx:
        s = ctx.bridge.s
        assert s.slots[side, 0, SL_LOT_ON] == 0.0  # the lot opened and closed again
        assert int(s.cnt[0]) >= fills_before + 2  # both fills in the engine's ledger
        booked = {r[0] for r in ctx.journal.db.execute("SELECT trade_id FROM xfills")}
        assert {str(entry.trade_id), str(exit_trade.trade_id)} <= booked
        assert len(booked) == len(acct.trades)


def test_refused_restart_leaves_the_journal_untouched(emu, tmp_path: Path) -> None:
    """A restart that fails half-way through reconcile (the trade history breaks after the fills
    were read and booked in memory) writes nothing; the next restart books every trade once."""
    journal = tmp_path / "j.sqlite"
    acct = emu.state.account
    ready, ctx = _prepare(emu, journal, BUSY)
    ready.require()
    for _ in range(15):
        _bar(emu, ctx)
    for _ in range(200):  # until a bar trades; the bridge books its fills, dies before the checkpoint
        down = len(acct.trades)
        emu.state.advance_bar(SYMBOL_ID)
        if len(acct.trades) > down:
            break
        for bar in ctx.feed.poll():
            ctx.bridge.on_bar(bar)
    ctx.feed.server_time_ms()  # the bridge's clock follows the exchange's
    assert ctx.bridge.sync_fills() > 0, "the sample must trade"
    ctx.close()
    before = _dump(journal)
    emu.state.inject("status", "/fapi/v1/userTrades", skip=1, times=1000, status=500)
    ready, ctx = _prepare(emu, journal, BUSY)
    ctx.close()
    failed = dict((item, d) for item, ok, d in ready.rows if not ok)
    assert "reconcile with the exchange" in failed, ready.rows
    assert _dump(journal) == before
    emu.state.faults.clear()
    ready, ctx = _prepare(emu, journal, BUSY)
    try:
        ready.require()
        ids = [r[0] for r in ctx.journal.db.execute("SELECT trade_id FROM xfills")]
        assert sorted(ids) == sorted(str(t.trade_id) for t in acct.trades)
        lq, sq = ctx.bridge.s.position()
        assert math.isclose(lq, acct.position(SYMBOL_ID, "LONG")[0], abs_tol=1e-9)
        assert math.isclose(sq, -acct.position(SYMBOL_ID, "SHORT")[0], abs_tol=1e-9)
    finally:
        ctx.close()


def _foreign_long(emu, ctx, qty: float) -> None:
    """A manual trade on the account while the bridge is down: a market buy the run did not send."""
    ctx.gateway.place("BTC/USDT:USDT", gw.OrderRequest("manual-1", "LONG", "buy", "market", qty))


@effect("execution.unexplained_position")
@pytest.mark.parametrize("policy", ["protect", "flatten"])
def test_a_foreign_position_is_guarded_and_refuses_entries(emu, tmp_path: Path, policy: str) -> None:
    journal = tmp_path / "j.sqlite"
    acct = emu.state.account
    overrides = [*ONE_RUNG, f"execution.unexplained_position={policy}"]
    ready, ctx = _prepare(emu, journal, overrides)
    ready.require()
    for _ in range(5):
        _bar(emu, ctx)
    engine_long = ctx.bridge.s.position()[0]
    _foreign_long(emu, ctx, 0.004)
    ctx.close()
    ready, ctx = _prepare(emu, journal, overrides)
    try:
        ready.require()  # a foreign position does not stop the start...
        bridge = ctx.bridge
        detail = {item: d for item, ok, d in ready.rows}["reconcile with the exchange"]
        assert "UNEXPLAINED" in detail and "foreign trade" in detail, detail
        assert not bridge.entries_allowed  # ...but refuses new entries
        snap = bridge.snapshot()
        assert any(r.startswith("reconcile: ") for r in snap["pause_reasons"]), snap["pause_reasons"]
        assert snap["unexplained"]["long_qty"] == pytest.approx(0.004)
        text = render(metrics_registry(bridge.snapshot)).decode()
        assert 'gridctl_unexplained_exposure{reason=""} 1.0' in text
        assert 'gridctl_pause_reason{reason="reconcile"} 1.0' in text
        bridge.resume_after_restart()
        assert _ours(acct, bridge.o.run_id, "entry") == []
        guards = _ours(acct, bridge.o.run_id, "guard")
        held = acct.position(SYMBOL_ID, "LONG")[0]
        if policy == "protect":  # a reduce-side stop for exactly the foreign 0.004, sl_steps below
            assert [(g.type, g.side, g.position_side, g.qty) for g in guards] == [
                ("STOP_MARKET", "SELL", "LONG", 0.004)
            ]
            close = bridge.s.last_close
            assert guards[0].stop_price == pytest.approx(round(close * (1 - SL_STEPS * STEP), 1), abs=0.051)
            assert held == pytest.approx(engine_long + 0.004)
        else:  # closed at market: the exchange holds what the engine holds
            assert guards == []
            assert held == pytest.approx(engine_long)
        logged = [r[0] for r in ctx.journal.db.execute("SELECT detail FROM log WHERE kind='unexplained'")]
        assert any("manual-1" in d for d in logged), logged
    finally:
        ctx.close()


_CRASH_SCRIPT = """
import sys
from types import SimpleNamespace
from gridctl.configs.loader import load_strategy, load_venue
from gridctl.live_bridge.journal import Journal
from gridctl.live_bridge.session import EngineSession

session = EngineSession(load_strategy("default"), load_venue("binance_futures"), "BTC/USDT:USDT", "1m")
journal = Journal(sys.argv[1])
journal.save_bar(session, {"n": 1})  # checkpoint 1
fill = SimpleNamespace(trade_id="t1", client_id="c1", price=1.0, qty=2.0, fee=0.0, liquidity="maker", ts_ms=5)
journal.add_fill(fill)
journal.note(5, "fill", "c1")
session.ks.state[0] = 123.0
journal.save_bar(session, {"n": 2})  # checkpoint 2: GRIDCTL_KILL_AT=journal:2 dies before its commit
"""


def test_a_kill_inside_the_checkpoint_commits_none_of_it(tmp_path: Path) -> None:
    """SIGKILL between the checkpoint's last statement and its COMMIT: the journal holds checkpoint 1
    whole and nothing of checkpoint 2 (neither its fill, its log row nor its state)."""
    import signal
    import subprocess
    import sys

    import numpy as np

    path = tmp_path / "j.sqlite"
    env = {**os.environ, "GRIDCTL_KILL_AT": "journal:2"}
    proc = subprocess.run([sys.executable, "-c", _CRASH_SCRIPT, str(path)], env=env, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    db = sqlite3.connect(str(path))
    try:
        assert db.execute("SELECT COUNT(*) FROM xfills").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM log").fetchone()[0] == 0
        state, extra = db.execute("SELECT state, extra FROM kstate WHERE id=1").fetchone()
        assert extra == '{"n": 1}'
        assert np.frombuffer(state, dtype=np.float64)[0] != 123.0
    finally:
        db.close()
    env["GRIDCTL_KILL_AT"] = ""  # the same run without the crash: checkpoint 2 lands whole
    path.unlink()
    assert (
        subprocess.run([sys.executable, "-c", _CRASH_SCRIPT, str(path)], env=env, timeout=120).returncode == 0
    )
    db = sqlite3.connect(str(path))
    try:
        assert db.execute("SELECT trade_id, qty FROM xfills").fetchall() == [("t1", 2.0)]
        assert db.execute("SELECT extra FROM kstate").fetchone()[0] == '{"n": 2}'
    finally:
        db.close()


def _part_filled_entry(emu, ctx):
    """Bars until an entry rests, then one that fills half of it (0.001 of 0.002); the bridge books it
    between bars: its rest cancelled, a lot of 0.001 booked. Returns the entry's trade and client id."""
    acct, bridge = emu.state.account, ctx.bridge
    run_id = bridge.o.run_id
    entry = None
    for _ in range(200):
        _bar(emu, ctx)
        if _ours(acct, run_id, "entry") and entry is None:
            n_trades = len(acct.trades)
            acct.partial_fills(0.5, times=1)
            emu.state.advance_bar(SYMBOL_ID)
            if len(acct.trades) > n_trades:
                entry = acct.trades[n_trades]
                break
            acct.partial_fills(1.0, times=0)
            for bar in ctx.feed.poll():
                bridge.on_bar(bar)
    assert entry is not None, "the sample must fill an entry"
    assert math.isclose(entry.qty, 0.001)
    entry_cid = _cid_of_trade(acct, entry)
    assert entry_cid in {o.client_id for o in _ours(acct, run_id, "entry")}  # its rest still rests
    assert bridge.sync_fills() >= 1  # the rest cancelled, the lot of 0.001 booked
    assert entry_cid not in {o.client_id for o in acct.open_orders(SYMBOL_ID)}
    return entry, entry_cid


def test_a_partly_filled_entry_and_its_exit_filled_around_a_crash_are_both_booked_in_order(
    emu, tmp_path: Path
) -> None:
    """The entry fills only in part (0.001 of 0.002): the run cancels its rest, books a lot of 0.001
    and sends its exits, then dies before the checkpoint; the lot's exit fills while it is down. The
    journal still has the entry open. Found by the basket chaos campaign
    (tests/live_bridge/test_live_basket_chaos.py): the restart's walk of the trades deferred the entry's
    part fill until its rest was cancelled and met the exit first, which was unbookable ("the engine
    holds no lot there"); the restart flagged UNEXPLAINED and the engine kept a position the exchange
    did not hold. The restart marks the entry gone before the walk, so it is booked at its fill, before
    its exit: positions agree, both fills booked."""
    journal = tmp_path / "j.sqlite"
    acct = emu.state.account
    ctx = _started(emu, journal)
    bridge = ctx.bridge
    run_id = bridge.o.run_id
    entry, _ = _part_filled_entry(emu, ctx)
    bridge.sync_orders(refresh=False)  # the lot's exits sent
    side = 0 if entry.position_side == "LONG" else 1
    exits = {p.kind: o.qty for o in _ours(acct, run_id) if (p := parse_client_id(o.client_id)).side == side}
    assert exits.get("tp") == 0.001 and exits.get("sl") == 0.001, exits
    ctx.close()  # kill -9 before the checkpoint: the cancel, the booking and the exits are not journaled
    exit_trade = _exit_fills_while_down(emu, entry, 0.001)

    with _restarted(emu, journal) as ctx:
        s = ctx.bridge.s
        assert s.slots[side, 0, SL_LOT_ON] == 0.0  # the lot opened and closed again
        assert s.position() == (0.0, 0.0)
        booked = {r[0] for r in ctx.journal.db.execute("SELECT trade_id FROM xfills")}
        assert {str(entry.trade_id), str(exit_trade.trade_id)} <= booked


def test_a_partly_filled_entry_then_a_flatten_around_a_crash_are_booked_in_order(emu, tmp_path: Path) -> None:
    """The entry fills only in part (0.001 of 0.002): the run cancels its rest and books a lot of
    0.001, then the operator's flatten closes the side at market and the run dies before the
    checkpoint. The journal still has the entry open, and a flatten closes the whole side, not a lot,
    so nothing at the exit's level tells the restart to book the entry first. Booked after the
    flatten (as the restart did when it settled gone orders after the walk), the entry left the engine
    a lot of 0.001 the exchange did not hold: UNEXPLAINED. The restart marks every journaled order gone
    from the exchange before the walk: the entry (0.001 at its fill price) is booked, then the flatten
    (0.001 at the market order's price) closes it; positions agree."""
    journal = tmp_path / "j.sqlite"
    acct = emu.state.account
    ctx = _started(emu, journal)
    bridge = ctx.bridge
    entry, _ = _part_filled_entry(emu, ctx)
    side = 0 if entry.position_side == "LONG" else 1
    n_trades = len(acct.trades)
    assert bridge.flatten() is None  # the side closed at market, booked
    flat = acct.trades[n_trades:]
    assert [(t.position_side, t.qty) for t in flat] == [(entry.position_side, 0.001)]
    assert abs(acct.position(SYMBOL_ID, entry.position_side)[0]) < 1e-12
    ctx.close()  # kill -9 before the checkpoint: the cancel, both bookings and the statuses are lost
    n_fills = _checkpointed_fills(journal)

    with _restarted(emu, journal) as ctx:
        s = ctx.bridge.s
        assert s.position() == (0.0, 0.0)
        rows = s.fills[n_fills : int(s.cnt[C_FILLS])]
        got = [(int(r["kind"]), float(r["qty"]), float(r["price"])) for r in rows if r["side"] == side]
        assert got == [(FillKind.ENTRY, 0.001, entry.price), (FillKind.FLATTEN, 0.001, flat[0].price)]


def _half_filled_entry(emu, journal):
    """A ONE_RUNG run journaled at ``journal``: bars until one of its entries rests, then one more bar
    that fills half of it (0.001 of 0.002). Returns the run's context and the exchange's trade of that
    half."""
    acct = emu.state.account
    ctx = _started(emu, journal)
    run_id = ctx.bridge.o.run_id
    for _ in range(200):
        _bar(emu, ctx)
        if _ours(acct, run_id, "entry"):
            n_trades = len(acct.trades)
            acct.partial_fills(0.5, times=1)
            emu.state.advance_bar(SYMBOL_ID)
            if len(acct.trades) > n_trades:
                return ctx, acct.trades[n_trades]
            acct.partial_fills(1.0, times=0)
            for bar in ctx.feed.poll():
                ctx.bridge.on_bar(bar)
    raise AssertionError("the sample must fill an entry")


def _unreachable_cancel(symbol: str, client_id: str) -> None:
    raise gw.ExchangeUnavailable(f"cancel {client_id}: 503")


def test_a_partly_filled_entry_whose_cancel_failed_before_a_crash_is_settled_at_the_restart(
    emu, tmp_path: Path
) -> None:
    """The entry fills only in part (0.001 of 0.002) and the cancel of its rest fails (the exchange
    unreachable for it); the fills poll checkpoints the journaled part fill, unbooked, and the run dies.
    The restart finds the entry still resting with a journaled fill nobody will book: the walk skips
    the known trade. Marked before the walk as a partly filled entry waiting for its rest's cancel, it
    is settled like one: rest cancelled, a lot of 0.001 booked, positions agree."""
    journal = tmp_path / "j.sqlite"
    acct = emu.state.account
    ctx, entry = _half_filled_entry(emu, journal)
    bridge, run_id, entry_cid = ctx.bridge, ctx.bridge.o.run_id, _cid_of_trade(acct, entry)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(bridge.gw, "cancel", _unreachable_cancel)
        bridge.protect_fills()  # the part fill journaled and checkpointed, its rest still resting
    assert entry_cid in {o.client_id for o in _ours(acct, run_id, "entry")}
    side = 0 if entry.position_side == "LONG" else 1
    assert bridge.s.slots[side, 0, SL_LOT_ON] == 0.0  # no lot booked
    db = sqlite3.connect(journal)
    try:
        assert db.execute("SELECT qty, booked FROM xfills WHERE client_id=?", (entry_cid,)).fetchall() == [
            (0.001, 0)
        ]
    finally:
        db.close()
    ctx.close()  # kill -9

    with _restarted(emu, journal) as ctx:
        assert entry_cid not in {o.client_id for o in acct.open_orders(SYMBOL_ID)}  # its rest cancelled
        s = ctx.bridge.s
        assert s.slots[side, 0, SL_LOT_ON] == 1.0 and s.slots[side, 0, SL_LOT_QTY] == 0.001


def test_a_flatten_while_a_partly_filled_entry_waits_for_its_cancel_closes_its_lot_too(
    emu, tmp_path: Path
) -> None:
    """The entry fills only in part (0.001 of 0.002) and the cancel of its rest fails, so its lot waits
    unbooked; then the operator's flatten closes the side at market, the entry's 0.001 included. The
    flatten is booked after the entry's part (it happened after it): the engine's lot of 0.001 opens and
    the flatten closes it, so the engine ends flat as the exchange does (it used to book the lot after
    the flatten: a lot of 0.001 the exchange did not hold)."""
    journal = tmp_path / "j.sqlite"
    acct = emu.state.account
    ctx, entry = _half_filled_entry(emu, journal)
    bridge, entry_cid = ctx.bridge, _cid_of_trade(acct, entry)
    try:
        with pytest.MonkeyPatch.context() as m:
            m.setattr(bridge.gw, "cancel", _unreachable_cancel)
            bridge.protect_fills()  # the part fill read, its rest's cancel refused: no lot yet
            side = 0 if entry.position_side == "LONG" else 1
            assert bridge.s.position()[side] == 0.0
            bridge.flatten()  # the entries' cancels refused again; the side closed at market
        assert abs(acct.position(SYMBOL_ID, entry.position_side)[0]) < 1e-12
        bridge.sync_fills()  # the next poll: the rest cancelled now
        assert entry_cid not in {o.client_id for o in acct.open_orders(SYMBOL_ID)}
        assert bridge.s.position() == (0.0, 0.0)
        rows = bridge.s.fills[: int(bridge.s.cnt[C_FILLS])]
        kinds = [int(r["kind"]) for r in rows if r["side"] == side][-2:]
        assert kinds == [FillKind.ENTRY, FillKind.FLATTEN]
    finally:
        ctx.close()


def test_a_partly_filled_entry_booked_after_its_late_cancel_and_its_exit_filled_around_a_crash(
    emu, tmp_path: Path
) -> None:
    """The entry fills only in part (0.001 of 0.002) and the cancel of its rest fails; the fills poll
    checkpoints the part fill, unbooked. At the next poll the cancel goes through: the lot of 0.001 is
    booked and its exits sent, then the run dies before the next checkpoint and the lot's exit fills
    while it is down. The restart finds the entry gone with its journaled fill unbooked; the walk skips
    that known trade and meets the exit first. It used to try the exit first ("the engine holds no
    lot there": unbookable) and book the entry after it: a lot the exchange did not hold, UNEXPLAINED.
    The entry is booked at its fill, before the exit that closes it: positions agree, both booked once."""
    journal = tmp_path / "j.sqlite"
    acct = emu.state.account
    ctx, entry = _half_filled_entry(emu, journal)
    bridge, run_id, entry_cid = ctx.bridge, ctx.bridge.o.run_id, _cid_of_trade(acct, entry)
    side = 0 if entry.position_side == "LONG" else 1
    with pytest.MonkeyPatch.context() as m:
        m.setattr(bridge.gw, "cancel", _unreachable_cancel)
        bridge.protect_fills()  # the part fill journaled and checkpointed, its rest still resting
    assert bridge.s.slots[side, 0, SL_LOT_ON] == 0.0
    assert bridge.sync_fills() == 1  # the rest cancelled now, the lot of 0.001 booked
    assert entry_cid not in {o.client_id for o in acct.open_orders(SYMBOL_ID)}
    bridge.sync_orders(refresh=False)  # the lot's exits sent
    exits = {p.kind: o.qty for o in _ours(acct, run_id) if (p := parse_client_id(o.client_id)).side == side}
    assert exits.get("tp") == 0.001 and exits.get("sl") == 0.001, exits
    ctx.close()  # kill -9 before the checkpoint: the cancel, the booking and the exits are not journaled
    exit_trade = _exit_fills_while_down(emu, entry, 0.001)
    n_fills = _checkpointed_fills(journal)

    with _restarted(emu, journal) as ctx:
        s = ctx.bridge.s
        assert s.slots[side, 0, SL_LOT_ON] == 0.0  # the lot opened and closed again
        assert s.position() == (0.0, 0.0)
        rows = s.fills[n_fills : int(s.cnt[C_FILLS])]
        got = [(float(r["qty"]), float(r["price"])) for r in rows if r["side"] == side]
        assert got == [(0.001, entry.price), (0.001, exit_trade.price)]  # each once, in order
        assert int(rows[0]["kind"]) == FillKind.ENTRY
        booked = dict(ctx.journal.db.execute("SELECT trade_id, booked FROM xfills").fetchall())
        assert booked[str(entry.trade_id)] == 1 and booked[str(exit_trade.trade_id)] == 1


def test_a_drawdown_halt_while_a_partly_filled_entry_waits_for_its_cancel_closes_its_lot_too(
    emu, tmp_path: Path
) -> None:
    """The entry fills only in part (0.001 of 0.002) and the cancel of its rest fails, so its lot waits
    unbooked; then the next bar's close halts the engine (its drawdown limit lowered to 0 for the test)
    and the bridge closes the exchange's whole side at market, the entry's 0.001 included. The halt
    books the waiting part and closes it as it closed the engine's lots (at the close, less the
    slippage, taker), so when the rest's cancel goes through later nothing is left to book. It used to
    book the part as a new lot in the halted engine at that later poll: engine long, exchange flat."""
    journal = tmp_path / "j.sqlite"
    acct = emu.state.account
    ctx, entry = _half_filled_entry(emu, journal)
    bridge, entry_cid = ctx.bridge, _cid_of_trade(acct, entry)
    side = 0 if entry.position_side == "LONG" else 1
    try:
        with pytest.MonkeyPatch.context() as m:
            m.setattr(bridge.gw, "cancel", _unreachable_cancel)
            bridge.protect_fills()  # the part fill read, its rest's cancel refused: no lot yet
            assert bridge.s.position()[side] == 0.0
            for bar in ctx.feed.poll():  # the bar of the part fill, closed as usual
                bridge.on_bar(bar)
            assert bridge.s.position()[side] == 0.0 and bridge.s.state[S_HALTED] == 0.0
            bridge.s.vec[P_MAX_DRAWDOWN_PCT] = 0.0  # any drawdown, none included, halts at the close
            rest = next(o for o in acct.orders.values() if o.client_id == entry_cid)
            rest.price *= 0.5 if rest.side == "BUY" else 1.5  # the next bar does not reach the rest
            n_fills = int(bridge.s.cnt[C_FILLS])
            _bar(emu, ctx)  # the cancels refused again; the halt closes the exchange's side at market
        assert bridge.s.state[S_HALTED] == 1.0
        assert abs(acct.position(SYMBOL_ID, entry.position_side)[0]) < 1e-12
        bridge.sync_fills()  # the next poll: the rest cancelled now
        assert entry_cid not in {o.client_id for o in acct.open_orders(SYMBOL_ID)}
        assert bridge.s.position() == (0.0, 0.0)
        c, slip = bridge.s.last_close, bridge.s.vec[P_SLIPPAGE_BPS] * 1e-4
        rows = bridge.s.fills[n_fills : int(bridge.s.cnt[C_FILLS])]
        got = [(int(r["kind"]), float(r["qty"]), float(r["price"])) for r in rows if r["side"] == side]
        close = c * (1.0 - slip) if side == 0 else c * (1.0 + slip)
        assert got == [(FillKind.ENTRY, 0.001, entry.price), (FillKind.FLATTEN, 0.001, pytest.approx(close))]
        assert not any("not bookable" in u for u in bridge.unexplained), bridge.unexplained
    finally:
        ctx.close()


def test_a_waiting_entry_the_engine_refuses_before_a_flatten_is_journaled_unbookable(
    emu, tmp_path: Path
) -> None:
    """As above, the entry's rest's cancel refused and the operator's flatten closing its side, but the
    engine refuses the waiting part's booking (made to raise for the test). The part is marked booked
    (never tried again), flagged unexplained, and its order journaled ``unbookable``, as an unbookable
    fill is elsewhere; the later cancel of its rest does not turn it back into ``canceled``."""
    from gridctl.configs.errors import GridctlError

    journal = tmp_path / "j.sqlite"
    acct = emu.state.account
    ctx, entry = _half_filled_entry(emu, journal)
    bridge, entry_cid = ctx.bridge, _cid_of_trade(acct, entry)

    def refused(*args) -> None:
        raise GridctlError("refused for the test")

    try:
        with pytest.MonkeyPatch.context() as m:
            m.setattr(bridge.gw, "cancel", _unreachable_cancel)
            bridge.protect_fills()  # the part fill read, its rest's cancel refused: no lot yet
            m.setattr(bridge.s, "book_fill", refused)
            bridge.flatten()  # the side closed at market; the waiting part's booking refused
        assert ctx.journal.order(entry_cid)["status"] == "unbookable"
        assert any(entry_cid in u and "refused for the test" in u for u in bridge.unexplained)
        assert ctx.journal.unbooked_fills(entry_cid) == []
        bridge.sync_fills()  # the next poll
        bridge.sync_orders()  # the rest, wanted by no one, cancelled
        assert entry_cid not in {o.client_id for o in acct.open_orders(SYMBOL_ID)}
        assert ctx.journal.order(entry_cid)["status"] == "unbookable"
    finally:
        ctx.close()
