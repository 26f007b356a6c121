"""Control never waits for the network: ops commands are journaled before the 202, survive a kill -9 and
take effect within a second whatever the feed is doing; the reasons show on /status and the metrics.

In process: a paper run against the emulator (``runner.prepare`` + ``run_loop``) with the feed stuck in
an outage (503s and the venue's 60 s reconnect wait, or a request hanging past its 10 s timeout).
Out of process: a real ``gridctl live --live`` against the emulator, measured at the emulator.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gridctl.configs.loader import load_strategy
from gridctl.live_bridge.options import LiveOptions
from gridctl.live_bridge.orders import desired_orders, parse_client_id
from gridctl.live_bridge.runner import prepare, run_loop

from live_helpers import (
    EMU_ENV,
    SYMBOL_ID,
    emulator_venue,
    emulator_with_sample,
    prepare_live_on_emulator,
    running_emulator,
)

REPO = Path(__file__).resolve().parents[2]
TOKEN = EMU_ENV["GRIDCTL_OPS_TOKEN"]
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LADDER = ["grid.grid_levels_long=1", "grid.grid_levels_short=1", "grid.grid_step_bps=15"]


def _metrics(url: str) -> dict[tuple[str, tuple], float]:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _wait(cond, timeout: float, what: str, step: float = 0.01) -> float:
    """Poll ``cond`` until true; returns the monotonic time it became true."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(step)
    return time.monotonic()


class _StopError(Exception):
    pass


@pytest.fixture()
def emu():
    with running_emulator() as e:
        yield e


@pytest.mark.parametrize("fault", ["503", "hang"])
def test_pause_during_feed_outage_applies_within_a_second(emu, tmp_path: Path, fault: str) -> None:
    venue = emulator_venue(emu.url, ["websocket.reconnect_timeout=60"])  # the shipped wait
    ready, ctx = prepare(
        load_strategy("default", LADDER),
        venue,
        LiveOptions(
            mode="paper",
            symbol="BTC/USDT:USDT",
            journal=tmp_path / "j.sqlite",
            ops_port=0,
            max_skew_ms=10**13,
        ),
        TOKEN,
    )
    ready.require()
    bridge, url = ctx.bridge, ctx.ops_url
    stop = threading.Event()
    real_check = bridge.check_stale

    def check_stale(*a: object) -> bool:
        if stop.is_set():
            raise _StopError
        return real_check(*a)

    bridge.check_stale = check_stale
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            run_loop(ctx, max_bars=None, poll_s=0.2)
        except BaseException as err:
            errors.append(err)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        for n in (1, 2):
            emu.state.advance_bar(SYMBOL_ID)
            _wait(lambda n=n: bridge.s.n == n, 20, f"bar {n} processed")
        assert [w for w in desired_orders(bridge.s.slots, True) if w.kind == "entry"], "entries planned"
        if fault == "503":
            emu.state.inject("status", "/fapi/v1/time", status=503, times=10**6)
            t_out = time.monotonic()

            def shown() -> bool:
                keys = httpx.get(f"{url}/status", headers=AUTH, timeout=5).json()["pause_keys"]
                return "bar feed connection" in keys

            # the first failed attempt shows at once (the next poll is at most poll_s = 0.2 s away)
            assert _wait(shown, 5, "outage reason on /status") - t_out < 1.0
            status = httpx.get(f"{url}/status", headers=AUTH, timeout=5).json()
            [reason] = [r for r in status["pause_reasons"] if r.startswith("bar feed connection")]
            assert "outage in progress: 1 failed attempt(s), retrying every 60 s" in reason
            assert "503" in reason
        else:  # the next klines request hangs 11 s: past the client's 10 s timeout
            emu.state.inject("timeout", "/fapi/v1/klines", delay_s=11.0)
            emu.state.advance_bar(SYMBOL_ID)  # a bar is due: the feed asks for it and hangs
            _wait(lambda: emu.state.requests("/fapi/v1/klines")[-1:] != [], 5, "klines asked")
        time.sleep(1.0)  # 1 s into the outage
        sent = time.monotonic()
        r = httpx.post(f"{url}/pause", headers=AUTH, timeout=5)
        assert r.status_code == 202
        # durable before the 202: the journal's own table holds it (read on a separate connection)
        db = sqlite3.connect(str(tmp_path / "j.sqlite"), timeout=5)
        assert db.execute("SELECT kind FROM ops WHERE id=?", (r.json()["queued"],)).fetchone() == ("pause",)
        db.close()
        applied = _wait(lambda: bridge.operator_paused, 5, "pause applied")
        print(f"\n/pause to effect during a feed outage ({fault}): {(applied - sent) * 1000:.0f} ms")
        assert applied - sent < 1.0
        assert not [w for w in desired_orders(bridge.s.slots, True) if w.kind == "entry"]
        # the feed is still inside its outage (no bar since), in its retry wait or its hanging request
        assert bridge.s.n == 2 and t.is_alive()
        if fault == "503":
            assert ctx.feed.health.failures == 1 and ctx.feed.health.up
        m = _metrics(url)
        assert m[("gridctl_entries_paused", (("reason", ""),))] == 1.0
        paused = {dict(k[1])["reason"] for k in m if k[0] == "gridctl_pause_reason"}
        assert paused == ({"operator pause", "bar feed connection"} if fault == "503" else {"operator pause"})
    finally:
        stop.set()
        t.join(timeout=5)
        ctx.close()
    assert isinstance(errors[0], _StopError), errors


