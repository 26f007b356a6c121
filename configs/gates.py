"""The gate table: every risk gate of the engine, declared once, as plain data.

A row says what the rest of the project needs to know about a gate, and each layer derives its view
from ``GATES`` instead of keeping its own list:

* ``configs.schema``: the ``risk_management`` section's fields (``fields``) and
  ``StrategyConfig.gates_disabled`` (``switch``);
* ``engine.params``: one parameter slot per field (``GateField.slot``), read from the config;
* ``engine.state``: the state words a gate keeps (``state``);
* ``engine.enums``: the gates' ``EventKind`` names (``events``), after the bookkeeping kinds;
* ``engine.risk`` / ``engine.gates``: a gate with ``holds`` blocks entries (risk state COOLDOWN) while
  its bit of the hold mask is set;
* ``research.report``: "Gates tripped" and one row per gate (``title``, ``trips``, ``ends_run``);
* ``live_bridge.bridge``: the gate fields of the live status (``live``) and, for a gate that holds
  entries, a pause key (its ``name``) and reason; ``live_bridge.metrics``: that key as a pause label;
* ``engine.numba_compat``: the kernel cache key (the kernels bake in the slots and event numbers).

Adding a gate is its kernel function (``engine/gates.py``), one row here and its tests. The table lives
in ``configs`` because the schema, the lowest layer, derives from it; it holds names only, no engine code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class GateField:
    """One ``risk_management`` field a gate reads: its type, default and range, and its parameter slot.

    ``bounds`` are pydantic ``Field`` keywords (``ge``, ``gt``, ``le``); every number needs both ends.
    ``slot`` is the name of the parameter-vector slot (``engine.params``) the kernels read it from
    (booleans as 0/1, an unset optional value as NaN).
    """

    name: str
    annotation: Any
    default: Any
    slot: str
    bounds: dict[str, float] = field(default_factory=dict)

    @property
    def path(self) -> str:
        """The config key path, e.g. ``risk_management.max_drawdown_pct``."""
        return f"{SECTION}.{self.name}"


@dataclass(frozen=True)
class LiveField:
    """One field of the live status's ``gates`` object: ``source`` is a state slot name (``S_...``) or
    ``"hold"`` (the gate's bit of the hold mask); ``kind`` ``flag`` gives a bool, ``ms`` a time in ms or
    None when not finite."""

    key: str
    source: str
    kind: Literal["flag", "ms"]


@dataclass(frozen=True)
class Gate:
    """One risk gate (see the module docstring for who reads which attribute)."""

    name: str
    title: str
    fields: tuple[GateField, ...] = ()
    #: The field that turns the gate off when false (``enable_*``) or unset (None); None: always on.
    switch: str | None = None
    #: Off unless configured (an unset ``switch`` is the default, not reported as disabled).
    opt_in: bool = False
    events: tuple[str, ...] = ()
    #: The events that mean the gate acted.
    trips: tuple[str, ...] = ()
    #: Its trip ends trading for the rest of the run.
    ends_run: bool = False
    #: State words the gate keeps, (slot name, meaning), laid out by ``engine.state``.
    state: tuple[tuple[str, str], ...] = ()
    #: Blocks entries (risk state COOLDOWN) while its bit of the hold mask is set.
    holds: bool = False
    live: tuple[LiveField, ...] = ()


#: The strategy section every gate field lives in.
SECTION = "risk_management"

GATES: tuple[Gate, ...] = (
    Gate(
        name="position_validation",
        title="Order-size validation",
        fields=(GateField("enable_position_validation", bool, True, "P_ENABLE_VALIDATION"),),
        switch="enable_position_validation",
    ),
    Gate(
        name="circuit_breaker",
        title="Circuit breaker",
        fields=(
            GateField("max_errors_per_minute", int, 10, "P_MAX_ERRORS", {"ge": 1, "le": 100}),
            GateField(
                "circuit_breaker_cooldown_seconds", int, 300, "P_CB_COOLDOWN_S", {"ge": 60, "le": 3600}
            ),
            GateField("circuit_breaker_window_seconds", int, 60, "P_CB_WINDOW_S", {"ge": 10, "le": 600}),
            GateField("enable_circuit_breaker", bool, True, "P_ENABLE_CB"),
        ),
        switch="enable_circuit_breaker",
        events=("CIRCUIT_BREAKER_TRIP", "CIRCUIT_BREAKER_RESET"),
        trips=("CIRCUIT_BREAKER_TRIP",),
        live=(
            LiveField("circuit_breaker_active", "S_CB_ACTIVE", "flag"),
            LiveField("circuit_breaker_until_ms", "S_CB_UNTIL", "ms"),
        ),
    ),
    Gate(
        name="drawdown_halt",
        title="Drawdown halt",
        fields=(
            GateField("max_drawdown_pct", float, 20.0, "P_MAX_DRAWDOWN_PCT", {"ge": 1, "le": 50}),
            GateField("enable_drawdown_protection", bool, True, "P_ENABLE_DRAWDOWN"),
        ),
        switch="enable_drawdown_protection",
        events=("DRAWDOWN_HALT",),
        trips=("DRAWDOWN_HALT",),
        ends_run=True,
        live=(LiveField("halted", "S_HALTED", "flag"),),
    ),
    Gate(
        name="reducing",
        title="Reducing-only (leverage, liquidation buffer)",
        events=("REDUCING_ON", "REDUCING_OFF"),
        trips=("REDUCING_ON",),
        live=(LiveField("reducing", "S_REDUCING", "flag"),),
    ),
    Gate(
        name="funding_unknown",
        title="Unknown funding rate",
        events=("FUNDING_UNKNOWN",),
        trips=("FUNDING_UNKNOWN",),
    ),
    Gate(
        name="input_missing",
        title="Missing market input",
        events=("INPUT_MISSING",),
        trips=("INPUT_MISSING",),
    ),
    Gate(
        name="liquidation",
        title="Liquidation (the exchange's)",
        events=("LIQUIDATION",),
        trips=("LIQUIDATION",),
        ends_run=True,
    ),
    Gate(
        name="daily_loss",
        title="Daily loss limit",
        fields=(
            GateField("max_daily_loss_pct", float | None, None, "P_MAX_DAILY_LOSS_PCT", {"gt": 0, "le": 100}),
        ),
        switch="max_daily_loss_pct",
        opt_in=True,
        events=("DAILY_LOSS_STOP", "DAILY_LOSS_RESET"),
        trips=("DAILY_LOSS_STOP",),
        state=(
            ("S_DL_DAY", "daily loss limit: UTC day number + 1 of the day it measures (0: none yet)"),
            ("S_DL_OPEN_EQ", "daily loss limit: that day's opening equity (close equity of the bar before)"),
        ),
        holds=True,
        live=(LiveField("daily_loss_stopped", "hold", "flag"),),
    ),
)


def gate_fields(gates: tuple[Gate, ...] = GATES) -> list[GateField]:
    """Every gate field, in table order (the ``risk_management`` section's fields)."""
    return [f for g in gates for f in g.fields]


def gate_event_names(gates: tuple[Gate, ...] = GATES) -> list[str]:
    """The gates' event kind names, in table order."""
    return [e for g in gates for e in g.events]


def declare_gate_params(table: Any, gates: tuple[Gate, ...] = GATES) -> dict[str, int]:
    """Declare one slot per gate field in ``table`` (the engine's parameter ``SlotTable``), read from the
    strategy at the field's path; returns slot name -> offset."""
    return {f.slot: table.add(f.slot, f.path, source=("strategy", f.path)) for f in gate_fields(gates)}


def declare_gate_state(table: Any, gates: tuple[Gate, ...] = GATES) -> dict[str, int]:
    """Declare every gate's state words in ``table`` (the engine's state ``SlotTable``); name -> offset."""
    return {name: table.add(name, meaning) for g in gates for name, meaning in g.state}


def gates_disabled(values: Any, gates: tuple[Gate, ...] = GATES) -> list[str]:
    """Key paths of the switches that turn a gate off in ``values`` (a risk_management section).

    An opt-in gate left unset is its default, not a gate switched off, so it is not listed.
    """
    off = []
    for g in gates:
        if g.switch is None:
            continue
        value = getattr(values, g.switch)
        if value is False or (value is None and not g.opt_in):
            off.append(f"{SECTION}.{g.switch}")
    return off
