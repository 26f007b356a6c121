"""Basket driver: several symbols' hedge grids against one cross-margin wallet (DESIGN.md "Baskets").

Each symbol keeps its own kernel state, ladder, funding, exchange rules and brackets; the account
(the wallet, the circuit breaker and its error ring, the order-pacing ring, the equity peak) is
shared. The single-symbol kernels (``bar_open_nb``, ``bar_path_nb``, ``bar_close_nb``) are the one
copy of the trading logic: before each symbol's path and before its close the driver writes "the
rest of the account" into its ``S_X_*`` slots (the other symbols' unrealized PnL, maintenance margin
and gross notional), and after each symbol's step the account takes its wallet.

Bars are aligned on the union of the symbols' timestamps; a symbol without a bar at ``t`` gets NaN
OHLC there (the kernels' missing input: ``INPUT_MISSING``, no fills, entries cancelled).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

from gridctl.configs.errors import GridctlError
from gridctl.configs.schema import StrategyConfig, VenueConfig
from gridctl.engine.accounting import daily_stats_nb, finish_daily_stats_nb, mark_to_market_nb
from gridctl.engine.contexts import Account, Bars, Detail, Funding, Records, Sim
from gridctl.engine.enums import EventKind, RiskState, hot_kernel, inline_kernel, kernel
from gridctl.engine.fills import liquidate_nb
from gridctl.engine.margin import account_maint_margin_nb
from gridctl.engine.params import (
    P_BAR_MS,
    P_CB_COOLDOWN_S,
    P_CB_WINDOW_S,
    P_ENABLE_CB,
    P_ENABLE_DRAWDOWN,
    P_INITIAL_BALANCE,
    P_LEVELS_LONG,
    P_LEVELS_SHORT,
    P_MAX_DAILY_LOSS_PCT,
    P_MAX_DRAWDOWN_PCT,
    P_MAX_ERRORS,
    P_ORDERS_PER_MINUTE,
    EngineParams,
    build_params,
)
from gridctl.engine.records import (
    C_CURVES,
    C_EQUITY,
    C_EVENTS,
    C_FILLS,
    C_FUNDING,
    C_OVERFLOW,
    EQUITY_DTYPE,
    EVENT_DTYPE,
    FILL_DTYPE,
    FUNDING_DTYPE,
    SUMMARY_FIELDS,
    new_counters,
    summarize_states,
)
from gridctl.engine.risk import drawdown_halt_nb
from gridctl.engine.run import (
    BARS_PER_EVENT_ROW,
    BARS_PER_FILL_ROW,
    INITIAL_CAPACITY,
    MAX_RERUNS,
    RunOutput,
    check_detail_config,
    detail_arrays,
    market_arrays,
    read_only,
    regime_series,
)
from gridctl.engine.state import (
    N_SLOT,
    N_STATE,
    S_BAR,
    S_BARS,
    S_BARS_COOLDOWN,
    S_BARS_EXPOSURE,
    S_BARS_HALTED,
    S_BARS_REDUCING,
    S_CB_ACTIVE,
    S_CB_TRIPS,
    S_CB_UNTIL,
    S_DD_PCT,
    S_EQUITY,
    S_ERR_COUNT,
    S_FIRST_TS,
    S_HALT_TS,
    S_HALTED,
    S_LAST_TS,
    S_LIQ_TS,
    S_LIQUIDATED,
    S_LONG_AVG,
    S_LONG_QTY,
    S_MARGIN_RATIO,
    S_MAX_DD_INTRABAR_PCT,
    S_MAX_DD_PCT,
    S_ORD_COUNT,
    S_PEAK,
    S_REDUCING,
    S_SHORT_AVG,
    S_SHORT_QTY,
    S_STATE,
    S_UNREAL,
    S_WALLET,
    S_X_MM,
    S_X_NOTIONAL,
    S_X_UNREAL,
    cancel_entries_nb,
    init_state_row,
    resting_notional_of_nb,
    ring_sizes,
)
from gridctl.engine.step import bar_close_nb, bar_open_nb, bar_path_nb, record_bar_nb

#: One row per aligned timestamp: the account after every symbol stepped.
ACCOUNT_EQUITY_DTYPE = np.dtype(
    [
        ("ts", "i8"),
        ("equity", "f8"),
        ("wallet_balance", "f8"),
        ("unrealized_pnl", "f8"),
        ("maint_margin", "f8"),
        ("margin_ratio", "f8"),
        ("state", "i1"),
    ]
)

#: Parameters that are the account's, not a symbol's: every symbol of a basket must agree on them.
ACCOUNT_PARAMS: dict[int, str] = {
    P_INITIAL_BALANCE: "backtest.initial_balance",
    P_MAX_DRAWDOWN_PCT: "risk_management.max_drawdown_pct",
    P_ENABLE_DRAWDOWN: "risk_management.enable_drawdown_protection",
    P_MAX_ERRORS: "risk_management.max_errors_per_minute",
    P_CB_WINDOW_S: "risk_management.circuit_breaker_window_seconds",
    P_CB_COOLDOWN_S: "risk_management.circuit_breaker_cooldown_seconds",
    P_ENABLE_CB: "risk_management.enable_circuit_breaker",
    P_MAX_DAILY_LOSS_PCT: "risk_management.max_daily_loss_pct",
    P_ORDERS_PER_MINUTE: "rate_limits.orders_per_minute",
    P_BAR_MS: "the market timeframe",
}

# Columns of the driver's per-symbol work array: the symbol's contribution to "the rest of the account".
W_LAST = 0  # last finite close (NaN before the first bar)
W_X_ADV = 1  # the bar's adverse extreme (lowest U - MM among high and low; the last close without a bar)
W_U_ADV = 2  # unrealized PnL there
W_MM_ADV = 3  # maintenance margin there
W_N_ADV = 4  # gross notional there: positions plus resting entries (at their prices)
W_U_MIN = 5  # lowest unrealized PnL over the bar's high and low (intrabar drawdown)
W_U_CL = 6  # unrealized PnL at the close (the last close without a bar)
W_MM_CL = 7  # maintenance margin there
W_N_CL = 8  # gross notional there
W_OLD_STATE = 9  # risk state of its last recorded row (an account liquidation records the bar again)
W_OLD_EXPOSED = 10  # 1 when that row held a position
W_ALLOW = 11  # 1: entries allowed at its close (0: a live pause cancels its resting entries instead)
# The inputs the price columns above were last computed from (``price_contribution_nb``): its positions,
# the bar's high and low and the last close. The columns are a function of these, the resting notional
# (``resting_notional_of_nb``) and the brackets only, so a symbol whose step left them unchanged skips the
# recomputation.
W_IN_LQ = 12
W_IN_SQ = 13
W_IN_LAVG = 14
W_IN_SAVG = 15
W_IN_HIGH = 16
W_IN_LOW = 17
W_IN_LAST = 18
N_WORK = 19

# The account's facts the driver reports back (int64 vector).
A_LIQ_SYMBOL = 0  # basket index of the symbol whose path crossed the account's maintenance margin (-1)
A_HALT_SYMBOL = 1  # basket index of the symbol whose close saw the account drawdown (-1)
A_ROWS = 2  # account equity rows written
A_STEPS = 3  # aligned timestamps stepped
N_ACC_INFO = 4


@hot_kernel
def _unreal_nb(st, x):
    return st[S_LONG_QTY] * (x - st[S_LONG_AVG]) + st[S_SHORT_QTY] * (st[S_SHORT_AVG] - x)


@hot_kernel
def step_contribution_nb(st, slots, br, h, lw, c, w):
    """``price_contribution_nb`` after a symbol's step; when its positions are the ones the price columns
    were computed from at this bar's prices, only the notional columns take the new resting notional.

    The same numbers either way: every price column is a function of the positions, ``(h, lw)``, the
    last close and the brackets (``account_maint_margin_nb`` answers from its cache exactly as from
    the brackets), and the notional columns are recomputed by the same expression.
    """
    resting = resting_notional_of_nb(st, slots)
    if c == c:
        w[W_LAST] = c
    if not (
        w[W_IN_HIGH] == h
        and w[W_IN_LOW] == lw
        and w[W_IN_LAST] == w[W_LAST]
        and w[W_IN_LQ] == st[S_LONG_QTY]
        and w[W_IN_SQ] == st[S_SHORT_QTY]
        and w[W_IN_LAVG] == st[S_LONG_AVG]
        and w[W_IN_SAVG] == st[S_SHORT_AVG]
    ):
        price_contribution_nb(st, slots, br, h, lw, c, w)
        return
    lq = st[S_LONG_QTY]
    sq = st[S_SHORT_QTY]
    if lq <= 0.0 and sq <= 0.0:
        w[W_N_ADV] = resting
        w[W_N_CL] = resting
    else:
        w[W_N_ADV] = (lq + sq) * w[W_X_ADV] + resting
        w[W_N_CL] = (lq + sq) * w[W_LAST] + resting


@hot_kernel
def close_contribution_nb(st, br, c, lw, h, w):
    """A lone symbol's work row after its step: only what the account's close reads (``W_U_CL``,
    ``W_MM_CL``, ``W_U_MIN``), computed as ``price_contribution_nb`` does (no other symbol reads the
    adverse columns)."""
    if c == c:
        w[W_LAST] = c
    last = w[W_LAST]
    w[W_IN_HIGH] = np.nan  # the other columns are stale now
    lq = st[S_LONG_QTY]
    sq = st[S_SHORT_QTY]
    if lq <= 0.0 and sq <= 0.0:
        w[W_U_MIN] = 0.0
        w[W_U_CL] = 0.0
        w[W_MM_CL] = 0.0
        return
    if h == h and lw == lw:
        w[W_U_MIN] = min(_unreal_nb(st, lw), _unreal_nb(st, h))
    else:
        w[W_U_MIN] = _unreal_nb(st, last)
    w[W_U_CL] = _unreal_nb(st, last)
    w[W_MM_CL] = account_maint_margin_nb(st, br, last)


@hot_kernel
def price_contribution_nb(st, slots, br, h, lw, c, w):
    """Fill this symbol's work row ``w`` for a bar ``(h, lw, c)`` (NaN: no bar) at its current positions.

    The adverse point is where ``U - MM`` is lowest among the bar's high and low (equity minus
    maintenance margin is concave in price, so the minimum over the range is at an end); without a
    bar it is the last close. A symbol without a position contributes only its resting entries
    (``engine.state.resting_notional_of_nb``: summed again only after its slots changed).
    """
    if c == c:
        w[W_LAST] = c
    last = w[W_LAST]
    lq = st[S_LONG_QTY]
    sq = st[S_SHORT_QTY]
    resting = resting_notional_of_nb(st, slots)
    w[W_IN_LQ] = lq
    w[W_IN_SQ] = sq
    w[W_IN_LAVG] = st[S_LONG_AVG]
    w[W_IN_SAVG] = st[S_SHORT_AVG]
    w[W_IN_HIGH] = h
    w[W_IN_LOW] = lw
    w[W_IN_LAST] = last
    if lq <= 0.0 and sq <= 0.0:
        w[W_X_ADV] = lw if lw == lw else last
        w[W_U_ADV] = 0.0
        w[W_MM_ADV] = 0.0
        w[W_N_ADV] = resting
        w[W_U_MIN] = 0.0
        w[W_U_CL] = 0.0
        w[W_MM_CL] = 0.0
        w[W_N_CL] = resting
        return
    if h == h and lw == lw:
        u_lo = _unreal_nb(st, lw)
        mm_lo = account_maint_margin_nb(st, br, lw)
        u_hi = _unreal_nb(st, h)
        mm_hi = account_maint_margin_nb(st, br, h)
        if u_lo - mm_lo <= u_hi - mm_hi:
            x, u, mm = lw, u_lo, mm_lo
        else:
            x, u, mm = h, u_hi, mm_hi
        w[W_U_MIN] = min(u_lo, u_hi)
    else:
        x = last
        u = _unreal_nb(st, x)
        mm = account_maint_margin_nb(st, br, x)
        w[W_U_MIN] = u
    w[W_X_ADV] = x
    w[W_U_ADV] = u
    w[W_MM_ADV] = mm
    w[W_N_ADV] = (lq + sq) * x + resting
    w[W_U_CL] = _unreal_nb(st, last)
    w[W_MM_CL] = account_maint_margin_nb(st, br, last)
    w[W_N_CL] = (lq + sq) * last + resting


@hot_kernel
def set_rest_of_account_nb(st, work, i, u_col, mm_col, n_col):
    """``S_X_*`` of symbol ``i``: the sums over every other symbol's work row (columns given)."""
    xu = 0.0
    xm = 0.0
    xn = 0.0
    for j in range(work.shape[0]):
        if j != i:
            xu += work[j, u_col]
            xm += work[j, mm_col]
            xn += work[j, n_col]
    st[S_X_UNREAL] = xu
    st[S_X_MM] = xm
    st[S_X_NOTIONAL] = xn


