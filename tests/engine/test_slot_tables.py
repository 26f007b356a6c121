"""Kernel hygiene: every named slot of the kernels' vectors is declared once in a SlotTable, and no two
slots overlap (a rejection reason added to ``Reason`` grows ``S_REJ_BASE`` and moves what follows)."""

from __future__ import annotations

from typing import get_args

import pytest
from pydantic import BaseModel

from gridctl.configs.schema import StrategyConfig, SymbolRules, VenueConfig
from gridctl.engine import params, records, state
from gridctl.engine.enums import Reason
from gridctl.engine.layout import SlotTable

TABLES = [
    (state, state.STATE, "S_", "N_STATE"),
    (state, state.SLOT, "SL_", "N_SLOT"),
    (params, params.PARAMS, "P_", "N_PARAMS"),
    (records, records.COUNTERS, "C_", "N_COUNTERS"),
]


@pytest.mark.parametrize(
    ("module", "table", "prefix", "size_name"), TABLES, ids=[t[1].vector for t in TABLES]
)
def test_slots_tile_the_vector_without_overlap(module, table, prefix, size_name) -> None:
    covered = [0] * table.size
    for slot in table.slots:
        assert slot.size >= 1 and slot.meaning.strip(), slot
        for i in range(slot.offset, slot.offset + slot.size):
            covered[i] += 1
    assert covered == [1] * table.size, f"{table.vector}: slots overlap or leave holes"
    assert getattr(module, size_name) == table.size


@pytest.mark.parametrize(
    ("module", "table", "prefix", "size_name"), TABLES, ids=[t[1].vector for t in TABLES]
)
def test_every_constant_is_its_table_offset(module, table, prefix, size_name) -> None:
    # Each declared name is the module constant other code imports, equal to its derived offset ...
    for slot in table.slots:
        assert getattr(module, slot.name) == slot.offset, slot.name
    # ... and the module has no hand-numbered constant outside the table.
    declared = {s.name for s in table.slots}
    constants = {n for n in vars(module) if n.startswith(prefix) and n.isupper()}
    assert constants == declared


def test_rejection_counters_grow_with_the_reasons() -> None:
    rej = next(s for s in state.STATE.slots if s.name == "S_REJ_BASE")
    assert rej.size == len(Reason)
    assert state.S_REJ_BASE + max(Reason) < state.S_POST_ONLY_REJECTS


def test_table_refuses_duplicates_and_empty_slots() -> None:
    t = SlotTable("t")
    assert (t.add("A", "first"), t.add("B", "second", size=3), t.add("C", "third")) == (0, 1, 4)
    assert t.size == 5
    with pytest.raises(ValueError, match="declared twice"):
        t.add("A", "again")
    with pytest.raises(ValueError, match="size >= 1"):
        t.add("D", "empty", size=0)


def _section_model(annotation: object) -> type[BaseModel]:
    """The pydantic model of a section field (``X | None`` for the optional sections)."""
    models = [
        a for a in (get_args(annotation) or (annotation,)) if isinstance(a, type) and issubclass(a, BaseModel)
    ]
    assert len(models) == 1, annotation
    return models[0]


def test_every_config_slot_resolves_to_a_schema_field() -> None:
    # The parameter table is the one place a config path is written; each one names a real field.
    roots = {"strategy": StrategyConfig, "venue": VenueConfig}
    for slot in params.PARAMS.slots:
        if slot.source is None:
            continue
        kind, key = slot.source
        if kind == "rules":
            assert key in SymbolRules.model_fields, slot
            continue
        section, _, leaf = key.partition(".")
        assert section in roots[kind].model_fields, slot
        assert leaf in _section_model(roots[kind].model_fields[section].annotation).model_fields, slot


def test_config_path_maps_are_generated_from_the_table() -> None:
    # Counted by hand from the table: 37 strategy paths outside risk_management plus the 8 gate fields,
    # 7 venue paths and 8 symbol rules.
    assert (len(params.STRATEGY_PATHS), len(params.VENUE_PATHS), len(params.RULE_FIELDS)) == (45, 7, 8)
    assert params.STRATEGY_PATHS["grid.grid_step_bps"] == params.P_GRID_STEP_BPS
    assert params.STRATEGY_PATHS["backtest.intrabar_path"] == params.P_INTRABAR_PATH
    assert params.STRATEGY_PATHS["risk_management.max_drawdown_pct"] == params.P_MAX_DRAWDOWN_PCT
    assert params.VENUE_PATHS["fees.maker"] == params.P_FEE_MAKER
    assert params.RULE_FIELDS["tick_size"] == params.P_TICK
    # Slots not read from a config (market facts, derived depth, the optional margin section) have none.
    assert {params.P_BAR_MS, params.P_MAX_LEVELS, params.P_LIQ_CLEARANCE_FEE}.isdisjoint(
        {*params.STRATEGY_PATHS.values(), *params.VENUE_PATHS.values(), *params.RULE_FIELDS.values()}
    )


def test_table_sources_and_lookup() -> None:
    t = SlotTable("t")
    t.add("A", "a", source=("strategy", "grid.qty_scale"))
    t.add("B", "b", size=2)
    t.add("C", "c", source=("venue", "fees.maker"))
    t.add("D", "d", source=("strategy", "exit.tp_steps"))
    assert t.sources("strategy") == {"grid.qty_scale": 0, "exit.tp_steps": 4}
    assert t.sources("venue") == {"fees.maker": 3} and t.sources("rules") == {}
    assert t.offset("C") == 3
    with pytest.raises(KeyError, match="no slot Z"):
        t.offset("Z")
