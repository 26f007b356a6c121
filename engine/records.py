"""Record dtypes (DESIGN.md "Engine records") and the kernels' bounded record writers.

The kernels append rows to preallocated structured arrays and count them in a small int64 vector
``cnt``. A writer never writes past the end: it sets ``cnt[C_OVERFLOW]`` and the driver re-runs the
whole backtest with doubled capacity, so a ledger is never silently truncated. With
``cnt[C_RECORD] == 0`` (batch runs) nothing is written at all.
"""

from __future__ import annotations

import numpy as np

from gridctl.engine.enums import hot_kernel, kernel
from gridctl.engine.layout import SlotTable

FILL_DTYPE = np.dtype(
    [
        ("ts", "i8"),
        ("side", "i1"),
        ("kind", "i1"),
        ("level", "i2"),
        ("price", "f8"),
        ("qty", "f8"),
        ("fee", "f8"),
        ("liquidity", "i1"),
        ("realized_pnl", "f8"),
    ]
)
FUNDING_DTYPE = np.dtype(
    [
        ("ts", "i8"),
        ("side", "i1"),
        ("rate", "f8"),
        ("mark_price", "f8"),
        ("mark_source", "i1"),
        ("qty", "f8"),
        ("amount", "f8"),
    ]
)
EQUITY_DTYPE = np.dtype(
    [
        ("ts", "i8"),
        ("equity", "f8"),
        ("wallet_balance", "f8"),
        ("unrealized_pnl", "f8"),
        ("long_qty", "f8"),
        ("short_qty", "f8"),
        ("regime", "i1"),
        ("state", "i1"),
        ("margin_ratio", "f8"),
    ]
)
EVENT_DTYPE = np.dtype(
    [
        ("ts", "i8"),
        ("kind", "i2"),
        ("reason", "i2"),
        ("side", "i1"),
        ("level", "i2"),
        ("price", "f8"),
        ("qty", "f8"),
        ("value", "f8"),
    ]
)

#: The counter vector's slots (int64; name, size, meaning); the offsets below are derived from it.
COUNTERS = SlotTable("counters")
C_FILLS = COUNTERS.add("C_FILLS", "fill rows written")
C_FUNDING = COUNTERS.add("C_FUNDING", "funding rows written")
C_EVENTS = COUNTERS.add("C_EVENTS", "event rows written")
C_EQUITY = COUNTERS.add("C_EQUITY", "equity rows written")
C_OVERFLOW = COUNTERS.add(
    "C_OVERFLOW", "1 once any buffer was full: the run is void and must be repeated with more room"
)
C_RECORD = COUNTERS.add("C_RECORD", "1: write ledgers; 0: online summaries only (batch)")
C_CURVES = COUNTERS.add("C_CURVES", "1: write one equity row per bar")
N_COUNTERS = COUNTERS.size


def new_counters(record: bool, curves: bool) -> np.ndarray:
    """Counter vector for one run."""
    cnt = np.zeros(N_COUNTERS, dtype=np.int64)
    cnt[C_RECORD] = 1 if record else 0
    cnt[C_CURVES] = 1 if (record and curves) else 0
    return cnt


