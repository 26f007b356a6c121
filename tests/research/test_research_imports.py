"""No import circles among the research modules, counting imports inside functions too.

A circle hidden in a function-level import still ties the modules into one piece (neither can be
understood, tested or moved without the other) and turns into an ImportError the day one of the
imports moves to the top of its module. Imports under ``if TYPE_CHECKING:`` never run and are not
counted; importing ``a.b.c`` from outside the package ``a.b`` also runs ``a/b/__init__.py``, so it
counts as importing that package too.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _module_names(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every module under ``root`` (the folder of ``package``)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join([package, *parts])] = path
    return out


def _type_checking_blocks(tree: ast.AST) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                for child in node.body:
                    skip |= {id(n) for n in ast.walk(child)}
    return skip


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports anywhere in its file (functions included)."""
    modules = _module_names(root, package)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        skip = _type_checking_blocks(tree)
        own_package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = own_package.split(".")[: len(own_package.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets.add(module)
                targets |= {f"{module}.{alias.name}" for alias in node.names}
        deps: set[str] = set()
        for target in targets:
            parts = target.split(".")
            for i in range(len(parts), 0, -1):
                prefix = ".".join(parts[:i])
                if prefix not in modules:
                    continue
                # a package this module lives in is already initialising when it runs
                inside = name == prefix or name.startswith(prefix + ".")
                if i == len(parts) or not inside:
                    deps.add(prefix)
        deps.discard(name)
        graph[name] = deps
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every set of modules that import each other (strongly connected, more than one module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_research_modules_import_without_circles() -> None:
    graph = import_graph(REPO / "research", "gridctl.research")
    assert "gridctl.research.optimize.loop" in graph  # the optimizer is a package of modules
    found = circles(graph)
    described = [
        "; ".join(f"{m} -> {sorted(graph[m] & set(c))}" for m in c)  # who imports whom inside the circle
        for c in found
    ]
    assert described == []


def test_the_check_sees_a_circle_through_a_function_level_import(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("", encoding="utf-8")
    (pkg / "a.py").write_text("from pkg.b import thing\n", encoding="utf-8")
    (pkg / "b.py").write_text("def thing():\n    from pkg import a\n    return a\n", encoding="utf-8")
    # only a type-checking import back: no circle
    (pkg / "c.py").write_text("from pkg.d import x\n", encoding="utf-8")
    d_src = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.c import y\nx = 1\n"
    (pkg / "d.py").write_text(d_src, encoding="utf-8")
    # a package whose __init__ re-exports a submodule that imports a module importing the package:
    # pkg.sub -> pkg.sub.inner -> pkg.e -> pkg.sub.other (runs pkg/sub/__init__.py) is a circle
    (pkg / "sub" / "__init__.py").write_text("from pkg.sub.inner import f\n", encoding="utf-8")
    inner_src = "from pkg.sub.other import g\nfrom pkg.e import h\n"
    (pkg / "sub" / "inner.py").write_text(inner_src, encoding="utf-8")
    (pkg / "sub" / "other.py").write_text("g = 1\n", encoding="utf-8")
    (pkg / "e.py").write_text("def h():\n    from pkg.sub.other import g\n    return g\n", encoding="utf-8")
    graph = import_graph(pkg, "pkg")
    assert graph["pkg.d"] == set()
    assert graph["pkg.sub.inner"] == {"pkg.sub.other", "pkg.e"}  # its own package: not an edge
    assert graph["pkg.e"] == {"pkg.sub", "pkg.sub.other"}
    assert circles(graph) == [["pkg.a", "pkg.b"], ["pkg.e", "pkg.sub", "pkg.sub.inner"]]
