"""Integer enums shared by the kernels, the drivers and the result readers, and the kernel decorator.

Each enum is a namedtuple *instance* of ints (vectorbt style): numba freezes global namedtuples as
compile-time constants, so ``Side.LONG`` costs nothing inside an ``@njit`` function, and Python code
gets readable names (``EventKind._fields[k]``) for the integers stored in the record arrays.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from numba import njit
from numba.core import types as nb_types
from numba.core.caching import FunctionCache
from numba.core.compiler import CompilerBase, DefaultPassBuilder
from numba.core.compiler_machinery import register_pass
from numba.core.lowering import Lower
from numba.core.registry import CPUDispatcher
from numba.core.typed_passes import NativeLowering

from gridctl.data.atomic import atomic_write_text


def _locator_probe() -> None:
    """Stand-in function handed to numba's cache locators (they only read its code object)."""


def kernel_cache_dir(source: Path) -> Path | None:
    """The directory numba caches ``source``'s kernels in, chosen exactly as numba chooses it.

    ``$NUMBA_CACHE_DIR`` when set, else the module's ``__pycache__`` when writable, else the per-user
    cache; None when no locator applies.
    """
    from numba.core.caching import CacheImpl

    for locator_cls in CacheImpl._locator_classes:
        locator = locator_cls.from_function(_locator_probe, str(source))
        if locator is not None:
            return Path(locator.get_cache_path())
    return None


