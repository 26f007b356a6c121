"""The per-bar step: DESIGN.md "Bar clock" steps 1-8 composed from the domain kernels.

Which parts a live driver calls (the same functions, no copies):

* on each closed bar: ``bar_open_nb`` (missing input, data gap, funding settled up to the open) and,
  once the exchange's fills are booked, ``bar_close_nb`` (regime, mark-to-market, ``bar_gates_nb``,
  ``decide_nb``, ``record_bar_nb``) - the very kernels ``step_nb`` runs around its simulated venue;
  then send the difference between the slot array's resting entries / lot exits and the exchange's
  open orders. ``path_nb`` (fills.py, the simulated venue) is the only part a live driver never calls.
* on each exchange fill: ``fill_slot_nb`` (fills.py), which books it with ``apply_fill_nb``
  (accounting.py) and attaches the lot's TP/SL; on each exchange error: ``record_error_nb`` (risk.py);
* on a post-only rejection: the retry ladder's kernels in fills.py (``post_only_reject_nb``,
  ``retry_price_nb``, ``retry_rests_nb``), which the simulated venue's ``_retry_nb`` composes too.
* operator throttle: ``engine.state.set_throttle`` (validates, writes ``S_THROTTLE``).

Speed: a quiet bar (no trigger within the bar's range, no settlement due, nothing that reshapes the
ladder) runs only cheap inline checks; ``decision_needed_nb`` proves ``decide_nb`` would be a no-op
(re-planning when the ladder changed, an entry was deferred, or the close crossed a free rung's price
in either direction). The per-bar helpers are ``hot_kernel``s (inlined), the funding guard caches its
answer until the next close time that can change it, and the REDUCING liquidation-buffer test and the
maintenance margin reuse brackets and the liquidation price while the account is unchanged and the
price stays inside a band computed when they were last looked up (engine/margin.py). Every cache
gives bit-for-bit the answer of the direct computation.

Decisions beyond DESIGN.md (the reference simulator follows these):
* Record timestamps: fills and events of bar k carry ``ts[k]``; funding rows carry the settlement
  time. Errors enter the circuit-breaker window at ``ts[k]`` (open-phase rejections) or at
  ``close_time`` (decision-time rejections).
* Entries are decided rung by rung: rung 1 long, rung 1 short, rung 2 long, ... (validation of "other
  resting entries" and the rate limits see them in this order). A cancelled order is replaced even when
  its replacement is deferred by the rate limits. Only entry submissions count toward the rate limits.
  A circuit-breaker trip during a decision cancels every entry; the remaining rungs are only sized.
* "Not submitted again" remembers the last ``REF_MEMO`` (8) refusals per rung with what each depended
  on (bounded memory); a decision that skipped a remembered refusal stores the lowest equity at which
  one stops holding (``S_MEMO_EQ``) and a close at or above it re-plans. ``skipped_precision``
  counts, on every bar that reaches step 7 with entries allowed, the free rungs on the right side of
  the close that fail the precision guard. A quiet bar repeats the last decision's count; a close
  that crosses a free rung re-plans, so the count never includes a rung that is on the wrong side of
  this bar's close.
* No known funding rate is a blocked state like REDUCING: resting entries are cancelled too. The rate
  is only looked at when the risk state allows entries. ``FUNDING_UNKNOWN`` and ``REDUCING_ON/OFF``
  are recorded on transitions, not every bar.
* The REDUCING liquidation-buffer test uses any finite liquidation price: one on the winning side of c
  would mean the account is already below maintenance margin, i.e. liquidated at that path point.
* Daily returns use the equity recorded at step 8 (after a drawdown flatten on that bar).
"""

from __future__ import annotations

import numpy as np

