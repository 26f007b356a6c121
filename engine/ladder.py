"""The grid ladder: exchange rounding, rung prices and sizes around the centre, lot TP/SL, re-centring.

Rung i of the long side sits at ``floor_tick(C*(1 - i*s))`` and of the short side at
``ceil_tick(C*(1 + i*s))`` with ``s = grid_step_bps/1e4``; its size is ``base_qty * qty_scale**(i-1)``
(``base_notional / C`` in place of ``base_qty`` when the rung size is given in quote currency).
Rounding always moves a price away from the centre (never makes an entry more aggressive).
"""

from __future__ import annotations

import math

from gridctl.engine.enums import Side, hot_kernel, kernel
from gridctl.engine.params import (
    P_BASE_NOTIONAL,
    P_BASE_QTY,
    P_GRID_STEP_BPS,
    P_QTY_SCALE,
    P_RECENTER_BPS,
    P_SL_STEPS,
    P_TICK,
    P_TP_STEPS,
)
from gridctl.engine.state import SL_RUNG_PRICE, SL_RUNG_QTY


@kernel
def floor_tick_nb(x, tick):
    """Largest tick multiple <= x (with a 1e-9 tick tolerance against float noise)."""
    return math.floor(x / tick + 1e-9) * tick


@kernel
def ceil_tick_nb(x, tick):
    """Smallest tick multiple >= x (with a 1e-9 tick tolerance against float noise)."""
    return math.ceil(x / tick - 1e-9) * tick


@kernel
def floor_step_nb(q, step):
    """Largest lot-step multiple <= q."""
    return math.floor(q / step + 1e-9) * step


@kernel
def rung_price_nb(center, side, i, p):
    """Entry price of rung ``i`` (1-based) of ``side`` around ``center``."""
    s = p[P_GRID_STEP_BPS] * 1e-4
    if side == Side.LONG:
        return floor_tick_nb(center * (1.0 - i * s), p[P_TICK])
    return ceil_tick_nb(center * (1.0 + i * s), p[P_TICK])


@kernel
def rung_qty_nb(i, center, p):
    """Unscaled size of rung ``i``: ``base_qty * qty_scale**(i-1)``, or with ``grid.base_notional`` set,
    ``base_notional / center * qty_scale**(i-1)`` (rung 1's quote notional at the ladder centre)."""
    base = p[P_BASE_NOTIONAL] / center if p[P_BASE_NOTIONAL] == p[P_BASE_NOTIONAL] else p[P_BASE_QTY]
    return base * p[P_QTY_SCALE] ** (i - 1)


@kernel
def tp_price_nb(side, entry, p):
    """Take-profit of a lot filled at ``entry``: tp_steps grid steps in the lot's favour."""
    s = p[P_GRID_STEP_BPS] * 1e-4
    if side == Side.LONG:
        return ceil_tick_nb(entry * (1.0 + p[P_TP_STEPS] * s), p[P_TICK])
    return floor_tick_nb(entry * (1.0 - p[P_TP_STEPS] * s), p[P_TICK])


@kernel
def sl_price_nb(side, entry, p):
    """Stop-loss of a lot filled at ``entry``: sl_steps grid steps against the lot."""
    s = p[P_GRID_STEP_BPS] * 1e-4
    if side == Side.LONG:
        return floor_tick_nb(entry * (1.0 - p[P_SL_STEPS] * s), p[P_TICK])
    return ceil_tick_nb(entry * (1.0 + p[P_SL_STEPS] * s), p[P_TICK])


@hot_kernel
def needs_recenter_nb(center, close, p):
    """True when the close is more than recenter_trigger_bps away from the centre."""
    return abs(close - center) / center * 1e4 > p[P_RECENTER_BPS]


@kernel
def set_rungs_nb(slots, center, p):
    """Cache every rung's price and unscaled size for ``center`` in the slot array."""
    n = slots.shape[1]
    for side in range(2):
        for idx in range(n):
            slots[side, idx, SL_RUNG_PRICE] = rung_price_nb(center, side, idx + 1, p)
            slots[side, idx, SL_RUNG_QTY] = rung_qty_nb(idx + 1, center, p)
