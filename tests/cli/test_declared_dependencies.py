"""Every third-party module the package or its tests import is declared and pinned in constraints.txt.

A fresh virtual environment has only what pyproject.toml declares: a module that happens to be installed on
the developer's machine (click was one) must not be able to hide a missing declaration.
"""

from __future__ import annotations

import ast
import functools
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
PACKAGE_ROOTS = ("configs", "data", "engine", "research", "live_bridge")
TOP_MODULES = ("cli.py",)
# The project's one installed package, and the tests' own modules and packages (tests/ is on sys.path
# under pytest), found on disk rather than listed by hand.
LOCAL = {
    "gridctl",
    "tests",
    *(p.stem for p in (REPO / "tests").rglob("*.py")),
    *(p.parent.name for p in (REPO / "tests").glob("*/__init__.py")),
}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def _declared(group: str | None) -> set[str]:
    project = _pyproject()["project"]
    reqs = project["dependencies"] if group is None else project["optional-dependencies"][group]
    return {_norm(Requirement(r).name) for r in reqs}


def _imports(paths: list[Path], base: Path = REPO) -> dict[str, str]:
    """Top-level third-party module name -> first file that imports it."""
    found: dict[str, str] = {}
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                root = name.split(".")[0]
                if root in sys.stdlib_module_names or root in LOCAL or root == "__future__":
                    continue
                found.setdefault(root, str(path.relative_to(base)))
    return found


@functools.cache
def _module_owners() -> dict[str, list[str]]:
    """Top-level module -> the installed distributions providing it (read once: it scans every RECORD)."""
    return metadata.packages_distributions()


def _distributions_of(module: str) -> set[str]:
    dists = _module_owners().get(module)
    assert dists, f"module {module!r} is imported but no installed distribution provides it"
    return {_norm(d) for d in dists}


def _package_files() -> list[Path]:
    files = [REPO / m for m in TOP_MODULES]
    for root in PACKAGE_ROOTS:
        files += sorted((REPO / root).rglob("*.py"))
    return files


#: Package modules that may import an optional extra's modules (inside a function, failing with a line
#: that names the extra): module path -> extra.
OPTIONAL_EXTRA_MODULES = {"research/notebook.py": "notebook"}


def test_runtime_imports_are_runtime_dependencies() -> None:
    runtime = _declared(None)
    optional = {REPO / path for path in OPTIONAL_EXTRA_MODULES}
    missing = {
        f"{module} (imported by {where})"
        for module, where in _imports([p for p in _package_files() if p not in optional]).items()
        if not _distributions_of(module) & runtime
    }
    assert not missing, f"imported by the package but not in [project].dependencies: {sorted(missing)}"
    for path, extra in OPTIONAL_EXTRA_MODULES.items():
        allowed = runtime | _declared(extra)
        missing = {m for m in _imports([REPO / path]) if not _distributions_of(m) & allowed}
        assert not missing, f"{path} imports {sorted(missing)}, in neither the dependencies nor [{extra}]"
        assert f"gridctl[{extra}]" in (REPO / path).read_text(encoding="utf-8")  # its error names the extra


def test_test_imports_are_declared() -> None:
    allowed = _declared(None) | _declared("test")
    missing = {
        f"{module} (imported by {where})"
        for module, where in _imports(sorted((REPO / "tests").rglob("*.py"))).items()
        if not _distributions_of(module) & allowed
    }
    assert not missing, f"imported by tests but declared nowhere: {sorted(missing)}"


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not pinned with =="
            pins[_norm(name)] = version.strip()
    return pins


def test_constraints_pin_every_dependency_and_their_dependencies() -> None:
    pins = _pins()
    env = default_environment()
    seen: set[str] = set()
    todo = [(Requirement(r), "gridctl") for r in _pyproject()["project"]["dependencies"]]
    todo += [
        (Requirement(r), "gridctl[test]") for r in _pyproject()["project"]["optional-dependencies"]["test"]
    ]
    unpinned = []
    while todo:
        req, parent = todo.pop()
        name = _norm(req.name)
        if name in seen:
            continue
        seen.add(name)
        if name not in pins:
            unpinned.append(f"{req.name} (needed by {parent})")
            continue
        installed = metadata.version(req.name)
        assert _norm(installed) == _norm(pins[name]), (
            f"{req.name}: installed {installed}, pinned {pins[name]}"
        )
        extras = set(req.extras)
        for sub in metadata.requires(req.name) or []:
            sreq = Requirement(sub)
            if sreq.marker is None or any(sreq.marker.evaluate({**env, "extra": e}) for e in extras or {""}):
                todo.append((sreq, req.name))
    assert not unpinned, f"not pinned in constraints.txt: {sorted(unpinned)}"


def test_scanner_sees_an_undeclared_import(tmp_path: Path) -> None:
    # The check itself must be able to fail: a module importing something undeclared is reported.
    probe = tmp_path / "probe.py"
    probe.write_text("import json\nimport numpy as np\nfrom yaml import safe_load\n", encoding="utf-8")
    found = _imports([probe], base=tmp_path)
    assert found == {"numpy": "probe.py", "yaml": "probe.py"}
    assert _distributions_of("yaml") == {"pyyaml"}
