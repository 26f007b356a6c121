"""The live bridge's basket driver: several symbols on one account, stepped one closed bar at a time.

No trading logic and no account bookkeeping live here. Each aligned timestamp goes through the
engine's own ``engine.basket.basket_bar_nb`` - the kernel ``run_basket_nb`` loops over in a basket
backtest - on growing per-symbol arrays: every symbol's bar step (the simulated venue included, as
a paper session does), the others' contributions in each symbol's ``S_X_*`` slots, the one wallet,
the account's error and order-pacing rings, its breaker, drawdown halt and liquidation. So a paper
basket writes the ledgers ``run_basket`` writes over the same bars (tests/live_bridge/test_live_basket.py).

Per symbol, an ``EngineSession`` keeps what is I/O: its bars, its regime indicators advanced bar by
bar, and the funding its feed revealed so far (every settlement at or before the close plus the next
one's time), exactly as a single-symbol session does.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import numpy as np

from gridctl.configs.errors import GridctlError
from gridctl.configs.schema import StrategyConfig, VenueConfig
from gridctl.engine.basket import (
    ACCOUNT_EQUITY_DTYPE,
    BAR_GO,
    BAR_OVERFLOW,
    N_ACC_INFO,
    N_SHARED,
    N_WORK,
    BasketOutput,
    basket_bar_nb,
    basket_finish_nb,
    basket_outputs,
    basket_start_nb,
    check_account_params,
    new_account,
    stack_params,
)
from gridctl.engine.records import (
    C_EQUITY,
    C_EVENTS,
    C_FILLS,
    C_FUNDING,
    EQUITY_DTYPE,
    EVENT_DTYPE,
    FILL_DTYPE,
    FUNDING_DTYPE,
    new_counters,
)
from gridctl.engine.run import no_detail, read_only
from gridctl.engine.state import S_LIQUIDATED, KernelState
from gridctl.live_bridge.replay import basket_replay
from gridctl.live_bridge.session import EngineSession

#: Free rows every per-symbol record buffer keeps before a timestamp is stepped (a bar writes far fewer).
_HEADROOM = 256

#: One symbol's closed bar at an aligned timestamp: (open, high, low, close), or None for no bar.
Ohlc = tuple[float, float, float, float] | None


def _widen(buf: np.ndarray, need: int) -> np.ndarray:
    """``buf`` (rows = symbols) with at least ``need`` columns, the old columns kept."""
    if buf.shape[1] >= need:
        return buf
    out = np.zeros((buf.shape[0], max(need, 2 * buf.shape[1], 16)), buf.dtype)
    out[:, : buf.shape[1]] = buf
    return out


class BasketSession:
    """A basket's kernel state on one account, the aligned bars seen so far and the ledgers so far."""

    def __init__(
        self,
        strategies: Mapping[str, StrategyConfig],
        venue: VenueConfig,
        timeframe: str,
        capacity: int = 4096,
    ) -> None:
        self.symbols = tuple(strategies)
        if not self.symbols:
            raise GridctlError("a basket needs at least one symbol")
        self.venue = venue
        self.timeframe = timeframe
        self.sessions = {
            sym: EngineSession(strat, venue, sym, timeframe, capacity) for sym, strat in strategies.items()
        }
        self.params = [self.sessions[sym].params for sym in self.symbols]
        check_account_params(self.symbols, self.params)
        self.vecs, self.brs, self.nbr, levels = stack_params(self.params)
        self.states, self.slots, self.errs, self.ords, self.acc = new_account(self.vecs, levels)
        for i, sym in enumerate(self.symbols):  # each symbol's session works on the account's rows
            self.sessions[sym].attach(KernelState(self.states[i], self.slots[i], self.errs, self.ords))
        n_sym = len(self.symbols)
        cap = max(int(capacity), 16)
        self.ts = np.zeros(cap, np.int64)
        self.op = np.zeros((n_sym, cap))
        self.hi = np.zeros((n_sym, cap))
        self.lo = np.zeros((n_sym, cap))
        self.cl = np.zeros((n_sym, cap))
        self.regs = np.zeros((n_sym, cap), np.int8)
        self.n = 0
        empty = no_detail(0)  # no detail bars live: every bar walks its own OHLC
        self._det = (empty.ts, empty.open, empty.high, empty.low, empty.close)
        self._didx = read_only(np.zeros((n_sym, cap, 2), np.int64))
        self.fills = np.empty((n_sym, 1024), FILL_DTYPE)
        self.fund = np.empty((n_sym, 256), FUNDING_DTYPE)
        self.ev = np.empty((n_sym, 1024), EVENT_DTYPE)
        self.eq = np.empty((n_sym, cap), EQUITY_DTYPE)
        self.cnts = np.stack([new_counters(record=True, curves=True) for _ in self.symbols])
        self.rows = np.empty(cap, ACCOUNT_EQUITY_DTYPE)
        self.info = np.zeros(N_ACC_INFO, np.int64)
        self.work = np.zeros((n_sym, N_WORK))
        self.shared = np.empty(N_SHARED)
        basket_start_nb(self.states, self.info, self.work, self.shared)
        self._funding()
        self.finished = False

    # --- facts

    @property
    def liquidated(self) -> bool:
        return self.acc[S_LIQUIDATED] != 0.0

    # --- inputs

    def set_funding(self, symbol: str, settled: list[tuple[int, float, float]], next_ts: int | None) -> bool:
        """Merge ``symbol``'s settlements and next settlement time (``EngineSession.set_funding``)."""
        changed = self.sessions[symbol].set_funding(settled, next_ts)
        if changed:
            self._funding()
        return changed

    def _funding(self) -> None:
        """The kernels' funding arrays: every symbol's series concatenated, ``foff`` their offsets."""
        parts = [self.sessions[sym].funding_arrays for sym in self.symbols]
        off = np.zeros(len(parts) + 1, np.int64)
        off[1:] = np.cumsum([p[0].shape[0] for p in parts])
        self.foff = off
        self.fts, self.frate, self.fmark = (
            read_only(np.ascontiguousarray(np.concatenate([p[col] for p in parts]), dtype))
            for col, dtype in ((0, np.int64), (1, np.float64), (2, np.float64))
        )

    def _room(self) -> None:
        k = self.n
        if k == self.ts.shape[0]:
            grown = np.zeros(2 * k, np.int64)
            grown[:k] = self.ts
            self.ts = grown
            self.op, self.hi, self.lo, self.cl = (
                _widen(a, 2 * k) for a in (self.op, self.hi, self.lo, self.cl)
            )
            self.regs = _widen(self.regs, 2 * k)
            self._didx = read_only(np.zeros((len(self.symbols), self.ts.shape[0], 2), np.int64))
            rows = np.empty(2 * k, ACCOUNT_EQUITY_DTYPE)
            rows[:k] = self.rows[:k]
            self.rows = rows
        c = self.cnts
        self.fills = _widen(self.fills, int(c[:, C_FILLS].max()) + _HEADROOM)
        self.fund = _widen(self.fund, int(c[:, C_FUNDING].max()) + _HEADROOM)
        self.ev = _widen(self.ev, int(c[:, C_EVENTS].max()) + _HEADROOM)
        self.eq = _widen(self.eq, int(c[:, C_EQUITY].max()) + 2)

    def step_paper(self, t: int, bars: Mapping[str, Ohlc]) -> int:
        """Step aligned timestamp ``t`` (bar open, ms) with each symbol's closed bar (None or missing from
        ``bars``: no bar, the kernels' missing input) through ``engine.basket.basket_bar_nb``, simulated
        venue included. Returns the kernel's answer (``engine.basket.BAR_GO``; ``BAR_STOP`` once the
        account is liquidated)."""
        if self.liquidated:
            raise GridctlError("the account was liquidated: the session is over")
        unknown = [sym for sym in bars if sym not in self.sessions]
        if unknown:
            raise GridctlError(f"bars for {unknown}, which are not in the basket {list(self.symbols)}")
        if self.n and t <= self.ts[self.n - 1]:
            raise GridctlError(f"bar {t} is not after the last bar {int(self.ts[self.n - 1])}")
        self._room()
        k = self.n
        self.ts[k] = t
        for i, sym in enumerate(self.symbols):
            bar = bars.get(sym)
            o, h, lo, c = (math.nan,) * 4 if bar is None else (float(x) for x in bar)
            s = self.sessions[sym]
            j = s.append_bar(t, o, h, lo, c)  # its bars and its regime after this bar
            self.op[i, k], self.hi[i, k], self.lo[i, k], self.cl[i, k] = o, h, lo, c
            self.regs[i, k] = s.reg[j]
        self.n = k + 1
        dts, dop, dhi, dlo, dcl = self._det
        code = basket_bar_nb(
            k, read_only(self.ts), read_only(self.op), read_only(self.hi), read_only(self.lo),
            read_only(self.cl), self.regs, self.fts, self.frate, self.fmark, self.foff, dts, dop, dhi, dlo,
            dcl, self._didx, self.vecs, self.brs, self.nbr, self.states, self.slots, self.errs, self.ords,
            self.fills, self.fund, self.ev, self.eq, self.cnts, self.acc, self.rows, self.info, self.work,
            self.shared,
        )  # fmt: skip
        if code == BAR_OVERFLOW:  # pragma: no cover - _room keeps far more headroom than a bar writes
            raise RuntimeError("ledger buffer overflow in the live basket session")
        return int(code)

    # --- results

    def output(self) -> BasketOutput:
        """The ledgers so far as a ``BasketOutput`` (closes the daily stats once: call at the end)."""
        if not self.finished:
            basket_finish_nb(self.states, self.acc)
            self.finished = True
        dets = [
            SimpleNamespace(timeframe=None, detailed_bars=0, fallback_bars=0, warnings=())
            for _ in self.symbols
        ]
        buffers = (self.fills, self.fund, self.ev, self.eq)
        out = basket_outputs(
            self.symbols, self.params, dets, self.states, buffers, self.cnts, self.acc, self.rows, self.info,
            self.n, 0,
        )  # fmt: skip
        for sym in self.symbols:
            out.per_symbol[sym].meta["warmup_bars"] = self.sessions[sym].warmup_needed
        return out