@kernel
def rerecord_bar_nb(st, eq, cnt, ts, old_state, old_exposed):
    """Record bar ``ts`` of a symbol again after the account closed it (its row was already written)."""
    st[S_BARS] -= 1.0
    if old_exposed:
        st[S_BARS_EXPOSURE] -= 1.0
    if old_state == RiskState.HALTED:
        st[S_BARS_HALTED] -= 1.0
    elif old_state == RiskState.COOLDOWN:
        st[S_BARS_COOLDOWN] -= 1.0
    elif old_state == RiskState.REDUCING:
        st[S_BARS_REDUCING] -= 1.0
    if cnt[C_CURVES] != 0 and cnt[C_EQUITY] > 0:
        cnt[C_EQUITY] -= 1
    record_bar_nb(st, eq, cnt, ts)


@kernel
def account_halt_nb(st, slots, price, p, br, fills, ev, cnt, ts):
    """The account's drawdown halt reaching this symbol: flatten at ``price`` and halt (as the gate does)."""
    if price != price:
        price = 0.0  # never had a bar: no position to flatten, nothing to mark
    mark_to_market_nb(st, price, br)
    drawdown_halt_nb(st, slots, price, p, fills, ev, cnt, ts)
    mark_to_market_nb(st, price, br)


@hot_kernel
def _exposed(st):
    return st[S_LONG_QTY] > 0.0 or st[S_SHORT_QTY] > 0.0


