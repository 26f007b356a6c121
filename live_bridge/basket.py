"""The live bridge's basket driver: several symbols on one account, stepped one closed bar at a time.

No trading logic and no account bookkeeping live here. Each aligned timestamp goes through the
engine's own ``engine.basket.basket_bar_nb`` - the kernel ``run_basket_nb`` loops over in a basket
backtest - on growing per-symbol arrays: every symbol's bar step, the others' contributions in each
symbol's ``S_X_*`` slots, the one wallet, the account's error and order-pacing rings, its breaker,
drawdown halt and liquidation. Paper (``BasketSession.step_paper``) includes the simulated venue, so a
paper basket writes the ledgers ``run_basket`` writes over the same bars
(tests/live_bridge/test_live_basket.py). Live (``step_close``, driven by ``BasketBridge``) runs the same
kernel without it, after each symbol's exchange fills were booked through the account
(``MemberSession``; tests/live_bridge/test_live_basket_parity.py against the emulator).

Per symbol, a ``MemberSession`` (an ``EngineSession``) keeps what is I/O: its bars, its regime
indicators advanced bar by bar, the funding its feed revealed so far (every settlement at or before the
close plus the next one's time) and the live bookings, exactly as a single-symbol session does.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
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
    SH_SIMULATE,
    SH_WALLET,
    W_ALLOW,
    BasketOutput,
    basket_bar_nb,
    basket_finish_nb,
    basket_outputs,
    basket_start_nb,
    breaker_tripped_nb,
    check_account_params,
    enter_account_nb,
    leave_account_nb,
    new_account,
    stack_params,
)
from gridctl.engine.contexts import Account, Bars, Detail, Funding, Records, Sim
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
from gridctl.engine.state import S_EQUITY, S_LIQUIDATED, S_MARGIN_RATIO, KernelState
from gridctl.live_bridge import killpoint
from gridctl.live_bridge.bridge import Latency
from gridctl.live_bridge.ops import BasketOps
from gridctl.live_bridge.replay import basket_replay
from gridctl.live_bridge.session import BarRows, EngineSession

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


class MemberSession(EngineSession):
    """One symbol of a ``BasketSession``: its I/O as an ``EngineSession`` (bars, regime, funding, the
    live bookings the bridge makes), its kernel state the account's row, its ledgers the basket's rows.

    Every booking between bar closes (a fill, a flatten, an error, a post-only answer, a breaker trip)
    runs its kernel between ``engine.basket.enter_account_nb`` and ``leave_account_nb``: the account's
    wallet, rings and breaker go in and come back, and a breaker this symbol opened cancels every other
    symbol's entries (``breaker_tripped_nb``). Its bar steps go through the basket, never alone.
    """

    def __init__(
        self, basket: BasketSession, index: int, strategy: StrategyConfig, venue: VenueConfig, symbol: str,
        timeframe: str, capacity: int,
    ) -> None:  # fmt: skip
        self._basket = basket
        self._i = index
        super().__init__(strategy, venue, symbol, timeframe, capacity)

    # The ledgers and counters are views of the basket's row of this symbol, read-only as attributes:
    # the basket owns and grows the buffers (``BasketSession._room``), rows are written in place.
    fills = property(lambda self: self._basket.fills[self._i])
    fund = property(lambda self: self._basket.fund[self._i])
    ev = property(lambda self: self._basket.ev[self._i])
    eq = property(lambda self: self._basket.eq[self._i])
    cnt = property(lambda self: self._basket.cnts[self._i])

    def account_figures(self) -> tuple[float, float, float]:
        """The basket's account, not this symbol's view of it (its row's equity mixes the other symbols'
        earlier closes): equity and margin ratio at the account's last close (every symbol's), the one
        wallet after every booking."""
        b = self._basket
        return float(b.acc[S_EQUITY]), float(b.shared[SH_WALLET]), float(b.acc[S_MARGIN_RATIO])

    def _new_ledgers(self, cap: int) -> None:
        """None of its own: its ledgers are the basket's rows (made by ``BasketSession``)."""

    def _room(self) -> None:
        self._basket._room()

    def load_ledger(self, attr: str, recs: np.ndarray) -> None:
        """A restart (``Journal.restore``): this symbol's journaled ledger rows into the basket's row
        (the basket's buffer widened for every symbol when they need it)."""
        b = self._basket
        setattr(b, attr, _widen(getattr(b, attr), len(recs) + _HEADROOM))
        getattr(b, attr)[self._i, : len(recs)] = recs

    def set_funding(self, settled: list[tuple[int, float, float]], next_ts: int | None) -> bool:
        changed = super().set_funding(settled, next_ts)
        if changed:
            self._basket._funding()
        return changed

    def step_paper(self, t: int, o: float, h: float, lo: float, c: float) -> BarRows:
        raise GridctlError(f"{self.symbol} is one symbol of a basket: its bars step through the basket")

    def step_close(
        self, t: int, o: float, h: float, lo: float, c: float, entries_allowed: bool = True
    ) -> BarRows:
        raise GridctlError(f"{self.symbol} is one symbol of a basket: its bars step through the basket")

    def _booking(self, method: Any, *args: Any) -> Any:
        self._basket.enter(self._i)
        try:
            return method(*args)
        finally:
            self._basket.leave(self._i)

    def book_fill(self, *args: Any) -> BarRows:
        return self._booking(super().book_fill, *args)

    def book_flatten(self, *args: Any) -> BarRows:
        return self._booking(super().book_flatten, *args)

    def record_error(self, *args: Any) -> bool:
        return self._booking(super().record_error, *args)

    def trip_breaker(self, *args: Any) -> bool:
        return self._booking(super().trip_breaker, *args)

    def post_only_rejected(self, *args: Any) -> bool:
        return self._booking(super().post_only_rejected, *args)

    def retry_price(self, *args: Any) -> float:
        return self._booking(super().retry_price, *args)


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
            sym: MemberSession(self, i, strat, venue, sym, timeframe, capacity)
            for i, (sym, strat) in enumerate(strategies.items())
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
        """Merge ``symbol``'s settlements and next settlement time (``EngineSession.set_funding``; the
        member rebuilds the basket's funding arrays when they changed)."""
        return self.sessions[symbol].set_funding(settled, next_ts)

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

    def account_arrays(self) -> dict[str, np.ndarray]:
        """The account's shared state for the basket checkpoint (``journal.BasketJournal.save``), fixed
        in size: the kernel rows of every symbol and the account's rings, ``acc`` (wallet, peak, flags and
        accumulators), the info / work / shared arrays and the number of bars stepped."""
        return {
            "n": np.array([self.n], np.int64), "states": self.states, "slots": self.slots, "errs": self.errs,
            "ords": self.ords, "acc": self.acc, "info": self.info, "work": self.work, "shared": self.shared,
        }  # fmt: skip

    @property
    def bar_dtype(self) -> np.dtype:
        """One aligned bar of the account: its time, every symbol's OHLC and regime, the account row."""
        m = len(self.symbols)
        return np.dtype(
            [("ts", "i8"), ("op", "f8", m), ("hi", "f8", m), ("lo", "f8", m), ("cl", "f8", m),
             ("regs", "i1", m), ("row", ACCOUNT_EQUITY_DTYPE)]
        )  # fmt: skip

    def bar_records(self, start: int) -> np.ndarray:
        """Aligned bars ``start`` .. ``n - 1`` as ``bar_dtype`` records (the checkpoint appends them)."""
        k = np.arange(start, self.n)
        out = np.zeros(len(k), self.bar_dtype)
        out["ts"] = self.ts[k]
        for name in ("op", "hi", "lo", "cl", "regs"):
            out[name] = getattr(self, name)[:, k].T
        out["row"] = self.rows[k]
        return out

    def load_account(self, arrays: Mapping[str, np.ndarray], bars: np.ndarray) -> None:
        """A restart: the journaled ``account_arrays`` and ``bar_records`` back, after every symbol's own
        ``Journal.restore`` (which must have restored the same number of bars: the basket checkpoint is
        one transaction)."""
        n = int(arrays["n"][0])
        behind = {sym: s.n for sym, s in self.sessions.items() if s.n != n}
        if behind or len(bars) != n:
            raise GridctlError(
                f"the journal's account is at bar {n} ({len(bars)} rows), its symbols at {behind}"
            )
        for name in ("states", "slots", "errs", "ords", "acc", "info", "work", "shared"):
            mine = getattr(self, name)
            if arrays[name].shape != mine.shape:
                raise GridctlError(
                    f"journaled {name} has shape {arrays[name].shape}, this basket needs {mine.shape}"
                )
            mine[...] = arrays[name]
        while self.ts.shape[0] <= n:
            self.n = self.ts.shape[0]
            self._room()
        self.n = n
        self.ts[:n] = bars["ts"]
        self.rows[:n] = bars["row"]
        for name in ("op", "hi", "lo", "cl", "regs"):
            getattr(self, name)[:, :n] = bars[name].T
        self._room()

    def enter(self, i: int) -> None:
        """Before a booking of symbol ``i`` between closes: the account's facts into its row."""
        enter_account_nb(self.states[i], self.shared)

    def leave(self, i: int) -> None:
        """After it: the account takes them back; a breaker symbol ``i`` opened cancels every other
        symbol's entries (``breaker_tripped_nb``; before the first bar nothing rests)."""
        if leave_account_nb(self.states[i], self.shared) and self.n:
            breaker_tripped_nb(
                self.n - 1,
                i,
                self.hi,
                self.lo,
                self.cl,
                self.brs,
                self.nbr,
                self.states,
                self.slots,
                self.work,
            )

    def step_paper(self, t: int, bars: Mapping[str, Ohlc]) -> int:
        """Step aligned timestamp ``t`` (bar open, ms) with each symbol's closed bar (None or missing from
        ``bars``: no bar, the kernels' missing input) through ``engine.basket.basket_bar_nb``, simulated
        venue included. Returns the kernel's answer (``engine.basket.BAR_GO``; ``BAR_STOP`` once the
        account is liquidated)."""
        return self._step(t, bars, True, {})

    def step_close(self, t: int, bars: Mapping[str, Ohlc], allowed: Mapping[str, bool]) -> int:
        """Live: the account's bar close at ``t`` after every symbol's exchange fills were booked: the same
        ``basket_bar_nb`` without the simulated venue (``SH_SIMULATE`` 0). ``allowed[symbol]`` False (a
        pause of that symbol's bridge) cancels its resting entries instead of deciding."""
        return self._step(t, bars, False, allowed)

    def _step(self, t: int, bars: Mapping[str, Ohlc], simulate: bool, allowed: Mapping[str, bool]) -> int:
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
        self.shared[SH_SIMULATE] = 1.0 if simulate else 0.0
        for i, sym in enumerate(self.symbols):
            self.work[i, W_ALLOW] = 1.0 if allowed.get(sym, True) else 0.0
        dts, dop, dhi, dlo, dcl = self._det
        ro = [read_only(a) for a in (self.ts, self.op, self.hi, self.lo, self.cl)]
        bars_k = Bars(*ro, self.regs)
        code = basket_bar_nb(
            k,
            bars_k,
            Funding(self.fts, self.frate, self.fmark),
            self.foff,
            Detail(dts, dop, dhi, dlo, dcl, self._didx),
            Sim(self.vecs, self.brs, self.states, self.slots, self.errs, self.ords),
            self.nbr,
            Records(self.fills, self.fund, self.ev, self.eq, self.cnts),
            Account(self.acc, self.rows, self.info, self.work, self.shared),
        )
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
        rec = Records(self.fills, self.fund, self.ev, self.eq, self.cnts)
        account = Account(self.acc, self.rows, self.info, self.work, self.shared)
        out = basket_outputs(self.symbols, self.params, dets, self.states, rec, account, self.n, 0)
        for sym in self.symbols:
            out.per_symbol[sym].meta["warmup_bars"] = self.sessions[sym].warmup_needed
        return out


