"""Placement policy: how many rungs each side keeps, and at what size, in the current regime.

SIDEWAYS keeps both sides full. In a trend the counter side is the one trading against it (short in UP,
long in DOWN). ``throttled-counter`` cuts only the counter side to ``min(counter_levels, levels)`` rungs
at ``counter_qty_scale``; ``core-and-scalp`` cuts both sides to that many rungs and scales the counter
side's size.
"""

from __future__ import annotations

from gridctl.engine.enums import PolicyKind, Regime, Side, kernel
from gridctl.engine.params import (
    P_COUNTER_LEVELS,
    P_COUNTER_QTY_SCALE,
    P_LEVELS_LONG,
    P_LEVELS_SHORT,
    P_POLICY,
)


@kernel
def side_levels_nb(side, p):
    """Configured rung count of ``side``."""
    return int(p[P_LEVELS_LONG]) if side == Side.LONG else int(p[P_LEVELS_SHORT])


@kernel
def policy_shape_nb(regime, side, p):
    """(rungs kept, qty multiplier) for ``side`` in ``regime``."""
    levels = side_levels_nb(side, p)
    if regime == Regime.SIDEWAYS:
        return levels, 1.0
    counter = Side.SHORT if regime == Regime.UP else Side.LONG
    cut = min(int(p[P_COUNTER_LEVELS]), levels)
    if side == counter:
        return cut, p[P_COUNTER_QTY_SCALE]
    if int(p[P_POLICY]) == PolicyKind.CORE_AND_SCALP:
        return cut, 1.0
    return levels, 1.0
