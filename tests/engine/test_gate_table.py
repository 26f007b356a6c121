"""The gate table (configs/gates.py) is the one source of every gate view: the risk_management schema and
``gates_disabled``, the parameter and state slots, the kernel's event kinds, the hold mask, the live
status fields and the kernel cache key. Each view is checked against the table, and a changed table
(an extra row, a changed row) is checked to change the view.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from pydantic import ValidationError

from gridctl.configs import gates as gate_table
from gridctl.configs.gates import (
    GATES,
    SECTION,
    Gate,
    GateField,
    LiveField,
    declare_gate_params,
    declare_gate_state,
    gates_disabled,
)
from gridctl.configs.schema import RiskManagementSection, StrategyConfig, risk_management_model
from gridctl.engine import gates as engine_gates
from gridctl.engine import numba_compat, params, state
from gridctl.engine.enums import BOOKKEEPING_EVENTS, EventKind, RiskState, event_kind_names
from gridctl.engine.layout import SlotTable
from gridctl.engine.risk import entries_allowed_nb, risk_state_nb
from gridctl.engine.state import N_SLOT, S_DIRTY, S_GATE_HOLD, init_state

from market_builders import strategy

#: A gate that is not in the table: an opt-in limit with a state word, two events and live fields.
EXTRA = Gate(
    name="test_limit",
    title="Test limit",
    fields=(GateField("test_limit_pct", float | None, None, "P_TEST_LIMIT_PCT", {"gt": 0, "le": 10}),),
    switch="test_limit_pct",
    opt_in=True,
    events=("TEST_STOP", "TEST_RESET"),
    trips=("TEST_STOP",),
    ends_run=True,
    state=(("S_TEST_WORD", "a test word"),),
    holds=True,
    live=(LiveField("test_stopped", "hold", "flag"), LiveField("test_word_ms", "S_TEST_WORD", "ms")),
)


def test_schema_fields_are_the_table_fields() -> None:
    fields = RiskManagementSection.model_fields
    expected = [f for g in GATES for f in g.fields]
    assert list(fields) == [f.name for f in expected]
    for f in expected:
        assert fields[f.name].annotation == f.annotation and fields[f.name].default == f.default
    # The table's bounds are the schema's: one below the circuit breaker's error floor is refused.
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        RiskManagementSection(max_errors_per_minute=0)
    RiskManagementSection(max_errors_per_minute=1)


def test_an_extra_row_adds_its_field_with_its_range() -> None:
    model = risk_management_model((*GATES, EXTRA))
    assert "test_limit_pct" in model.model_fields
    assert "test_limit_pct" not in RiskManagementSection.model_fields
    assert model().test_limit_pct is None
    assert model(test_limit_pct=2.5).test_limit_pct == 2.5
    with pytest.raises(ValidationError, match="less than or equal to 10"):
        model(test_limit_pct=11.0)


def test_gates_disabled_follows_the_switches() -> None:
    # Every switchable gate of the table, off one at a time: exactly its switch is listed.
    switchable = [g for g in GATES if g.switch is not None and not g.opt_in]
    assert {g.name for g in switchable} >= {"position_validation", "circuit_breaker", "drawdown_halt"}
    for g in switchable:
        s = strategy(**{f"{SECTION}__{g.switch}": False})
        assert s.gates_disabled() == [f"{SECTION}.{g.switch}"]
    assert strategy().gates_disabled() == []
    # An opt-in gate left unset is not "disabled"; a required switch set to None would be.
    model = risk_management_model((*GATES, EXTRA))
    assert gates_disabled(model(), (*GATES, EXTRA)) == []
    required = dataclasses.replace(EXTRA, opt_in=False)
    assert gates_disabled(model(), (*GATES, required)) == [f"{SECTION}.test_limit_pct"]


def test_every_gate_field_has_its_parameter_slot() -> None:
    for f in (f for g in GATES for f in g.fields):
        slot = getattr(params, f.slot)
        assert params.PARAMS.offset(f.slot) == slot
        assert params.STRATEGY_PATHS[f"{SECTION}.{f.name}"] == slot
    # A few by hand: the defaults of the shipped gates land in their slots.
    vec = params.build_params(strategy(), *_venue_and_market()).vector
    assert vec[params.P_MAX_ERRORS] == 10.0 and vec[params.P_CB_COOLDOWN_S] == 300.0
    assert vec[params.P_MAX_DRAWDOWN_PCT] == 50.0  # market_builders' strategy sets 50
    assert vec[params.P_ENABLE_CB] == 1.0


def test_an_extra_row_declares_its_parameter_slot_and_state_words() -> None:
    # The engine's tables call these with the shipped table; an extra row adds its slot and words.
    shipped = declare_gate_params(SlotTable("p"))
    extended = SlotTable("p")
    slots = declare_gate_params(extended, (*GATES, EXTRA))
    assert list(slots) == [*shipped, "P_TEST_LIMIT_PCT"]
    assert extended.sources("strategy")[f"{SECTION}.test_limit_pct"] == slots["P_TEST_LIMIT_PCT"]
    gate_slots = [s for s in params.PARAMS.slots if s.name in shipped]
    assert [(s.name, s.source) for s in gate_slots] == [(s.name, s.source) for s in extended.slots][:-1]
    words = SlotTable("s")
    assert declare_gate_state(words, (*GATES, EXTRA)) == {
        **{n: i for i, n in enumerate(n for g in GATES for n, _ in g.state)},
        "S_TEST_WORD": sum(len(g.state) for g in GATES),
    }
    assert words.slots[-1].meaning == "a test word"


def _venue_and_market():
    from market_builders import flat, make_market, venue

    return venue(), make_market(flat(100.0, 2))


def test_event_kinds_are_the_bookkeeping_kinds_then_the_table_events() -> None:
    names = [e for g in GATES for e in g.events]
    assert EventKind._fields == (*BOOKKEEPING_EVENTS, *names)
    assert tuple(EventKind) == tuple(range(len(EventKind._fields)))
    assert len(set(EventKind._fields)) == len(EventKind._fields)  # no event named twice
    # An extra row's events follow the existing ones, whose numbers stay.
    extended = event_kind_names((*GATES, EXTRA))
    assert extended[: len(EventKind)] == EventKind._fields and extended[len(EventKind) :] == EXTRA.events


def test_every_gate_state_word_is_a_state_slot() -> None:
    for g in GATES:
        for name, meaning in g.state:
            assert getattr(state, name) == state.STATE.offset(name)
            assert next(s.meaning for s in state.STATE.slots if s.name == name) == meaning


def test_hold_mask_blocks_entries_as_cooldown() -> None:
    ks = init_state(params.build_params(strategy(), *_venue_and_market()).vector)
    st, slots = ks.state, ks.slots
    assert risk_state_nb(st) == RiskState.NORMAL and entries_allowed_nb(st)
    engine_gates.hold_nb(st, slots, 2)
    engine_gates.hold_nb(st, slots, 1)
    assert st[S_GATE_HOLD] == 3.0 and engine_gates.held_nb(st, 2) and engine_gates.held_nb(st, 1)
    assert risk_state_nb(st) == RiskState.COOLDOWN and not entries_allowed_nb(st)
    st[S_DIRTY] = 0.0
    engine_gates.release_nb(st, 2)
    assert st[S_GATE_HOLD] == 1.0 and not engine_gates.held_nb(st, 2) and st[S_DIRTY] == 1.0
    assert risk_state_nb(st) == RiskState.COOLDOWN  # the other gate still holds
    engine_gates.release_nb(st, 1)
    assert risk_state_nb(st) == RiskState.NORMAL and slots.shape[2] == N_SLOT


def test_live_status_fields_are_the_table_live_fields() -> None:
    st = np.zeros(state.N_STATE)
    st[state.S_CB_ACTIVE] = 1.0
    st[state.S_CB_UNTIL] = 1_700_000_000_000.0
    st[state.S_HALTED] = 0.0
    st[state.S_REDUCING] = 1.0
    status = engine_gates.gate_status(st)
    assert list(status) == [f.key for g in GATES for f in g.live]
    shipped = ("circuit_breaker_active", "circuit_breaker_until_ms", "halted", "reducing")
    assert {k: status[k] for k in shipped} == {
        "circuit_breaker_active": True,
        "circuit_breaker_until_ms": 1_700_000_000_000.0,
        "halted": False,
        "reducing": True,
    }
    st[state.S_CB_UNTIL] = -np.inf
    assert engine_gates.gate_status(st)["circuit_breaker_until_ms"] is None


def test_a_changed_row_changes_the_live_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    breaker = next(g for g in GATES if g.name == "circuit_breaker")
    renamed = dataclasses.replace(breaker, live=(LiveField("breaker_open", "S_CB_ACTIVE", "flag"),))
    st = np.zeros(state.N_STATE)
    st[state.S_CB_ACTIVE] = 1.0
    assert engine_gates.gate_status(st, (renamed,)) == {"breaker_open": True}
    # A holding gate's "hold" field reads its own bit of the mask.
    monkeypatch.setitem(engine_gates.HOLD_BITS, EXTRA.name, 4)
    hold_only = dataclasses.replace(EXTRA, live=EXTRA.live[:1])
    assert engine_gates.gate_status(st, (hold_only,)) == {"test_stopped": False}
    st[S_GATE_HOLD] = 4.0
    assert engine_gates.gate_status(st, (hold_only,)) == {"test_stopped": True}
    assert engine_gates.held_gates(st, (hold_only,)) == [hold_only]
    st[S_GATE_HOLD] = 2.0
    assert engine_gates.held_gates(st, (hold_only,)) == []


def test_hold_bits_are_distinct_per_holding_gate() -> None:
    holding = [g.name for g in GATES if g.holds]
    assert sorted(engine_gates.HOLD_BITS) == sorted(holding)
    assert sorted(engine_gates.HOLD_BITS.values()) == [1 << i for i in range(len(holding))]


def test_a_changed_row_changes_the_kernel_cache_key(monkeypatch: pytest.MonkeyPatch) -> None:
    before = numba_compat.kernel_sources_digest(numba_compat.ENGINE_DIR)
    assert numba_compat.kernel_sources_digest(numba_compat.ENGINE_DIR) == before
    monkeypatch.setattr(numba_compat, "GATES", (*GATES, EXTRA))
    assert numba_compat.kernel_sources_digest(numba_compat.ENGINE_DIR) != before


def test_gate_names_and_slots_are_unique() -> None:
    assert len({g.name for g in GATES}) == len(GATES)
    fields = [f for g in GATES for f in g.fields]
    assert len({f.name for f in fields}) == len({f.slot for f in fields}) == len(fields)
    for g in GATES:
        assert set(g.trips) <= set(g.events), g.name
        assert g.switch is None or g.switch in {f.name for f in g.fields}, g.name
    assert gate_table.SECTION in StrategyConfig.model_fields
