"""Every number a config holds is finite and inside a stated range: no field takes inf, NaN, 1e308 or 10**30.

The class is checked over every number field of every section (found by walking the schema, so a new
field is covered without editing this file), plus the guard that makes an unbounded field fail at import.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import BaseModel, Field, ValidationError

from gridctl.configs import schema
from gridctl.configs.errors import GridctlError
from gridctl.configs.loader import load_strategy, load_venue


def _sections(model: type[BaseModel]) -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = []
    stack = [model]
    while stack:
        current = stack.pop()
        if current in found:
            continue
        found.append(current)
        for field in current.model_fields.values():
            for arg in (field.annotation, *getattr(field.annotation, "__args__", ())):
                for inner in (arg, *getattr(arg, "__args__", ())):
                    if isinstance(inner, type) and issubclass(inner, BaseModel):
                        stack.append(inner)
    return found


def _valid_instances() -> dict[type[BaseModel], BaseModel]:
    """One valid instance of every section, taken from the shipped default strategy and venue (and the
    legacy one-symbol precision block, which the shipped venue replaced by per-symbol rules)."""
    out: dict[type[BaseModel], BaseModel] = {}
    legacy = schema.PrecisionSection(price_precision=1, quantity_precision=3, min_notional=5.0)
    stack: list[Any] = [load_strategy("default"), load_venue("binance_futures"), legacy]
    while stack:
        item = stack.pop()
        if isinstance(item, BaseModel):
            out.setdefault(type(item), item)
            stack.extend(getattr(item, name) for name in type(item).model_fields)
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    return out


NUMBER_FIELDS = sorted(
    (section.__name__, name, schema._number_type(field.annotation))
    for root in (schema.StrategyConfig, schema.VenueConfig)
    for section in _sections(root)
    for name, field in section.model_fields.items()
    if schema._number_type(field.annotation) is not None
)


def test_the_walk_finds_the_number_fields() -> None:
    # Hand count of configs/schema.py: 37 strategy number fields (grid 6, exit 2, rebalance 2, execution 5,
    # funding 2, regime 6, position 4, policy 3, risk_management 5 from configs/gates.py, backtest 2) and
    # 36 venue ones (trading 1, risk 3, precision 7, symbol rules 11, rate_limits 3, websocket 3, fees 2,
    # bracket 5, margin 1).
    names = {(s, n) for s, n, _ in NUMBER_FIELDS}
    assert ("BacktestSection", "initial_balance") in names and ("Bracket", "cum") in names
    assert ("PrecisionSection", "tick_size") in names and ("WebsocketSection", "ping_interval") in names
    assert ("RiskManagementSection", "max_daily_loss_pct") in names
    assert len(NUMBER_FIELDS) == 73


@pytest.mark.parametrize(
    ("section", "name", "kind"), NUMBER_FIELDS, ids=[f"{s}.{n}" for s, n, _ in NUMBER_FIELDS]
)
def test_every_number_field_refuses_infinite_nan_and_absurd_values(
    section: str, name: str, kind: type
) -> None:
    instances = {type(i).__name__: i for i in _valid_instances().values()}
    valid = instances[section]
    model = type(valid)
    absurd: list[Any] = (
        [math.inf, -math.inf, math.nan, 1e308, -1e308] if kind is float else [10**30, -(10**30)]
    )
    for value in absurd:
        data = valid.model_dump() | {name: value}
        with pytest.raises(ValidationError) as err:
            model.model_validate(data)
        assert any(e["loc"][:1] == (name,) for e in err.value.errors()), (name, value, err.value)


def test_initial_balance_beyond_float_range_is_one_clear_line() -> None:
    """``1e309`` parses as inf; it used to run and print null stats."""
    for value, reason in (("1e309", "finite number"), ("1e308", "less than or equal to 1000000000000")):
        with pytest.raises(GridctlError) as err:
            load_strategy("default", [f"backtest.initial_balance={value}"])
        assert f"--set backtest.initial_balance={value}: backtest.initial_balance: " in str(err.value)
        assert reason in str(err.value)
    assert load_strategy("default", ["backtest.initial_balance=1e12"]).backtest.initial_balance == 1e12


def test_a_number_field_without_an_upper_bound_fails_at_class_definition() -> None:
    with pytest.raises(TypeError, match=r"Probe\.size: a number field needs both a lower and an upper bound"):

        class Probe(schema._Section):
            size: float = Field(gt=0)

    with pytest.raises(TypeError, match=r"Probe2\.count"):

        class Probe2(schema._Section):
            count: int | None = Field(default=None, le=5)

    class Fine(schema._Section):
        size: float = Field(gt=0, le=1)
        flag: bool = False

    assert Fine(size=0.5).size == 0.5