class SharedAccountRead:
    """A basket's one read of the exchange account (totals and every symbol's positions, two requests:
    ``CcxtGateway.accounts``) per fills poll and per bar, in place of one read per symbol.

    ``read`` takes it; ``take(symbol)`` hands each symbol its view once (a second read of the symbol in
    the same poll, a protection check's re-read after a repair, goes to the exchange again: ``None``);
    ``clear`` drops what is left, so no view outlives its poll or bar. A read that failed raises its
    error from every symbol's ``take``: each symbol's fail-closed check sees the failure (an unreadable
    account pauses entries on every symbol), never an older view.
    """

    def __init__(self, gateway: Any, symbols: tuple[str, ...]) -> None:
        self.gw = gateway
        self.symbols = symbols
        self._views: dict[str, Any] = {}
        self._error: Exception | None = None
        self._owed: set[str] = set()
        self._income: dict[str, Any] = {}
        self._income_error: Exception | None = None
        self._income_owed: set[str] = set()
        # the latest funding row time of the last income read, any symbol (None: none read)
        self.income_seen_ts: int | None = None

    def read(self, income_since: int | None = None) -> None:
        """Read the account (and, ``income_since`` given, the funding income of every symbol since then:
        ``CcxtGateway.funding_payments_all``, one history for all; only when the account was read, as a
        symbol reads its income only after its account)."""
        from gridctl.live_bridge.gateway import GatewayError

        self._owed = set(self.symbols)
        try:
            self._views, self._error = dict(self.gw.accounts(self.symbols)), None
        except GatewayError as err:
            self._views, self._error = {}, err
        missing = self._owed - set(self._views)
        if self._error is None and missing:  # a gateway answering for fewer symbols: those read alone
            self._owed -= missing
        if income_since is None or self._error is not None:
            return
        self._income_owed, self.income_seen_ts = set(self.symbols), None
        try:
            self._income, self._income_error = (
                dict(self.gw.funding_payments_all(self.symbols, income_since)),
                None,
            )
        except GatewayError as err:
            self._income, self._income_error = {}, err
        if self._income_error is None:
            self._income_owed &= set(self._income)
            seen = [ts for rows in self._income.values() for ts, _ in rows]
            self.income_seen_ts = max(seen) if seen else None

    def take_income(self, symbol: str) -> Any:
        """``symbol``'s funding income rows of the last read (since the earliest cursor: the bridge keeps
        those at or after its own), once; None when there are none to use (read it yourself)."""
        if symbol not in self._income_owed:
            return None
        self._income_owed.discard(symbol)
        if self._income_error is not None:
            raise self._income_error
        return self._income.pop(symbol)

    def take(self, symbol: str) -> Any:
        """``symbol``'s view of the last read, once; None when there is none to use (read it yourself)."""
        if symbol not in self._owed:
            return None
        self._owed.discard(symbol)
        if self._error is not None:
            raise self._error
        return self._views.pop(symbol)

    def clear(self) -> None:
        self._views, self._error, self._owed = {}, None, set()
        self._income, self._income_error, self._income_owed = {}, None, set()

    @contextmanager
    def shared(self, income_since: int | None = None) -> Iterator[None]:
        """In the block the symbols' account reads (and income reads, ``income_since`` given) use one
        read taken on entry; dropped on exit."""
        self.read(income_since)
        try:
            yield
        finally:
            self.clear()


