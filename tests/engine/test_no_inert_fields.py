"""No inert config fields: every schema leaf is proven by an ``@effect`` test or is explicitly pending.

The audited bot shipped config keys that nothing read. Here every leaf of the strategy and venue schemas
must either be named by an ``@effect("...")`` decorator on some test under ``tests/`` (found by reading
the source) or sit on one of the two pending lists below with a one-line reason. The lists may only
shrink: an entry that is already proven, or that names no field, fails this test too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from effects import config_leaf_fields, effect

TESTS_DIR = Path(__file__).resolve().parents[1]

# Fields the engine reads; the engine engineers remove each entry when its @effect test lands.
PENDING_ENGINE: dict[str, str] = {}

# Fields only the live bridge reads; the live-bridge issue proves them against the exchange emulator.
PENDING_LIVE: dict[str, str] = {}


def effect_arguments(source: str, filename: str) -> tuple[set[str], list[str]]:
    """Field paths named by ``@effect(...)`` / ``@x.effect(...)`` decorators, and problems found."""
    proven: set[str] = set()
    problems: list[str] = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        for deco in node.decorator_list:
            if not isinstance(deco, ast.Call):
                continue
            func = deco.func
            name = (
                func.id
                if isinstance(func, ast.Name)
                else func.attr
                if isinstance(func, ast.Attribute)
                else ""
            )
            if name != "effect":
                continue
            for arg in deco.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    proven.add(arg.value)
                else:
                    problems.append(f"{filename}:{deco.lineno}: effect() arguments must be string literals")
    return proven, problems


def scan_tests() -> tuple[dict[str, list[str]], list[str]]:
    """Map each proven field to the test files proving it; collect problems."""
    proven: dict[str, list[str]] = {}
    problems: list[str] = []
    for path in sorted(TESTS_DIR.rglob("*.py")):
        rel = str(path.relative_to(TESTS_DIR.parent))
        fields, found = effect_arguments(path.read_text(encoding="utf-8"), rel)
        problems += found
        for field in fields:
            proven.setdefault(field, []).append(rel)
    return proven, problems


def test_every_field_is_proven_or_pending() -> None:
    proven, _ = scan_tests()
    inert = sorted(config_leaf_fields() - set(proven) - set(PENDING_ENGINE) - set(PENDING_LIVE))
    assert not inert, f"config fields nothing proves and no pending list names: {inert}"


def test_effect_decorators_name_real_fields() -> None:
    proven, problems = scan_tests()
    bad = {field: files for field, files in proven.items() if field not in config_leaf_fields()}
    assert not problems, problems
    assert not bad, f"@effect names fields the schemas do not have: {bad}"


def test_pending_lists_shrink_when_fields_are_proven() -> None:
    proven, _ = scan_tests()
    stale = {f: proven[f] for f in sorted({*PENDING_ENGINE, *PENDING_LIVE} & set(proven))}
    assert not stale, f"proven already, remove from the pending list: {stale}"


def test_pending_entries_are_fields_with_reasons() -> None:
    fields = config_leaf_fields()
    for listing in (PENDING_ENGINE, PENDING_LIVE):
        assert not sorted(set(listing) - fields), "pending entries that are not schema fields"
        assert all(reason.strip() for reason in listing.values()), "every pending entry needs a reason"
    assert not set(PENDING_ENGINE) & set(PENDING_LIVE), "a field is either engine or live, not both"


def test_scanner_finds_decorator_arguments() -> None:
    source = (
        "import effects\n"
        "@effect('grid.grid_step_bps')\n"
        "def test_a(): pass\n"
        "@effects.effect('fees.maker', 'fees.taker')\n"
        "class TestB: pass\n"
        "@pytest.mark.effect('margin.brackets')\n"
        "def test_c(): pass\n"
        "def helper(): effect('not.a.decorator')\n"
        "NAME = 'regime.adx_len'\n"
        "@effect(NAME)\n"
        "def test_d(): pass\n"
    )
    proven, problems = effect_arguments(source, "x.py")
    # Four literal arguments on decorators; the plain call is not a decorator; NAME is not a literal.
    assert proven == {"grid.grid_step_bps", "fees.maker", "fees.taker", "margin.brackets"}
    assert problems == ["x.py:10: effect() arguments must be string literals"]


def test_leaf_enumeration_reaches_nested_and_optional_sections() -> None:
    fields = config_leaf_fields()
    # Optional sections (risk_management, backtest, fees, margin) and the top-level list (symbols) count;
    # sections themselves are not leaves.
    assert {"risk_management.enable_circuit_breaker", "backtest.fill_on_touch", "fees.taker"} <= fields
    assert {"margin.brackets", "symbols", "api.api_key", "precision.max_qty"} <= fields
    assert not {"grid", "margin", "risk_management"} & fields
    # 11 strategy sections hold 3+6+2+2+9+2+6+4+4+8+5 = 51 leaves (strategy.symbols among them;
    # risk_management: 8, one per gate field of configs/gates.py) plus the top-level symbol_overrides
    # table (one leaf) = 52; venue: 3+5+3+3+7+3+3+1+2+2 = 32 plus symbol_rules (a table keyed by symbol:
    # one leaf) and symbol_rules_file = 34.
    assert {"strategy.symbols", "symbol_overrides"} <= fields
    assert len(fields) == 52 + 34


def test_effect_decorator_marks_tests_and_rejects_non_fields() -> None:
    mark = effect("grid.grid_step_bps", "fees.maker")
    assert mark.name == "effect" and mark.args == ("grid.grid_step_bps", "fees.maker")
    with pytest.raises(ValueError, match=r"do not have: \['grid\.grid_steps'\]"):
        effect("grid.grid_steps")
    with pytest.raises(ValueError, match="needs at least one"):
        effect()


def _mentions(source: str, field: str) -> bool:
    """``field`` is set in ``source``: as ``section.key`` (overrides), ``section__key`` (builder
    keywords), a bare ``key=`` keyword or ``"key"`` string (helpers that take one section's key)."""
    section, _, key = field.partition(".")
    if not key:
        return field in source
    return (
        field in source
        or f"{section}__{key}" in source
        or re.search(rf"\b{re.escape(key)}\s*=", source) is not None
        or f'"{key}"' in source
    )


def effect_tests_missing_their_fields(source: str, filename: str) -> list[str]:
    """``@effect`` tests that name a field they never set (an A/B test must change the field).

    The test's own source counts, with its decorators and the module-level functions, fixtures and
    tables it refers to by name (one level deep), since scenario tables and fixtures hold the variants.
    """
    tree = ast.parse(source, filename=filename)
    top = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            top[node.name] = ast.get_source_segment(source, node) or ""
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name):
                    top[t.id] = ast.get_source_segment(source, node) or ""
    problems = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        fields = []
        for deco in node.decorator_list:
            func = deco.func if isinstance(deco, ast.Call) else None
            name = getattr(func, "id", getattr(func, "attr", ""))
            if name == "effect":
                fields += [a.value for a in deco.args if isinstance(a, ast.Constant)]
        if not fields:
            continue
        own = "\n".join(ast.get_source_segment(source, d) or "" for d in node.decorator_list)
        own += "\n" + (ast.get_source_segment(source, node) or "")
        used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        used |= {a.arg for a in node.args.args}  # fixtures
        context = own + "\n".join(top.get(n, "") for n in sorted(used) if n != node.name)
        # The decorator itself names the fields: only what comes after it counts.
        context = re.sub(r"\beffect\([^)]*\)", "", context)
        missing = [f for f in fields if not _mentions(context, f)]
        if missing:
            problems.append(f"{filename}:{node.lineno} {node.name} never sets {missing}")
    return problems


def test_effect_tests_change_the_fields_they_name() -> None:
    problems = []
    for path in sorted(TESTS_DIR.rglob("test_*.py")):
        rel = str(path.relative_to(TESTS_DIR.parent))
        problems += effect_tests_missing_their_fields(path.read_text(encoding="utf-8"), rel)
    assert not problems, problems


def test_checker_flags_an_effect_test_that_only_names_its_field() -> None:
    source = (
        "@effect('grid.grid_step_bps')\n"
        "def test_names_only():\n"
        "    assert run(s={'grid.base_qty': 1}) != run()\n"
        "CASES = {'a': {'exit__tp_steps': 2}}\n"
        "@effect('exit.tp_steps')\n"
        "def test_from_table():\n"
        "    assert run(**CASES['a']) != run()\n"
        "@effect('precision.price_precision')\n"
        "def test_keyword_helper():\n"
        "    assert run(v=venue_without(price_precision=1)) != run(v=venue_without(price_precision=0))\n"
    )
    problems = effect_tests_missing_their_fields(source, "x.py")
    assert problems == ["x.py:2 test_names_only never sets ['grid.grid_step_bps']"]