def empty_buffers() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Zero-length fills / funding / events / equity buffers for runs that record nothing."""
    return (
        np.zeros(0, FILL_DTYPE),
        np.zeros(0, FUNDING_DTYPE),
        np.zeros(0, EVENT_DTYPE),
        np.zeros(0, EQUITY_DTYPE),
    )


@kernel
def write_fill_nb(fills, cnt, ts, side, kind, level, price, qty, fee, liquidity, realized):
    """Append one fill row (or flag overflow).

    Wide because: one argument per column of the row (``FILL_DTYPE``) after the buffer and its
    counters: a leaf writer, kept flat so each call site names what it records.
    """
    if cnt[C_RECORD] == 0:
        return
    i = cnt[C_FILLS]
    if i >= fills.shape[0]:
        cnt[C_OVERFLOW] = 1
        return
    r = fills[i]
    r["ts"] = ts
    r["side"] = side
    r["kind"] = kind
    r["level"] = level
    r["price"] = price
    r["qty"] = qty
    r["fee"] = fee
    r["liquidity"] = liquidity
    r["realized_pnl"] = realized
    cnt[C_FILLS] = i + 1


@kernel
def write_funding_nb(fund, cnt, ts, side, rate, mark, mark_source, qty, amount):
    """Append one funding-payment row (or flag overflow)."""
    if cnt[C_RECORD] == 0:
        return
    i = cnt[C_FUNDING]
    if i >= fund.shape[0]:
        cnt[C_OVERFLOW] = 1
        return
    r = fund[i]
    r["ts"] = ts
    r["side"] = side
    r["rate"] = rate
    r["mark_price"] = mark
    r["mark_source"] = mark_source
    r["qty"] = qty
    r["amount"] = amount
    cnt[C_FUNDING] = i + 1


@kernel
def write_event_nb(ev, cnt, ts, kind, reason, side, level, price, qty, value):
    """Append one event row (or flag overflow)."""
    if cnt[C_RECORD] == 0:
        return
    i = cnt[C_EVENTS]
    if i >= ev.shape[0]:
        cnt[C_OVERFLOW] = 1
        return
    r = ev[i]
    r["ts"] = ts
    r["kind"] = kind
    r["reason"] = reason
    r["side"] = side
    r["level"] = level
    r["price"] = price
    r["qty"] = qty
    r["value"] = value
    cnt[C_EVENTS] = i + 1


@hot_kernel
def write_equity_nb(eq, cnt, ts, equity, wallet, unreal, long_qty, short_qty, regime, state, margin_ratio):
    """Append one equity-curve row (only when curves were requested).

    Wide because: one argument per column of the row (``EQUITY_DTYPE``) after the buffer and its
    counters: a leaf writer, kept flat so its one call site names what it records.
    """
    if cnt[C_CURVES] == 0:
        return
    i = cnt[C_EQUITY]
    if i >= eq.shape[0]:
        cnt[C_OVERFLOW] = 1
        return
    r = eq[i]
    r["ts"] = ts
    r["equity"] = equity
    r["wallet_balance"] = wallet
    r["unrealized_pnl"] = unreal
    r["long_qty"] = long_qty
    r["short_qty"] = short_qty
    r["regime"] = regime
    r["state"] = state
    r["margin_ratio"] = margin_ratio
    cnt[C_EQUITY] = i + 1


# --- run summaries (one row per run; the batch returns one row per parameter set)

SUMMARY_FIELDS: tuple[str, ...] = (
    "final_equity",
    "wallet_balance",
    "realized_pnl",
    "fees",
    "funding_net",
    "funding_paid",
    "funding_received",
    "total_return_pct",
    "peak_equity",
    "max_drawdown_daily_close_pct",
    "max_drawdown_bar_close_pct",
    "max_drawdown_intrabar_pct",
    "days",
    "sharpe",
    "sortino",
    "n_fills",
    "n_fills_maker",
    "n_fills_taker",
    "n_entries",
    "n_exits",
    "n_lots_closed",
    "n_wins",
    "n_losses",
    "gross_profit",
    "gross_loss",
    "same_bar_round_trips",
    "same_bar_gross_profit",
    "profit_factor",
    "win_rate",
    "traded_notional",
    "bars",
    "bars_exposure",
    "bars_halted",
    "bars_cooldown",
    "bars_reducing",
    "rejections",
    "rejected_size_pct",
    "rejected_size_qty",
    "rejected_size_inventory",
    "rejected_size_order",
    "rejected_size_bracket",
    "rejected_size_margin",
    "post_only_rejects",
    "retry_limits",
    "orders_submitted",
    "orders_deferred",
    "skipped_precision",
    "skipped_order_limit",
    "errors",
    "circuit_breaker_trips",
    "recenters",
    "funding_payments",
    "liquidated",
    "liquidated_ts",
    "halted",
    "halted_ts",
    "long_qty",
    "short_qty",
)
SUMMARY_DTYPE = np.dtype([(name, "f8") for name in SUMMARY_FIELDS])


def summarize_states(states: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Summary rows from final state vectors ``[m, N_STATE]`` and their parameters ``[m, N_PARAMS]``.

    Sharpe and Sortino are annualised with sqrt(365) from UTC-day returns (sample std; downside
    deviation over all days); NaN where undefined (fewer than 2 days, no dispersion, no losses).
    Drawdowns: ``max_drawdown_daily_close_pct`` on UTC-day closing equity, ``..._bar_close_pct`` on
    every bar's closing equity, ``..._intrabar_pct`` on each bar's adverse extreme for the positions
    held at its close. Win rate and profit factor count closed lots (PnL from the lot's own entry,
    after its entry and exit fees).
    """
    from gridctl.engine.params import P_INITIAL_BALANCE
    from gridctl.engine.state import S_EQUITY

    st = np.atleast_2d(states)
    vec = np.atleast_2d(vectors)
    out = np.zeros(st.shape[0], SUMMARY_DTYPE)
    for name, slot in _copied_slots().items():
        out[name] = st[:, slot]
    out["total_return_pct"] = (st[:, S_EQUITY] / vec[:, P_INITIAL_BALANCE] - 1.0) * 100.0
    _derive(out, st)
    return out


