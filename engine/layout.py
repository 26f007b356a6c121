"""Slot tables: the named offsets of the kernels' flat vectors, each declared once.

Every float64 / int64 vector the kernels index by name (the state vector, the parameter vector, the
per-rung slot fields, the record counters) is laid out by one ``SlotTable``: each ``add`` declares a
slot's name, size and meaning and returns its offset, the next slot starts where it ends, and
``size`` is the vector length. Offsets are therefore derived, never typed, so no two slots can
overlap and a slot that grows (a new rejection reason) moves the ones after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Slot:
    """One named range ``[offset, offset + size)`` of a vector."""

    name: str
    offset: int
    size: int
    meaning: str
    #: Where the slot's value comes from, when it is read from a config: ``(kind, key)`` with kind
    #: ``strategy`` / ``venue`` (a ``section.key`` path) or ``rules`` (a ``SymbolRules`` field).
    source: tuple[str, str] | None = None


@dataclass
class SlotTable:
    """An ordered table of slots; offsets follow from the declaration order and sizes."""

    vector: str
    slots: list[Slot] = field(default_factory=list)
    size: int = 0

    def add(self, name: str, meaning: str, size: int = 1, source: tuple[str, str] | None = None) -> int:
        """Declare the next slot (``source``: the config value it holds) and return its offset."""
        if size < 1:
            raise ValueError(f"{self.vector}: slot {name} needs a size >= 1 (got {size})")
        if any(s.name == name for s in self.slots):
            raise ValueError(f"{self.vector}: slot {name} declared twice")
        offset = self.size
        self.slots.append(Slot(name, offset, size, meaning, source))
        self.size += size
        return offset

    def sources(self, kind: str) -> dict[str, int]:
        """Config key -> offset of every slot read from a config of ``kind`` (declaration order)."""
        return {s.source[1]: s.offset for s in self.slots if s.source is not None and s.source[0] == kind}

    def offset(self, name: str) -> int:
        """Offset of the slot called ``name`` (an unknown name raises ``KeyError`` naming it)."""
        for s in self.slots:
            if s.name == name:
                return s.offset
        raise KeyError(f"{self.vector}: no slot {name}")