from gridctl.engine.accounting import (
    daily_stats_nb,
    finish_daily_stats_nb,
    intrabar_drawdown_nb,
    mark_to_market_nb,
)
from gridctl.engine.enums import (
    EventKind,
    Reason,
    RiskState,
    Side,
    bar_step_kernel,
    hot_kernel,
    inline_kernel,
    kernel,
)
from gridctl.engine.fills import (
    bar_cannot_fill_nb,
    bar_margin_safe_nb,
    detail_path_nb,
    detail_range_nb,
    path_nb,
    points_margin_check_nb,
)
from gridctl.engine.funding import apply_funding_nb, funding_guard_nb
from gridctl.engine.gates import table_gates_nb
from gridctl.engine.ladder import floor_step_nb, needs_recenter_nb, set_rungs_nb
from gridctl.engine.params import (
    P_BAR_MS,
    P_MAX_NUM_ALGO,
    P_MAX_NUM_ORDERS,
    P_ORDER_PRICE_TOL_BPS,
    P_ORDER_QTY_TOL_PCT,
    P_ORDERS_PER_MINUTE,
    P_ORDERS_PER_SECOND,
    P_STEP,
)
from gridctl.engine.policy import policy_shape_nb
from gridctl.engine.records import C_OVERFLOW, write_equity_nb, write_event_nb
from gridctl.engine.risk import (
    circuit_breaker_bar_nb,
    circuit_breaker_due_nb,
    drawdown_breached_nb,
    drawdown_halt_nb,
    entries_allowed_nb,
    record_error_nb,
    reducing_reason_nb,
    reducing_switch_nb,
    risk_state_nb,
)
from gridctl.engine.state import (
    S_ALLOWED,
    S_BAR,
    S_BARS,
    S_BARS_COOLDOWN,
    S_BARS_EXPOSURE,
    S_BARS_HALTED,
    S_BARS_REDUCING,
    S_CENTER,
    S_DIRTY,
    S_EQUITY,
    S_FIRST_TS,
    S_FUND_IDX,
    S_GUARD_LONG,
    S_GUARD_SHORT,
    S_HALTED,
    S_HOLD_DOWN,
    S_HOLD_UP,
    S_LAST_TS,
    S_LIQUIDATED,
    S_LONG_QTY,
    S_MARGIN_RATIO,
    S_MEMO_EQ,
    S_MEMO_XN,
    S_MISSING,
    S_N_RESTING,
    S_ORD_COUNT,
    S_ORDERS_DEFERRED,
    S_ORDERS_SUBMITTED,
    S_PEND_DOWN,
    S_PEND_UP,
    S_PENDING,
    S_RATE_KNOWN,
    S_RECENTERS,
    S_REDUCING,
    S_REGIME,
    S_REJ_BASE,
    S_SHORT_QTY,
    S_SKIP_LIMIT_NOW,
    S_SKIP_NOW,
    S_SKIPPED_ORDER_LIMIT,
    S_SKIPPED_PRECISION,
    S_STATE,
    S_UNREAL,
    S_WALLET,
    S_X_NOTIONAL,
    SL_LOT_ON,
    SL_ORD_BAR,
    SL_ORD_ON,
    SL_ORD_PRICE,
    SL_ORD_QTY,
    SL_RUNG_PRICE,
    SL_RUNG_QTY,
    cancel_entries_nb,
    opposite_exposure_nb,
    refresh_triggers_nb,
    refused_until_nb,
    remember_refusal_nb,
    resting_qty_nb,
    throttle_nb,
)
from gridctl.engine.validation import precision_ok_nb, refusal_memo_nb, same_order_nb, validate_entry_nb

STEP_CONTINUE = 0
STEP_STOP = 1  # liquidated: the run is over


@kernel
def _minute_window_full_nb(st, ords, now, p):
    m = int(p[P_ORDERS_PER_MINUTE])
    count = int(st[S_ORD_COUNT])
    if count < m:
        return False
    return ords[(count - m) % ords.shape[0]] > now - 60_000.0


@hot_kernel
def _replan_due_nb(st, c):
    """The ladder changed, an entry was deferred, or the close moved a free rung across itself.

    A free rung (within the policy's levels, no lot) that crosses to the right side of the close is
    wanted again; one that crosses to the wrong side is no longer wanted (its resting order goes,
    its precision skip stops counting), so both directions re-plan.
    """
    return (
        st[S_DIRTY] != 0.0
        or st[S_PENDING] != 0.0
        or c > st[S_PEND_UP]
        or c < st[S_PEND_DOWN]
        or c <= st[S_HOLD_DOWN]
        or c >= st[S_HOLD_UP]
        or st[S_EQUITY] >= st[S_MEMO_EQ]
        # A refusal's opposite exposure holds the rest of the account's notional (SIZE_MARGIN in a
        # basket): once that changed, the refusal no longer holds and the rung is validated again.
        or (st[S_MEMO_XN] == st[S_MEMO_XN] and st[S_X_NOTIONAL] != st[S_MEMO_XN])
    )