def _copied_slots() -> dict[str, int]:
    """The summary fields copied as they stand from a state slot: field -> slot."""
    from gridctl.engine.enums import Reason
    from gridctl.engine.state import (
        S_BARS,
        S_BARS_COOLDOWN,
        S_BARS_EXPOSURE,
        S_BARS_HALTED,
        S_BARS_REDUCING,
        S_CB_TRIPS,
        S_DAY_N,
        S_EQUITY,
        S_ERRORS,
        S_FEES,
        S_FUNDING_NET,
        S_FUNDING_PAID,
        S_FUNDING_RECV,
        S_GROSS_LOSS,
        S_GROSS_PROFIT,
        S_HALT_TS,
        S_HALTED,
        S_LIQ_TS,
        S_LIQUIDATED,
        S_LONG_QTY,
        S_MAX_DD_DAILY_PCT,
        S_MAX_DD_PCT,
        S_N_ENTRIES,
        S_N_EXITS,
        S_N_FUNDING,
        S_N_LOSSES,
        S_N_LOTS_CLOSED,
        S_N_MAKER,
        S_N_TAKER,
        S_N_WINS,
        S_ORDERS_DEFERRED,
        S_ORDERS_SUBMITTED,
        S_PEAK,
        S_POST_ONLY_REJECTS,
        S_REALIZED,
        S_RECENTERS,
        S_REJ_BASE,
        S_RETRY_LIMITS,
        S_SAME_BAR_N,
        S_SAME_BAR_PROFIT,
        S_SHORT_QTY,
        S_SKIPPED_ORDER_LIMIT,
        S_SKIPPED_PRECISION,
        S_TRADED_NOTIONAL,
        S_WALLET,
    )

    return {
        "final_equity": S_EQUITY,
        "wallet_balance": S_WALLET,
        "realized_pnl": S_REALIZED,
        "fees": S_FEES,
        "funding_net": S_FUNDING_NET,
        "funding_paid": S_FUNDING_PAID,
        "funding_received": S_FUNDING_RECV,
        "peak_equity": S_PEAK,
        "max_drawdown_daily_close_pct": S_MAX_DD_DAILY_PCT,
        "max_drawdown_bar_close_pct": S_MAX_DD_PCT,
        "days": S_DAY_N,
        "n_fills_maker": S_N_MAKER,
        "n_fills_taker": S_N_TAKER,
        "n_entries": S_N_ENTRIES,
        "n_exits": S_N_EXITS,
        "n_lots_closed": S_N_LOTS_CLOSED,
        "n_wins": S_N_WINS,
        "n_losses": S_N_LOSSES,
        "gross_profit": S_GROSS_PROFIT,
        "gross_loss": S_GROSS_LOSS,
        "same_bar_round_trips": S_SAME_BAR_N,
        "same_bar_gross_profit": S_SAME_BAR_PROFIT,
        "traded_notional": S_TRADED_NOTIONAL,
        "bars": S_BARS,
        "bars_exposure": S_BARS_EXPOSURE,
        "bars_halted": S_BARS_HALTED,
        "bars_cooldown": S_BARS_COOLDOWN,
        "bars_reducing": S_BARS_REDUCING,
        "rejected_size_pct": S_REJ_BASE + Reason.SIZE_PCT,
        "rejected_size_qty": S_REJ_BASE + Reason.SIZE_QTY,
        "rejected_size_inventory": S_REJ_BASE + Reason.SIZE_INVENTORY,
        "rejected_size_order": S_REJ_BASE + Reason.SIZE_ORDER,
        "rejected_size_bracket": S_REJ_BASE + Reason.SIZE_BRACKET,
        "rejected_size_margin": S_REJ_BASE + Reason.SIZE_MARGIN,
        "post_only_rejects": S_POST_ONLY_REJECTS,
        "retry_limits": S_RETRY_LIMITS,
        "orders_submitted": S_ORDERS_SUBMITTED,
        "orders_deferred": S_ORDERS_DEFERRED,
        "skipped_precision": S_SKIPPED_PRECISION,
        "skipped_order_limit": S_SKIPPED_ORDER_LIMIT,
        "errors": S_ERRORS,
        "circuit_breaker_trips": S_CB_TRIPS,
        "recenters": S_RECENTERS,
        "funding_payments": S_N_FUNDING,
        "liquidated": S_LIQUIDATED,
        "liquidated_ts": S_LIQ_TS,
        "halted": S_HALTED,
        "halted_ts": S_HALT_TS,
        "long_qty": S_LONG_QTY,
        "short_qty": S_SHORT_QTY,
    }


