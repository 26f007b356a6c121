"""Chaos for the basket: SIGKILL one `gridctl live --live --symbols BTC/USDT:USDT,ETH/USDT:USDT` process
(one account on the emulator, one basket journal) at random moments and restart it on the same journal.

The market: both symbols replay the seeded sample (ETH at a twentieth of BTC's price on its 0.01 tick),
3 rungs a side 5 bps apart, re-centred when the close is 10 bps off, take-profit 2 steps, stop 10
steps, 150 USDT a rung; the test closes one bar
on both symbols at a time. MARKET_LOT_SIZE maxQty is 0.001 BTC and 0.02 ETH on the exchange and in the
venue file (``MARKET_LOT``), so a flatten goes out as several market orders per side.

Each process either dies at a crash point (``GRIDCTL_KILL_AT=<point>:<n>``, live_bridge/killpoint.py,
``n`` drawn at random; the basket's own points ``member`` between two symbols' bookings and ``journal``
inside the basket checkpoint's transaction, and ``send``, ``sent``, ``cancel``, ``canceled``, ``fills``,
``booked``, ``bar``, ``chunk`` (between two market orders of a flatten, sent to such a round)) or is
SIGKILLed from here at a random delay, with an ops command (pause, throttle, flatten) in flight. Some
rounds, after the restart's check, run on under exchange faults: limit fills that execute only in part,
a stop placement the exchange refuses (-2021, as when it would trigger at once: the lot is closed at
market), a 429 or a short 418 ban on order placements, a few requests answered 503 (an outage). The
market moves on while the process is down (0 to 2 bars).

After every restart, once the first bar is journaled, and at the end, per symbol, the emulator's own
books against the journal (live_helpers.books_check): lost, duplicated, orphaned and foreign orders,
position mismatches, positions without full stop coverage, trades not booked exactly once; plus
refused restarts, crashes (a process that exited by itself) and restarts finding exposure the journal
cannot explain. Every count must be 0.

CI runs ``KILLS`` (3) kills; ``GRIDCTL_CHAOS_KILLS=100`` runs the full campaign (``-s`` prints counts),
``GRIDCTL_CHAOS_SEED`` draws another one.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

from live_helpers import (
    BTC,
    ETH,
    FAILURES,
    IDS,
    LiveProc,
    basket_emulator,
    books_check,
    journal_rows,
    trades_on,
)

KILLS = int(os.environ.get("GRIDCTL_CHAOS_KILLS", "3"))
SEED = int(os.environ.get("GRIDCTL_CHAOS_SEED", "16"))
SYMBOLS = (BTC, ETH)
PREFIX = {BTC: "s_BTC_USDT_USDT_", ETH: "s_ETH_USDT_USDT_"}  # live_bridge.runner.member_prefix
#: crash points and the largest pass number drawn for each (``journal`` passes twice a bar, once a symbol)
POINTS = {"member": 4, "journal": 8, "send": 6, "sent": 6, "cancel": 3, "canceled": 3, "fills": 4,
          "booked": 3, "bar": 4, "chunk": 3}  # fmt: skip
SETS = ["grid.grid_step_bps=5", "rebalance.recenter_trigger_bps=10", "exit.tp_steps=2", "exit.sl_steps=10",
        "grid.grid_levels_long=3", "grid.grid_levels_short=3", "grid.base_notional=150",
        "regime.hysteresis_bps=5"]  # fmt: skip
MARKET_MAX = {BTC: "0.001", ETH: "0.02"}
MARKET_LOT = tuple(f"symbol_rules.{s}.market_max_qty={q}" for s, q in MARKET_MAX.items())
BARS: Counter = Counter()


class Proc(LiveProc):
    """One basket `gridctl live --live` process on the emulator at ``url``."""

    def __init__(self, url: str, journal: Path, kill_at: str | None) -> None:
        args = ["--live", "--symbols", ",".join(SYMBOLS), "--journal", str(journal)]
        # order pacing out of the way (it defers orders by design; this test is about crashes)
        # and the feed's wait between attempts in an outage 1 s (60 s in the venue file)
        for v in ("rate_limits.weight_per_minute=100000", "rate_limits.orders_per_minute=10000",
                  "rate_limits.orders_per_second=100", "websocket.reconnect_timeout=1",
                  f"api.base_url={url}", *MARKET_LOT):  # fmt: skip
            args += ["--venue-set", v]
        for v in SETS:
            args += ["--set", v]
        args += ["--ops-port", "0", "--max-clock-skew-ms", str(10**13), "--poll-s", "0.02"]
        super().__init__(args, kill_at)


def _emulator(kills: int) -> Any:
    """The basket on the emulator with bars enough for ``kills`` rounds (at most 12 bars each)."""
    n = min(200 + 14 * kills, 2800)
    emu = basket_emulator(SETS, n=n, days=2)
    for m in emu.state.markets:
        sym = next((s for s, i in IDS.items() if i == m["symbol"]), None)
        for f in m["filters"]:
            if sym is not None and f["filterType"] == "MARKET_LOT_SIZE":
                f["maxQty"] = MARKET_MAX[sym]
    return emu


def _advance(emu: Any, up: bool) -> int:
    """Both symbols trade one more bar; counts the bars the bridge was up for and those that filled."""
    acct = emu.state.account
    n = len(acct.trades)
    ts = {emu.state.advance_bar(IDS[sym])[0] for sym in SYMBOLS}
    assert len(ts) == 1, ts
    BARS["bars up" if up else "bars down"] += 1
    BARS["bars up that filled"] += int(up and len(acct.trades) > n)
    return ts.pop()


def _bar_done(emu: Any, journal: Path, p: Proc, timeout: float = 60) -> bool:
    """Advance one bar; True once the basket's checkpoint holds it for every symbol, False when the
    process died first."""
    ts = _advance(emu, True)
    deadline = time.monotonic() + timeout
    while True:
        rows = [journal_rows(journal, f"SELECT bar_ts FROM {PREFIX[s]}kstate WHERE id=1") for s in SYMBOLS]
        if all(r and r[0][0] == ts for r in rows):
            return True
        if p.proc.poll() is not None:
            return False
        if time.monotonic() > deadline:
            status = p.status()
            raise AssertionError(
                f"bar {ts} not journaled (journal at {rows}); faults {emu.state.faults}; /status "
                f"{json.dumps(status)[:3000]}\n{''.join(p.lines[-20:])}"
            )
        time.sleep(0.01)


def _check(emu: Any, journal: Path, counts: Counter) -> None:
    """Per symbol, the emulator's books against the basket journal's committed state (the process idles
    between bars): every failure count is kept per symbol and in total."""
    for sym in SYMBOLS:
        got = books_check(emu.state.account, IDS[sym], journal, PREFIX[sym])
        counts.update(got)
        counts.update({f"{sym}: {k}": v for k, v in got.items() if v})
    counts["checks"] += 1


def _faults(emu: Any, rng: random.Random, counts: Counter) -> None:
    """Arm this round's exchange faults (each drawn on its own); ``_clear`` disarms what is left."""
    state = emu.state
    if rng.random() < 0.4:
        state.account.partial_fills(0.5, times=rng.randint(1, 4))
        counts["rounds with partial fills"] += 1
    if rng.random() < 0.3:
        state.inject("reject", "/fapi/v1/algoOrder", method="POST", skip=rng.randint(0, 4),
                     code=-2021, msg="Order would immediately trigger.")  # fmt: skip
        counts["rounds with a refused stop"] += 1
    if rng.random() < 0.2:
        status = rng.choice((429, 418))
        state.inject("status", "/fapi/v1/order", method="POST", status=status, skip=rng.randint(0, 3),
                     retry_after=rng.randint(1, 2))  # fmt: skip
        counts[f"rounds with a {status}"] += 1
    if rng.random() < 0.15:
        state.inject("status", None, status=503, skip=rng.randint(0, 20), times=rng.randint(2, 6))
        counts["rounds with an outage"] += 1
    partial = state.account.partial_times
    print("  faults:", [(f.kind, f.path, f.status, f.code) for f in state.faults if f.times > 0], partial)


