"""Layers import downwards only: configs, data < engine < research, live_bridge < cli (DESIGN.md "Layout")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# package -> packages of this project it must never import
FORBIDDEN = {
    "configs": {"data", "engine", "research", "live_bridge", "cli"},
    "data": {"engine", "research", "live_bridge", "cli"},
    "engine": {"research", "live_bridge", "cli"},
    "research": {"live_bridge", "cli"},
    "live_bridge": {"research", "cli"},
}


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_lower_layers(package: str) -> None:
    offenders = []
    for path in sorted((REPO / package).rglob("*.py")):
        bad = _imported_roots(path) & FORBIDDEN[package]
        if bad:
            offenders.append(f"{path.relative_to(REPO)} imports {sorted(bad)}")
    assert offenders == []


def test_engine_holds_no_analysis_modules() -> None:
    # results, stats, report and bench analyse runs: they live in research/, not beside the kernels.
    for name in ("results", "stats", "report", "bench", "cli"):
        assert not (REPO / "engine" / f"{name}.py").exists(), name