@hot_kernel
def decision_needed_nb(st, c, close_time, fts, frate, p):
    """False only when ``decide_nb`` would change nothing at this close (the common quiet bar)."""
    if st[S_HALTED] != 0.0 or st[S_LIQUIDATED] != 0.0 or not np.isfinite(c):
        return False
    center = st[S_CENTER]
    if center != center or needs_recenter_nb(center, c, p):
        return True
    if not entries_allowed_nb(st):
        return st[S_ALLOWED] != 0.0 or st[S_N_RESTING] > 0
    known, g_long, g_short = funding_guard_nb(st, close_time, fts, frate, p)
    if (1.0 if known else 0.0) != st[S_RATE_KNOWN]:
        return True
    if not known:
        return st[S_ALLOWED] != 0.0 or st[S_N_RESTING] > 0
    if g_long != st[S_GUARD_LONG] or g_short != st[S_GUARD_SHORT] or st[S_ALLOWED] == 0.0:
        return True
    return _replan_due_nb(st, c)


@kernel
def open_order_slots_nb(slots):
    """Rungs holding an order on the exchange: a resting entry, or a lot (its take-profit and stop).

    Each counts one regular order (the entry or the TP limit) and one algo order (the lot's stop, or
    the stop a resting entry needs once it fills), so both MAX_NUM_ORDERS and MAX_NUM_ALGO_ORDERS bound it.
    """
    n = 0
    for side in range(2):
        for idx in range(slots.shape[1]):
            if slots[side, idx, SL_ORD_ON] != 0.0 or slots[side, idx, SL_LOT_ON] != 0.0:
                n += 1
    return n


@kernel
def _block_entries_nb(st, slots):
    """No entries may rest now: cancel them and remember the ladder must be re-planned later."""
    if st[S_ALLOWED] != 0.0:
        st[S_ALLOWED] = 0.0
        st[S_DIRTY] = 1.0
    st[S_SKIP_NOW] = 0.0
    st[S_SKIP_LIMIT_NOW] = 0.0
    if st[S_N_RESTING] > 0:
        cancel_entries_nb(st, slots)


@hot_kernel
def decide_nb(sim, funding, rec, k, c, close_time, ts):
    """Step 7: re-centre, policy, funding guard, throttle, size, validate, pace, place.

    Writes the wanted resting entries into ``sim.slots`` (price, qty, submitting bar) and cancels the
    unwanted ones. Re-plans every rung (``plan_ladder_nb``) only when something that shapes the
    ladder changed. ``sim`` / ``funding`` / ``rec``: engine/contexts.py. A ``hot_kernel`` (inlined
    into the bar close): as a real call its three groups, passed whole at every decision, cost the
    bar loop ~2-3 % CPU (measured as for engine/fills.py's entry points).
    """
    st = sim.st
    slots = sim.slots
    p = sim.p
    ev = rec.ev
    cnt = rec.cnt
    if st[S_HALTED] != 0.0 or st[S_LIQUIDATED] != 0.0 or not np.isfinite(c):
        _block_entries_nb(st, slots)
        return
    center = st[S_CENTER]
    if center != center:
        st[S_CENTER] = c
        set_rungs_nb(slots, c, p)
        st[S_DIRTY] = 1.0
    elif needs_recenter_nb(center, c, p):
        write_event_nb(ev, cnt, ts, EventKind.RECENTER, Reason.NONE, -1, 0, c, 0.0, center)
        st[S_CENTER] = c
        st[S_RECENTERS] += 1.0
        set_rungs_nb(slots, c, p)
        cancel_entries_nb(st, slots)
    if not entries_allowed_nb(st):
        _block_entries_nb(st, slots)
        return
    known, g_long, g_short = funding_guard_nb(st, close_time, funding.ts, funding.rate, p)
    if not known:
        if st[S_RATE_KNOWN] != 0.0:
            write_event_nb(ev, cnt, ts, EventKind.FUNDING_UNKNOWN, Reason.NONE, -1, 0, c, 0.0, 0.0)
            st[S_RATE_KNOWN] = 0.0
        _block_entries_nb(st, slots)
        return
    st[S_RATE_KNOWN] = 1.0
    if st[S_ALLOWED] == 0.0:
        st[S_ALLOWED] = 1.0
        st[S_DIRTY] = 1.0
    if g_long != st[S_GUARD_LONG] or g_short != st[S_GUARD_SHORT]:
        st[S_GUARD_LONG] = g_long
        st[S_GUARD_SHORT] = g_short
        st[S_DIRTY] = 1.0
    if not _replan_due_nb(st, c):
        return
    plan_ladder_nb(sim, rec, k, c, close_time, ts, g_long, g_short)