def _clear(emu: Any, counts: Counter) -> None:
    """Disarm faults the round did not use (the next restart's check runs on a quiet exchange) and count
    those that fired."""
    with emu.state.lock:
        left = [f for f in emu.state.faults if f.times > 0]
        emu.state.faults.clear()
    counts["armed faults left unused"] += len(left)
    emu.state.account.partial_fills(1.0, times=0)


def test_a_basket_sigkilled_at_random_moments_restarts_clean(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    BARS.clear()
    emu = _emulator(KILLS)
    journal = tmp_path / "basket-chaos.sqlite"
    counts: Counter = Counter()
    refused_stops = 0
    t0 = time.monotonic()
    p: Proc | None = None
    try:
        while counts["kills"] < KILLS:
            # three in four processes die at a crash point drawn at random, the rest by a timer
            how = "timer" if rng.random() < 0.25 else "point"
            point = rng.choice(sorted(POINTS)) if how == "point" else None
            kill_at = f"{point}:{rng.randint(1, POINTS[point])}" if point else None
            p = Proc(emu.url, journal, kill_at)
            counts["starts"] += 1
            print(f"round {counts['starts']}: {kill_at or 'timer'}, {len(emu.state.account.trades)} trades")
            got = p.started()
            if got == "refused":
                counts["refused restarts"] += 1
                print("".join(p.lines[-12:]))
                retry = Proc(emu.url, journal, None)  # one plain retry: is the journal still usable?
                assert retry.started() == "started", "".join(retry.lines[-12:])
                p = retry
            elif got == "killed":
                counts["kills"] += 1
                counts[f"killed at {point} (start-up)"] += 1
                continue
            if counts["starts"] > 1:
                counts["unexplained at restart"] += p.unexplained()
            counts["ops commands"] += int(p.command("/resume"))  # a pause the journal kept ends here
            # the crash point fired inside the first bar (its kernels may compile on a cold cache)
            if not _bar_done(emu, journal, p, timeout=240):
                p.kill(counts)
                counts["kills"] += 1
                counts[f"killed at {point}"] += 1
            else:
                _check(emu, journal, counts)
                before = len(emu.state.requests("/fapi/v1/algoOrder"))
                _faults(emu, rng, counts)
                if how == "timer":
                    # an ops command in flight when the kill comes (every start resumes a kept pause;
                    # a throttle of 1: below it rung 1's entries fall under the min notional and stop)
                    path, body = rng.choice(
                        (("/pause", b""), ("/throttle", b'{"value": 1.0}'), ("/flatten", b""))
                    )
                    for _ in range(rng.randint(0, 4)):
                        if not _bar_done(emu, journal, p):
                            break
                    counts["ops commands"] += int(p.command(path, body))
                    counts[f"in flight at a timer kill: {path}"] += 1
                    print(f"  {path} in flight")
                    if rng.random() < 0.7:
                        _advance(emu, True)
                    time.sleep(rng.uniform(0.0, 0.5))  # somewhere inside the work, or after it
                    counts["killed by timer"] += int(p.proc.poll() is None)  # else: a crash (kill)
                else:
                    if point == "chunk" or rng.random() < 0.15:
                        counts["ops commands"] += int(p.command("/flatten"))  # chunk fires in a flatten
                        counts["flattens in a crash-point round"] += 1
                    for _ in range(6):
                        if not _bar_done(emu, journal, p):
                            break
                    alive = p.proc.poll() is None
                    counts[f"killed at {point}" if not alive else "killed by timer"] += 1
                p.kill(counts)
                counts["kills"] += 1
                refused_stops += sum(
                    1 for r in emu.state.requests("/fapi/v1/algoOrder")[before:] if r.fault == "reject"
                )
                _clear(emu, counts)
            for _ in range(rng.randint(0, 2)):  # the market moves on while the basket is down
                _advance(emu, False)
            if counts["kills"] % 10 == 0:  # progress of a long campaign (``-s``)
                bad = {k: counts[k] for k in FAILURES if counts[k]} or "every count 0"
                print(f"after {counts['kills']} kills ({time.monotonic() - t0:.0f} s):", bad, flush=True)
        p = Proc(emu.url, journal, None)  # the last restart, checked after one more bar
        assert p.started() == "started", "".join(p.lines[-12:])
        counts["unexplained at restart"] += p.unexplained()
        assert _bar_done(emu, journal, p, timeout=240), "".join(p.lines[-12:])
        _check(emu, journal, counts)
        p.kill()
    finally:
        if p is not None:
            p.kill()
        emu.stop()
    acct = emu.state.account
    counts["stop placements refused"] = refused_stops
    for sym in SYMBOLS:
        counts[f"{sym}: trades"] = trades_on(acct, IDS[sym])
    counts.update(BARS)
    counts["seconds"] = round(time.monotonic() - t0)
    print("basket chaos counts:", json.dumps({k: int(v) for k, v in sorted(counts.items())}))
    assert counts["kills"] >= KILLS
    assert counts["checks"] >= 1 + KILLS // 3, dict(counts)  # restarts not killed in their first bar
    assert all(counts[f"{sym}: trades"] > 0 for sym in SYMBOLS), dict(counts)  # both symbols traded
    assert 4 * counts["bars up that filled"] > counts["bars up"], dict(counts)  # a busy market
    assert {k: counts[k] for k in FAILURES} == dict.fromkeys(FAILURES, 0), dict(counts)
