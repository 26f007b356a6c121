"""The report's gate views come from the gate table (configs/gates.py): "Gates tripped", the stop lines
and one status row per gate; a changed table changes them."""

from __future__ import annotations

import dataclasses

from gridctl.configs.gates import GATES, Gate
from gridctl.research.report import GATE_EVENTS, gate_events, gate_rows, gate_status_rows, stop_events


def _stats(events: dict[str, int], disabled: list[str]) -> dict:
    return {
        "events": events,
        "rejections": {},
        "assumptions": {"gates_disabled": disabled},
        "cooldown_pct": 0.0,
        "reducing_pct": 0.0,
        "halted_at": None,
        "orders_deferred": 0,
        "skipped_precision": 0,
    }


def test_gate_events_are_the_table_trips() -> None:
    assert tuple(e.lower() for g in GATES for e in g.trips) == GATE_EVENTS
    assert {"drawdown_halt", "circuit_breaker_trip", "reducing_on", "liquidation"} <= set(GATE_EVENTS)
    # Bookkeeping events are not gate events; resets are not trips.
    assert not {"recenter", "data_gap", "circuit_breaker_reset", "reducing_off"} & set(GATE_EVENTS)
    assert set(stop_events()) == {"drawdown_halt", "liquidation"} | {
        e.lower() for g in GATES if g.ends_run for e in g.trips
    }


def test_a_changed_row_changes_the_report_views() -> None:
    extra = Gate(name="x", title="X limit", switch=None, events=("X_STOP",), trips=("X_STOP",), ends_run=True)
    assert gate_events((*GATES, extra))[-1] == "x_stop" and "x_stop" not in GATE_EVENTS
    assert stop_events((*GATES, extra))[-1] == "x_stop"
    quiet = dataclasses.replace(next(g for g in GATES if g.name == "reducing"), trips=())
    assert "reducing_on" not in gate_events((quiet,))


def test_one_status_row_per_gate() -> None:
    # Hand-made stats: the breaker off, the drawdown halt acted once, REDUCING three times.
    stats = _stats(
        {"drawdown_halt": 1, "reducing_on": 3, "reducing_off": 3, "recenter": 5},
        ["risk_management.enable_circuit_breaker"],
    )
    rows = dict(gate_status_rows(stats))
    assert list(rows) == [f"gate: {g.title}" for g in GATES]
    assert rows["gate: Circuit breaker"] == "off (risk_management.enable_circuit_breaker)"
    assert rows["gate: Drawdown halt"] == "acted once"
    assert rows["gate: Reducing-only (leverage, liquidation buffer)"] == "acted 3 times"
    assert rows["gate: Order-size validation"] == "on"  # no event of its own: its refusals are "rejected:"
    assert rows["gate: Liquidation (the exchange's)"] == "acted 0 times"
    all_rows = dict(gate_rows(stats))
    assert all_rows["Gates tripped"] == "drawdown_halt, reducing_on"
    assert all_rows["gate: Drawdown halt"] == "acted once"
