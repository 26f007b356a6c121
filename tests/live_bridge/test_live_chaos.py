"""Chaos: SIGKILL a real `gridctl live --live` bridge at random moments, restart it on the same journal.

The market (the emulator replaying the sample; 3 rungs a side 5 bps apart, re-centred when the close is
10 bps off, TP 2 steps away): about a third of the bars the bridge is up for fill an order (half
without restarts; after one, the catch-up bars pause entries as a stale feed). Stops sit 10
steps (0.5 %) from their entries, beyond what this market moves while the bridge is down: a stop the
exchange refuses because it would trigger at once is the protection invariant's case (its own tests),
not a crash's. Each
bridge process either dies by a crash point (``GRIDCTL_KILL_AT=<point>:<n>``, live_bridge/killpoint.py:
inside an order send, a cancel, a fills poll, a booking, the bar step or the journal's checkpoint
transaction) or is SIGKILLed from here at a random delay into a bar. The market may move on while it
is down. After each restart and one more bar, the exchange (the emulator's own books) and the journal
are compared, and every count below must be 0:

- refused restarts (the process exits by itself before it serves the ops API);
- restarts that found exposure they could not explain;
- lost orders (the engine wants an order that does not rest), duplicated orders (two resting for one
  slot), orphaned orders (ours resting, not wanted);
- position mismatches (engine vs exchange, per side);
- trades not booked exactly once (the journal's fills vs the exchange's trades);
- positions without full stop coverage (the resting stops of a side sum to less than its position).

A process killed by a timer has an ops command (pause, resume, throttle, flatten) in flight when it dies.
MARKET_LOT_SIZE maxQty is 0.001 on the exchange and in the venue file (``MARKET_LOT``), so every flatten
goes out as several market orders and a timer can kill the bridge between two of them.

CI runs ``KILLS`` (12) kills; ``GRIDCTL_CHAOS_KILLS=100`` runs the full campaign (``-s`` prints counts).
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import numpy as np

from gridctl.engine.state import S_LONG_QTY, S_SHORT_QTY

from live_helpers import EPS, FAILURES, SYMBOL_ID, LiveProc, books_check, emulator_with_sample, journal_rows

KILLS = int(os.environ.get("GRIDCTL_CHAOS_KILLS", "12"))
SEED = int(os.environ.get("GRIDCTL_CHAOS_SEED", "14"))
POINTS = ("send", "sent", "cancel", "canceled", "fills", "booked", "bar", "journal")
MARKET_LOT = ("symbol_rules.BTC/USDT:USDT.market_max_qty=0.001",)


def _market_lot(emu) -> None:
    """The emulator's MARKET_LOT_SIZE maxQty as ``MARKET_LOT`` sets the venue file's."""
    for m in emu.state.markets:
        for f in m["filters"]:
            if f["filterType"] == "MARKET_LOT_SIZE":
                f["maxQty"] = "0.001"


class Proc(LiveProc):
    """One `gridctl live --live` subprocess on this campaign's strategy; ``kill_at`` arms a crash point."""

    def __init__(
        self, url: str, journal: Path, kill_at: str | None, venue: tuple[str, ...] = MARKET_LOT
    ) -> None:
        args = ["--live", "--journal", str(journal)]
        # order pacing out of the way (it defers orders by design; this test is about crashes)
        for v in ("rate_limits.weight_per_minute=100000",
                  "rate_limits.orders_per_minute=10000", "rate_limits.orders_per_second=100",
                  f"api.base_url={url}", *venue):  # fmt: skip
            args += ["--venue-set", v]
        for v in ("grid.grid_levels_long=3", "grid.grid_levels_short=3", "grid.grid_step_bps=5",
                  "rebalance.recenter_trigger_bps=10", "exit.tp_steps=2", "exit.sl_steps=10"):  # fmt: skip
            args += ["--set", v]
        args += ["--ops-port", "0", "--max-clock-skew-ms", str(10**13), "--poll-s", "0.02"]
        super().__init__(args, kill_at)


