"""`gridctl live --live --symbols BTC/USDT:USDT,ETH/USDT:USDT` as a real subprocess against the emulator
(one account serving both symbols): the basket's start-up, both symbols trading through one process,
``/status`` and ``/metrics`` per symbol and in total, an operator pause fanned out to both symbols'
bridges from the one command queue, and restarts on the same journal after a ``kill -9`` (from outside,
and at crash points inside a bar: between two symbols' bookings, inside the basket's checkpoint
transaction, inside an order send, a fills poll, a booking): every symbol reconciled with the exchange,
and after one more bar no lost, duplicated or orphaned order per symbol, every position equal to the
engine's and fully covered by its stops, every trade booked exactly once.

The bars: per symbol ``W`` flat history bars at its first price (the regime warm-up), then the seeded
sample scaled to the symbol (ETH: a twentieth of BTC's price, on ETH's 0.01 tick), advanced by the test
one closed bar at a time on both symbols.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from gridctl.live_bridge.orders import parse_client_id

from live_helpers import BTC, EMU_ENV, ETH, IDS, basket_emulator, books_check

REPO = Path(__file__).resolve().parents[2]
STEP = 0.001  # both symbols' lot step on the emulator
SETS = ["grid.grid_step_bps=10", "exit.tp_steps=2", "grid.grid_levels_long=3", "grid.grid_levels_short=3",
        "grid.base_notional=150", "regime.hysteresis_bps=5"]  # fmt: skip
TOKEN = EMU_ENV["GRIDCTL_OPS_TOKEN"]


def _emulator() -> Any:
    return basket_emulator(SETS)


class Run:
    """One `gridctl live --live` basket subprocess and its stderr lines."""

    def __init__(
        self, url: str, journal: Path, max_bars: int, mode: str = "--live", kill_at: str | None = None
    ) -> None:
        cmd = [sys.executable, "-m", "gridctl.cli", "live", mode, "--symbols", f"{BTC},{ETH}",
               "--venue-set", f"api.base_url={url}", "--venue-set", "rate_limits.orders_per_second=10",
               "--venue-set", "rate_limits.weight_per_minute=100000",
               "--venue-set", "rate_limits.orders_per_minute=10000",
               *[x for s in SETS for x in ("--set", s)], "--journal", str(journal), "--ops-port", "0",
               "--max-clock-skew-ms", str(10**13), "--max-bars", str(max_bars),
               "--poll-s", "0.02"]  # fmt: skip
        env = {**os.environ, **EMU_ENV, **({"GRIDCTL_KILL_AT": kill_at} if kill_at else {})}
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
            text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_started(self, timeout: float = 300) -> str:
        deadline = time.monotonic() + timeout
        while not any("ops API on" in x for x in self.lines):
            assert self.proc.poll() is None, self.text
            assert time.monotonic() < deadline, self.text
            time.sleep(0.05)
        line = next(x for x in self.lines if "ops API on" in x)
        return line.rsplit("ops API on ", 1)[1].strip()


#: Each symbol's tables in the basket's journal (live_bridge.runner.member_prefix).
PREFIX = {BTC: "s_BTC_USDT_USDT_", ETH: "s_ETH_USDT_USDT_"}


def _rows(path: Path, sql: str) -> list[Any] | None:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()
    except sqlite3.OperationalError:
        return None


def _journal_bar(path: Path, sym: str) -> int | None:
    rows = _rows(path, f"SELECT bar_ts FROM {PREFIX[sym]}kstate WHERE id=1")
    return rows[0][0] if rows else None


def _advance(emu: Any, journal: Path, run: Run, timeout: float = 60, may_die: bool = False) -> int | None:
    """Close the next bar on both symbols and wait until the basket's checkpoint holds it on both;
    None when the run died first (``may_die``: a crash point armed)."""
    ts = [emu.state.advance_bar(IDS[sym])[0] for sym in (BTC, ETH)]
    assert ts[0] == ts[1]
    deadline = time.monotonic() + timeout
    while any(_journal_bar(journal, sym) != ts[0] for sym in (BTC, ETH)):
        if run.proc.poll() is not None:
            assert may_die, run.text
            return None
        assert time.monotonic() < deadline, f"bar {ts[0]} not journaled\n{run.text}"
        time.sleep(0.01)
    return ts[0]


def _status_at(url: str, bars: int, timeout: float = 10) -> Any:
    """``/status`` once both symbols show ``bars`` bars (it is published just after the checkpoint that
    ``_advance`` waits for), or the last one seen when that does not happen within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        status = _get(url, "/status")
        if all(status["symbols"][sym]["bars"] >= bars for sym in (BTC, ETH)) or time.monotonic() > deadline:
            return status
        time.sleep(0.02)