def _derive(out: np.ndarray, st: np.ndarray) -> None:
    """The summary fields derived from several slots: fills, intrabar drawdown, rejections, Sharpe,
    Sortino, profit factor and win rate."""
    from gridctl.engine.enums import Reason
    from gridctl.engine.state import (
        S_DAY_DOWNSQ,
        S_DAY_N,
        S_DAY_SUM,
        S_DAY_SUMSQ,
        S_GROSS_LOSS,
        S_GROSS_PROFIT,
        S_MAX_DD_INTRABAR_PCT,
        S_MAX_DD_PCT,
        S_N_LOTS_CLOSED,
        S_N_MAKER,
        S_N_TAKER,
        S_N_WINS,
        S_REJ_BASE,
    )

    out["n_fills"] = st[:, S_N_MAKER] + st[:, S_N_TAKER]
    # The bar of a liquidation counts at its close (the positions are gone by then).
    out["max_drawdown_intrabar_pct"] = np.maximum(st[:, S_MAX_DD_INTRABAR_PCT], st[:, S_MAX_DD_PCT])
    counted = [Reason.SIZE_PCT, Reason.SIZE_QTY, Reason.SIZE_INVENTORY, Reason.SIZE_ORDER]
    counted += [Reason.SIZE_BRACKET, Reason.SIZE_MARGIN]
    out["rejections"] = st[:, [S_REJ_BASE + r for r in counted]].sum(axis=1)
    n = st[:, S_DAY_N]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = st[:, S_DAY_SUM] / n
        var = (st[:, S_DAY_SUMSQ] - n * mean * mean) / (n - 1.0)
        std = np.sqrt(np.maximum(var, 0.0))
        out["sharpe"] = np.where((n >= 2) & (std > 0), mean / std * np.sqrt(365.0), np.nan)
        down = np.sqrt(st[:, S_DAY_DOWNSQ] / n)
        out["sortino"] = np.where((n >= 2) & (down > 0), mean / down * np.sqrt(365.0), np.nan)
        gp = st[:, S_GROSS_PROFIT]
        gl = st[:, S_GROSS_LOSS]
        out["profit_factor"] = np.where(gl > 0, gp / gl, np.where(gp > 0, np.inf, np.nan))
        lots = st[:, S_N_LOTS_CLOSED]
        out["win_rate"] = np.where(lots > 0, st[:, S_N_WINS] / lots, np.nan)