def _journal(journal: Path, sql: str) -> tuple | None:
    rows = journal_rows(journal, sql)
    return rows[0] if rows else None


BARS: Counter = Counter()


def _advance(emu, up: bool) -> int:
    """The market trades one more bar; counts the bars the bridge was up for and those that filled."""
    n = len(emu.state.account.trades)
    ts, *_ = emu.state.advance_bar(SYMBOL_ID)
    BARS["bars up" if up else "bars down"] += 1
    BARS["bars up that filled"] += int(up and len(emu.state.account.trades) > n)
    return ts


def engine_qty(acct, side: str) -> float:
    return abs(acct.position(SYMBOL_ID, side)[0])


def _bar_done(emu, journal: Path, p: Proc, timeout: float = 60) -> bool:
    """Advance one bar; True once the bridge journaled it, False when the bridge died first."""
    ts = _advance(emu, True)
    deadline = time.monotonic() + timeout
    while True:
        row = _journal(journal, "SELECT bar_ts FROM kstate WHERE id=1")
        if row is not None and row[0] == ts:
            return True
        if p.proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, f"bar {ts} not journaled:\n{''.join(p.lines[-20:])}"
        time.sleep(0.01)


def _check(emu, journal: Path, counts: Counter) -> None:
    """Compare the emulator's books with the journal's committed state (the bridge idles between bars)."""
    counts.update(books_check(emu.state.account, SYMBOL_ID, journal))
    counts["checks"] += 1