@hot_kernel
def _write_account_row_nb(rows, info, ts, equity, wallet, unreal, mm, state):
    i = info[A_ROWS]
    if i >= rows.shape[0]:
        return
    r = rows[i]
    r["ts"] = ts
    r["equity"] = equity
    r["wallet_balance"] = wallet
    r["unrealized_pnl"] = unreal
    r["maint_margin"] = mm
    r["margin_ratio"] = mm / equity if equity > 0.0 else np.nan
    r["state"] = state
    info[A_ROWS] = i + 1


@hot_kernel
def _account_close_nb(acc, rows, info, work, states, ts, wallet, peak):
    """The account after every symbol stepped at ``ts``: equity, peak, drawdowns, daily stats, state, row.

    Returns the (possibly new) peak.
    """
    n_sym = states.shape[0]
    unreal = 0.0
    mm = 0.0
    worst = 0.0
    exposed = False
    reducing = False
    for j in range(n_sym):
        unreal += work[j, W_U_CL]
        mm += work[j, W_MM_CL]
        worst += work[j, W_U_MIN]
        if _exposed(states[j]):
            exposed = True
        if states[j, S_REDUCING] != 0.0:
            reducing = True
    eq = wallet + unreal
    acc[S_WALLET] = wallet
    acc[S_UNREAL] = unreal
    acc[S_EQUITY] = eq
    if eq > peak:
        peak = eq
    acc[S_PEAK] = peak
    dd = (peak - eq) / peak * 100.0
    acc[S_DD_PCT] = dd
    if peak > 0.0 and dd > acc[S_MAX_DD_PCT]:
        acc[S_MAX_DD_PCT] = dd
    if exposed and peak > 0.0:
        dd_in = (peak - (wallet + worst)) / peak * 100.0
        if dd_in > acc[S_MAX_DD_INTRABAR_PCT]:
            acc[S_MAX_DD_INTRABAR_PCT] = dd_in
    acc[S_MARGIN_RATIO] = mm / eq if eq > 0.0 else np.nan
    if acc[S_LIQUIDATED] != 0.0:
        state = RiskState.LIQUIDATED
    elif acc[S_HALTED] != 0.0:
        state = RiskState.HALTED
    elif acc[S_CB_ACTIVE] != 0.0:
        state = RiskState.COOLDOWN
    elif reducing:
        state = RiskState.REDUCING
    else:
        state = RiskState.NORMAL
    acc[S_STATE] = state
    acc[S_BARS] += 1.0
    if exposed:
        acc[S_BARS_EXPOSURE] += 1.0
    if state == RiskState.HALTED:
        acc[S_BARS_HALTED] += 1.0
    elif state == RiskState.COOLDOWN:
        acc[S_BARS_COOLDOWN] += 1.0
    elif state == RiskState.REDUCING:
        acc[S_BARS_REDUCING] += 1.0
    if acc[S_FIRST_TS] != acc[S_FIRST_TS]:
        acc[S_FIRST_TS] = ts
    acc[S_LAST_TS] = ts
    daily_stats_nb(acc, ts, eq)
    _write_account_row_nb(rows, info, ts, eq, wallet, unreal, mm, state)
    return peak


@kernel
def _account_liquidation_nb(k, t, i, cl, vecs, brs, nbr, states, slots, fills, ev, eq, cnts, acc, info, work):
    """Symbol ``i``'s path crossed the account's maintenance margin at bar ``k``: everyone closes.

    ``i`` was closed by its path (at its liquidation price); every other symbol closes at the adverse
    extreme its contribution used (``liquidate_nb``: clearance charges, long first), in basket order.
    Then every symbol is marked flat and its row of bar ``k`` recorded (again, for those that had
    stepped already); the run ends.
    """
    n_sym = states.shape[0]
    acc[S_LIQUIDATED] = 1.0
    acc[S_LIQ_TS] = t
    info[A_LIQ_SYMBOL] = i
    wallet = states[i, S_WALLET]
    price_contribution_nb(states[i], slots[i], brs[i, : nbr[i]], np.nan, np.nan, np.nan, work[i])
    for j in range(n_sym):
        if j == i:
            continue
        sj = states[j]
        brj = brs[j, : nbr[j]]
        work[j, W_OLD_STATE] = sj[S_STATE]
        work[j, W_OLD_EXPOSED] = 1.0 if _exposed(sj) else 0.0
        sj[S_WALLET] = wallet
        set_rest_of_account_nb(sj, work, j, W_U_ADV, W_MM_ADV, W_N_ADV)
        x = work[j, W_X_ADV]
        if x != x:
            x = 0.0  # never had a bar: nothing to close
        liquidate_nb(sj, slots[j], x, t, vecs[j], brj, fills[j], ev[j], cnts[j])
        wallet = sj[S_WALLET]
        price_contribution_nb(sj, slots[j], brj, np.nan, np.nan, np.nan, work[j])
    for j in range(n_sym):
        sj = states[j]
        sj[S_WALLET] = wallet
        sj[S_X_UNREAL] = 0.0
        sj[S_X_MM] = 0.0
        sj[S_X_NOTIONAL] = 0.0
        c = cl[j, k]
        if c != c:
            c = work[j, W_LAST]
        mark_to_market_nb(sj, c if c == c else 0.0, brs[j, : nbr[j]])
        if j < i:
            rerecord_bar_nb(sj, eq[j], cnts[j], t, work[j, W_OLD_STATE], work[j, W_OLD_EXPOSED] != 0.0)
        else:
            if sj[S_FIRST_TS] != sj[S_FIRST_TS]:
                sj[S_FIRST_TS] = t
            sj[S_BAR] = k
            record_bar_nb(sj, eq[j], cnts[j], t)