@kernel
def plan_ladder_nb(sim, rec, k, c, close_time, ts, g_long, g_short):
    """Re-plan every rung at this close (``decide_nb`` once entries are allowed and a re-plan is due).

    One pass over the rungs (rung 1 long, rung 1 short, rung 2 long, ...): size, precision guard, the
    refusal memo, validation, order limits, pacing, placement.

    Long because: the pass keeps seven running tallies (submits, skips, limits, the breaker trip, the
    memo's equity, whether the memo was used, whether an order changed) that every rung reads and
    writes; split into per-rung kernels they would travel back and forth as arguments and return values.
    """
    st = sim.st
    slots = sim.slots
    errs = sim.errs
    ords = sim.ords
    p = sim.p
    br = sim.br
    ev = rec.ev
    cnt = rec.cnt
    st[S_DIRTY] = 0.0
    st[S_PENDING] = 0.0
    st[S_PEND_UP] = np.inf
    st[S_PEND_DOWN] = -np.inf
    st[S_HOLD_DOWN] = -np.inf
    st[S_HOLD_UP] = np.inf
    regime = int(st[S_REGIME])
    thr = throttle_nb(st)
    step = p[P_STEP]
    per_bar = int(p[P_ORDERS_PER_SECOND])
    tol_bps = p[P_ORDER_PRICE_TOL_BPS]
    tol_pct = p[P_ORDER_QTY_TOL_PCT]
    submits = 0
    skipped = 0
    limited = 0
    tripped = False
    eq = st[S_EQUITY]
    memo_eq = np.inf  # lowest equity at which a refusal the memo holds stops holding
    memo_used = False  # a rung was refused or skipped on the memo in this decision
    orders_changed = False  # an order was cancelled or placed in this decision
    for idx in range(slots.shape[1]):
        level = idx + 1
        for side in range(2):
            s = slots[side, idx]
            levels, qmul = policy_shape_nb(regime, side, p)
            price = s[SL_RUNG_PRICE]
            want = level <= levels and s[SL_LOT_ON] == 0.0
            if want:
                # A free rung stays as decided until the close crosses its price (either way).
                if side == Side.LONG:
                    if price < c:
                        st[S_HOLD_DOWN] = max(st[S_HOLD_DOWN], price)
                    else:
                        want = False
                        st[S_PEND_UP] = min(st[S_PEND_UP], price)
                elif price > c:
                    st[S_HOLD_UP] = min(st[S_HOLD_UP], price)
                else:
                    want = False
                    st[S_PEND_DOWN] = max(st[S_PEND_DOWN], price)
            qty = 0.0
            if want:
                guard = g_long if side == Side.LONG else g_short
                qty = floor_step_nb(s[SL_RUNG_QTY] * qmul * guard * thr, step)
                if not precision_ok_nb(price, qty, p):
                    want = False
                    skipped += 1
            if not want or tripped:
                if s[SL_ORD_ON] != 0.0:
                    orders_changed = True
                s[SL_ORD_ON] = 0.0
                continue
            if s[SL_ORD_ON] != 0.0:
                if same_order_nb(s[SL_ORD_PRICE], s[SL_ORD_QTY], price, qty, tol_bps, tol_pct):
                    continue  # close enough: left resting as it is, as the live bridge leaves it
                s[SL_ORD_ON] = 0.0
                orders_changed = True
            pos = st[S_LONG_QTY] if side == Side.LONG else st[S_SHORT_QTY]
            rest = resting_qty_nb(slots, side, idx)
            # In a basket the rest of the account's notional counts as opposite exposure (SIZE_MARGIN).
            opp = opposite_exposure_nb(st, slots, side) + st[S_X_NOTIONAL] / price
            q_all = pos + rest + qty
            until = refused_until_nb(s, price, qty, q_all, opp, eq)
            if until == until:
                # Refused before and what the refusal depended on is unchanged: not submitted again.
                memo_eq = min(memo_eq, until)
                memo_used = True
                continue
            reason = validate_entry_nb(price, qty, pos, rest, opp, eq, p, br)
            if reason != Reason.NONE:
                st[S_REJ_BASE + reason] += 1.0
                m_q, m_opp, need = refusal_memo_nb(reason, price, qty, q_all, opp, p)
                remember_refusal_nb(s, price, qty, m_q, m_opp, need)
                memo_eq = min(memo_eq, need)
                memo_used = True
                write_event_nb(ev, cnt, ts, EventKind.ORDER_REJECTED, reason, side, level, price, qty, pos)
                if record_error_nb(st, slots, errs, close_time, p, ev, cnt, ts):
                    # Entries cancelled, those this decision already placed too (S_N_RESTING does not
                    # count them yet); the rest of the ladder is only sized.
                    tripped = True
                    for sd in range(2):
                        for j in range(slots.shape[1]):
                            slots[sd, j, SL_ORD_ON] = 0.0
                continue
            if open_order_slots_nb(slots) + 1 > min(p[P_MAX_NUM_ORDERS], p[P_MAX_NUM_ALGO]):
                # The exchange would refuse the order or, once it fills, its stop: not sent (as for the
                # precision guard, no error); walked again at the next close, as a deferred entry is.
                limited += 1
                st[S_PENDING] = 1.0
                continue
            if submits >= per_bar or _minute_window_full_nb(st, ords, close_time, p):
                st[S_ORDERS_DEFERRED] += 1.0
                st[S_PENDING] = 1.0
                continue
            s[SL_ORD_ON] = 1.0
            s[SL_ORD_PRICE] = price
            s[SL_ORD_QTY] = qty
            s[SL_ORD_BAR] = k
            orders_changed = True
            n_ord = int(st[S_ORD_COUNT])
            ords[n_ord % ords.shape[0]] = close_time
            st[S_ORD_COUNT] = n_ord + 1
            st[S_ORDERS_SUBMITTED] += 1.0
            submits += 1
    st[S_SKIP_NOW] = skipped
    st[S_SKIP_LIMIT_NOW] = limited
    st[S_MEMO_EQ] = memo_eq
    st[S_MEMO_XN] = st[S_X_NOTIONAL] if memo_used else np.nan
    if memo_used and orders_changed:
        # A rung walked later changed the exposures an earlier refusal was checked against: look again.
        st[S_DIRTY] = 1.0
    refresh_triggers_nb(st, slots)


