"""The gate table's kernels: the per-bar step of the table's gates, the hold mask and the live view.

The gate table (configs/gates.py ``GATES``) declares each gate's config fields, state words, event kinds,
report rows and live fields; this module holds what only the kernels can do. ``table_gates_nb`` runs at
step 6 after the drawdown halt, the breaker and REDUCING (``step.bar_gates_nb``) and calls the per-bar
kernel of every gate declared here. A gate with ``holds`` blocks entries while its bit of
``S_GATE_HOLD`` is set (``risk.risk_state_nb``: COOLDOWN); ``hold_nb`` / ``release_nb`` set and clear it.
``gate_status`` reads the table's live fields from a state vector for the live bridge's status.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gridctl.configs.gates import GATES, Gate
from gridctl.engine.enums import EventKind, Reason, hot_kernel, kernel
from gridctl.engine.params import P_INITIAL_BALANCE, P_MAX_DAILY_LOSS_PCT
from gridctl.engine.records import write_event_nb
from gridctl.engine.state import (
    S_DAY,
    S_DAY_EQ,
    S_DIRTY,
    S_DL_DAY,
    S_DL_OPEN_EQ,
    S_EQUITY,
    S_GATE_HOLD,
    S_HALTED,
    STATE,
    cancel_entries_nb,
)

#: Gate name -> its bit in ``S_GATE_HOLD`` (the gates with ``holds``, in table order).
HOLD_BITS: dict[str, int] = {g.name: 1 << i for i, g in enumerate(g for g in GATES if g.holds)}


@kernel
def hold_nb(st, slots, bit):
    """Set ``bit`` of the hold mask: entries are blocked and the resting ones cancelled."""
    st[S_GATE_HOLD] = float(int(st[S_GATE_HOLD]) | bit)
    cancel_entries_nb(st, slots)


@kernel
def release_nb(st, bit):
    """Clear ``bit`` of the hold mask; the next decision re-plans the ladder."""
    st[S_GATE_HOLD] = float(int(st[S_GATE_HOLD]) & ~bit)
    st[S_DIRTY] = 1.0


@hot_kernel
def held_nb(st, bit):
    """True while ``bit`` of the hold mask is set."""
    return (int(st[S_GATE_HOLD]) & bit) != 0


DAY_MS = 86_400_000
DAILY_LOSS_BIT = HOLD_BITS["daily_loss"]


@hot_kernel
def daily_loss_nb(st, slots, c, ts, p, ev, cnt):
    """Daily loss limit: once equity is ``max_daily_loss_pct`` below the UTC day's opening equity (the
    close equity of the bar before the day's first bar; the initial balance on the first day), entries
    are cancelled and blocked until the first bar of a later day. Unset: off. Not after a halt."""
    limit = p[P_MAX_DAILY_LOSS_PCT]
    if limit != limit or st[S_HALTED] != 0.0:
        return
    day1 = float(ts // DAY_MS) + 1.0
    if day1 != st[S_DL_DAY]:
        st[S_DL_DAY] = day1
        st[S_DL_OPEN_EQ] = st[S_DAY_EQ] if st[S_DAY] == st[S_DAY] else p[P_INITIAL_BALANCE]
        if held_nb(st, DAILY_LOSS_BIT):
            release_nb(st, DAILY_LOSS_BIT)
            write_event_nb(
                ev, cnt, ts, EventKind.DAILY_LOSS_RESET, Reason.NONE, -1, 0, c, 0.0, st[S_DL_OPEN_EQ]
            )
    open_eq = st[S_DL_OPEN_EQ]
    if held_nb(st, DAILY_LOSS_BIT) or open_eq <= 0.0:
        return
    loss_pct = (open_eq - st[S_EQUITY]) / open_eq * 100.0
    if loss_pct >= limit:
        hold_nb(st, slots, DAILY_LOSS_BIT)
        write_event_nb(ev, cnt, ts, EventKind.DAILY_LOSS_STOP, Reason.NONE, -1, 0, c, 0.0, loss_pct)


@hot_kernel
def table_gates_nb(st, slots, c, ts, p, ev, cnt):
    """Step 6, last: the per-bar kernel of every gate declared in this module, in table order."""
    daily_loss_nb(st, slots, c, ts, p, ev, cnt)


def _live_value(gate: Gate, source: str, kind: str, st: np.ndarray) -> Any:
    if source == "hold":
        value = float((int(st[S_GATE_HOLD]) & HOLD_BITS[gate.name]) != 0)
    else:
        value = float(st[STATE.offset(source)])
    if kind == "flag":
        return bool(value)
    return value if math.isfinite(value) else None


def gate_status(st: np.ndarray, gates: tuple[Gate, ...] = GATES) -> dict[str, Any]:
    """The live status's gate fields (each row's ``live``) read from the state vector ``st``."""
    return {f.key: _live_value(g, f.source, f.kind, st) for g in gates for f in g.live}


def held_gates(st: np.ndarray, gates: tuple[Gate, ...] = GATES) -> list[Gate]:
    """The gates whose hold bit is set in ``st`` (they block entries now)."""
    mask = int(st[S_GATE_HOLD])
    return [g for g in gates if g.holds and mask & HOLD_BITS[g.name]]
