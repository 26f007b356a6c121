"""Canaries for gridctl.engine.numba_compat: one per private numba hook, each naming its hook on failure.

A numba release that moves an internal the engine relies on fails here first, with the hook's name,
instead of at import, or silently slower, somewhere else. Nothing outside numba_compat may import
numba's internals (the last test).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest
from numba.core.caching import FunctionCache

from gridctl.engine import numba_compat
from gridctl.engine.numba_compat import HOOKS, AlwaysInlineCompiler, KernelCache, KernelDispatcher

REPO = Path(__file__).resolve().parents[2]


def _canary(hook: str, ok: bool, detail: str = "") -> None:
    assert hook in HOOKS
    if not ok:
        pytest.fail(
            f"numba private hook {hook!r} no longer holds under numba {numba.__version__} "
            f"(gridctl.engine.numba_compat): {detail}"
        )


def _double(x):
    return 2 * x


def test_every_hook_has_a_canary() -> None:
    names = {n.removeprefix("test_hook_") for n in globals() if n.startswith("test_hook_")}
    assert names == set(HOOKS)


def test_hook_cache_locators() -> None:
    try:
        where = numba_compat.kernel_cache_dir(Path(__file__))
    except AttributeError as exc:
        _canary("cache_locators", False, str(exc))
    # numba's own choice for a function of this file: its FunctionCache names the same directory.
    _canary("cache_locators", where == Path(_cache_path_of(_double)), f"{where} vs numba's")


def _cache_path_of(fn) -> str:
    return FunctionCache(fn)._cache_path


def test_hook_cache_files(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path))
    fn = numba.njit(cache=True)(lambda x: x + 1)
    fn(1.0)
    written = {p.name for p in Path(_cache_path_of(fn.py_func)).glob(numba_compat.CACHE_FILES_GLOB)}
    suffixes = {Path(n).suffix for n in written}
    _canary("cache_files", suffixes == {".nbi", ".nbc"}, f"numba wrote {sorted(written)}")


def test_hook_cache_index(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path))
    fn = numba.njit(cache=True)(lambda x: x * 3)
    sig = (numba.float64,)
    assert not numba_compat.cached_on_disk(fn, sig)
    fn(2.0)
    fresh = numba.njit(cache=True)(fn.py_func)  # a new process's view: nothing compiled in memory
    _canary("cache_index", numba_compat.cached_on_disk(fresh, sig), "compiled signature not found")
    _canary("cache_index", not numba_compat.cached_on_disk(fresh, (numba.int32,)), "unknown signature found")


def test_hook_cache_loader(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path))
    for name in ("_load_overload", "_guard_against_spurious_io_errors"):
        _canary("cache_loader", hasattr(FunctionCache, name), f"FunctionCache.{name} is gone")

    def triple(x):
        return 3 * x

    numba_compat.kernel_decorator(cache=True, _nrt=False)(triple)(1.0)  # compiled and saved
    again = numba_compat.kernel_decorator(cache=True, _nrt=False)(triple)
    _canary("cache_loader", isinstance(again._cache, KernelCache), type(again._cache).__name__)
    assert again(2.0) == 6.0
    _canary("cache_loader", again.stats.cache_hits.most_common(1)[0][1] == 1, str(again.stats))


def _pick(a, k):
    return a[k]


pick_kernel = numba_compat.kernel_decorator(cache=False)(_pick)


def test_hook_dispatcher_swap() -> None:
    _canary("dispatcher_swap", type(pick_kernel) is KernelDispatcher, type(pick_kernel).__name__)
    # Literal integer constants would each compile a copy under plain numba; the swap unliterals them.
    caller = numba.njit(lambda a: pick_kernel(a, 1) + pick_kernel(a, 3))
    assert caller(np.arange(5.0)) == 4.0
    _canary("dispatcher_swap", len(pick_kernel.overloads) == 1, f"{len(pick_kernel.overloads)} overloads")


def _first(a):
    return a[0]


def test_hook_nrt_option() -> None:
    sig = (numba.float64[::1],)
    with_nrt = numba.njit(cache=False)(_first)
    without = numba_compat.kernel_decorator(cache=False, _nrt=False)(_first)
    for fn in (with_nrt, without):
        fn.compile(sig)
    assert "NRT_" in with_nrt.inspect_llvm(sig)  # the check can see reference counting
    _canary("nrt_option", "NRT_" not in without.inspect_llvm(sig), "reference counting still compiled in")


def test_hook_argument_typeof() -> None:
    ty = numba_compat.argument_type(np.zeros(3))
    _canary("argument_typeof", ty == numba.float64[::1] and not ty.reflected, str(ty))


def test_hook_lowering_pass() -> None:
    def body(x):
        return x * 2.0 + 1.0

    hot = numba.njit(cache=False, pipeline_class=AlwaysInlineCompiler)(body)
    sig = (numba.float64,)
    hot.compile(sig)
    ir = hot.inspect_llvm(sig)
    _canary("lowering_pass", "alwaysinline" in ir, "no alwaysinline attribute in the lowered IR")


def test_importing_the_engine_deletes_nothing(tmp_path: Path) -> None:
    """The stale-cache check runs before the first kernel compiles or loads, never at import."""
    cache = tmp_path / "cache"
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    probe = (
        "import sys; from pathlib import Path\n"
        "from gridctl.engine import step, numba_compat\n"
        "where = numba_compat.kernel_cache_dir(numba_compat.ENGINE_DIR / 'step.py')\n"
        "where.mkdir(parents=True, exist_ok=True)\n"
        "old = where / 'step.old_nb-1.py311.nbi'; old.write_text('stale')\n"
        "import gridctl.engine.run, gridctl.engine.batch\n"
        "print(old.exists())\n"
        "numba_compat.ensure_fresh_kernel_cache()\n"
        "print(old.exists())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "False"]


def test_a_kernels_first_compile_checks_the_cache_first(monkeypatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(numba_compat, "_cache_checked", False)
    monkeypatch.setattr(numba_compat, "drop_stale_kernel_cache", lambda _d: calls.append(1))

    def plus(x):
        return x + 1.0

    fn = numba_compat.kernel_decorator(cache=False)(plus)
    assert calls == []  # decorating checks nothing
    fn(1.0)
    fn(2.0)
    assert calls == [1]  # once, before the first compile


def test_no_module_but_numba_compat_imports_numba_internals() -> None:
    offenders = []
    for pkg in ("configs", "data", "engine", "research", "live_bridge"):
        for path in sorted((REPO / pkg).rglob("*.py")):
            if path.name == "numba_compat.py":
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                mods = []
                if isinstance(node, ast.ImportFrom) and node.module:
                    mods = [node.module]
                elif isinstance(node, ast.Import):
                    mods = [a.name for a in node.names]
                # numba.core.types is numba's documented type catalogue; everything else in core is not.
                mods = [
                    m for m in mods if m.startswith("numba.") and m not in ("numba.core", "numba.core.types")
                ]
                offenders += [f"{path.relative_to(REPO)}: {m}" for m in mods]
    assert offenders == []