@kernel
def breaker_tripped_nb(k, i, hi, lo, cl, brs, nbr, states, slots, work):
    """Symbol ``i`` tripped the account's breaker: every other symbol's resting entries go too."""
    for j in range(states.shape[0]):
        if j != i:
            cancel_entries_nb(states[j], slots[j])
            price_contribution_nb(
                states[j], slots[j], brs[j, : nbr[j]], hi[j, k], lo[j, k], cl[j, k], work[j]
            )


@kernel
def _account_halted_nb(
    k, t, i, wallet, hi, lo, cl, vecs, brs, nbr, states, slots, fills, ev, eq, cnts, acc, info, work
):
    """Symbol ``i``'s close saw the account's drawdown: the account halts in this step.

    The symbols that stepped before ``i`` at ``t`` flatten at their close now and record bar ``t``
    again; those after ``i`` flatten in their own step (``run_basket_nb``). Returns the wallet.
    """
    acc[S_HALTED] = 1.0
    acc[S_HALT_TS] = t
    info[A_HALT_SYMBOL] = i
    for j in range(i):
        sj = states[j]
        if sj[S_HALTED] != 0.0:
            continue
        old_state = sj[S_STATE]
        old_exposed = _exposed(sj)
        sj[S_WALLET] = wallet
        set_rest_of_account_nb(sj, work, j, W_U_CL, W_MM_CL, W_N_CL)
        brj = brs[j, : nbr[j]]
        account_halt_nb(sj, slots[j], work[j, W_LAST], vecs[j], brj, fills[j], ev[j], cnts[j], t)
        rerecord_bar_nb(sj, eq[j], cnts[j], t, old_state, old_exposed)
        wallet = sj[S_WALLET]
        price_contribution_nb(sj, slots[j], brj, hi[j, k], lo[j, k], cl[j, k], work[j])
    return wallet


# The account's running facts between aligned timestamps (float64 vector): what every symbol's row
# is loaded with before it steps and what the account takes back after.
SH_WALLET = 0  # the one wallet
SH_PEAK = 1  # the account's equity peak: the highest of its rows (every symbol at its latest close)
SH_ERR_COUNT = 2  # write position of the account's error ring
SH_ORD_COUNT = 3  # write position of the account's order-pacing ring
SH_CB_ACTIVE = 4  # the account's circuit breaker is open
SH_CB_UNTIL = 5  # ... until this time
SH_SIMULATE = 6  # 1: each bar's path is walked by the simulated venue (backtest, paper); 0: live, the
# exchange's fills were booked before the close (``enter_account_nb`` / ``leave_account_nb``)
SH_TRIPS_IN = 7  # the stepping symbol's breaker trip count when it entered (``leave_account_nb`` compares)
N_SHARED = 8

#: ``basket_bar_nb``'s answers.
BAR_GO = 0  # the account stepped this timestamp; go on
BAR_STOP = 1  # the account stepped this timestamp and the run is over (liquidation)
BAR_OVERFLOW = 2  # a record buffer filled up: the timestamp is not complete (grow the buffers, re-run)


@kernel
def basket_start_nb(states, info, work, sh):
    """The account before its first timestamp: the first symbol's wallet and peak, empty rings."""
    sh[SH_WALLET] = states[0, S_WALLET]
    sh[SH_PEAK] = states[0, S_PEAK]
    sh[SH_ERR_COUNT] = 0.0
    sh[SH_ORD_COUNT] = 0.0
    sh[SH_CB_ACTIVE] = 0.0
    sh[SH_CB_UNTIL] = -np.inf
    sh[SH_SIMULATE] = 1.0
    sh[SH_TRIPS_IN] = 0.0
    info[A_LIQ_SYMBOL] = -1
    info[A_HALT_SYMBOL] = -1
    for j in range(states.shape[0]):
        work[j, W_LAST] = np.nan
        work[j, W_ALLOW] = 1.0
        work[j, W_IN_HIGH] = np.nan  # no price columns computed yet


@hot_kernel
def enter_account_nb(st, sh):
    """Load the account's running facts (``SH_*``: wallet, peak, rings, breaker) into a symbol's row
    before any kernel of that symbol runs (its bar step, or a live booking between closes)."""
    st[S_WALLET] = sh[SH_WALLET]
    st[S_PEAK] = sh[SH_PEAK]
    st[S_ERR_COUNT] = sh[SH_ERR_COUNT]
    st[S_ORD_COUNT] = sh[SH_ORD_COUNT]
    st[S_CB_ACTIVE] = sh[SH_CB_ACTIVE]
    st[S_CB_UNTIL] = sh[SH_CB_UNTIL]
    sh[SH_TRIPS_IN] = st[S_CB_TRIPS]


@hot_kernel
def leave_account_nb(st, sh):
    """The account takes back what a symbol's kernels changed (``enter_account_nb`` before them). True
    when this symbol opened the account's breaker (every other symbol's entries must go:
    ``breaker_tripped_nb``)."""
    tripped = st[S_CB_TRIPS] != sh[SH_TRIPS_IN]  # a trip, even one its own close already reset
    sh[SH_WALLET] = st[S_WALLET]
    # The peak is not taken back: a symbol's mark mixes the others' earlier closes, an equity the account
    # never had; the account's rows raise it (``_account_close_nb``).
    sh[SH_ERR_COUNT] = st[S_ERR_COUNT]
    sh[SH_ORD_COUNT] = st[S_ORD_COUNT]
    sh[SH_CB_ACTIVE] = st[S_CB_ACTIVE]
    sh[SH_CB_UNTIL] = st[S_CB_UNTIL]
    return tripped


