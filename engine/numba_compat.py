"""The one module that reaches into numba's private API (tested with numba 0.68; pyproject bounds it).

Every use of a numba internal is here, named in ``HOOKS``, and each hook has a canary test
(``tests/engine/test_numba_compat.py``) that fails naming the hook when a numba release changes under it:

* ``cache_locators``: ``CacheImpl._locator_classes``, to find the directory numba caches a module in.
* ``cache_files``: numba's cache file names (``<module>.<function>-<line>.py<ver>.nb[ic]``).
* ``cache_index``: ``FunctionCache._index_key`` / ``_cache_file._load_index``, to ask whether a
  signature is compiled on disk without loading it.
* ``cache_loader``: ``FunctionCache._load_overload`` / ``_guard_against_spurious_io_errors``, to load a
  cache hit without numba's registry refresh.
* ``dispatcher_swap``: a kernel dispatcher's ``__class__`` and ``_cache`` replaced after ``njit``,
  ``CPUDispatcher.get_call_template`` overridden to unliteral argument types.
* ``nrt_option``: the ``_nrt=False`` option of ``njit`` (no reference counting).
* ``argument_typeof``: ``typeof(value, Purpose.argument)``, the type a dispatcher gives an argument.
* ``lowering_pass``: a lowering pass (``NativeLowering.lowering_class``, ``Lower.post_lower``) that
  marks each lowered function ``alwaysinline`` for LLVM.

The kernel cache is checked against the engine's sources before the first kernel of a process is
compiled or loaded (``KernelDispatcher.compile``), never when a module is imported.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from numba import njit, typeof
from numba.core import types as nb_types
from numba.core.caching import CacheImpl, FunctionCache
from numba.core.compiler import CompilerBase, DefaultPassBuilder
from numba.core.compiler_machinery import register_pass
from numba.core.lowering import Lower
from numba.core.registry import CPUDispatcher
from numba.core.typed_passes import NativeLowering
from numba.core.typing.typeof import Purpose

from gridctl.configs.gates import GATES
from gridctl.data.atomic import atomic_write_text

ENGINE_DIR = Path(__file__).resolve().parent

#: The private numba APIs this module uses (see the module docstring); the canary tests cover each.
HOOKS = (
    "cache_locators",
    "cache_files",
    "cache_index",
    "cache_loader",
    "dispatcher_swap",
    "nrt_option",
    "argument_typeof",
    "lowering_pass",
)

#: Glob of numba's cache files (index ``.nbi`` and machine code ``.nbc``) in a cache directory.
CACHE_FILES_GLOB = "*.nb[ic]"


def _locator_probe() -> None:
    """Stand-in function handed to numba's cache locators (they only read its code object)."""


def kernel_cache_dir(source: Path) -> Path | None:
    """The directory numba caches ``source``'s kernels in, chosen exactly as numba chooses it.

    ``$NUMBA_CACHE_DIR`` when set, else the module's ``__pycache__`` when writable, else the per-user
    cache; None when no locator applies.
    """
    for locator_cls in CacheImpl._locator_classes:
        locator = locator_cls.from_function(_locator_probe, str(source))
        if locator is not None:
            return Path(locator.get_cache_path())
    return None


