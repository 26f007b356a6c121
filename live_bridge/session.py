"""The live bridge's engine driver: one strategy's kernel state stepped one closed bar at a time.

No trading logic lives here. Paper and replay call the engine's own bar step ``engine.step.step_nb``
(the simulated venue included) on growing arrays, so a replay writes the ledgers ``gridctl backtest``
writes. Live calls the same bar step without its simulated venue: ``bar_open_nb`` and ``bar_close_nb``
(missing input, data gap, funding, regime, mark, gates, decide, record; ``step_close``), after the
exchange's fills are booked with ``fill_slot_nb``; exchange errors go to ``record_error_nb`` and
post-only rejections to the engine's retry kernels (``post_only_reject_nb``, ``retry_price_nb``,
``retry_rests_nb``). ``path_nb`` (the simulated venue) is never called live.

Funding is revealed as it happens: the kernels see every settlement at or before the current close
plus the next settlement's time (its rate NaN until it settles), which is all the kernels read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

from gridctl.configs.errors import GridctlError
from gridctl.configs.schema import StrategyConfig, VenueConfig
from gridctl.data.timeframes import timeframe_ms
from gridctl.engine.accounting import finish_daily_stats_nb
from gridctl.engine.contexts import Bars, Detail, Funding, Records, Sim
from gridctl.engine.enums import FillKind, Liquidity, Side
from gridctl.engine.fills import (
    RANK_ENTRY,
    RANK_SL,
    RANK_TP,
    fill_slot_nb,
    post_only_reject_nb,
    retries_enabled_nb,
    retry_price_nb,
    retry_rests_nb,
)
from gridctl.engine.params import (
    P_ADX_LEN,
    P_ATR_LEN,
    P_EMA_SLOW,
    P_SLIPPAGE_BPS,
    REGIME_SLOTS,
    build_params,
)
from gridctl.engine.records import (
    C_EQUITY,
    C_EVENTS,
    C_FILLS,
    C_FUNDING,
    C_OVERFLOW,
    EQUITY_DTYPE,
    EVENT_DTYPE,
    FILL_DTYPE,
    FUNDING_DTYPE,
    new_counters,
    summarize_states,
)
from gridctl.engine.regime import new_regime_state, regime_fill_nb, warmup_bars
from gridctl.engine.risk import close_side_nb, record_error_nb, trip_breaker_nb
from gridctl.engine.run import RunOutput, read_only
from gridctl.engine.state import (
    S_DIRTY,
    S_EQUITY,
    S_FG_UNTIL,
    S_LIQUIDATED,
    S_LONG_QTY,
    S_MARGIN_RATIO,
    S_REGIME,
    S_SHORT_QTY,
    S_WALLET,
    SL_LOT_FEE,
    SL_LOT_ON,
    SL_LOT_QTY,
    SL_ORD_ON,
    SL_ORD_QTY,
    KernelState,
    cancel_entries_nb,
    init_state,
    refresh_triggers_nb,
)
from gridctl.engine.step import STEP_STOP, bar_close_nb, bar_open_nb, step_nb

#: Free rows every record buffer keeps before a bar is stepped (a bar writes far fewer).
_HEADROOM = 256
_RANK = {"entry": RANK_ENTRY, "tp": RANK_TP, "sl": RANK_SL}


@dataclass
class BarRows:
    """Ledger rows one bar (or one booking) added: row ranges into the session's buffers."""

    fills: tuple[int, int]
    funding: tuple[int, int]
    events: tuple[int, int]


@dataclass
class FundingBook:
    """Settlements known so far (time, rate, mark) and the next settlement's time."""

    ts: list[int] = field(default_factory=list)
    rate: list[float] = field(default_factory=list)
    mark: list[float] = field(default_factory=list)
    next_ts: int | None = None


def _grow(buf: np.ndarray, need: int) -> np.ndarray:
    if buf.shape[0] >= need:
        return buf
    out = np.empty(max(need, 2 * buf.shape[0], 16), buf.dtype)
    out[: buf.shape[0]] = buf
    return out