@hot_kernel
def bar_gates_nb(sim, rec, c, close_time, ts):
    """Step 6: drawdown halt (re-marking after the flatten), breaker expiry/trip, REDUCING, table gates."""
    st = sim.st
    slots = sim.slots
    errs = sim.errs
    p = sim.p
    br = sim.br
    fills = rec.fills
    ev = rec.ev
    cnt = rec.cnt
    if drawdown_breached_nb(st, p):
        drawdown_halt_nb(st, slots, c, p, fills, ev, cnt, ts)
        mark_to_market_nb(st, c, br)
    if circuit_breaker_due_nb(st, p):
        circuit_breaker_bar_nb(st, slots, errs, close_time, p, ev, cnt, ts)
    reason = reducing_reason_nb(st, c, p, br)
    if (reason != Reason.NONE) != (st[S_REDUCING] != 0.0):
        reducing_switch_nb(st, slots, reason, c, ev, cnt, ts)
    table_gates_nb(st, slots, c, ts, p, ev, cnt)


@hot_kernel
def record_bar_nb(st, eq, cnt, ts):
    """Step 8: risk state, online bar counters, daily returns and the equity-curve row."""
    state = risk_state_nb(st)
    st[S_STATE] = state
    st[S_BARS] += 1.0
    lq = st[S_LONG_QTY]
    sq = st[S_SHORT_QTY]
    if lq > 0.0 or sq > 0.0:
        st[S_BARS_EXPOSURE] += 1.0
    if state == RiskState.HALTED:
        st[S_BARS_HALTED] += 1.0
    elif state == RiskState.COOLDOWN:
        st[S_BARS_COOLDOWN] += 1.0
    elif state == RiskState.REDUCING:
        st[S_BARS_REDUCING] += 1.0
    equity = st[S_EQUITY]
    daily_stats_nb(st, ts, equity)
    write_equity_nb(
        eq, cnt, ts, equity, st[S_WALLET], st[S_UNREAL], lq, sq, int(st[S_REGIME]), state, st[S_MARGIN_RATIO]
    )
    st[S_LAST_TS] = ts


