"""kill -9 the live bridge (a real `gridctl live --live` subprocess), keep the market moving, restart it:
the journal plus the exchange's books reconcile to no lost and no duplicated order, every exchange
trade booked exactly once, and the engine's positions equal the exchange's."""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from gridctl.engine.state import N_SLOT, N_STATE, S_LONG_QTY, S_SHORT_QTY
from gridctl.live_bridge.orders import desired_orders, parse_client_id

from live_helpers import EMU_ENV, SYMBOL_ID, emulator_with_sample

REPO = Path(__file__).resolve().parents[2]
STEP = 0.0015  # grid.grid_step_bps=15 below
TP_STEPS, SL_STEPS = 3, 6  # the default strategy's exit.tp_steps / exit.sl_steps
TICK = 0.1  # the emulator's BTCUSDT tick


def _tick(x: float, up: bool) -> float:
    """ceil_tick / floor_tick (DESIGN.md), with the kernels' tolerance for float noise."""
    units = x / TICK
    n = math.ceil(units - 1e-9) if up else math.floor(units + 1e-9)
    return round(n * TICK, 1)


def _expected_exits(acct, run_id: str) -> dict[tuple[int, int, str], tuple[float, float]]:
    """(side, level, tp|sl) -> (price, qty) from the emulator's own record of each lot's entry fill.

    A rung's lot is its latest filled entry order; long TP ceil_tick(e*(1+3s)), SL floor_tick(e*(1-6s)),
    short TP floor_tick(e*(1-3s)), SL ceil_tick(e*(1+6s)), qty = the entry's filled qty.
    """
    latest: dict[tuple[int, int], object] = {}
    for o in acct.orders.values():
        p = parse_client_id(o.client_id)
        if p is None or p.run_id != run_id or p.kind != "entry" or o.filled <= 0:
            continue
        key = (p.side, p.level)
        if key not in latest or (o.update_time, o.order_id) > (latest[key].update_time, latest[key].order_id):
            latest[key] = o
    out = {}
    for (side, level), o in latest.items():
        e = o.cum_quote / o.filled
        if side == 0:
            tp, sl = _tick(e * (1 + TP_STEPS * STEP), True), _tick(e * (1 - SL_STEPS * STEP), False)
        else:
            tp, sl = _tick(e * (1 - TP_STEPS * STEP), False), _tick(e * (1 + SL_STEPS * STEP), True)
        out[(side, level, "tp")] = (tp, round(o.filled, 3))
        out[(side, level, "sl")] = (sl, round(o.filled, 3))
    return out


class Bridge:
    """One `gridctl live --live` subprocess and its stderr lines."""

    def __init__(self, url: str, journal: Path, max_bars: int) -> None:
        cmd = [
            sys.executable,
            "-m",
            "gridctl.cli",
            "live",
            "--live",
            "--venue-set",
            f"api.base_url={url}",
            "--venue-set",
            "rate_limits.weight_per_minute=100000",
            "--venue-set",
            "rate_limits.orders_per_minute=10000",
            "--set",
            "grid.grid_levels_long=1",
            "--set",
            "grid.grid_levels_short=1",
            "--set",
            "grid.grid_step_bps=15",
            "--journal",
            str(journal),
            "--ops-port",
            "0",
            "--max-clock-skew-ms",
            str(10**13),
            "--max-bars",
            str(max_bars),
            "--poll-s",
            "0.02",  # the emulator's bars close when the test says so, not on the clock
        ]
        env = {**os.environ, **EMU_ENV}
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def wait_started(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while not any("ops API on" in x for x in self.lines):
            assert self.proc.poll() is None, "".join(self.lines)
            assert time.monotonic() < deadline, "".join(self.lines)
            time.sleep(0.05)


def _journal_bar(journal: Path) -> int | None:
    try:
        db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=5)
        try:
            row = db.execute("SELECT bar_ts FROM kstate WHERE id=1").fetchone()
        finally:
            db.close()
    except sqlite3.OperationalError:
        return None
    return row[0] if row else None