# ``inline_kernel``: numba pastes the whole aligned bar into ``run_basket_nb``'s loop (its one call
# site), so a backtest pays no call with its groups' ~34 arrays per bar (measured, one symbol, 1,000,000
# bars: the kernel 0.144 s as an ordinary kernel, 0.080 s inlined), and a cold run does not first
# compile the bar on its own (as a ``hot_kernel`` it was, only to be inlined by LLVM); the live session
# calls it from Python, which compiles it as an ordinary kernel there.
@inline_kernel
def basket_bar_nb(k, bars, funding, foff, detail, sims, nbr, rec, account):
    """Step aligned timestamp ``k`` through every symbol in basket order (DESIGN.md "Baskets").

    The one copy of the account's per-bar bookkeeping: ``run_basket_nb`` calls it for every bar of a
    backtest, the live bridge's basket session for every closed bar. The groups are engine/contexts.py's
    with one row per symbol: row ``i`` of ``bars.op/hi/lo/cl/reg``, ``detail.idx``, ``sims.p/st/slots``
    and ``rec.fills/fund/ev/eq/cnt`` is symbol i's (``bars.ts`` shared); its funding settlements are
    ``funding.*[foff[i]:foff[i+1]]``, ``detail.idx[i]`` indexes its detail bars in ``detail.ts..cl``,
    its brackets are ``sims.br[i, :nbr[i]]``. ``sims.errs`` / ``sims.ords`` are the account's rings;
    ``account`` holds the account's state vector (summary accumulators), its equity rows, the facts
    ``A_*``, the work rows and the running facts ``SH_*`` (``basket_start_nb``). Returns ``BAR_GO``,
    ``BAR_STOP`` or ``BAR_OVERFLOW``.

    Long because: one pass over the symbols in basket order, each symbol's step interleaved with the
    account's bookkeeping (its work row, the rest of the account, a liquidation or halt reaching the
    others), which reads and writes the same locals.
    """
    ts, op, hi, lo, cl, regs = bars  # the groups' fields in engine/contexts.py order
    fts, frate, fmark = funding
    dts, dop, dhi, dlo, dcl, didx = detail
    vecs, brs, states, slots, errs, ords = sims
    fills, fund, ev, eq, cnts = rec
    acc, rows, info, work, sh = account
    n_sym = states.shape[0]
    simulate = sh[SH_SIMULATE] != 0.0
    stop = False
    t = ts[k]
    if n_sym > 1:  # the others' contributions at bar k (a symbol's own is refreshed after its step)
        # The first symbol's would be read only by itself before its step refreshes it (its liquidation
        # refreshes it too), so only its last close is taken.
        c0 = cl[0, k]
        if c0 == c0:
            work[0, W_LAST] = c0
        for j in range(1, n_sym):
            price_contribution_nb(
                states[j], slots[j], brs[j, : nbr[j]], hi[j, k], lo[j, k], cl[j, k], work[j]
            )
    for i in range(n_sym):
        st = states[i]
        sl = slots[i]
        p = vecs[i]
        br = brs[i, : nbr[i]]
        cnt = cnts[i]
        f_i = fills[i]
        ev_i = ev[i]
        fts_i = fts[foff[i] : foff[i + 1]]
        frate_i = frate[foff[i] : foff[i + 1]]
        fmark_i = fmark[foff[i] : foff[i + 1]]
        enter_account_nb(st, sh)
        o = op[i, k]
        h = hi[i, k]
        lw = lo[i, k]
        c = cl[i, k]
        halting = acc[S_HALTED] != 0.0 and st[S_HALTED] == 0.0  # the account halted earlier in this step
        sym_funding = Funding(fts_i, frate_i, fmark_i)
        sym_sim = Sim(p, br, st, sl, errs, ords)
        sym_rec = Records(f_i, fund[i], ev_i, eq[i], cnt)
        present = bar_open_nb(k, t, o, h, lw, c, sym_funding, sym_sim, sym_rec)
        if present and simulate and not halting:
            set_rest_of_account_nb(st, work, i, W_U_ADV, W_MM_ADV, W_N_ADV)
            sym_detail = Detail(dts, dop, dhi, dlo, dcl, didx[i])
            if bar_path_nb(k, t, o, h, lw, c, sym_detail, sym_sim, sym_rec):
                _account_liquidation_nb(
                    k, t, i, cl, vecs, brs, nbr, states, slots, fills, ev, eq, cnts, acc, info, work
                )
                sh[SH_WALLET] = st[S_WALLET]
                stop = True
                break
        if c == c:
            work[i, W_LAST] = c
        set_rest_of_account_nb(st, work, i, W_U_CL, W_MM_CL, W_N_CL)
        if halting:
            account_halt_nb(st, sl, c if c == c else work[i, W_LAST], p, br, f_i, ev_i, cnt, t)
        bar_close_nb(k, t, h, lw, c, regs[i], sym_funding, work[i, W_ALLOW] != 0.0, sym_sim, sym_rec)
        if n_sym > 1:
            step_contribution_nb(st, sl, br, h, lw, c, work[i])
        else:  # no other symbol reads its adverse extreme or resting notional: the account's columns only
            close_contribution_nb(st, br, c, lw, h, work[i])
        if leave_account_nb(st, sh):
            breaker_tripped_nb(k, i, hi, lo, cl, brs, nbr, states, slots, work)
        if st[S_HALTED] != 0.0 and acc[S_HALTED] == 0.0:
            sh[SH_WALLET] = _account_halted_nb(
                k, t, i, sh[SH_WALLET], hi, lo, cl, vecs, brs, nbr, states, slots, fills, ev, eq, cnts, acc,
                info, work,
            )  # fmt: skip
        if cnt[C_OVERFLOW] != 0:
            stop = True
            break
    if stop and acc[S_LIQUIDATED] == 0.0:
        return BAR_OVERFLOW  # a full record buffer: the driver runs again with more room
    acc[S_CB_ACTIVE] = sh[SH_CB_ACTIVE]
    sh[SH_PEAK] = _account_close_nb(acc, rows, info, work, states, t, sh[SH_WALLET], sh[SH_PEAK])
    info[A_STEPS] = k + 1
    return BAR_STOP if stop else BAR_GO


@kernel
def basket_finish_nb(states, acc):
    """Close every symbol's and the account's daily statistics (at the end of a run)."""
    for j in range(states.shape[0]):
        finish_daily_stats_nb(states[j])
    finish_daily_stats_nb(acc)


