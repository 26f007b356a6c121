"""Layers import downwards only: configs, data < engine < research, live_bridge < cli (DESIGN.md "Layout")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# package -> packages of this project it must never import
FORBIDDEN = {
    "configs": {"data", "engine", "research", "live_bridge", "cli"},
    "data": {"engine", "research", "live_bridge", "cli"},
    "engine": {"research", "live_bridge", "cli"},
    "research": {"live_bridge", "cli"},
    "live_bridge": {"research", "cli"},
}


PROJECT = ("configs", "data", "engine", "research", "live_bridge", "cli")


def _imported_names(path: Path) -> list[str]:
    """Every absolute module name ``path`` imports (``from gridctl import engine`` gives gridctl.engine)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
            if node.module == "gridctl":
                names += [f"gridctl.{alias.name}" for alias in node.names]
    return names


def _imported_roots(path: Path) -> set[str]:
    """The project's sub-packages ``path`` imports (gridctl.engine.run -> engine)."""
    return {n.split(".")[1] for n in _imported_names(path) if n.startswith("gridctl.") and "." in n}


def _python_files() -> list[Path]:
    skip = {".git", ".venv", "build", "dist"}
    return [p for p in sorted(REPO.rglob("*.py")) if not skip & set(p.relative_to(REPO).parts)]


def test_code_imports_the_installed_names_only() -> None:
    # The installed distribution holds one package, gridctl: a bare `import engine` would work from the
    # checkout's folder and fail (or load a user's own engine/) once installed.
    offenders = [
        f"{path.relative_to(REPO)} imports {name}"
        for path in _python_files()
        for name in _imported_names(path)
        if name.split(".")[0] in PROJECT
    ]
    assert offenders == []


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


def test_installed_distribution_is_one_package() -> None:
    # pip puts what top_level.txt names at the top of site-packages: only gridctl may be there.
    from importlib import metadata

    assert metadata.distribution("gridctl").read_text("top_level.txt").split() == ["gridctl"]


def test_users_own_modules_do_not_shadow_gridctl(tmp_path: Path) -> None:
    # A notebook folder with its own data.py and engine/ package: both import as the user's, and
    # gridctl's sub-packages still import as gridctl's.
    import subprocess
    import sys

    (tmp_path / "data.py").write_text("MINE = 'data'\n", encoding="utf-8")
    (tmp_path / "engine").mkdir()
    (tmp_path / "engine" / "__init__.py").write_text("MINE = 'engine'\n", encoding="utf-8")
    code = (
        "import data, engine\n"
        "from gridctl.data.market import load_market\n"
        "from gridctl.engine.run import run_single\n"
        "print(data.MINE, engine.MINE, load_market.__module__, run_single.__module__)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["data", "engine", "gridctl.data.market", "gridctl.engine.run"]


def _is_shell(module: str) -> bool:
    """A command shell: ``cli.py`` or ``*_cli.py`` (it parses flags and calls its library)."""
    last = module.rsplit(".", 1)[-1]
    return last == "cli" or last.endswith("_cli")


def _shell_imports(source: str, filename: str) -> tuple[list[str], list[str]]:
    """(shell modules ``source`` imports, private names it imports from a shell) as 'module' / 'module._x'."""
    shells: list[str] = []
    private: list[str] = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            shells += [a.name for a in node.names if a.name.startswith("gridctl.") and _is_shell(a.name)]
        elif (
            isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("gridctl")
        ):
            module = node.module or ""
            targets = [module] if _is_shell(module) else []
            targets += [f"{module}.{a.name}" for a in node.names if _is_shell(a.name)]  # from x import cli
            shells += targets
            if _is_shell(module):
                private += [f"{module}.{a.name}" for a in node.names if a.name.startswith("_")]
    return shells, private


def test_the_shell_check_sees_the_old_runner_cli_circle() -> None:
    # What live_bridge/runner.py did until session 9: the library reached into its own command shell.
    source = "def prepare():\n    from gridctl.live_bridge.cli import _options, _run_id\n"
    shells, private = _shell_imports(source, "runner.py")
    assert shells == ["gridctl.live_bridge.cli"]
    assert private == ["gridctl.live_bridge.cli._options", "gridctl.live_bridge.cli._run_id"]
    assert _shell_imports("from gridctl.research import optimize_cli\n", "x.py")[0] == [
        "gridctl.research.optimize_cli"
    ]
    assert _shell_imports("from gridctl.research.options import LiveOptions\n", "x.py") == ([], [])


def test_no_library_module_imports_a_command_shell() -> None:
    """Shells call libraries, never the reverse: a library module importing its shell (at the top or inside
    a function) makes an import circle, and a private name taken from a shell couples it to flag parsing.
    Only shells import shells (the top-level cli.py mounts the groups, data/cli.py mounts `data download`)."""
    offenders = []
    for package in sorted(FORBIDDEN):
        for path in sorted((REPO / package).rglob("*.py")):
            shells, private = _shell_imports(path.read_text(encoding="utf-8"), str(path))
            rel = path.relative_to(REPO)
            if private:
                offenders.append(f"{rel} imports private names of a shell: {private}")
            if shells and not _is_shell(path.stem):
                offenders.append(f"{rel} (a library module) imports the shell(s) {shells}")
    assert offenders == []