@hot_kernel
def bar_open_nb(k, t, o, h, lw, c, funding, sim, rec):
    """Steps 1-2 of bar ``k`` (open ``t``, OHLC ``o h lw c``): missing input, data gap, funding settled
    up to the open.

    Returns False when the bar's input is missing (entries cancelled, ``INPUT_MISSING`` recorded, no
    settlement applied): ``bar_close_nb`` then only decides and records. Every driver calls it: the
    backtest's ``step_nb`` and the live session.
    """
    p = sim.p
    st = sim.st
    slots = sim.slots
    ev = rec.ev
    cnt = rec.cnt
    fts = funding.ts
    if st[S_FIRST_TS] != st[S_FIRST_TS]:
        st[S_FIRST_TS] = t
    st[S_BAR] = k
    if not (np.isfinite(o) and np.isfinite(h) and np.isfinite(lw) and np.isfinite(c)):
        # 1. missing input: no fills, entries cancelled, equity carried, no new entries.
        st[S_MISSING] = 1.0
        cancel_entries_nb(st, slots)
        write_event_nb(ev, cnt, t, EventKind.INPUT_MISSING, Reason.NONE, -1, 0, 0.0, 0.0, 0.0)
        return False
    st[S_MISSING] = 0.0
    last = st[S_LAST_TS]
    if last == last and t - last > p[P_BAR_MS]:
        cancel_entries_nb(st, slots)
        write_event_nb(ev, cnt, t, EventKind.DATA_GAP, Reason.NONE, -1, 0, 0.0, 0.0, float(t - last))
    # 2. funding settlements up to this bar's open
    fi = int(st[S_FUND_IDX])
    if fi < fts.shape[0] and fts[fi] <= t:
        apply_funding_nb(st, t, o, fts, funding.rate, funding.mark, rec.fund, cnt)
    return True


@hot_kernel
def bar_close_nb(k, t, h, lw, c, reg, funding, allow, sim, rec):
    """Steps 4-8 of bar ``k`` once its fills are booked: regime, mark, gates, decide, record.

    The bar close without the intrabar fill simulation: the backtest's ``step_nb`` calls it after its
    simulated venue's path, the live session after booking the exchange's fills (the one copy of the
    close). ``reg[k]`` is the regime after this bar; the close time is ``t`` plus the bar length
    (``P_BAR_MS``). ``allow`` False (a live driver's pause: operator, stale feed, exchange ban) cancels
    the resting entries instead of deciding; the backtest passes True. A bar whose input is missing
    (``bar_open_nb`` returned False) is only decided and recorded.
    """
    st = sim.st
    slots = sim.slots
    br = sim.br
    close_time = float(t) + sim.p[P_BAR_MS]
    if st[S_MISSING] != 0.0:
        if allow:
            decide_nb(sim, funding, rec, k, c, close_time, t)
        else:
            cancel_entries_nb(st, slots)
        record_bar_nb(st, rec.eq, rec.cnt, t)
        return
    # 4. regime after this bar (precomputed by regime.regime_series with the same update function)
    r = float(reg[k])
    if r != st[S_REGIME]:
        st[S_REGIME] = r
        st[S_DIRTY] = 1.0
    # 5. mark to market, 6. risk gates, 7. decide, 8. record
    mark_to_market_nb(st, c, br)
    bar_gates_nb(sim, rec, c, close_time, t)
    intrabar_drawdown_nb(st, lw, h)  # positions held at the close, after a drawdown flatten
    if not allow:
        cancel_entries_nb(st, slots)
    elif decision_needed_nb(st, c, close_time, funding.ts, funding.rate, sim.p):
        decide_nb(sim, funding, rec, k, c, close_time, t)
    if st[S_HALTED] == 0.0 and allow:
        # A quiet bar repeats the last decision, including its precision and order-limit skips.
        st[S_SKIPPED_PRECISION] += st[S_SKIP_NOW]
        st[S_SKIPPED_ORDER_LIMIT] += st[S_SKIP_LIMIT_NOW]
    record_bar_nb(st, rec.eq, rec.cnt, t)