class BasketBridge:
    """``--live`` (or ``--paper`` on the exchange's feed) on a basket: one ``Bridge`` per symbol over one
    account.

    Each symbol's bridge keeps what is per symbol - its order diff, protection (every position's stop
    coverage, checked per symbol), post-only retries, exchange fills and status - and they share one
    gateway, so one ``RequestPacer`` keeps every request of the account within the exchange's windows.
    A closed bar time runs ``Bridge.on_bar``'s pieces for every symbol with the account's one bar close
    in the middle: every bridge opens its bar (commands, funding, input checks) and books its exchange
    fills (each booking through the account: ``MemberSession``), then ``BasketSession.step_close`` steps
    the account (``engine.basket.basket_bar_nb``, no simulated venue; a paused symbol's entries are
    cancelled instead of decided), then every bridge sends its order diff (and closes a new halt on the
    exchange), retries, reads back and checks its protection; then one basket checkpoint (``checkpoint``:
    every symbol and the account in one transaction of the basket's journal). ``--paper`` steps the
    account with the simulated venue (``BasketSession.step_paper``) after every bridge opened its bar; a
    paused symbol's resting entries are cancelled after the step, as ``Bridge.on_bar`` does on paper.
    ``latency`` is the account's, one sample per bar time (``ops``: the basket's ops state, whose ``/status``
    ``total.latency`` it is published to).
    """

    def __init__(
        self,
        session: BasketSession,
        bridges: Mapping[str, Any],
        journal: Any = None,
        ops: BasketOps | None = None,
    ) -> None:
        if tuple(bridges) != session.symbols:
            raise GridctlError(f"bridges for {list(bridges)}, the basket is {list(session.symbols)}")
        modes = {b.o.mode for b in bridges.values()}
        if len(modes) != 1 or not modes <= {"live", "paper"}:
            raise GridctlError(f"a basket's bridges run in one mode, --live or --paper, not {sorted(modes)}")
        for sym, bridge in bridges.items():
            if bridge.s is not session.sessions[sym]:
                raise GridctlError(f"{sym}: a basket bridge drives the basket's own session")
        gateways = {id(b.gw) for b in bridges.values()}
        if len(gateways) != 1:
            raise GridctlError("the symbols of a basket trade through one gateway (one account, one pacer)")
        self.session = session
        self.bridges = dict(bridges)
        self.mode = modes.pop()
        # live: the account read once per poll and per bar for every symbol (the gateway's ``accounts``)
        self.shared_account: SharedAccountRead | None = None
        one = next(iter(bridges.values())).gw
        if self.mode == "live":
            self.shared_account = SharedAccountRead(one, tuple(self.bridges))
            for bridge in self.bridges.values():
                bridge.shared_account = self.shared_account
        self.journal = (
            journal  # journal.BasketJournal: every symbol's checkpoint and the account's, one commit
        )
        self.warm_ts: dict[str, int | None] = {}  # each feed's last warm-up bar (a restart before any bar)
        # The account's bar latency, one sample per bar time: bar received -> the account's bar done (paper:
        # its one step; live: the last symbol's first-attempt orders sent). On /status as total.latency.
        self.latency = Latency()
        self.ops = ops
        if ops is not None and any(b.ops is not ops.members[sym] for sym, b in self.bridges.items()):
            raise GridctlError("a basket's bridges publish to their members of the basket's ops state")
        if journal is not None:
            for sym, bridge in self.bridges.items():
                if bridge.journal is not journal.members[sym]:
                    raise GridctlError(
                        f"{sym}: a basket bridge journals to its table set of the basket's file"
                    )
                bridge.checkpoint_with = self.checkpoint

    def checkpoint(self) -> None:
        """The basket's checkpoint: every symbol's engine row, fills and order statuses since the last one
        and the account's shared state, in ONE transaction (``journal.BasketJournal.save``)."""
        if self.journal is not None:
            extras = {
                sym: {**b.checkpoint_extra(), "warm_ts": self.warm_ts.get(sym)}
                for sym, b in self.bridges.items()
            }
            self.journal.save(self.session, extras)

    def on_bars(self, t: int, bars: Mapping[str, Any]) -> int:
        """Process closed bar time ``t``: ``bars[symbol]`` is each symbol's ``ClosedBar`` at ``t`` (a symbol
        missing from it has no bar: NaN OHLC, its bridge opens nothing). Returns the kernel's answer."""
        t0 = time.perf_counter()
        unknown = [sym for sym in bars if sym not in self.bridges]
        if unknown:
            raise GridctlError(f"bars for {unknown}, which are not in the basket {list(self.bridges)}")
        for sym, bar in bars.items():
            if bar.ts != t:
                raise GridctlError(f"{sym}: bar {bar.ts} given for time {t}")
            self.bridges[sym].open_bar(bar)
        if self.mode == "paper":  # the simulated venue fills, as Bridge.on_bar's paper branch
            ohlc = {sym: (b.open, b.high, b.low, b.close) for sym, b in bars.items()}
            code = self.session.step_paper(t, ohlc)
            for b in self.bridges.values():
                if not b.entries_allowed:
                    b.s.block_entries()
            self.latency.add((time.perf_counter() - t0) * 1000.0)  # one step for the account, no copies
            self._end_bars()
            return code
        marks = {}
        for sym, b in self.bridges.items():
            marks[sym] = b.book_bar(t0)
            killpoint.hit("member")  # test-only: die after one symbol's bookings, before the next's
        allowed = {sym: b.entries_allowed for sym, b in self.bridges.items()}
        ohlc = {sym: (b.open, b.high, b.low, b.close) for sym, b in bars.items()}
        code = self.session.step_close(t, ohlc, allowed)
        killpoint.hit("bar")
        for sym, b in self.bridges.items():
            b.send_bar(t0, *marks[sym], read=False)
        with self.shared_read(income=True):  # every symbol's orders out: one account read for all of them
            for b in self.bridges.values():
                b.read_after_bar()
        # each symbol's sample: the bar received -> its orders sent (they go out one symbol after another)
        self.latency.add(max(b.latency.samples_ms[-1] for b in self.bridges.values()))
        self._end_bars()
        return code

    def shared_read(self, income: bool = False) -> AbstractContextManager[None]:
        """The block's account reads (and funding income reads: ``income``, at a bar) on one read for
        every symbol (live; else each reads its own)."""
        if self.shared_account is None:
            return nullcontext()
        since = min(b._income_cursor for b in self.bridges.values()) if income else None
        return self.shared_account.shared(since)

    def _end_bars(self) -> None:
        """After the bar: one basket checkpoint (``Bridge.end_bar`` per symbol would commit it N times),
        then every symbol's published state and the account's latency."""
        if self.ops is not None:
            self.ops.publish_account({"latency": self.latency.summary()})
        if self.journal is not None:
            self.checkpoint()
            for b in self.bridges.values():
                b.publish()
        else:
            for b in self.bridges.values():
                b.end_bar()


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


__all__ = ["BasketBridge", "BasketSession", "MemberSession", "Ohlc", "SharedAccountRead", "replay_basket"]