def kernel_sources_digest(engine_dir: Path) -> str:
    """SHA-256 over the names and contents of every ``*.py`` module in ``engine_dir``."""
    digest = hashlib.sha256()
    for path in sorted(engine_dir.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
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
        for f in cache.glob("*.nb[ic]"):
            f.unlink(missing_ok=True)
        atomic_write_text(stamp, digest)
    except OSError:  # read-only cache directory: numba cannot write there either
        return False
    return True


drop_stale_kernel_cache(Path(__file__).resolve().parent)


class _KernelDispatcher(CPUDispatcher):
    """numba dispatcher that specialises a kernel on argument *types*, never on constant values.

    Plain numba types an integer constant at a call site (``write_event_nb(..., -1, 0, ...)``) as
    its own literal type, so every distinct constant compiles another copy of the callee (measured:
    four copies of ``write_event_nb``, two of ``run_bars_nb``). Kernels never dispatch on values.
    """

    def get_call_template(self, args: Any, kws: Any) -> Any:
        args = [nb_types.unliteral(a) for a in args]
        kws = {k: nb_types.unliteral(v) for k, v in kws.items()}
        return super().get_call_template(args, kws)


class _KernelCache(FunctionCache):
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


def _kernel_decorator(**options: Any) -> Callable[[Callable], Any]:
    jit = njit(**options)
    plain = not options.get("parallel") and options.get("_nrt") is False

    def decorate(fn: Callable) -> Any:
        dispatcher = jit(fn)
        if type(dispatcher) is CPUDispatcher:  # not with NUMBA_DISABLE_JIT (plain functions)
            dispatcher.__class__ = _KernelDispatcher
            if plain and isinstance(dispatcher._cache, FunctionCache):
                dispatcher._cache = _KernelCache(dispatcher.py_func)
        return dispatcher

    return decorate


#: Decorator of every per-bar kernel: compiled once and cached on disk, and without numba's reference
#: counting. Kernels never allocate; with reference counting on, every call that passes arrays would
#: pay two atomic operations per array (measured: ~75 ns per call with 6 arrays, 7 ns without).
kernel = _kernel_decorator(cache=True, _nrt=False)

#: The per-bar loops: ``bar_step_kernel`` functions are inlined into these by numba, nowhere else.
BAR_LOOPS = frozenset({"run_bars_nb"})


def _inline_into_bar_loops(_expr: Any, caller_ir: Any, _callee_ir: Any) -> bool:
    """numba inline cost model: inline a bar step only where the caller is a per-bar loop."""
    return caller_ir.func_id.func_name in BAR_LOOPS


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


#: Decorator of the small kernels every bar runs (marking, gates, the quiet-bar checks, recording):
#: LLVM inlines them into every compiled caller. A real call passes each array argument as seven
#: words on the stack; on a quiet bar those calls cost about as much as the work itself (measured:
#: the kernel runs 2.6x slower with no inlining). Inlining in LLVM, not in numba's IR, keeps each
#: one typed and lowered once instead of once per call site: the first backtest's compile is
#: shorter and ~85 MB smaller than with numba-level inlining, for the same kernel speed.
hot_kernel = _kernel_decorator(cache=True, _nrt=False, pipeline_class=AlwaysInlineCompiler)

#: Decorator of ``step_nb``, the whole bar step: numba inlines it into the bar loop (one call site,
#: so the loop's compile does not link and optimise a separately compiled copy of the step), and
#: compiles it as an ordinary kernel for the live session, which calls it bar by bar from Python.
bar_step_kernel = _kernel_decorator(cache=True, _nrt=False, inline=_inline_into_bar_loops)


class _Side(NamedTuple):
    LONG: int = 0
    SHORT: int = 1


class _FillKind(NamedTuple):
    ENTRY: int = 0
    TP: int = 1
    SL: int = 2
    FLATTEN: int = 3
    LIQUIDATION: int = 4


class _Liquidity(NamedTuple):
    MAKER: int = 0
    TAKER: int = 1


class _Regime(NamedTuple):
    SIDEWAYS: int = 0
    UP: int = 1
    DOWN: int = 2


class _RiskState(NamedTuple):
    NORMAL: int = 0
    REDUCING: int = 1
    COOLDOWN: int = 2
    HALTED: int = 3
    LIQUIDATED: int = 4


class _MarkSource(NamedTuple):
    MARK_SERIES: int = 0
    TRADE_OPEN: int = 1


class _PolicyKind(NamedTuple):
    THROTTLED_COUNTER: int = 0
    CORE_AND_SCALP: int = 1


class _EventKind(NamedTuple):
    INPUT_MISSING: int = 0
    DATA_GAP: int = 1
    RECENTER: int = 2
    FUNDING_UNKNOWN: int = 3
    POST_ONLY_REJECT: int = 4
    RETRY_LIMIT: int = 5
    ORDER_REJECTED: int = 6
    DRAWDOWN_HALT: int = 7
    CIRCUIT_BREAKER_TRIP: int = 8
    CIRCUIT_BREAKER_RESET: int = 9
    REDUCING_ON: int = 10
    REDUCING_OFF: int = 11
    LIQUIDATION: int = 12


class _Reason(NamedTuple):
    NONE: int = 0
    SIZE_PCT: int = 1
    SIZE_QTY: int = 2
    SIZE_INVENTORY: int = 3
    SIZE_ORDER: int = 4
    SIZE_BRACKET: int = 5
    POST_ONLY: int = 6
    RETRY_ATTEMPTS: int = 7
    RETRY_DEVIATION: int = 8
    LEVERAGE: int = 9
    LIQUIDATION_BUFFER: int = 10
    SIZE_MARGIN: int = 11


Side = _Side()
FillKind = _FillKind()
Liquidity = _Liquidity()
Regime = _Regime()
RiskState = _RiskState()
MarkSource = _MarkSource()
PolicyKind = _PolicyKind()
EventKind = _EventKind()
Reason = _Reason()

POLICY_NAMES: dict[str, int] = {
    "throttled-counter": PolicyKind.THROTTLED_COUNTER,
    "core-and-scalp": PolicyKind.CORE_AND_SCALP,
}

#: ``backtest.intrabar_path`` -> code in ``P_INTRABAR_PATH`` (the order of a bar's two extremes).
PATH_NEARER_FIRST = 0
PATH_HIGH_FIRST = 1
PATH_LOW_FIRST = 2
PATH_FARTHER_FIRST = 3
INTRABAR_PATH_NAMES: dict[str, int] = {
    "nearer_first": PATH_NEARER_FIRST,
    "farther_first": PATH_FARTHER_FIRST,
    "high_first": PATH_HIGH_FIRST,
    "low_first": PATH_LOW_FIRST,
}


def enum_name(enum: NamedTuple, value: int) -> str:
    """Name of ``value`` in ``enum`` (e.g. ``enum_name(EventKind, 2) == "RECENTER"``)."""
    for name, v in zip(enum._fields, enum, strict=True):
        if v == value:
            return name
    raise ValueError(f"{value} is not a value of {type(enum).__name__.lstrip('_')}")