@inline_kernel
def bar_path_nb(k, t, o, h, lw, c, detail, sim, rec):
    """Step 3 of bar ``k``: the simulated venue's intrabar path; returns True when liquidated.

    Walks the detail bars ``detail.idx[k]`` when there are any, else the bar's own OHLC; a bar whose
    range reaches no trigger only runs the margin check (skipped too when no path point can be
    liquidated). ``step_nb`` and the basket driver (engine/basket.py) call it.
    """
    st = sim.st
    br = sim.br
    j0 = detail.idx[k, 0]
    j1 = detail.idx[k, 1]
    if j1 > j0:
        dlw, dh = detail_range_nb(o, c, detail.hi, detail.lo, j0, j1)
        return not (bar_cannot_fill_nb(st, dlw, dh) and bar_margin_safe_nb(st, br, dlw, dh)) and (
            detail_path_nb(sim, rec, detail, k, o, c, t, j0, j1)
        )
    if bar_cannot_fill_nb(st, lw, h):
        return not bar_margin_safe_nb(st, br, lw, h) and points_margin_check_nb(sim, rec, o, h, lw, c, t)
    return path_nb(sim, rec, k, o, h, lw, c, t)


@bar_step_kernel
def step_nb(k, bars, funding, detail, sim, rec):
    """Run bar ``k`` through DESIGN.md steps 1-8; returns STEP_STOP once liquidated.

    ``bar_open_nb``, the simulated venue's intrabar path (step 3, the only part a live driver never
    runs), then ``bar_close_nb``. The groups are engine/contexts.py's (``detail.idx[k] = (start,
    end)``: the detail bars inside bar k; end == start: walk bar k's own OHLC).
    """
    t = bars.ts[k]
    o = bars.op[k]
    h = bars.hi[k]
    lw = bars.lo[k]
    c = bars.cl[k]
    allow = True
    if not bar_open_nb(k, t, o, h, lw, c, funding, sim, rec):
        bar_close_nb(k, t, h, lw, c, bars.reg, funding, allow, sim, rec)
        return STEP_CONTINUE
    # 3. intrabar path (simulated venue), margin check at every path point
    liquidated = bar_path_nb(k, t, o, h, lw, c, detail, sim, rec)
    if liquidated:
        mark_to_market_nb(sim.st, c, sim.br)
        record_bar_nb(sim.st, rec.eq, rec.cnt, t)
        return STEP_STOP
    bar_close_nb(k, t, h, lw, c, bars.reg, funding, allow, sim, rec)
    return STEP_CONTINUE


@kernel
def run_bars_nb(start, stop, bars, funding, detail, sim, rec):
    """Step bars ``start..stop-1``; stops early on liquidation or a full record buffer. Closes the stats.

    The groups are engine/contexts.py's (``Bars``, ``Funding``, ``Detail``, ``Sim``, ``Records``).
    """
    cnt = rec.cnt
    for k in range(start, stop):
        status = step_nb(k, bars, funding, detail, sim, rec)
        if cnt[C_OVERFLOW] != 0 or status == STEP_STOP:
            break
    finish_daily_stats_nb(sim.st)