def kernel_sources_digest(engine_dir: Path) -> str:
    """SHA-256 over the names and contents of every ``*.py`` module in ``engine_dir`` and the gate table.

    The gate table (configs/gates.py ``GATES``) lays out parameter and state slots and numbers the
    gates' event kinds, which the kernels bake in as constants, so its rows key the cache too.
    """
    digest = hashlib.sha256()
    for path in sorted(engine_dir.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(repr(GATES).encode())
    return digest.hexdigest()


def drop_stale_kernel_cache(engine_dir: Path, cache: Path | None = None) -> bool:
    """Delete numba's cached kernels when any engine module changed since they were compiled.

    Numba checks a cached function only against its own source file, but kernels bake in constants
    and inline functions from other engine modules; without this, editing ``state.py`` would leave
    stale machine code behind. Every ``*.py`` file of ``engine_dir`` keys the cache (no module list
    to keep), and the directory checked is the one numba will load from (``cache``, default
    ``kernel_cache_dir``: ``$NUMBA_CACHE_DIR`` included). Returns True when the cache was dropped.
    """
    digest = kernel_sources_digest(engine_dir)
    if cache is None:
        cache = kernel_cache_dir(engine_dir / "step.py")
        if cache is None:  # pragma: no cover - numba then does not cache at all
            return False
    stamp = cache / "kernels.sha256"
    try:
        if stamp.read_text() == digest:
            return False
    except OSError:
        pass
    try:
        for f in cache.glob(CACHE_FILES_GLOB):
            f.unlink(missing_ok=True)
        atomic_write_text(stamp, digest)
    except OSError:  # read-only cache directory: numba cannot write there either
        return False
    return True


_cache_checked = False
_cache_check_lock = threading.Lock()


def ensure_fresh_kernel_cache() -> None:
    """Run ``drop_stale_kernel_cache`` once per process, before the first kernel compiles or loads."""
    global _cache_checked
    if _cache_checked:
        return
    with _cache_check_lock:
        if not _cache_checked:
            drop_stale_kernel_cache(ENGINE_DIR)
            _cache_checked = True


def argument_type(value: Any) -> Any:
    """The numba type a dispatcher gives ``value`` passed as an argument (arrays as non-reflected)."""
    return typeof(value, Purpose.argument)


def cached_on_disk(dispatcher: Any, sig: tuple) -> bool:
    """True when numba's on-disk index holds ``dispatcher`` compiled for ``sig`` (nothing is loaded).

    False for any cache layout this code does not know (another numba): callers then treat the
    kernel as cold, which only costs a notice.
    """
    ensure_fresh_kernel_cache()
    cache = getattr(dispatcher, "_cache", None)
    try:
        key = cache._index_key(sig, dispatcher.targetctx.codegen())
        return key in cache._cache_file._load_index()
    except (AttributeError, OSError, EOFError, ValueError):
        return False


class KernelDispatcher(CPUDispatcher):
    """numba dispatcher that specialises a kernel on argument *types*, never on constant values.

    Plain numba types an integer constant at a call site (``write_event_nb(..., -1, 0, ...)``) as
    its own literal type, so every distinct constant compiles another copy of the callee (measured:
    four copies of ``write_event_nb``, two of ``run_bars_nb``). Kernels never dispatch on values.
    Before its first compile or cache load in a process, the kernel cache is checked against the
    engine's sources (``ensure_fresh_kernel_cache``).
    """

    def get_call_template(self, args: Any, kws: Any) -> Any:
        args = [nb_types.unliteral(a) for a in args]
        kws = {k: nb_types.unliteral(v) for k, v in kws.items()}
        return super().get_call_template(args, kws)

    def compile(self, sig: Any) -> Any:
        ensure_fresh_kernel_cache()
        return super().compile(sig)


class KernelCache(FunctionCache):
    """numba's on-disk cache of one kernel, loading a cache hit without the registry refresh.

    numba refreshes its target context before every cache load, installing each registry of typing
    and lowering implementations (~0.3 s CPU and ~35 MB of a warm ``gridctl backtest``). A cache hit
    only links machine code that is already compiled: for a nopython kernel without reference counting
    or ``parallel`` (all our kernels) nothing in the registries is needed to run it. Whenever something
    does compile, numba's compiler pipeline refreshes the context itself first.
    """

    def load_overload(self, sig: Any, target_context: Any) -> Any:
        with self._guard_against_spurious_io_errors():
            return self._load_overload(sig, target_context)


def kernel_decorator(**options: Any) -> Callable[[Callable], Any]:
    """``njit(**options)`` returning a ``KernelDispatcher`` (with ``KernelCache`` when plain)."""
    jit = njit(**options)
    plain = not options.get("parallel") and options.get("_nrt") is False

    def decorate(fn: Callable) -> Any:
        dispatcher = jit(fn)
        if type(dispatcher) is CPUDispatcher:  # not with NUMBA_DISABLE_JIT (plain functions)
            dispatcher.__class__ = KernelDispatcher
            if plain and isinstance(dispatcher._cache, FunctionCache):
                dispatcher._cache = KernelCache(dispatcher.py_func)
        return dispatcher

    return decorate


class _AlwaysInlineLower(Lower):
    """numba's lowering, marking the lowered function ``alwaysinline`` for LLVM."""

    def post_lower(self) -> None:
        super().post_lower()
        self.function.attributes.add("alwaysinline")


@register_pass(mutates_CFG=True, analysis_only=False)
class _AlwaysInlineLowering(NativeLowering):
    _name = "gridctl_always_inline_lowering"

    @property
    def lowering_class(self) -> type:
        return _AlwaysInlineLower


class AlwaysInlineCompiler(CompilerBase):
    """numba's nopython pipeline with ``_AlwaysInlineLowering`` in place of its native lowering."""

    def define_pipelines(self) -> list[Any]:
        pm = DefaultPassBuilder.define_nopython_pipeline(self.state)
        pm.passes = [(_AlwaysInlineLowering if p is NativeLowering else p, d) for p, d in pm.passes]
        pm.finalize()
        return [pm]


#: Options of every kernel: cached on disk, without numba's reference counting (``_nrt``). Kernels
#: never allocate; with reference counting on, every call that passes arrays would pay two atomic
#: operations per array (measured: ~75 ns per call with 6 arrays, 7 ns without).
KERNEL_OPTIONS: dict[str, Any] = {"cache": True, "_nrt": False}