@kernel
def run_basket_nb(bars, funding, foff, detail, sims, nbr, rec, account):
    """Step every aligned timestamp through ``basket_bar_nb`` (arguments as there; ``account.sh`` is
    scratch); stop at the first timestamp that ends the run or fills a record buffer."""
    basket_start_nb(sims.st, account.info, account.work, account.sh)
    for k in range(bars.ts.shape[0]):
        if basket_bar_nb(k, bars, funding, foff, detail, sims, nbr, rec, account) != BAR_GO:
            break
    basket_finish_nb(sims.st, account.acc)


@dataclass(frozen=True)
class BasketOutput:
    """A basket run: each symbol's ledgers and summary, the account's equity curve and summary."""

    symbols: tuple[str, ...]
    per_symbol: dict[str, RunOutput]  # each symbol's fills, funding, events, equity rows, summary, meta
    account_equity: np.ndarray  # ACCOUNT_EQUITY_DTYPE rows, one per aligned timestamp
    summary: dict[str, float]  # records.SUMMARY_FIELDS names where they apply to the account
    meta: dict[str, Any] = field(default_factory=dict)


#: Summary fields that add up over the symbols (the account's is the sum of the symbols').
ADDITIVE_FIELDS: tuple[str, ...] = (
    "realized_pnl", "fees", "funding_net", "funding_paid", "funding_received", "n_fills", "n_fills_maker",
    "n_fills_taker", "n_entries", "n_exits", "n_lots_closed", "n_wins", "n_losses", "gross_profit",
    "gross_loss", "same_bar_round_trips", "same_bar_gross_profit", "traded_notional", "rejections",
    "rejected_size_pct", "rejected_size_qty", "rejected_size_inventory", "rejected_size_order",
    "rejected_size_bracket", "rejected_size_margin", "post_only_rejects", "retry_limits",
    "orders_submitted", "orders_deferred", "skipped_precision", "skipped_order_limit", "errors",
    "circuit_breaker_trips", "recenters", "funding_payments",
)  # fmt: skip
#: Summary fields only the account has (NaN in a symbol's summary: the account's are in BasketOutput).
ACCOUNT_ONLY_FIELDS: tuple[str, ...] = (
    "peak_equity", "max_drawdown_daily_close_pct", "max_drawdown_bar_close_pct", "max_drawdown_intrabar_pct",
    "sharpe", "sortino",
)  # fmt: skip


def _check_basket(
    markets: Mapping[str, Any], strategies: Mapping[str, StrategyConfig], detail: Mapping[str, Any]
) -> tuple[str, ...]:
    symbols = tuple(markets)
    if not symbols:
        raise GridctlError("a basket needs at least one symbol")
    if tuple(strategies) != symbols:
        raise GridctlError(
            f"basket: strategies are for {list(strategies)} but the markets for {list(symbols)} "
            "(same symbols, same order)"
        )
    for sym in symbols:
        if markets[sym].symbol != sym:
            raise GridctlError(f"basket: the market given for {sym} holds {markets[sym].symbol}")
    extra = [sym for sym in detail if sym not in markets]
    if extra:
        raise GridctlError(f"basket: detail bars for {extra}, which are not in the basket {list(symbols)}")
    return symbols


def check_account_params(symbols: tuple[str, ...], params: list[EngineParams]) -> None:
    """Refuse a basket whose symbols disagree on a field of the account (``ACCOUNT_PARAMS``)."""
    first = params[0].vector
    for sym, prm in zip(symbols[1:], params[1:], strict=True):
        for slot, name in ACCOUNT_PARAMS.items():
            a, b = prm.vector[slot], first[slot]
            if a != b and not (np.isnan(a) and np.isnan(b)):  # NaN: unset (off) for both
                raise GridctlError(
                    f"basket: {name} is {prm.vector[slot]:g} for {sym} but {first[slot]:g} for "
                    f"{symbols[0]}: it is the account's, one value for every symbol"
                )


def _aligned(market: Any, ts: np.ndarray) -> SimpleNamespace:
    """``market`` on the basket's timestamps ``ts``: NaN OHLC where it has no bar."""
    own = np.asarray(market.ts, dtype=np.int64)
    cols = {}
    if own.shape == ts.shape and np.array_equal(own, ts):
        cols = {name: getattr(market, name) for name in ("open", "high", "low", "close")}
    else:
        pos = np.searchsorted(ts, own)
        for name in ("open", "high", "low", "close"):
            col = np.full(ts.shape[0], np.nan)
            col[pos] = np.asarray(getattr(market, name), dtype=np.float64)
            cols[name] = col
    return SimpleNamespace(
        symbol=market.symbol, timeframe=market.timeframe, bar_ms=int(market.bar_ms), ts=ts, **cols,
        funding_ts=market.funding_ts, funding_rate=market.funding_rate, funding_mark=market.funding_mark,
    )  # fmt: skip


def _union(parts: list[np.ndarray]) -> np.ndarray:
    """Sorted union of strictly increasing timestamp arrays (the first itself when all are equal)."""
    if all(np.array_equal(x, parts[0]) for x in parts[1:]):
        return parts[0]
    allts = np.sort(np.concatenate(parts), kind="stable")
    keep = np.ones(allts.shape[0], dtype=bool)
    keep[1:] = allts[1:] != allts[:-1]
    return allts[keep]


