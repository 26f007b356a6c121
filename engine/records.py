"""Record dtypes (DESIGN.md "Engine records") and the kernels' bounded record writers.

The kernels append rows to preallocated structured arrays and count them in a small int64 vector
``cnt``. A writer never writes past the end: it sets ``cnt[C_OVERFLOW]`` and the driver re-runs the
whole backtest with doubled capacity, so a ledger is never silently truncated. With
``cnt[C_RECORD] == 0`` (batch runs) nothing is written at all.
"""

from __future__ import annotations

import numpy as np
from numba import njit

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

# Counter vector layout (int64).
C_FILLS = 0
C_FUNDING = 1
C_EVENTS = 2
C_EQUITY = 3
C_OVERFLOW = 4  # 1 once any buffer was full: the run is void and must be repeated with more room
C_RECORD = 5  # 1: write ledgers; 0: online summaries only (batch)
C_CURVES = 6  # 1: write one equity row per bar
N_COUNTERS = 7


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


@njit(cache=True)
def write_fill_nb(fills, cnt, ts, side, kind, level, price, qty, fee, liquidity, realized):
    """Append one fill row (or flag overflow)."""
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


@njit(cache=True)
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


@njit(cache=True)
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


@njit(cache=True)
def write_equity_nb(eq, cnt, ts, equity, wallet, unreal, long_qty, short_qty, regime, state, margin_ratio):
    """Append one equity-curve row (only when curves were requested)."""
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
