"""Shared pieces of the live-bridge and emulator tests: hand-written scenario bars and the emulator
serving them, a sample market, a paper bridge, a two-symbol basket on the emulator, and the chaos
campaigns' process harness and book checks."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from gridctl.configs.loader import load_strategy, load_venue
from gridctl.data.market import Market, market_from_arrays
from gridctl.data.sample import SAMPLE_SYMBOL, generate_sample
from gridctl.engine.regime import warmup_bars
from gridctl.engine.state import N_SLOT, S_LONG_QTY, S_SHORT_QTY
from gridctl.live_bridge.bridge import Bridge
from gridctl.live_bridge.ops import OpsState
from gridctl.live_bridge.orders import desired_orders, parse_client_id
from gridctl.live_bridge.replay import ClosedBar, ReplayFeed
from gridctl.live_bridge.runner import bridge_options
from gridctl.live_bridge.session import EngineSession


def sample_market(days: int = 1, seed: int = 7) -> Market:
    candles, _mark, funding = generate_sample(days, seed=seed)
    return market_from_arrays(
        SAMPLE_SYMBOL,
        "1m",
        candles["ts"].to_numpy(),
        candles["open"].to_numpy(),
        candles["high"].to_numpy(),
        candles["low"].to_numpy(),
        candles["close"].to_numpy(),
        candles["volume"].to_numpy(),
        funding["ts"].to_numpy(),
        funding["rate"].to_numpy(),
        funding["mark_price"].to_numpy(),
    )


def sample_bars(days: int = 1, seed: int = 7) -> list[ClosedBar]:
    return list(ReplayFeed(sample_market(days, seed)))


def paper_bridge(
    overrides: list[str] | None = None, ops: OpsState | None = None, now_ms: Any = None
) -> Bridge:
    strategy = load_strategy("default", overrides or [])
    venue = load_venue("binance_futures")
    session = EngineSession(strategy, venue, SAMPLE_SYMBOL, "1m")
    kw = {"now_ms": now_ms} if now_ms is not None else {}
    return Bridge(session, bridge_options(strategy, "paper", "t1"), ops=ops, **kw)


SYMBOL_ID = "BTCUSDT"
EMU_ENV = {
    "BINANCE_API_KEY": "emu-api-key",
    "BINANCE_API_SECRET": "emu-api-secret",
    "GRIDCTL_OPS_TOKEN": "tok",
}
HISTORY_BARS = 60


def emulator_with_sample(days: int = 1, seed: int = 7, history: int = HISTORY_BARS) -> Any:
    """A started emulator replaying the sample market: ``history`` bars already closed, funding served."""
    import polars as pl

    from emulator.binance_usdm import BinanceUsdmEmulator

    candles, _mark, funding = generate_sample(days, seed=seed)
    emu = BinanceUsdmEmulator().start()
    emu.state.set_funding(
        SYMBOL_ID, funding.rename({"ts": "funding_time"}).select("funding_time", "rate", "mark_price")
    )
    start = int(candles["ts"][history])
    emu.state.replay(
        SYMBOL_ID,
        "1m",
        candles.select(pl.col("ts"), "open", "high", "low", "close", "volume"),
        start_ms=start,
    )
    return emu


@contextmanager
def running_emulator(monkeypatch: Any = None) -> Iterator[Any]:
    """``emulator_with_sample()`` for the block, stopped after it; with ``monkeypatch``, the emulator's
    credentials and ops token (``EMU_ENV``) are in the environment too."""
    for k, v in EMU_ENV.items() if monkeypatch is not None else ():
        monkeypatch.setenv(k, v)
    emu = emulator_with_sample()
    try:
        yield emu
    finally:
        emu.stop()


def prepare_live_on_emulator(
    strategy: Any, venue: Any, journal: Any, token: str | None = None, **options: Any
) -> tuple[Any, Any]:
    """``runner.prepare`` of a ``--live`` BTC/USDT:USDT run on the emulator: ops API on a free port, any
    clock skew allowed (the emulator replays the past), and the gateway's request budget on the run's
    clock (the emulator's clock jumps a bar per advance). ``token`` defaults to $GRIDCTL_OPS_TOKEN;
    ``options`` are other ``LiveOptions`` fields (or replace these)."""
    from gridctl.live_bridge.exchange import CcxtGateway
    from gridctl.live_bridge.options import LiveOptions
    from gridctl.live_bridge.runner import ExchangeClock, prepare

    clock = ExchangeClock()
    gateway = CcxtGateway(venue, live=True, clock=lambda: clock.now_ms() / 1000.0)
    fields = {
        "mode": "live",
        "symbol": "BTC/USDT:USDT",
        "journal": journal,
        "ops_port": 0,
        "max_skew_ms": 10**13,
    }
    opts = LiveOptions(**{**fields, **options})
    ops_token = token if token is not None else os.environ["GRIDCTL_OPS_TOKEN"]
    return prepare(strategy, venue, opts, ops_token, gateway=gateway, clock=clock)


def emulator_venue(url: str, extra: list[str] | None = None) -> Any:
    """The production venue file aimed at the emulator; the emulator's BTCUSDT min notional is 100."""
    return load_venue("binance_futures", [f"api.base_url={url}", *(extra or [])])


# -- hand-derived scenarios on the emulator (BTCUSDT: tick 0.1, step 0.001, min notional 100) ----------
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
MIN = 60_000
FLAT = [(40000.0, 40000.0, 40000.0, 40000.0)] * 5  # five flat history bars before every scenario


def scenario_bars(*ohlc: tuple[float, float, float, float]) -> Any:
    """A 1m frame (ts, open, high, low, close, volume): ``FLAT`` then the scenario bars, from ``T0``."""
    import polars as pl

    rows = FLAT + list(ohlc)
    return pl.DataFrame(
        {
            "ts": [T0 + i * MIN for i in range(len(rows))],
            "open": [r[0] for r in rows],
            "high": [r[1] for r in rows],
            "low": [r[2] for r in rows],
            "close": [r[3] for r in rows],
            "volume": [1.0] * len(rows),
        }
    )


def scenario_state(*ohlc: tuple[float, float, float, float], hedge: bool = True) -> Any:
    """Emulator state replaying ``scenario_bars(*ohlc)`` for BTCUSDT, its clock at the first scenario bar."""
    from emulator.binance_usdm import EmulatorState

    state = EmulatorState(now_ms=T0 + 5 * MIN)
    state.replay("BTCUSDT", "1m", scenario_bars(*ohlc))
    state.account.dual_side = hedge
    return state


@contextmanager
def serving(state: Any) -> Iterator[Any]:
    """The emulator serving ``state`` on 127.0.0.1 for the block (the tests' ``emu`` fixtures)."""
    from emulator.binance_usdm import BinanceUsdmEmulator

    with BinanceUsdmEmulator(state) as server:
        yield server


# -- chaos: a `gridctl live` subprocess killed and restarted, and the books it must leave straight ----------
#: What every chaos check counts that must stay 0 (tests/live_bridge/test_live_chaos.py and
#: test_live_basket_chaos.py), per symbol where the check is per symbol.
FAILURES = (
    "crashes",
    "refused restarts",
    "unexplained at restart",
    "lost orders",
    "duplicated orders",
    "orphaned orders",
    "foreign orders",
    "position mismatches",
    "trades not booked exactly once",
    "positions without full stop coverage",
)
EPS = 1e-9


class LiveProc:
    """One `python -m gridctl.cli live ...` subprocess (``args`` after ``live``) with the emulator's
    credentials; ``kill_at`` arms a crash point (live_bridge/killpoint.py). Its stderr lines are kept."""

    def __init__(self, args: list[str], kill_at: str | None) -> None:
        env = {**os.environ, **EMU_ENV}
        env.pop("GRIDCTL_KILL_AT", None)
        if kill_at:
            env["GRIDCTL_KILL_AT"] = kill_at
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gridctl.cli", "live", *args],
            cwd=Path(__file__).resolve().parents[1],
            env=env,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def started(self, timeout: float = 240) -> str:
        """``started``, ``killed`` (SIGKILL before serving) or ``refused`` (exited by itself)."""
        deadline = time.monotonic() + timeout
        while not any("ops API on" in x for x in self.lines):
            rc = self.proc.poll()
            if rc is not None:
                time.sleep(0.1)  # let the reader drain stderr
                return "killed" if rc == -signal.SIGKILL else "refused"
            assert time.monotonic() < deadline, "".join(self.lines)
            time.sleep(0.02)
        return "started"

    def command(self, path: str, body: bytes = b"") -> bool:
        """POST an ops command (the bridge applies it between polls); True when it was queued (202)."""
        url = next(x for x in self.lines if "ops API on" in x).split("ops API on ")[1].strip()
        req = urllib.request.Request(
            f"{url}{path}", data=body, method="POST", headers={"Authorization": "Bearer tok"}
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status == 202
        except OSError:
            return False  # killed meanwhile

    def status(self) -> Any:
        """Its ``/status`` (None when it does not answer)."""
        url = next(x for x in self.lines if "ops API on" in x).split("ops API on ")[1].strip()
        req = urllib.request.Request(f"{url}/status", headers={"Authorization": "Bearer tok"})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return json.loads(resp.read())
        except OSError:
            return None

    def kill(self, counts: Counter | None = None) -> None:
        """SIGKILL it (if still running); a process that had exited by itself otherwise is a crash."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        elif self.proc.returncode != -signal.SIGKILL and counts is not None:
            counts["crashes"] += 1
            print("".join(self.lines[-20:]))
        self.proc.wait(timeout=30)

    def unexplained(self) -> int:
        """Lines of its start-up that found exposure the journal could not explain."""
        lines = [x for x in self.lines if "UNEXPLAINED" in x]
        if lines:
            print("UNEXPLAINED AT RESTART", lines)
        return len(lines)


def journal_rows(path: Any, sql: str) -> list | None:
    """``sql``'s rows from a journal opened read-only; None while it is missing or locked."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()
    except sqlite3.OperationalError:
        return None


def trades_on(acct: Any, symbol_id: str) -> int:
    """The emulator account's trades on ``symbol_id`` (its own record)."""
    return sum(1 for t in acct.trades if t.symbol == symbol_id)


def books_check(acct: Any, symbol_id: str, journal: Any, prefix: str = "") -> Counter:
    """One symbol's books on the emulator against a journal's committed state (``prefix``: a basket
    member's tables, live_bridge.runner.member_prefix). Counts of ``FAILURES`` (all must be 0):

    - lost orders (the engine's slots want an order that does not rest; or ours rests and the journal
      has no sending / open row for it; or the journal has one that does not rest), duplicated orders
      (two resting for one slot: side, level, kind), orphaned orders (ours resting, not wanted), foreign
      orders (not this run's client ids);
    - position mismatches (engine vs exchange, per side);
    - positions without full stop coverage (our resting stops of a side sum to less than its position);
    - trades not booked exactly once (the journal's fills by trade id vs the exchange's trades).
    """
    ((run_id,),) = journal_rows(journal, "SELECT value FROM meta WHERE key='run_id'")
    ((state_blob, slots_blob),) = journal_rows(journal, f"SELECT state, slots FROM {prefix}kstate WHERE id=1")
    st = np.frombuffer(state_blob, dtype=np.float64)
    slots = np.frombuffer(slots_blob, dtype=np.float64).reshape(2, -1, N_SLOT)
    wanted = {w.key for w in desired_orders(slots, True)}
    counts: Counter = Counter()
    keys: Counter = Counter()
    stops = {"LONG": 0.0, "SHORT": 0.0}
    foreign: set[str] = set()
    for o in acct.open_orders(symbol_id):
        p = parse_client_id(o.client_id)
        if p is None or p.run_id != run_id:
            counts["foreign orders"] += 1
            foreign.add(o.client_id)
            continue
        closing = (o.position_side, o.side) in (("LONG", "SELL"), ("SHORT", "BUY"))
        if o.type == "STOP_MARKET" and closing:
            stops[o.position_side] += o.remaining
        if p.kind not in ("guard", "flatten"):
            keys[(p.side, p.level, p.kind)] += 1
    # the journal's own order rows: every order of ours resting is one it sent, and every one it has as
    # sending / open rests (a kill in a send leaves ``sending``; the restart's reconcile settles it)
    ours = {o.client_id for o in acct.open_orders(symbol_id)} - foreign
    journaled = {
        r[0]
        for r in journal_rows(
            journal, f"SELECT client_id FROM {prefix}orders WHERE status IN ('sending', 'open')"
        )
        or []
    }
    counts["lost orders"] += len(ours - journaled) + len(journaled - ours)
    engine = {"LONG": st[S_LONG_QTY], "SHORT": st[S_SHORT_QTY]}
    held = {side: abs(acct.position(symbol_id, side)[0]) for side in ("LONG", "SHORT")}
    counts["duplicated orders"] += sum(n - 1 for n in keys.values())
    counts["lost orders"] += len(wanted - set(keys))
    counts["orphaned orders"] += len(set(keys) - wanted)
    for side in ("LONG", "SHORT"):
        counts["position mismatches"] += int(abs(held[side] - engine[side]) > EPS)
        counts["positions without full stop coverage"] += int(stops[side] < held[side] - EPS)
    ((booked, distinct),) = journal_rows(
        journal, f"SELECT COUNT(*), COUNT(DISTINCT trade_id) FROM {prefix}xfills"
    )
    counts["trades not booked exactly once"] += int(booked != distinct) + abs(
        distinct - trades_on(acct, symbol_id)
    )
    if +counts:
        log = journal_rows(journal, f"SELECT kind, detail FROM {prefix}log ORDER BY id DESC LIMIT 25") or []
        print(f"CHECK FAILED {symbol_id}", dict(+counts), "wanted", sorted(wanted), "resting", sorted(keys),
              "stops", stops, "engine", engine, "exchange", held, "not journaled", sorted(ours - journaled),
              "journaled, not resting", sorted(journaled - ours))  # fmt: skip
        print("  log", log[::-1])
    return counts


# -- a two-symbol basket on the emulator (one account) ---------------------------------------------------
BTC, ETH = "BTC/USDT:USDT", "ETH/USDT:USDT"
IDS = {BTC: "BTCUSDT", ETH: "ETHUSDT"}
TICK = {BTC: 0.1, ETH: 0.01}
SCALE = {BTC: (7, 1.0), ETH: (11, 20.0)}  # sample seed, price divisor
HOUR = 3_600_000


def basket_frames(symbol: str, n: int, flat: int, days: int = 1) -> tuple[Any, Any]:
    """``flat`` bars at the first price (the regime warm-up), then ``n`` bars of the seeded sample scaled
    to ``symbol`` (ETH: a twentieth of BTC's price, on its 0.01 tick); and its funding."""
    import polars as pl

    seed, scale = SCALE[symbol]
    tick = TICK[symbol]
    candles, _mark, funding = generate_sample(days, seed=seed)
    prices = ("open", "high", "low", "close")
    bars = candles.head(n).select("ts", *prices, "volume")
    bars = bars.with_columns(((pl.col(c) / scale / tick).round() * tick).round(2) for c in prices)
    t0, p0 = int(bars["ts"][0]), float(bars["open"][0])
    pre = pl.DataFrame(
        {
            "ts": [t0 - (flat - i) * MIN for i in range(flat)],
            **{c: [p0] * flat for c in prices},
            "volume": [1.0] * flat,
        }
    ).cast(bars.schema)
    funding = funding.select("ts", "rate", pl.col("mark_price") / scale)
    first = pl.DataFrame({"ts": [t0 - 8 * HOUR], "rate": [0.0001], "mark_price": [p0]}).cast(funding.schema)
    return pl.concat([pre, bars]), pl.concat([first, funding])


def basket_emulator(sets: list[str], n: int = 200, days: int = 1) -> Any:
    """A started emulator serving BTC and ETH (``basket_frames``) on one account of 10,000 USDT, the
    warm-up of the strategy ``sets`` make already closed."""
    from emulator.binance_usdm import BinanceUsdmEmulator, EmulatorState

    r = load_strategy("default", sets).regime
    start = warmup_bars(r.adx_len, r.ema_slow, r.atr_len)
    state = EmulatorState()
    for sym in (BTC, ETH):
        frame, funding = basket_frames(sym, n, start + 1, days)
        state.set_funding(IDS[sym], funding.rename({"ts": "funding_time"}))
        state.replay(IDS[sym], "1m", frame, start_ms=int(frame["ts"][start]))
    state.account.wallet = 10_000.0
    return BinanceUsdmEmulator(state).start()
