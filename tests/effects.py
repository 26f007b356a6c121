"""``@effect("grid.grid_step_bps")``: mark a test as proof that a config field changes behaviour.

Put it on an engine or live test whose assertion would fail if the field were ignored (two runs that
differ only in that field and whose results differ as the field's meaning says: an A/B test, never a
test that only names the field). ``tests/engine/test_no_inert_fields.py`` enforces the part a parser can see:
every field an ``@effect`` test names must be set in that test (its body, decorators, or the
module-level tables, helpers and fixtures it uses). The field leaves
``PENDING_ENGINE`` / ``PENDING_LIVE`` in ``tests/engine/test_no_inert_fields.py`` once such a test exists;
that test finds the decorators by reading the source, so the arguments must be string literals.
"""

from __future__ import annotations

import warnings

import pytest
from pydantic import BaseModel

from gridctl.configs.loader import unwrap_optional
from gridctl.configs.schema import StrategyConfig, VenueConfig


def config_leaf_fields() -> set[str]:
    """Every leaf field path of the strategy and venue schemas, e.g. ``grid.grid_step_bps``."""

    def walk(model: type[BaseModel], prefix: str) -> set[str]:
        out: set[str] = set()
        for name, field in model.model_fields.items():
            inner = unwrap_optional(field.annotation)
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                out |= walk(inner, f"{prefix}{name}.")
            else:
                out.add(f"{prefix}{name}")
        return out

    return walk(StrategyConfig, "") | walk(VenueConfig, "")


def effect(*field_paths: str) -> pytest.MarkDecorator:
    """Decorator: this test proves each of ``field_paths`` changes engine or live behaviour."""
    if not field_paths:
        raise ValueError("effect() needs at least one config field path, e.g. effect('grid.grid_step_bps')")
    unknown = sorted(set(field_paths) - config_leaf_fields())
    if unknown:
        raise ValueError(f"effect() names fields the config schemas do not have: {unknown}")
    # ``effect`` is this module's own marker: silence pytest's unknown-mark warning so the marker works
    # whether or not pyproject.toml registers it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
        return pytest.mark.effect(*field_paths)