class EngineSession:
    """Kernel state, the bars seen so far, the funding known so far and the ledgers written so far."""

    def __init__(
        self, strategy: StrategyConfig, venue: VenueConfig, symbol: str, timeframe: str, capacity: int = 4096
    ) -> None:
        self.strategy = strategy
        self.venue = venue
        self.symbol = symbol
        self.timeframe = timeframe
        self.bar_ms = timeframe_ms(timeframe)
        self.params = build_params(
            strategy, venue, SimpleNamespace(symbol=symbol, bar_ms=self.bar_ms, timeframe=timeframe)
        )
        self.vec = self.params.vector
        self.br = self.params.brackets
        self.ks = init_state(self.vec)
        cap = max(int(capacity), 16)
        self._new_ledgers(cap)
        self.ts = np.zeros(cap, np.int64)
        self.open = np.zeros(cap)
        self.high = np.zeros(cap)
        self.low = np.zeros(cap)
        self.close = np.zeros(cap)
        self.reg = np.zeros(cap, np.int8)
        # No detail bars live: every bar walks its own OHLC (didx rows (0, 0); see engine.run.no_detail).
        self._dts = read_only(np.zeros(0, np.int64))
        self._dpx = read_only(np.zeros(0))
        self._didx = read_only(np.zeros((cap, 2), np.int64))
        self.n = 0
        self.regime_state = new_regime_state()
        self.warm_bars = 0
        self.funding = FundingBook()
        # Funding arrays are replaced whole, never written in place: read-only, like the backtest's.
        self._fts = read_only(np.zeros(0, np.int64))
        self._frate = read_only(np.zeros(0))
        self._fmark = read_only(np.zeros(0))
        self.finished = False

    # --- facts

    @property
    def warmup_needed(self) -> int:
        """Bars of history the regime indicators need (``engine.regime.warmup_bars``)."""
        v = self.vec
        return warmup_bars(int(v[P_ADX_LEN]), int(v[P_EMA_SLOW]), int(v[P_ATR_LEN]))

    @property
    def state(self) -> np.ndarray:
        return self.ks.state

    @property
    def slots(self) -> np.ndarray:
        return self.ks.slots

    @property
    def liquidated(self) -> bool:
        return self.ks.state[S_LIQUIDATED] != 0.0

    def account_figures(self) -> tuple[float, float, float]:
        """The account's (equity, wallet balance, margin ratio) as the engine knows them. A single run's
        account is its own state: equity and margin ratio at the last mark, the wallet after every
        booking (a basket's member answers for the basket's account: ``MemberSession``)."""
        st = self.ks.state
        return float(st[S_EQUITY]), float(st[S_WALLET]), float(st[S_MARGIN_RATIO])

    @property
    def last_close(self) -> float:
        return float(self.close[self.n - 1]) if self.n else math.nan

    @property
    def last_ts(self) -> int | None:
        return int(self.ts[self.n - 1]) if self.n else None

    # --- inputs

    def warm(
        self, ts: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray, open_: np.ndarray
    ) -> int:
        """Feed closed history bars to the regime indicators only (no trading); returns bars used."""
        if self.n:
            raise GridctlError("warm-up must come before the first traded bar")
        m = len(close)
        out = np.empty(m, np.int8)
        self._regime(out, open_, high, low, close)
        self.warm_bars += m
        if m:
            self.ks.state[S_REGIME] = float(out[-1])
            self.ks.state[S_DIRTY] = 1.0
        return m

    def set_funding(self, settled: list[tuple[int, float, float]], next_ts: int | None) -> bool:
        """Merge settlements ``(time, rate, mark)`` (new ones must be later) and the next settlement's time.

        Returns True when the kernels' funding arrays changed. A settlement older than one already
        known is ignored (the exchange repeats history); the prefix the kernels indexed never moves.
        """
        book = self.funding
        changed = False
        for t, r, m in sorted(settled):
            if book.ts and t <= book.ts[-1]:
                continue
            book.ts.append(int(t))
            book.rate.append(float(r) if r is not None else math.nan)
            book.mark.append(float(m) if m is not None else math.nan)
            changed = True
        nxt = int(next_ts) if next_ts is not None else None
        if nxt is not None and book.ts and nxt <= book.ts[-1]:
            nxt = None
        if nxt != book.next_ts:
            book.next_ts = nxt
            changed = True
        if changed:
            extra = [book.next_ts] if book.next_ts is not None else []
            self._fts = read_only(np.array(book.ts + extra, np.int64))
            self._frate = read_only(np.array(book.rate + [math.nan] * len(extra)))
            self._fmark = read_only(np.array(book.mark + [math.nan] * len(extra)))
            self.ks.state[S_FG_UNTIL] = -np.inf  # the guard's cache was keyed on the old series
        return changed

    @property
    def funding_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The kernels' funding series so far: settlement times, rates, marks (read-only)."""
        return self._fts, self._frate, self._fmark

    def attach(self, ks: KernelState) -> None:
        """Use ``ks`` as this symbol's kernel state (a basket's: its row of the account's states and
        slots, the account's error and order-pacing rings), before anything was stepped or warmed."""
        if self.n or self.warm_bars:
            raise GridctlError("a session joins an account before its first bar")
        self.ks = ks

    def append_bar(self, t: int, o: float, h: float, lo: float, c: float) -> int:
        """Append closed bar ``t`` and advance the regime indicators over it; returns its index."""
        if self.n and t <= self.ts[self.n - 1]:
            raise GridctlError(f"bar {t} is not after the last bar {int(self.ts[self.n - 1])}")
        if self.n == self.ts.shape[0]:
            for name in ("ts", "open", "high", "low", "close", "reg"):
                setattr(self, name, _grow(getattr(self, name), 2 * self.n))
            self._didx = read_only(np.zeros((self.ts.shape[0], 2), np.int64))
        k = self.n
        self.ts[k], self.open[k], self.high[k], self.low[k], self.close[k] = t, o, h, lo, c
        self._regime(self.reg[k : k + 1], self.open[k : k + 1], self.high[k : k + 1], self.low[k : k + 1],
                     self.close[k : k + 1])  # fmt: skip
        self.n = k + 1
        return k

    def _regime(self, out: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray) -> None:
        """Advance the regime indicators over bars ``o/h/lo/c`` into ``out`` (read-only float64 inputs,
        the backtest's ``regime_fill_nb`` signature)."""
        adx, fast, slow, atr, hyst, thr = (self.vec[i] for i in REGIME_SLOTS)
        bars = (read_only(np.ascontiguousarray(x, np.float64)) for x in (o, h, lo, c))
        regime_fill_nb(
            out, self.regime_state, *bars,
            int(adx), int(fast), int(slow), int(atr), float(hyst), float(thr),
        )  # fmt: skip

    def _new_ledgers(self, cap: int) -> None:
        """The ledgers (fills, funding, events, equity) and their counters, empty."""
        self.cnt = new_counters(record=True, curves=True)
        self.fills = np.empty(1024, FILL_DTYPE)
        self.fund = np.empty(256, FUNDING_DTYPE)
        self.ev = np.empty(1024, EVENT_DTYPE)
        self.eq = np.empty(cap, EQUITY_DTYPE)

    def load_ledger(self, attr: str, recs: np.ndarray) -> None:
        """A restart (``journal.Journal.restore``): the journaled rows of ledger ``attr`` (``fills``,
        ``fund``, ``ev`` or ``eq``) as that ledger's first rows (counters are restored apart)."""
        buf = _grow(getattr(self, attr), len(recs) + _HEADROOM)
        buf[: len(recs)] = recs
        setattr(self, attr, buf)

    def _room(self) -> None:
        c = self.cnt
        self.fills = _grow(self.fills, int(c[C_FILLS]) + _HEADROOM)
        self.fund = _grow(self.fund, int(c[C_FUNDING]) + _HEADROOM)
        self.ev = _grow(self.ev, int(c[C_EVENTS]) + _HEADROOM)
        self.eq = _grow(self.eq, int(c[C_EQUITY]) + 2)

    def _marks(self) -> tuple[int, int, int]:
        return int(self.cnt[C_FILLS]), int(self.cnt[C_FUNDING]), int(self.cnt[C_EVENTS])

    def _rows(self, before: tuple[int, int, int]) -> BarRows:
        after = self._marks()
        if self.cnt[C_OVERFLOW] != 0:  # pragma: no cover - _room keeps far more headroom than a bar writes
            raise RuntimeError("ledger buffer overflow in the live session")
        return BarRows((before[0], after[0]), (before[1], after[1]), (before[2], after[2]))

    # --- paper / replay: the engine's own bar step, simulated venue included

    def step_paper(self, t: int, o: float, h: float, lo: float, c: float) -> BarRows:
        """Run one closed bar through ``engine.step.step_nb`` (DESIGN.md steps 1-8)."""
        if self.liquidated:
            raise GridctlError("the account was liquidated: the session is over")
        k = self.append_bar(t, o, h, lo, c)
        self._room()
        before = self._marks()
        # Read-only views of the bar arrays (written here in place): the backtest's kernel signature.
        bars = Bars(
            read_only(self.ts),
            read_only(self.open),
            read_only(self.high),
            read_only(self.low),
            read_only(self.close),
            self.reg,
        )
        detail = Detail(self._dts, self._dpx, self._dpx, self._dpx, self._dpx, self._didx)
        step_nb(k, bars, self._funding(), detail, self._sim(), self._records())
        return self._rows(before)

    def _sim(self) -> Sim:
        """This symbol's parameters, brackets, state, slots and rings (engine/contexts.py)."""
        ks = self.ks
        return Sim(self.vec, self.br, ks.state, ks.slots, ks.err_ring, ks.ord_ring)

    def _records(self) -> Records:
        """The ledger buffers as they are now (``_room`` may replace them) and their counters."""
        return Records(self.fills, self.fund, self.ev, self.eq, self.cnt)

    def _funding(self) -> Funding:
        return Funding(self._fts, self._frate, self._fmark)

    # --- live: the engine's bar close, fills and errors from the exchange

    def step_close(
        self, t: int, o: float, h: float, lo: float, c: float, entries_allowed: bool = True
    ) -> BarRows:
        """One closed bar with the exchange's fills already booked: the engine's ``bar_open_nb`` and
        ``bar_close_nb`` (the backtest's bar step without its simulated venue). ``entries_allowed``
        False (a pause) cancels the resting entries instead of deciding."""
        if self.liquidated:
            raise GridctlError("the account was liquidated: the session is over")
        k = self.append_bar(t, o, h, lo, c)
        self._room()
        before = self._marks()
        funding, sim, rec = self._funding(), self._sim(), self._records()
        # bar_open_nb's answer (input present) is recorded in S_MISSING, which bar_close_nb reads.
        bar_open_nb(k, t, o, h, lo, c, funding, sim, rec)
        bar_close_nb(k, t, h, lo, c, self.reg, funding, bool(entries_allowed), sim, rec)
        return self._rows(before)

    # --- live: the engine's post-only retry ladder against the exchange's answers

    def retries_enabled(self) -> bool:
        """Post-only rejections get retries (``retries_enabled_nb``: the strategy's execution switches)."""
        return bool(retries_enabled_nb(self.vec))

    def post_only_rejected(
        self, side: int, level: int, price: float, attempt: int, now_ms: float, ts: int
    ) -> bool:
        """The exchange rejected entry ``level`` of ``side`` at ``price`` as post-only (``attempt`` 0: the
        first try): ``post_only_reject_nb``. True when the error tripped the breaker (no retries)."""
        self._room()
        slots = self.ks.slots
        idx = level - 1
        qty = float(slots[side, idx, SL_ORD_QTY])
        tripped = post_only_reject_nb(
            self._sim(), self._records(), side, idx, float(price), qty, int(attempt), float(now_ms), int(ts)
        )
        refresh_triggers_nb(self.ks.state, slots)
        return bool(tripped)

    def retry_price(self, side: int, level: int, p0: float, attempt: int, now_ms: float, ts: int) -> float:
        """Price of post-only retry ``attempt`` (1..) of the entry first sent at ``p0``
        (``retry_price_nb``); NaN when the retries stop, the reason recorded by the engine."""
        self._room()
        slots = self.ks.slots
        idx = level - 1
        qty = float(slots[side, idx, SL_ORD_QTY])
        return float(
            retry_price_nb(
                self._sim(), self._records(), side, idx, float(p0), qty, int(attempt), float(now_ms), int(ts)
            )
        )

    def retry_rests(self, side: int, level: int, price: float) -> None:
        """The exchange accepted a retry at ``price``: the entry rests there (``retry_rests_nb``)."""
        slots = self.ks.slots
        idx = level - 1
        retry_rests_nb(slots, side, idx, float(price), float(slots[side, idx, SL_ORD_QTY]), self.n - 1)
        refresh_triggers_nb(self.ks.state, slots)

    def block_entries(self) -> None:
        """Cancel every resting entry in the slot array (exits stay); the next decision re-plans."""
        cancel_entries_nb(self.ks.state, self.ks.slots)

    def book_fill(
        self, side: int, level: int, kind: str, price: float, qty: float, liquidity: int, ts: int
    ) -> BarRows:
        """Book an exchange fill of rung ``level`` (entry, or the lot's tp / sl) with ``fill_slot_nb``."""
        self._room()
        before = self._marks()
        st, slots = self.ks.state, self.ks.slots
        idx = level - 1
        if not 0 <= idx < slots.shape[1]:
            raise GridctlError(f"fill for level {level}: the ladder has {slots.shape[1]} levels")
        if kind == "entry":
            slots[side, idx, SL_ORD_ON] = 1.0
            slots[side, idx, SL_ORD_QTY] = qty
        elif slots[side, idx, SL_LOT_ON] == 0.0:
            raise GridctlError(f"{kind} fill for level {level} side {side}: the engine holds no lot there")
        fill_slot_nb(
            self._sim(), self._records(), side, idx, _RANK[kind], float(price), int(liquidity), int(ts)
        )
        refresh_triggers_nb(st, slots)
        return self._rows(before)

    def book_partial_exit(
        self, side: int, level: int, kind: str, price: float, qty: float, liquidity: int, ts: int
    ) -> BarRows:
        """Book ``qty`` of a lot's TP / SL (a partial fill): the lot is split, the filled part closed with
        ``fill_slot_nb``; the rest stays open with the lot's entry price, TP and SL and its share of the
        entry fee. ``qty`` at or above the lot's closes the whole lot (``book_fill``)."""
        slots = self.ks.slots
        idx = level - 1
        if not 0 <= idx < slots.shape[1] or slots[side, idx, SL_LOT_ON] == 0.0:
            raise GridctlError(f"{kind} fill for level {level} side {side}: the engine holds no lot there")
        lot = slots[side, idx].copy()
        total = float(lot[SL_LOT_QTY])
        if qty >= total - 1e-12:
            return self.book_fill(side, level, kind, price, qty, liquidity, ts)
        share = qty / total
        slots[side, idx, SL_LOT_QTY] = qty
        slots[side, idx, SL_LOT_FEE] = lot[SL_LOT_FEE] * share
        rows = self.book_fill(side, level, kind, price, qty, liquidity, ts)
        slots[side, idx] = lot
        slots[side, idx, SL_LOT_QTY] = total - qty
        slots[side, idx, SL_LOT_FEE] = lot[SL_LOT_FEE] * (1.0 - share)
        refresh_triggers_nb(self.ks.state, slots)
        return rows

    def lots_qty(self, side: int) -> float:
        """The engine's open lots on ``side`` (0 long, 1 short): the quantity its stops must cover."""
        s = self.ks.slots[side]
        return float(s[s[:, SL_LOT_ON] != 0.0, SL_LOT_QTY].sum())

    def trip_breaker(self, now_ms: float, ts: int) -> bool:
        """Open the circuit breaker now (entries cancelled until its cooldown ends); False when it is
        disabled or already open."""
        self._room()
        return bool(
            trip_breaker_nb(self.ks.state, self.ks.slots, float(now_ms), self.vec, self.ev, self.cnt, int(ts))
        )

    def book_flatten(self, side: int, price: float, ts: int, liquidity: int = Liquidity.TAKER) -> BarRows:
        """Book the close of all of ``side`` at ``price`` (kind flatten) with ``close_side_nb``."""
        self._room()
        before = self._marks()
        close_side_nb(
            self.ks.state,
            self.ks.slots,
            side,
            float(price),
            FillKind.FLATTEN,
            liquidity,
            int(ts),
            self.vec,
            self.fills,
            self.cnt,
        )
        refresh_triggers_nb(self.ks.state, self.ks.slots)
        return self._rows(before)

    def taker_close_price(self, side: int) -> float:
        """The price a market close of ``side`` books at the last close: less (long) or plus (short) the
        slippage, as the engine's drawdown halt closes (``engine.risk.drawdown_halt_nb``)."""
        slip = float(self.vec[P_SLIPPAGE_BPS]) * 1e-4
        return self.last_close * (1.0 - slip if side == Side.LONG else 1.0 + slip)

    def paper_flatten(self, ts: int) -> BarRows:
        """Operator flatten in paper mode: entries cancelled, both sides closed at the last close as taker."""
        self.block_entries()
        rows = self.book_flatten(Side.LONG, self.taker_close_price(Side.LONG), ts)
        rows2 = self.book_flatten(Side.SHORT, self.taker_close_price(Side.SHORT), ts)
        return BarRows((rows.fills[0], rows2.fills[1]), rows.funding, rows.events)

    def record_error(self, now_ms: float, ts: int) -> bool:
        """An exchange error enters the circuit-breaker window; True when it tripped the breaker."""
        self._room()
        return bool(
            record_error_nb(
                self.ks.state,
                self.ks.slots,
                self.ks.err_ring,
                float(now_ms),
                self.vec,
                self.ev,
                self.cnt,
                int(ts),
            )
        )

    # --- results

    def position(self) -> tuple[float, float]:
        return float(self.ks.state[S_LONG_QTY]), float(self.ks.state[S_SHORT_QTY])

    def output(self) -> RunOutput:
        """The ledgers so far as a ``RunOutput`` (closes the daily stats once: call at the end)."""
        if not self.finished:
            finish_daily_stats_nb(self.ks.state)
            self.finished = True
        c = self.cnt
        row = summarize_states(self.ks.state[None, :], self.vec[None, :])[0]
        summary = {name: float(row[name]) for name in row.dtype.names}
        meta: dict[str, Any] = dict(self.params.meta)
        meta.update(
            bars=self.n,
            bars_total=self.n,
            reruns=0,
            warmup_bars=self.warmup_needed,
            liquidated=bool(summary["liquidated"]),
            liquidated_at=None if np.isnan(summary["liquidated_ts"]) else int(summary["liquidated_ts"]),
            halted_at=None if np.isnan(summary["halted_ts"]) else int(summary["halted_ts"]),
        )
        return RunOutput(
            fills=self.fills[: c[C_FILLS]].copy(),
            funding=self.fund[: c[C_FUNDING]].copy(),
            events=self.ev[: c[C_EVENTS]].copy(),
            equity=self.eq[: c[C_EQUITY]].copy(),
            summary=summary,
            params=self.params,
            meta=meta,
        )


__all__ = ["STEP_STOP", "BarRows", "EngineSession"]