def _concat(parts: list[np.ndarray], dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """One read-only array of ``parts`` and the offsets ``off`` (part i is ``flat[off[i]:off[i+1]]``)."""
    off = np.zeros(len(parts) + 1, np.int64)
    off[1:] = np.cumsum([x.shape[0] for x in parts])
    flat = np.concatenate([np.asarray(x, dtype=dtype) for x in parts])
    return read_only(np.ascontiguousarray(flat)), off


def basket_params(
    symbols: tuple[str, ...],
    strategies: Mapping[str, StrategyConfig],
    venue: VenueConfig,
    markets: Mapping[str, Any],
    details: Mapping[str, Any],
) -> list[EngineParams]:
    """Each symbol's engine parameters (basket order), detail config and account fields checked."""
    params = [build_params(strategies[sym], venue, markets[sym]) for sym in symbols]
    for sym in symbols:
        check_detail_config(strategies[sym], details.get(sym))
    check_account_params(symbols, params)
    return params


def basket_bars(symbols: tuple[str, ...], markets: Mapping[str, Any], details: Mapping[str, Any]) -> Any:
    """The basket's bars as the driver takes them: aligned OHLC rows, funding and detail concatenated.

    Depends on the markets only (not on any parameter), so a batch of parameter sets shares it.
    """
    ts = read_only(np.ascontiguousarray(_union([np.asarray(markets[sym].ts, np.int64) for sym in symbols])))
    n = ts.shape[0]
    aligned = [_aligned(markets[sym], ts) for sym in symbols]
    arrays = [market_arrays(a) for a in aligned]
    dets = [detail_arrays(a, details.get(sym), n) for a, sym in zip(aligned, symbols, strict=True)]

    def stack(name: str) -> np.ndarray:
        if len(arrays) == 1:  # a lone symbol's rows are views of its own arrays (no copy)
            return read_only(np.ascontiguousarray(getattr(arrays[0], name), np.float64)[None, :])
        out = np.empty((len(arrays), n))
        for i, a in enumerate(arrays):
            out[i] = getattr(a, name)
        return read_only(out)

    fts, foff = _concat([a.funding_ts for a in arrays], np.int64)
    dts, doff = _concat([d.ts for d in dets], np.int64)
    if len(dets) == 1:  # its detail bars start the concatenation: its own index, as a view
        didx = np.ascontiguousarray(dets[0].index, np.int64)[None]
    else:
        didx = np.empty((len(dets), n, 2), np.int64)
        for i, d in enumerate(dets):  # each symbol's detail index points into the concatenated detail bars
            np.add(d.index, doff[i], out=didx[i])
    return SimpleNamespace(
        ts=ts, arrays=arrays, dets=dets,
        op=stack("open"), hi=stack("high"), lo=stack("low"), cl=stack("close"),
        fts=fts, foff=foff,
        frate=_concat([a.funding_rate for a in arrays], np.float64)[0],
        fmark=_concat([a.funding_mark for a in arrays], np.float64)[0],
        dts=dts, doff=doff,
        dop=_concat([d.open for d in dets], np.float64)[0],
        dhi=_concat([d.high for d in dets], np.float64)[0],
        dlo=_concat([d.low for d in dets], np.float64)[0],
        dcl=_concat([d.close for d in dets], np.float64)[0],
        didx=read_only(didx),
    )  # fmt: skip


def basket_brackets(params: list[EngineParams]) -> tuple[np.ndarray, np.ndarray]:
    """Every symbol's margin brackets in one array ``brs`` (symbol i's: ``brs[i, :nbr[i]]``) and ``nbr``."""
    nbr = np.array([prm.brackets.shape[0] for prm in params], np.int64)
    brs = np.zeros((len(params), int(nbr.max()), 5))
    for i, prm in enumerate(params):
        brs[i, : nbr[i]] = prm.brackets
    return brs, nbr


def stack_params(params: list[EngineParams]) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The basket's parameter rows, brackets (``brs[i, :nbr[i]]``) and ladder depth, kernel-ready."""
    vecs = np.ascontiguousarray(np.stack([prm.vector for prm in params]))
    brs, nbr = basket_brackets(params)
    levels = int(vecs[:, [P_LEVELS_LONG, P_LEVELS_SHORT]].max())
    return vecs, brs, nbr, levels


def new_account(
    vecs: np.ndarray, levels: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fresh kernel state of a basket: every symbol's state row and slots, the account's error and
    order-pacing rings and its state vector ``acc`` (``states, slots, errs, ords, acc``)."""
    n_sym = vecs.shape[0]
    states = np.zeros((n_sym, N_STATE))
    slots = np.zeros((n_sym, 2, levels, N_SLOT))
    for i in range(n_sym):
        init_state_row(states[i], slots[i], vecs[i])
    n_err, n_ord = ring_sizes(vecs)
    errs = np.zeros(max(n_err, 1))
    ords = np.zeros(max(n_ord, 1))
    acc = np.zeros(N_STATE)
    init_state_row(acc, np.zeros((2, 1, N_SLOT)), vecs[0])
    return states, slots, errs, ords, acc


def run_basket(
    markets: Mapping[str, Any],
    strategies: Mapping[str, StrategyConfig],
    venue: VenueConfig,
    curves: bool = True,
    detail: Mapping[str, Any] | None = None,
) -> BasketOutput:
    """Backtest the basket ``markets`` (ccxt symbol -> Market, in basket order) in one wallet.

    ``strategies`` holds each symbol's strategy (overrides applied; the account's fields,
    ``ACCOUNT_PARAMS``, must agree); ``detail`` the finer markets named by each symbol's
    ``backtest.detail_timeframe`` (keyed by symbol; a symbol without one walks its own OHLC).
    """
    details = dict(detail or {})
    symbols = _check_basket(markets, strategies, details)
    params = basket_params(symbols, strategies, venue, markets, details)
    bars = basket_bars(symbols, markets, details)
    n = bars.ts.shape[0]
    stacked = stack_params(params)
    regs = np.ascontiguousarray(
        np.stack([regime_series(a, prm.vector) for a, prm in zip(bars.arrays, params, strict=True)])
    )
    caps = {
        C_FILLS: max(INITIAL_CAPACITY, n // BARS_PER_FILL_ROW),
        C_EVENTS: max(INITIAL_CAPACITY, n // BARS_PER_EVENT_ROW),
        C_FUNDING: 2 * int(np.diff(bars.foff).max()) + 2,  # at most one row per side per settlement
        C_EQUITY: n if curves else 0,
    }
    reruns = 0
    for _ in range(MAX_RERUNS):
        args = basket_groups(bars, regs, stacked, caps, curves)
        run_basket_nb(*args)
        rec, account = args[6], args[7]
        cnts = rec.cnt
        if not cnts[:, C_OVERFLOW].any():
            break
        bufs = ((C_FILLS, rec.fills), (C_EVENTS, rec.ev), (C_FUNDING, rec.fund), (C_EQUITY, rec.eq))
        for slot, buf in bufs:
            if (cnts[:, slot] >= buf.shape[1]).any():
                caps[slot] = max(2 * buf.shape[1], 16)
        reruns += 1
    else:  # pragma: no cover - only reachable with a kernel bug that writes without bound
        raise RuntimeError(f"record buffers still overflowing after {MAX_RERUNS} re-runs")
    return basket_outputs(symbols, params, bars.dets, args[4].st, rec, account, n, reruns)


def basket_groups(
    bars: Any,
    regs: np.ndarray,
    stacked: tuple[np.ndarray, np.ndarray, np.ndarray, int],
    caps: dict[int, int],
    curves: bool,
) -> tuple[Bars, Funding, np.ndarray, Detail, Sim, np.ndarray, Records, Account]:
    """``run_basket_nb``'s arguments for a fresh account: ``bars`` from ``basket_bars``, the regimes,
    ``stack_params``' answer and the record capacities (``C_*`` -> rows per symbol). A driver that
    steps bar by bar calls ``basket_start_nb`` and ``basket_bar_nb`` with them instead."""
    vecs, brs, nbr, levels = stacked
    n_sym, n = vecs.shape[0], bars.ts.shape[0]
    states, slots, errs, ords, acc = new_account(vecs, levels)
    return (
        Bars(bars.ts, bars.op, bars.hi, bars.lo, bars.cl, regs),
        Funding(bars.fts, bars.frate, bars.fmark),
        bars.foff,
        Detail(bars.dts, bars.dop, bars.dhi, bars.dlo, bars.dcl, bars.didx),
        Sim(vecs, brs, states, slots, errs, ords),
        nbr,
        Records(
            np.empty((n_sym, caps[C_FILLS]), FILL_DTYPE),
            np.empty((n_sym, caps[C_FUNDING]), FUNDING_DTYPE),
            np.empty((n_sym, caps[C_EVENTS]), EVENT_DTYPE),
            np.empty((n_sym, caps[C_EQUITY]), EQUITY_DTYPE),
            np.stack([new_counters(record=True, curves=curves) for _ in range(n_sym)]),
        ),
        Account(
            acc,
            np.empty(n if curves else 0, ACCOUNT_EQUITY_DTYPE),
            np.zeros(N_ACC_INFO, np.int64),
            np.zeros((n_sym, N_WORK)),
            np.empty(N_SHARED),
        ),
    )


def account_summary(acc_row: np.ndarray, sums: np.ndarray) -> dict[str, float]:
    """The account's summary (``records.SUMMARY_FIELDS``) from its summary row ``acc_row``
    (``summarize_states`` of the account's state vector with the first symbol's parameters) and the
    symbols' summary rows ``sums`` (``summarize_states`` of their states, basket order).

    Equity, drawdowns, Sharpe and Sortino are the account's; ``ADDITIVE_FIELDS`` are the sums over the
    symbols (in basket order); profit factor and win rate pool every symbol's closed lots; base
    quantities are NaN.
    """
    summary = {name: float(acc_row[name]) for name in SUMMARY_FIELDS}
    for name in ADDITIVE_FIELDS:
        column = sums[name]
        total = 0.0
        for i in range(column.shape[0]):
            total += float(column[i])
        summary[name] = total
    gp, gl, lots = summary["gross_profit"], summary["gross_loss"], summary["n_lots_closed"]
    summary["profit_factor"] = gp / gl if gl > 0 else (float("inf") if gp > 0 else float("nan"))
    summary["win_rate"] = summary["n_wins"] / lots if lots > 0 else float("nan")
    summary["long_qty"] = float("nan")  # base quantities of different symbols do not add up
    summary["short_qty"] = float("nan")
    return summary


def basket_outputs(
    symbols: tuple[str, ...],
    params: list[EngineParams],
    dets: list[Any],
    states: np.ndarray,
    rec: Records,
    account: Account,
    n: int,
    reruns: int,
) -> BasketOutput:
    """The driver's ledgers ``rec`` and ``account`` (engine/contexts.py groups, as the kernels left
    them) as a BasketOutput (per-symbol RunOutputs, the account's rows and summary)."""
    fills, fund, ev, eq, cnts = rec
    acc, rows, info = account.acc, account.rows, account.info
    vecs = np.stack([prm.vector for prm in params])
    initial = float(vecs[0, P_INITIAL_BALANCE])
    liq_sym = int(info[A_LIQ_SYMBOL])
    halt_sym = int(info[A_HALT_SYMBOL])
    per: dict[str, RunOutput] = {}
    sums = summarize_states(states, vecs)
    for i, sym in enumerate(symbols):
        summary = {name: float(sums[i][name]) for name in SUMMARY_FIELDS}
        # The symbol's contribution to the account: its own PnL on the basket's initial balance.
        own_wallet = initial + summary["realized_pnl"] - summary["fees"] + summary["funding_net"]
        summary["wallet_balance"] = own_wallet
        summary["final_equity"] = own_wallet + float(states[i, S_UNREAL])
        summary["total_return_pct"] = (summary["final_equity"] - initial) / initial * 100.0
        for name in ACCOUNT_ONLY_FIELDS:
            summary[name] = float("nan")
        events = ev[i, : cnts[i, C_EVENTS]].copy()
        # An account-wide event names the symbol that set it off: level = 1 + its basket index.
        events["level"][events["kind"] == EventKind.LIQUIDATION] = liq_sym + 1
        events["level"][events["kind"] == EventKind.DRAWDOWN_HALT] = halt_sym + 1
        det = dets[i]
        meta = dict(params[i].meta)
        meta.update(
            bars=int(info[A_STEPS]),
            bars_total=int(n),
            reruns=reruns,
            basket=list(symbols),
            liquidated=bool(summary["liquidated"]),
            liquidated_at=None if np.isnan(summary["liquidated_ts"]) else int(summary["liquidated_ts"]),
            halted_at=None if np.isnan(summary["halted_ts"]) else int(summary["halted_ts"]),
            detail={
                "timeframe": det.timeframe,
                "detailed_bars": det.detailed_bars,
                "fallback_bars": det.fallback_bars,
                "warnings": list(det.warnings),
            },
        )
        per[sym] = RunOutput(
            fills=fills[i, : cnts[i, C_FILLS]].copy(),
            funding=fund[i, : cnts[i, C_FUNDING]].copy(),
            events=events,
            equity=eq[i, : cnts[i, C_EQUITY]].copy(),
            summary=summary,
            params=params[i],
            meta=meta,
        )
    summary = account_summary(summarize_states(acc[None, :], vecs[:1])[0], sums)
    meta = {
        "symbols": list(symbols),
        "bars": int(info[A_STEPS]),
        "bars_total": int(n),
        "initial_balance": initial,
        "reruns": reruns,
        "liquidated_by": symbols[liq_sym] if liq_sym >= 0 else None,
        "halted_by": symbols[halt_sym] if halt_sym >= 0 else None,
        "liquidated_at": None if np.isnan(summary["liquidated_ts"]) else int(summary["liquidated_ts"]),
        "halted_at": None if np.isnan(summary["halted_ts"]) else int(summary["halted_ts"]),
    }
    return BasketOutput(
        symbols=symbols,
        per_symbol=per,
        account_equity=rows[: info[A_ROWS]].copy(),
        summary=summary,
        meta=meta,
    )