def replay_basket(
    markets: Mapping[str, Any], strategies: Mapping[str, StrategyConfig], venue: VenueConfig
) -> BasketOutput:
    """`gridctl live --paper --replay --symbols`: the stored ``markets`` (basket order) through a
    ``BasketSession`` one aligned closed bar at a time, each symbol's funding revealed up to the close
    (``replay.basket_replay``); stops at an account liquidation. The output's meta holds
    ``replay_seconds``."""
    if tuple(markets) != tuple(strategies):
        raise GridctlError(f"replay: markets for {list(markets)}, strategies for {list(strategies)}")
    timeframes = {m.timeframe for m in markets.values()}
    if len(timeframes) != 1:
        raise GridctlError(f"a basket replay needs one timeframe, the markets have {sorted(timeframes)}")
    n = len(np.unique(np.concatenate([np.asarray(m.ts, np.int64) for m in markets.values()])))
    session = BasketSession(strategies, venue, timeframes.pop(), capacity=n + 16)
    t0 = time.perf_counter()
    for t, bars in basket_replay(dict(markets)):
        for sym, bar in bars.items():
            session.set_funding(sym, bar.settled, bar.next_funding_ms)
        if (
            session.step_paper(t, {sym: (b.open, b.high, b.low, b.close) for sym, b in bars.items()})
            != BAR_GO
        ):
            break
    elapsed = time.perf_counter() - t0
    out = session.output()
    out.meta["replay_seconds"] = elapsed
    return out


__all__ = ["BasketSession", "Ohlc", "replay_basket"]