def test_pause_holds_entry_orders_while_the_loop_waits_on_the_exchange(
    emu, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bar's first entry order hangs 2 s at the exchange; a /pause 0.5 s into it: no further entry
    order goes out, although the bar's plan held six (the loop is inside the request, not at a tick)."""

    for k, v in EMU_ENV.items():
        monkeypatch.setenv(k, v)
    levels = ["grid.grid_levels_long=3", "grid.grid_levels_short=3", "grid.grid_step_bps=15"]
    venue = emulator_venue(emu.url, ["rate_limits.orders_per_second=50"])
    strategy = load_strategy("default", levels)
    ready, ctx = prepare_live_on_emulator(strategy, venue, tmp_path / "j.sqlite", TOKEN)
    try:
        ready.require()
        bridge = ctx.bridge
        emu.state.inject("timeout", "/fapi/v1/order", delay_s=2.0)  # the first order's answer: 2 s late
        emu.state.advance_bar(SYMBOL_ID)
        [bar] = ctx.feed.poll()
        t = threading.Thread(target=bridge.on_bar, args=(bar,), daemon=True)
        t.start()
        _wait(lambda: bridge.s.n == 1, 10, "bar stepped")
        planned = [w for w in desired_orders(bridge.s.slots, True) if w.kind == "entry"]
        assert len(planned) == 6
        time.sleep(0.5)
        assert t.is_alive(), "the loop is inside the first order request"
        assert httpx.post(f"{ctx.ops_url}/pause", headers=AUTH, timeout=5).status_code == 202
        t.join(timeout=10)
        assert not t.is_alive()
        posts = [r for r in emu.state.requests("/fapi/v1/order") if r.method == "POST"]
        assert len(posts) == 1 and bridge.held == 5, (len(posts), bridge.held)
        assert not bridge.operator_paused  # not applied yet: the hold alone kept them back
        bridge.apply_commands()
        assert bridge.operator_paused
        assert not [
            o
            for o in emu.state.account.open_orders(SYMBOL_ID)
            if parse_client_id(o.client_id).kind == "entry"
        ]
    finally:
        ctx.close()


def test_flatten_goes_out_within_a_second_of_the_exchange_answering(
    emu, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/flatten while the account endpoint answers 503: kept queued and retried; once the exchange
    answers again the closing market orders reach the emulator within a second."""

    for k, v in EMU_ENV.items():
        monkeypatch.setenv(k, v)
    venue = emulator_venue(emu.url)
    strategy = load_strategy("default", LADDER)
    ready, ctx = prepare_live_on_emulator(strategy, venue, tmp_path / "j.sqlite", TOKEN)
    acct = emu.state.account
    stop = threading.Event()
    errors: list[BaseException] = []
    t = None
    try:
        ready.require()
        bridge = ctx.bridge
        for _ in range(60):
            emu.state.advance_bar(SYMBOL_ID)
            for bar in ctx.feed.poll():
                bridge.on_bar(bar)
            if _position(acct) != (0.0, 0.0):
                break
        assert _position(acct) != (0.0, 0.0), "the run must hold a lot"
        real_check = bridge.check_stale

        def check_stale(*a: object) -> bool:
            if stop.is_set():
                raise _StopError
            return real_check(*a)

        bridge.check_stale = check_stale

        def loop() -> None:
            try:
                run_loop(ctx, max_bars=None, poll_s=0.2)
            except BaseException as err:
                errors.append(err)

        t = threading.Thread(target=loop, daemon=True)
        t.start()
        down = emu.state.inject("status", "/fapi/v3/account", status=503, times=10**6)
        assert httpx.post(f"{ctx.ops_url}/flatten", headers=AUTH, timeout=5).status_code == 202
        time.sleep(1.5)  # tried and refused (account unreadable), kept queued
        assert _position(acct) != (0.0, 0.0) and bridge.operator_paused
        assert emu.state.requests("/fapi/v3/account")[-1].status == 503
        mark = len(emu.state.requests("/fapi/v1/order"))
        back = time.monotonic()
        down.times = 0
        flat = _wait(lambda: _position(acct) == (0.0, 0.0), 5, "not flat")
        print(f"\nexchange answering again to flat: {(flat - back) * 1000:.0f} ms")
        assert flat - back < 1.0
        market = [r for r in emu.state.requests("/fapi/v1/order")[mark:] if r.query.get("type") == "MARKET"]
        assert market and all(parse_client_id(r.query["newClientOrderId"]).kind == "flatten" for r in market)
        _wait(lambda: bridge.ops.applied and bridge.ops.applied[-1]["kind"] == "flatten", 2, "not settled")
        assert bridge.ops.applied[-1]["ok"] is True
    finally:
        stop.set()
        if t is not None:
            t.join(timeout=5)
        ctx.close()
    assert t is None or isinstance(errors[0], _StopError), errors


class LiveRun:
    """One `gridctl live --live` subprocess against the emulator, its stderr and its ops URL."""

    def __init__(self, url: str, journal: Path) -> None:
        cmd = [
            sys.executable, "-m", "gridctl.cli", "live", "--live",
            "--venue-set", f"api.base_url={url}",
            "--venue-set", "rate_limits.weight_per_minute=100000",
            "--venue-set", "rate_limits.orders_per_minute=10000",
            *[a for s in LADDER for a in ("--set", s)],
            "--journal", str(journal),
            "--ops-port", "0",
            "--max-clock-skew-ms", str(10**13),
            "--poll-s", "0.05",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env={**os.environ, **EMU_ENV},
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        _wait(self._started, 240, "bridge did not start", step=0.05)
        line = next(x for x in self.lines if "ops API on" in x)
        self.url = line.rsplit("ops API on ", 1)[1].strip()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def _started(self) -> bool:
        assert self.proc.poll() is None, "".join(self.lines)
        return any("ops API on" in x for x in self.lines)

    def status(self) -> dict:
        return httpx.get(f"{self.url}/status", headers=AUTH, timeout=5).json()

    def post(self, path: str) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", headers=AUTH, timeout=5)

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


def _bars(journal: Path) -> int:
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=5)
    try:
        row = db.execute("SELECT n FROM kstate WHERE id=1").fetchone()
    except sqlite3.OperationalError:
        row = None
    finally:
        db.close()
    return int(row[0]) if row else 0


def _ops(journal: Path) -> list[tuple[str, str]]:
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=5)
    try:
        return db.execute("SELECT kind, status FROM ops ORDER BY id").fetchall()
    finally:
        db.close()


def _advance(emu, journal: Path, run: LiveRun) -> None:
    n = _bars(journal)
    emu.state.advance_bar(SYMBOL_ID)
    _wait(lambda: _bars(journal) > n, 60, f"bar not journaled: {''.join(run.lines[-5:])}")


def _resting_entries(acct) -> list:
    return [
        o for o in acct.open_orders(SYMBOL_ID) if (p := parse_client_id(o.client_id)) and p.kind == "entry"
    ]


def _entry_posts(emu, start: int) -> list:
    out = []
    for r in emu.state.requests("/fapi/v1/order")[start:]:
        p = parse_client_id(r.query.get("newClientOrderId", ""))
        if r.method == "POST" and p is not None and p.kind == "entry":
            out.append(r)
    return out


def _position(acct) -> tuple[float, float]:
    return acct.position(SYMBOL_ID, "LONG")[0], -acct.position(SYMBOL_ID, "SHORT")[0]


def test_live_pause_in_outage_kill_restart_paused_and_flatten_continued(tmp_path: Path) -> None:
    emu = emulator_with_sample()
    journal = tmp_path / "live.sqlite"
    acct = emu.state.account
    runs: list[LiveRun] = []
    try:
        a = LiveRun(emu.url, journal)
        runs.append(a)
        for _ in range(60):
            _advance(emu, journal, a)
            if _position(acct) != (0.0, 0.0) and _resting_entries(acct):
                break
        assert _position(acct) != (0.0, 0.0) and _resting_entries(acct), "the run must hold a lot"

        # -- an outage of the market-data feed (the venue's shipped 60 s reconnect wait); /pause 1 s in
        fault = emu.state.inject("status", "/fapi/v1/time", status=503, times=10**6)
        _wait(lambda: "bar feed connection" in a.status()["pause_keys"], 5, "outage not shown")
        time.sleep(1.0)
        sent = time.monotonic()
        assert a.post("/pause").status_code == 202
        gone = _wait(lambda: not _resting_entries(acct), 5, "resting entries not cancelled")
        effect_ms = (gone - sent) * 1000
        print(f"\n/pause to effect at the emulator during a feed outage: {effect_ms:.0f} ms")
        assert gone - sent < 1.0
        time.sleep(1.0)
        mark = len(emu.state.requests("/fapi/v1/order"))  # pause + 1 s (and more)
        time.sleep(2.0)
        assert _entry_posts(emu, mark) == []
        status = a.status()
        assert status["gates"]["operator_paused"] is True
        assert {"operator pause", "bar feed connection"} <= set(status["pause_keys"])
        assert status["bars"] == _bars(journal), "no bar went through during the outage"

        # -- kill -9 while paused in the outage; the feed comes back; the restart is paused
        a.kill()
        fault.times = 0
        b = LiveRun(emu.url, journal)
        runs.append(b)
        assert any("operator pause kept" in x for x in b.lines), "".join(b.lines)
        assert b.status()["gates"]["operator_paused"] is True
        mark = len(emu.state.requests("/fapi/v1/order"))
        for _ in range(3):
            _advance(emu, journal, b)
        assert _entry_posts(emu, mark) == [] and not _resting_entries(acct)
        assert _position(acct) != (0.0, 0.0), "the lot is still held: the flatten below has work to do"

        # -- /flatten while the account cannot be read, kill -9: the restart carries the flatten out
        blocked = emu.state.inject("status", "/fapi/v3/account", status=503, times=10**6)
        assert b.post("/flatten").status_code == 202
        time.sleep(1.5)  # tried at least once; refused by the exchange, kept queued
        assert _position(acct) != (0.0, 0.0)
        b.kill()
        assert _ops(journal)[-1] == ("flatten", "queued")
        blocked.times = 0
        c = LiveRun(emu.url, journal)
        runs.append(c)
        _wait(lambda: _position(acct) == (0.0, 0.0), 10, f"not flat: {''.join(c.lines[-5:])}")
        _wait(lambda: _ops(journal)[-1] == ("flatten", "applied"), 5, "flatten not settled")
        assert c.status()["gates"]["operator_paused"] is True
        assert [k for k, _ in _ops(journal)] == ["pause", "flatten"]
    finally:
        for r in runs:
            if r.proc.poll() is None:
                r.kill()
        emu.stop()
