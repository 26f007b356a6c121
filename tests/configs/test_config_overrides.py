"""gridctl.configs.overrides: the one engine that changes loaded configs (profiles, batch sets, live)."""

from __future__ import annotations

import pytest

from gridctl.configs.errors import GridctlError
from gridctl.configs.loader import load_strategy, load_venue
from gridctl.configs.overrides import apply_overrides

S = load_strategy("default")
V = load_venue("binance_futures")


def test_values_take_the_type_of_the_field_they_replace() -> None:
    s, v = apply_overrides(
        S,
        V,
        {"grid.grid_levels_long": 4.0, "execution.maker_only": 0, "grid.grid_step_bps": 31, "fees.maker": 0},
    )
    assert s.grid.grid_levels_long == 4 and type(s.grid.grid_levels_long) is int
    assert s.execution.maker_only is False
    assert s.grid.grid_step_bps == 31.0 and type(s.grid.grid_step_bps) is float
    assert v.fees.maker == 0.0
    assert load_strategy("default") == S and V.fees.maker != 0.0  # the inputs are untouched


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("grid.grid_levels_long", 4.5, "expected a whole number"),
        ("execution.maker_only", 2, "expected 0/1"),
        ("policy.strategy", 1, "expected a name, not a number"),
        ("backtest.intrabar_path", 0, "expected a name, not a number"),
        ("policy.strategy", "no-such-policy", "policy.strategy"),
        ("grid.no_such_key", 1, "is not a strategy or venue setting"),
        ("grid", 1, "must look like 'section.key'"),
    ],
)
def test_a_bad_override_is_one_line_naming_the_key(key: str, value: object, message: str) -> None:
    with pytest.raises(GridctlError, match=message) as err:
        apply_overrides(S, V, {key: value})
    assert "\n" not in str(err.value) and key.split(".")[0] in str(err.value)


def test_names_are_accepted_for_named_fields() -> None:
    s, _ = apply_overrides(S, V, {"policy.strategy": "core-and-scalp", "backtest.intrabar_path": "low_first"})
    assert (s.policy.strategy, s.backtest.intrabar_path) == ("core-and-scalp", "low_first")


def test_the_engine_has_no_override_code_of_its_own() -> None:
    import gridctl.engine.batch as batch

    assert batch.apply_overrides.__module__ == "gridctl.configs.overrides"
    assert not hasattr(batch, "_coerce") and not hasattr(batch, "_override")