def _get(url: str, path: str) -> Any:
    req = urllib.request.Request(f"{url}{path}", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        body = resp.read()
    return body.decode() if path == "/metrics" else json.loads(body)


def _post(url: str, path: str) -> int:
    req = urllib.request.Request(
        f"{url}{path}", data=b"", method="POST", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status


def _ours(acct: Any, sym: str, kind: str | None = None) -> list[Any]:
    out = []
    for o in acct.open_orders(IDS[sym]):
        p = parse_client_id(o.client_id)
        if p is not None and (kind is None or p.kind == kind):
            out.append(o)
    return out


def _uncovered(emu: Any, sym: str, run_id: str) -> dict[str, float]:
    """Position side -> quantity held on the emulator without resting stops of run ``run_id`` closing it."""
    acct = emu.state.account
    covered = {"LONG": 0.0, "SHORT": 0.0}
    for o in acct.open_orders(IDS[sym]):
        p = parse_client_id(o.client_id)
        closing = (o.position_side, o.side) in (("LONG", "SELL"), ("SHORT", "BUY"))
        if p is not None and p.run_id == run_id and o.type == "STOP_MARKET" and closing:
            covered[o.position_side] += o.qty - o.filled
    out = {}
    for side in ("LONG", "SHORT"):
        qty = abs(acct.position(IDS[sym], side)[0])
        if qty - covered[side] > STEP / 2:
            out[side] = qty - covered[side]
    return out


def _held(emu: Any, sym: str) -> float:
    """Gross position of ``sym`` on the emulator (long plus short, base quantity)."""
    acct = emu.state.account
    return sum(abs(acct.position(IDS[sym], side)[0]) for side in ("LONG", "SHORT"))


def _traded(acct: Any) -> dict[str, int]:
    """Symbol -> trades of the account on it (the emulator's record)."""
    by_exec_id = {(o.actual_order_id or o.order_id): o for o in acct.orders.values()}
    out: dict[str, int] = {}
    for t in acct.trades:
        sym = {v: k for k, v in IDS.items()}[by_exec_id[t.order_id].symbol]
        out[sym] = out.get(sym, 0) + 1
    return out


def _check(emu: Any, journal: Path) -> Counter[str]:
    """Per symbol, the emulator's books against the basket journal's committed state (the run idles
    between bars; live_helpers.books_check): every count must be 0."""
    bad: Counter[str] = Counter()
    for sym in (BTC, ETH):
        bad.update(
            {
                f"{sym}: {k}": v
                for k, v in books_check(emu.state.account, IDS[sym], journal, PREFIX[sym]).items()
            }
        )
    return +bad


def test_a_basket_trades_live_with_status_metrics_pause_and_a_restart(tmp_path: Path) -> None:
    emu = _emulator()
    journal = tmp_path / "basket.sqlite"
    run = None
    try:
        run = Run(emu.url, journal, max_bars=10_000)
        url = run.wait_started()
        text = run.text
        for sym in (BTC, ETH):  # readiness per symbol
            for item in ("symbol and filters", "leverage", "margin type", "warm-up", "funding rate",
                         "open orders read"):  # fmt: skip
                assert f"ok  {sym}: {item}:" in text, (sym, item, text)
        acct = emu.state.account
        for _ in range(40):
            _advance(emu, journal, run)
        traded = _traded(acct)
        assert set(traded) == {BTC, ETH}, traded
        status = _status_at(url, 40)
        assert status["basket"] == [BTC, ETH]
        assert set(status["symbols"]) == {BTC, ETH}
        for sym in (BTC, ETH):
            s = status["symbols"][sym]
            assert s["symbol"] == sym and s["bars"] == 40 and s["mode"] == "live"
            assert s["open_orders"] == len(_ours(acct, sym)) > 0, (sym, s["open_orders"])
        total = status["total"]
        assert total["open_orders"] == sum(status["symbols"][s]["open_orders"] for s in (BTC, ETH))
        assert total["equity"] == status["symbols"][BTC]["equity"]  # the account's, read from the exchange
        metrics = _get(url, "/metrics")
        for sym in (BTC, ETH):
            assert f'gridctl_open_orders{{reason="",symbol="{sym}"}}' in metrics, metrics
            assert f'gridctl_position_qty{{reason="",side="long",symbol="{sym}"}}' in metrics
        assert 'gridctl_equity{reason="",symbol="total"}' in metrics
        # one pause, applied by both symbols' bridges: their entries leave the exchange, exits stay
        assert _post(url, "/pause") == 202
        _advance(emu, journal, run)
        status = _get(url, "/status")
        for sym in (BTC, ETH):
            assert "operator pause" in status["symbols"][sym]["pause_keys"], status["symbols"][sym]
            assert _ours(acct, sym, "entry") == [], sym
        applied = [c for c in status["commands"] if c["kind"] == "pause"]
        assert len(applied) == 1 and applied[0]["ok"] and set(applied[0]["symbols"]) == {BTC, ETH}
        db = sqlite3.connect(str(journal))
        assert db.execute("SELECT status FROM ops WHERE kind='pause'").fetchall() == [("applied",)]
        run_id = db.execute("SELECT value FROM meta WHERE key='run_id'").fetchone()[0]
        db.close()
        # kill -9 from outside; the restart on the same journal reconciles every symbol and trades on
        os.kill(run.proc.pid, signal.SIGKILL)
        run.proc.wait(timeout=30)
        held = {sym: _held(emu, sym) for sym in (BTC, ETH)}
        assert any(held.values()), held  # the run left positions (the checks below mean something)
        for sym in (BTC, ETH):  # every position the run left is covered by its stops on the exchange
            assert _uncovered(emu, sym, run_id) == {}, sym
        run = Run(emu.url, journal, max_bars=10_000)
        url = run.wait_started()
        for sym in (BTC, ETH):
            assert f"ok  {sym}: reconcile with the exchange:" in run.text, run.text
            assert "positions agree" in run.text
            # the engines came from the account's restore item: no per-symbol item that checks nothing
            assert f"{sym}: warm-up" not in run.text, run.text
        assert "restarted from the journal, reconciled with the exchange" in run.text
        assert f"run {run_id}" in run.text  # the same run: its orders are ours
        assert _advance(emu, journal, run) is not None
        assert _check(emu, journal) == Counter(), _check(emu, journal)
        status = _status_at(url, 42)
        for sym in (BTC, ETH):  # the journaled pause came back with the restart
            assert "operator pause" in status["symbols"][sym]["pause_keys"], status["symbols"][sym]
            assert status["symbols"][sym]["bars"] == 42, status["symbols"][sym]["bars"]
    finally:
        if run is not None and run.proc.poll() is None:
            run.proc.kill()
        emu.stop()


def test_sigterm_stops_a_basket_as_ctrl_c_does_and_the_journal_restarts_it(tmp_path: Path) -> None:
    """``kill PID`` / ``systemctl stop`` (SIGTERM) stops a live basket as Ctrl-C does: the stop is reported,
    the process exits 0 with its ops server and journal closed, every symbol's resting entries are
    cancelled (none can fill while nothing attaches its stops) while every position stays covered by its
    stops on the exchange, and the same command restarts the run from the journal and rests the entries
    again. Found walking issue #16: SIGTERM took its default action, the process vanished without a
    word, and after any stop the entries kept resting unattended."""
    emu = _emulator()
    journal = tmp_path / "basket.sqlite"
    run = None
    try:
        run = Run(emu.url, journal, max_bars=10_000)
        run.wait_started()
        for _ in range(30):
            _advance(emu, journal, run)
        acct = emu.state.account
        resting = {sym: len(_ours(acct, sym, "entry")) for sym in (BTC, ETH)}
        assert all(resting.values()), (
            resting
        )  # entries rest before the stop (the check below means something)
        run.proc.send_signal(signal.SIGTERM)
        assert run.proc.wait(timeout=60) == 0, run.text
        deadline = time.monotonic() + 5
        while "stopped (SIGTERM)" not in run.text and time.monotonic() < deadline:
            time.sleep(0.02)  # the reader thread catches up with the last lines
        cancelled = (
            f"resting entries cancelled ({BTC} {resting[BTC]}, {ETH} {resting[ETH]}), exits and stops stay"
        )
        assert f"stopped (SIGTERM); {cancelled}; the journal holds the basket's state" in run.text, run.text
        for sym in (BTC, ETH):
            assert _ours(acct, sym, "entry") == [], sym
        db = sqlite3.connect(str(journal))
        run_id = db.execute("SELECT value FROM meta WHERE key='run_id'").fetchone()[0]
        db.close()
        assert any(_held(emu, sym) for sym in (BTC, ETH))  # the run left positions
        for sym in (BTC, ETH):
            assert _uncovered(emu, sym, run_id) == {}, sym
        run = Run(emu.url, journal, max_bars=10_000)
        run.wait_started()
        assert "restarted from the journal, reconciled with the exchange" in run.text, run.text
        assert f"run {run_id}" in run.text
        assert _advance(emu, journal, run) is not None
        assert _check(emu, journal) == Counter(), _check(emu, journal)
        assert any(_ours(acct, sym, "entry") for sym in (BTC, ETH))  # the restart rests entries again
    finally:
        if run is not None and run.proc.poll() is None:
            run.proc.kill()
        emu.stop()


#: Crash points (live_bridge/killpoint.py) a restarted basket run dies at, in turn: ``member`` between two
#: symbols' bookings in a bar, ``journal`` inside the basket checkpoint's transaction (after one symbol's
#: writes; the 1st pass is the restart's own checkpoint), an order send, a fills poll, a booking, the bar
#: step with its orders not yet sent.
CRASHES = ("member:3", "journal:9", "send:4", "journal:1", "fills:2", "booked:1", "member:6", "bar:2",
           "sent:3", "journal:14")  # fmt: skip


def _started_or_died(run: Run, timeout: float = 300) -> bool:
    """True once the run serves its ops API; False when it died first (a crash point in its start-up)."""
    deadline = time.monotonic() + timeout
    while not any("ops API on" in x for x in run.lines):
        if run.proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, run.text
        time.sleep(0.05)
    return True


def test_a_basket_killed_at_crash_points_restarts_clean_every_time(tmp_path: Path) -> None:
    """kill -9 at each of ``CRASHES`` (and once from outside), restart on the same journal each time, then
    one more bar: no restart refused or unexplained; per symbol no lost / duplicated / orphaned order,
    positions equal to the engine's, fully covered by stops, every trade booked exactly once."""
    emu = _emulator()
    journal = tmp_path / "crash.sqlite"
    run = None
    died: Counter[str] = Counter()
    down = 0  # trades the restarts' reconciles booked (made while the run was down or dying)
    try:
        run = Run(emu.url, journal, max_bars=10_000)
        run.wait_started()
        for _ in range(25):
            _advance(emu, journal, run)
        assert any(_held(emu, sym) > 0 for sym in (BTC, ETH))  # positions to protect through the kills
        os.kill(run.proc.pid, signal.SIGKILL)
        assert run.proc.wait(timeout=30) == -signal.SIGKILL
        for kill_at in CRASHES:
            run = Run(emu.url, journal, max_bars=10_000, kill_at=kill_at)
            if _started_or_died(run):
                assert "UNEXPLAINED" not in run.text, run.text
                down += sum(int(m) for m in re.findall(r"(\d+) fills booked while down", run.text))
                for _ in range(12):
                    if _advance(emu, journal, run, may_die=True) is None:
                        break
            if run.proc.poll() is None:
                os.kill(run.proc.pid, signal.SIGKILL)
                died["outside"] += 1
            else:
                died[kill_at.split(":")[0]] += 1
            assert run.proc.wait(timeout=30) == -signal.SIGKILL, run.text  # killed, never refused
            for sym in (BTC, ETH):  # the market moves on while the run is down (reconcile books it)
                emu.state.advance_bar(IDS[sym])
        print("basket crash kills:", dict(died), "booked at restarts:", down, _traded(emu.state.account))
        assert died["member"] >= 1 and died["journal"] >= 2, died  # the points a basket adds fired
        assert down >= 1  # a restart booked trades it had not journaled, exactly once (checked below)
        run = Run(emu.url, journal, max_bars=10_000)
        run.wait_started()
        assert "UNEXPLAINED" not in run.text and run.text.count("positions agree") == 2, run.text
        assert _advance(emu, journal, run) is not None
        assert _check(emu, journal) == Counter(), _check(emu, journal)
        assert set(_traded(emu.state.account)) == {BTC, ETH}
    finally:
        if run is not None and run.proc.poll() is None:
            run.proc.kill()
        emu.stop()


def test_a_manual_trade_on_one_symbol_while_the_basket_is_down_is_guarded_on_that_symbol(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """A market buy of ETH the run did not send, made while the basket is down: the restart starts, ETH's
    reconcile finds it UNEXPLAINED and (``execution.unexplained_position: protect``, the default) rests a
    reduce-side guard stop for exactly that size and refuses ETH's entries; BTC's positions agree and it
    trades on; every position of both symbols is covered by stops."""
    from gridctl.live_bridge import gateway as gw
    from gridctl.live_bridge.exchange import CcxtGateway

    from live_helpers import emulator_venue

    for key, value in EMU_ENV.items():
        monkeypatch.setenv(key, value)
    emu = _emulator()
    journal = tmp_path / "manual.sqlite"
    run = None
    try:
        run = Run(emu.url, journal, max_bars=10_000)
        run.wait_started()
        for _ in range(25):
            _advance(emu, journal, run)
        run_id = _rows(journal, "SELECT value FROM meta WHERE key='run_id'")[0][0]  # type: ignore[index]
        os.kill(run.proc.pid, signal.SIGKILL)
        run.proc.wait(timeout=30)
        acct = emu.state.account
        eth_long = abs(acct.position(IDS[ETH], "LONG")[0])
        CcxtGateway(emulator_venue(emu.url), live=True).place(
            ETH, gw.OrderRequest("manual-1", "LONG", "buy", "market", 0.05)
        )
        assert abs(acct.position(IDS[ETH], "LONG")[0]) == round(eth_long + 0.05, 3)
        run = Run(emu.url, journal, max_bars=10_000)
        url = run.wait_started()
        line = {sym: next(x for x in run.lines if f"{sym}: reconcile with the exchange" in x) for sym in IDS}
        assert line[ETH].startswith("ok ") and "UNEXPLAINED" in line[ETH], line[ETH]
        assert "positions agree" in line[BTC], line[BTC]
        assert _advance(emu, journal, run) is not None
        guards = [(o.type, o.side, o.position_side, o.qty) for o in _ours(acct, ETH, "guard")]
        assert guards == [("STOP_MARKET", "SELL", "LONG", 0.05)], guards
        assert _ours(acct, ETH, "entry") == []  # ETH refuses entries
        assert _ours(acct, BTC, "guard") == [] and _ours(acct, BTC, "entry") != []  # BTC trades on
        for sym in (BTC, ETH):
            assert _uncovered(emu, sym, run_id) == {}, sym
        status = _get(url, "/status")
        assert any(r.startswith(f"{ETH}: reconcile") for r in status["pause_reasons"]), status[
            "pause_reasons"
        ]
    finally:
        if run is not None and run.proc.poll() is None:
            run.proc.kill()
        emu.stop()


def test_one_command_queue_fans_out_to_every_symbol_and_settles_once(tmp_path: Path) -> None:
    """Each symbol drains its own copy of every command (the first cannot take them all); the journal
    settles a command once every symbol applied it, ``ok`` only if it was ok on each; a pause holds
    every symbol's entries from the moment it is accepted."""
    from gridctl.live_bridge.journal import OpsLog
    from gridctl.live_bridge.ops import BasketOps

    log = OpsLog(tmp_path / "ops.sqlite")
    ops = BasketOps((BTC, ETH))
    ops.attach(log)
    pause = ops.enqueue("pause")
    thr = ops.enqueue("throttle", 0.5)
    assert all(m.entries_held() for m in ops.members.values())
    btc = ops.members[BTC].drain()
    assert [c.id for c in btc] == [pause.id, thr.id]
    assert ops.members[BTC].drain() == []  # drained once
    eth = ops.members[ETH].drain()
    assert [c.id for c in eth] == [pause.id, thr.id]  # ETH still got both
    for cmd in btc:
        ops.members[BTC].settle(cmd, {"id": cmd.id, "kind": cmd.kind, "ok": True})
    assert log.queued() == [(pause.id, "pause", None), (thr.id, "throttle", 0.5)]  # ETH has not applied
    ops.members[ETH].settle(eth[0], {"id": pause.id, "kind": "pause", "ok": True})
    ops.members[ETH].settle(eth[1], {"id": thr.id, "kind": "throttle", "ok": False, "error": "x"})
    assert log.queued() == []
    rows = log.db.execute("SELECT id, status FROM ops ORDER BY id").fetchall()
    assert rows == [(pause.id, "applied"), (thr.id, "failed")]
    assert [c["ok"] for c in ops.applied] == [True, False]
    ops.enqueue("resume")
    assert not any(m.entries_held() for m in ops.members.values())
    # a restart re-queues what was accepted but not applied, on every symbol
    again = BasketOps((BTC, ETH))
    again.attach(log)
    assert [c.kind for c in again.members[BTC].drain()] == ["resume"]
    assert [c.kind for c in again.members[ETH].drain()] == ["resume"]
    log.close()


def test_basket_metrics_carry_the_symbol_label_and_a_total() -> None:
    """Each gauge once per symbol and, where the basket totals it, once for ``total``; an unknown value
    is NaN with its reason, per symbol."""
    from gridctl.live_bridge.metrics import metrics_registry, render
    from gridctl.live_bridge.ops import BasketOps

    ops = BasketOps((BTC, ETH))
    base = {"unknown_labels": {}, "pause_keys": [], "pause_reasons": [], "state": "normal"}
    ops.members[BTC].publish({**base, "equity": 1000.0, "open_orders": 3, "realized_pnl": 2.0,
                              "position_long": 0.01, "position_short": 0.0})  # fmt: skip
    ops.members[ETH].publish({**base, "equity": 1000.0, "open_orders": 4, "realized_pnl": None,
                              "unknown_labels": {"realized_pnl": "no bar yet"}, "position_long": 0.2,
                              "position_short": 0.1, "pause_keys": ["operator pause"],
                              "pause_reasons": ["operator pause"]})  # fmt: skip
    text = render(metrics_registry(ops.snapshot)).decode()
    assert f'gridctl_open_orders{{reason="",symbol="{BTC}"}} 3.0' in text
    assert f'gridctl_open_orders{{reason="",symbol="{ETH}"}} 4.0' in text
    assert 'gridctl_open_orders{reason="",symbol="total"} 7.0' in text
    assert 'gridctl_equity{reason="",symbol="total"} 1000.0' in text  # the account's, not a sum
    assert f'gridctl_realized_pnl{{reason="no bar yet",symbol="{ETH}"}} NaN' in text
    assert 'gridctl_realized_pnl{reason="no bar yet",symbol="total"} NaN' in text
    assert f'gridctl_position_qty{{reason="",side="short",symbol="{ETH}"}} 0.1' in text
    assert f'gridctl_pause_reason{{reason="operator pause",symbol="{ETH}"}} 1.0' in text
    assert 'gridctl_pause_reason{reason="operator pause",symbol="' + BTC not in text
    status = ops.snapshot()
    assert status["pause_reasons"] == [f"{ETH}: operator pause"] and status["entries_paused"] == 1.0


def test_a_paper_basket_on_the_exchange_feed_steps_both_symbols(tmp_path: Path) -> None:
    """`--paper --symbols` polls each symbol's bars from the exchange and fills on the simulated venue:
    nothing is sent to the account, both symbols step every bar and ``/status`` shows both."""
    emu = _emulator()
    journal = tmp_path / "paper.sqlite"
    run = None
    try:
        run = Run(emu.url, journal, max_bars=10_000, mode="--paper")
        url = run.wait_started()
        for _ in range(30):
            _advance(emu, journal, run)
        status = _status_at(url, 30)
        assert status["basket"] == [BTC, ETH] and status["mode"] == "paper"
        for sym in (BTC, ETH):
            s = status["symbols"][sym]
            assert s["bars"] == 30 and s["open_orders"] > 0, (sym, s)
        assert emu.state.account.orders == {}  # paper: nothing sent
        # kill -9 and restart: both symbols' ledgers and the account carry on from the checkpoint
        fills_sql = {
            sym: f"SELECT data FROM {PREFIX[sym]}ledger WHERE tbl='fills' ORDER BY row" for sym in IDS
        }
        before = {sym: _rows(journal, sql) for sym, sql in fills_sql.items()}
        assert any(before.values()), before  # the paper venue filled something to carry over
        os.kill(run.proc.pid, signal.SIGKILL)
        run.proc.wait(timeout=30)
        run = Run(emu.url, journal, max_bars=10_000, mode="--paper")
        url = run.wait_started()
        assert "restarted from the journal" in run.text
        assert _advance(emu, journal, run) is not None
        status = _status_at(url, 31)
        for sym in (BTC, ETH):
            assert status["symbols"][sym]["bars"] == 31, status["symbols"][sym]
            after = _rows(journal, fills_sql[sym])
            assert after[: len(before[sym])] == before[sym], sym  # type: ignore[index]
        assert emu.state.account.orders == {}
    finally:
        if run is not None and run.proc.poll() is None:
            run.proc.kill()
        emu.stop()


def test_one_flatten_closes_every_symbol_of_the_basket(tmp_path: Path) -> None:
    """``POST /flatten`` once: each symbol's bridge closes both its sides on the exchange and cancels its
    entries; the basket is paused on every symbol and the command is settled once, ok on each."""
    emu = _emulator()
    journal = tmp_path / "flat.sqlite"
    run = None
    try:
        run = Run(emu.url, journal, max_bars=10_000)
        url = run.wait_started()
        for _ in range(40):
            _advance(emu, journal, run)
        assert any(_held(emu, sym) > 0 for sym in (BTC, ETH))
        assert _post(url, "/flatten") == 202
        deadline = time.monotonic() + 60
        while not [c for c in _get(url, "/status")["commands"] if c["kind"] == "flatten"]:
            assert time.monotonic() < deadline and run.proc.poll() is None, run.text
            time.sleep(0.05)
        status = _get(url, "/status")
        done = [c for c in status["commands"] if c["kind"] == "flatten"]
        assert len(done) == 1 and done[0]["ok"] and set(done[0]["symbols"]) == {BTC, ETH}, done
        acct = emu.state.account
        for sym in (BTC, ETH):
            assert _held(emu, sym) == 0.0, sym
            assert _ours(acct, sym, "entry") == [], sym
            assert "operator pause" in status["symbols"][sym]["pause_keys"], sym
    finally:
        if run is not None and run.proc.poll() is None:
            run.proc.kill()
        emu.stop()
