"""Operator throttle: the one validated path that changes the entry-size multiplier.

The audited bot's ops API wrote ``strategy._throttle`` directly and nothing read it. Here the kernels
read the state slot ``S_THROTTLE`` when sizing every entry, and ``set_throttle`` is the only writer:
runs call it with ``policy.throttle`` at start, and the live ops API calls it later.
"""

from __future__ import annotations

import math

import numpy as np

from gridctl.configs.errors import GridctlError
from gridctl.engine.enums import kernel
from gridctl.engine.state import S_DIRTY, S_THROTTLE


def set_throttle(state: np.ndarray, value: float) -> None:
    """Validate ``value`` (a number in 0..1) and store it; the next decision re-sizes every entry."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise GridctlError(f"throttle must be a number between 0 and 1, got {value!r}")
    try:
        v = float(value)
    except OverflowError:  # an integer too large for a float
        raise GridctlError(
            f"throttle must be between 0 and 1, got an integer of {len(str(value))} digits"
        ) from None
    if not math.isfinite(v) or v < 0.0 or v > 1.0:
        raise GridctlError(f"throttle must be between 0 and 1, got {value!r}")
    state[S_THROTTLE] = v
    state[S_DIRTY] = 1.0


@kernel
def throttle_nb(state):
    """The entry-size multiplier the kernels apply (written only by ``set_throttle``)."""
    return state[S_THROTTLE]