def _advance(emu, journal: Path, proc: subprocess.Popen, timeout: float = 60) -> int:
    ts, *_ = emu.state.advance_bar(SYMBOL_ID)
    deadline = time.monotonic() + timeout
    while _journal_bar(journal) != ts:
        assert proc.poll() is None or _journal_bar(journal) == ts, "bridge exited early"
        assert time.monotonic() < deadline, f"bar {ts} not journaled"
        time.sleep(0.01)
    return ts


def test_kill_9_and_restart_reconciles(tmp_path: Path) -> None:
    emu = emulator_with_sample()
    journal = tmp_path / "live.sqlite"
    try:
        a = Bridge(emu.url, journal, max_bars=10_000)
        a.wait_started()
        for _ in range(25):
            _advance(emu, journal, a.proc)
        acct = emu.state.account
        assert acct.trades, "the run must trade before the kill"
        os.kill(a.proc.pid, signal.SIGKILL)
        a.proc.wait(timeout=30)
        # the market moves on while the bridge is down: resting orders may fill
        for _ in range(5):
            emu.state.advance_bar(SYMBOL_ID)
        trades_while_down = len(acct.trades)
        b = Bridge(emu.url, journal, max_bars=25)  # 5 bars to catch up, then 20
        b.wait_started()
        assert any("reconcile with the exchange" in x for x in b.lines), "".join(b.lines)
        assert any("(new run)" in x for x in a.lines), "".join(a.lines)
        assert any("(restarted from the journal, reconciled with the exchange)" in x for x in b.lines)
        for _ in range(20):
            _advance(emu, journal, b.proc)
        assert b.proc.wait(timeout=120) == 0, "".join(b.lines)

        db = sqlite3.connect(str(journal))
        run_id = db.execute("SELECT value FROM meta WHERE key='run_id'").fetchone()[0]
        state_blob, slots_blob = db.execute("SELECT state, slots FROM kstate").fetchone()
        st = np.frombuffer(state_blob, dtype=np.float64)
        assert st.size == N_STATE
        slots = np.frombuffer(slots_blob, dtype=np.float64).reshape(2, -1, N_SLOT)
        # no duplicated order: at most one resting order per (side, level, kind) of our run
        ours = [
            o
            for o in acct.open_orders(SYMBOL_ID)
            if (p := parse_client_id(o.client_id)) and p.run_id == run_id
        ]
        keys = [
            (
                parse_client_id(o.client_id).side,
                parse_client_id(o.client_id).level,
                parse_client_id(o.client_id).kind,
            )
            for o in ours
        ]
        assert len(keys) == len(set(keys)), keys
        # no lost order: every exit the engine wants rests on the exchange
        wanted = {w.key for w in desired_orders(slots, True)}
        assert {k for k in wanted if k[2] != "entry"} <= set(keys), (wanted, keys)
        assert set(keys) <= wanted, (wanted, keys)
        # each exit resting after the restart has the price and qty its lot's entry fill implies
        exits = {k: o for k, o in zip(keys, ours, strict=True) if k[2] != "entry"}
        assert exits, "the scenario must end with at least one lot (and its TP/SL) to check"
        expected = _expected_exits(acct, run_id)
        for key, o in exits.items():
            px = o.price if key[2] == "tp" else o.stop_price
            assert (px, o.qty) == expected[key], (key, px, o.qty, expected[key])
        # every exchange trade booked exactly once (trade ids are the journal's primary key)
        xfills = db.execute("SELECT COUNT(*), COUNT(DISTINCT trade_id) FROM xfills").fetchone()
        assert xfills[0] == xfills[1] == len(acct.trades) >= trades_while_down
        lq, sq = st[S_LONG_QTY], st[S_SHORT_QTY]
        assert abs(lq - acct.position(SYMBOL_ID, "LONG")[0]) < 1e-9
        assert abs(sq + acct.position(SYMBOL_ID, "SHORT")[0]) < 1e-9
    finally:
        emu.stop()