def test_sigkill_at_random_moments_restarts_clean(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    BARS.clear()
    emu = emulator_with_sample(days=2)
    _market_lot(emu)
    journal = tmp_path / "chaos.sqlite"
    counts: Counter = Counter()
    t0 = time.monotonic()
    p: Proc | None = None
    try:
        while counts["kills"] < KILLS:
            # two in three processes die at a crash point (each point in turn), the rest by a timer
            cycle = counts["starts"]
            how = "timer" if cycle % 3 == 2 else "point"
            point = POINTS[(cycle - cycle // 3) % len(POINTS)]
            kill_at = f"{point}:{rng.randint(1, 3)}" if how == "point" else None
            p = Proc(emu.url, journal, kill_at)
            counts["starts"] += 1
            got = p.started()
            if got == "refused":
                counts["refused restarts"] += 1
                print("".join(p.lines[-12:]))
                retry = Proc(emu.url, journal, None)  # one plain retry: is the journal still usable?
                assert retry.started() == "started", "".join(retry.lines[-12:])
                p = retry
            elif got == "killed":
                counts["kills"] += 1
                counts[f"killed at {str(kill_at).split(':')[0]} (start-up)"] += 1
                continue
            if counts["starts"] > 1:
                counts["unexplained at restart"] += p.unexplained()
            counts["ops commands"] += int(p.command("/resume"))  # a pause the journal kept ends here
            if not _bar_done(emu, journal, p):  # the crash point fired inside the first bar
                p.kill(counts)
                counts["kills"] += 1
                counts[f"killed at {kill_at.split(':')[0]}"] += 1
            else:
                _check(emu, journal, counts)
                if how == "timer":
                    # an ops command in flight when the kill comes (every start resumes a kept pause;
                    # a throttle of 1: below it rung 1's entries fall under the min notional and stop)
                    path, body = rng.choice(
                        (("/pause", b""), ("/throttle", b'{"value": 1.0}'), ("/flatten", b""))
                    )
                    counts["ops commands"] += int(p.command(path, body))
                    counts[f"in flight at a timer kill: {path}"] += 1
                    _advance(emu, True)
                    time.sleep(rng.uniform(0.0, 0.4))  # somewhere inside the bar's work, or after it
                    counts["killed by timer"] += 1
                    p.kill(counts)
                    counts["kills"] += 1
                else:
                    for _ in range(8):
                        if not _bar_done(emu, journal, p):
                            break
                    alive = p.proc.poll() is None
                    counts[f"killed at {kill_at.split(':')[0]}" if not alive else "killed by timer"] += 1
                    p.kill(counts)
                    counts["kills"] += 1
            for _ in range(rng.randint(0, 2)):  # the market moves on while the bridge is down
                _advance(emu, False)
        p = Proc(emu.url, journal, None)  # the last restart, checked after one more bar
        assert p.started() == "started", "".join(p.lines[-12:])
        counts["unexplained at restart"] += p.unexplained()
        assert _bar_done(emu, journal, p), "".join(p.lines[-12:])
        _check(emu, journal, counts)
        p.kill()
    finally:
        if p is not None:
            p.kill()
        emu.stop()
    counts["trades"] = len(emu.state.account.trades)
    counts.update(BARS)
    counts["seconds"] = round(time.monotonic() - t0)
    print("chaos counts:", json.dumps({k: int(v) for k, v in sorted(counts.items())}))
    assert counts["kills"] >= KILLS
    assert counts["checks"] >= KILLS // 3, dict(counts)  # restarts not killed in their first bar
    assert 4 * counts["bars up that filled"] > counts["bars up"], dict(counts)  # a busy market
    assert {k: counts[k] for k in FAILURES} == dict.fromkeys(FAILURES, 0), dict(counts)


def test_sigkill_between_flatten_chunks_restarts_and_closes_exactly_what_is_left(tmp_path: Path) -> None:
    """A real SIGKILL between two market orders of one `/flatten` (crash point ``chunk``).

    MARKET_LOT_SIZE maxQty 0.001 on the exchange and in the venue file, so every position goes out in
    0.001 orders. Bars are traded until the bridge holds a position; `/flatten` kills it after the first
    0.001. The restart (same journal) reconciles with that chunk pending (no unexplained exposure), carries
    on with the queued flatten and closes exactly what the exchange still holds: the flatten's trades sum
    to the position at the command, side by side; engine and exchange end flat, every check at 0.
    """
    emu = emulator_with_sample(days=2)
    _market_lot(emu)
    venue = MARKET_LOT
    journal = tmp_path / "flatten.sqlite"
    acct = emu.state.account
    p: Proc | None = None
    try:
        p = Proc(emu.url, journal, "chunk:1", venue)
        assert p.started() == "started", "".join(p.lines[-12:])
        for _ in range(60):
            assert _bar_done(emu, journal, p), "".join(p.lines[-12:])
            held = {s: engine_qty(acct, s) for s in ("LONG", "SHORT")}
            if max(held.values()) >= 0.002 - EPS:
                break
        else:
            raise AssertionError("no position of 0.002 or more in 60 bars")
        trades_before = len(acct.trades)
        assert p.command("/flatten")
        assert p.proc.wait(timeout=60) == -signal.SIGKILL  # died at the crash point, after one chunk
        first = acct.trades[trades_before:]
        assert [round(t.qty, 9) for t in first] == [0.001]
        p = Proc(emu.url, journal, None, venue)
        assert p.started() == "started", "".join(p.lines[-12:])
        assert p.unexplained() == 0
        deadline = time.monotonic() + 60
        while max(engine_qty(acct, s) for s in ("LONG", "SHORT")) > EPS:
            assert time.monotonic() < deadline, "".join(p.lines[-12:])
            time.sleep(0.05)
        closes: Counter = Counter()
        for t in acct.trades[trades_before:]:
            closes[t.position_side] += t.qty
            assert round(t.qty, 9) == 0.001
        assert {s: round(q, 9) for s, q in closes.items()} == {s: round(q, 9) for s, q in held.items() if q}
        print("flattened across the kill (held, closed):", held, dict(closes))
        counts: Counter = Counter()
        assert _bar_done(emu, journal, p), "".join(p.lines[-12:])
        _check(emu, journal, counts)
        assert {k: counts[k] for k in FAILURES} == dict.fromkeys(FAILURES, 0), dict(counts)
        st = np.frombuffer(_journal(journal, "SELECT state FROM kstate WHERE id=1")[0], dtype=np.float64)
        assert (st[S_LONG_QTY], st[S_SHORT_QTY]) == (0.0, 0.0)
    finally:
        if p is not None:
            p.kill()
        emu.stop()
