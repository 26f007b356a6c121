"""Kernel hygiene: every named slot of the kernels' vectors is declared once in a SlotTable, and no two
slots overlap (a rejection reason added to ``Reason`` grows ``S_REJ_BASE`` and moves what follows)."""

from __future__ import annotations

import pytest

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
