"""Integer enums shared by the kernels, the drivers and the result readers, and the kernel decorator.

Each enum is a namedtuple *instance* of ints (vectorbt style): numba freezes global namedtuples as
compile-time constants, so ``Side.LONG`` costs nothing inside an ``@njit`` function, and Python code
gets readable names (``EventKind._fields[k]``) for the integers stored in the record arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from gridctl.configs.gates import GATES, Gate, gate_event_names
from gridctl.engine.numba_compat import KERNEL_OPTIONS, AlwaysInlineCompiler, kernel_decorator

#: Decorator of every per-bar kernel: compiled once and cached on disk, without reference counting.
kernel: Callable[[Callable], Any] = kernel_decorator(**KERNEL_OPTIONS)

#: The per-bar loops: ``bar_step_kernel`` functions are inlined into these by numba, nowhere else.
BAR_LOOPS = frozenset({"run_bars_nb"})


def _inline_into_bar_loops(_expr: Any, caller_ir: Any, _callee_ir: Any) -> bool:
    """numba inline cost model: inline a bar step only where the caller is a per-bar loop."""
    return caller_ir.func_id.func_name in BAR_LOOPS


#: Decorator of the small kernels every bar runs (marking, gates, the quiet-bar checks, recording):
#: LLVM inlines them into every compiled caller. A real call passes each array argument as seven
#: words on the stack; on a quiet bar those calls cost about as much as the work itself (measured:
#: the kernel runs 2.6x slower with no inlining). Inlining in LLVM, not in numba's IR, keeps each
#: one typed and lowered once instead of once per call site: the first backtest's compile is
#: shorter and ~85 MB smaller than with numba-level inlining, for the same kernel speed. So is
#: ``decide_nb``, which takes engine/contexts.py groups on the bar's path: a real call would pass every
#: group whole.
hot_kernel: Callable[[Callable], Any] = kernel_decorator(
    **KERNEL_OPTIONS, pipeline_class=AlwaysInlineCompiler
)

#: Decorator of the thin kernels on the bar's path that only pass engine/contexts.py groups on
#: (``engine.step.bar_path_nb`` and the fill path's entry points ``path_nb``, ``detail_path_nb``,
#: ``points_margin_check_nb``) and of the basket's whole aligned bar (``engine.basket.basket_bar_nb``,
#: which the live session also calls from Python): numba inlines their IR into their one caller. A
#: ``hot_kernel`` is first compiled on its own, and that compile links, optimises and emits machine
#: code for everything it calls once more (here the whole fill path, four times over); these skip it. The
#: LLVM modules a cold first run optimises shrink from 3.7 to 3.0 MB of bitcode (as before the named
#: contexts), the bar loop is the same.
inline_kernel: Callable[[Callable], Any] = kernel_decorator(**KERNEL_OPTIONS, inline="always")

#: Decorator of ``step_nb``, the whole bar step: numba inlines it into the bar loop (one call site,
#: so the loop's compile does not link and optimise a separately compiled copy of the step), and
#: compiles it as an ordinary kernel for the live session, which calls it bar by bar from Python.
bar_step_kernel: Callable[[Callable], Any] = kernel_decorator(**KERNEL_OPTIONS, inline=_inline_into_bar_loops)


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


#: Event kinds that record bookkeeping, not a gate acting; the gates' kinds follow them, in the order
#: of the gate table (configs/gates.py), so a gate's events are declared once, in its row.
BOOKKEEPING_EVENTS = ("DATA_GAP", "RECENTER", "POST_ONLY_REJECT", "RETRY_LIMIT", "ORDER_REJECTED")


def event_kind_names(gates: tuple[Gate, ...] = GATES) -> tuple[str, ...]:
    """Every ``EventKind`` name, by value: the bookkeeping kinds, then each gate's events."""
    return (*BOOKKEEPING_EVENTS, *gate_event_names(gates))


_EventKind = NamedTuple("_EventKind", [(name, int) for name in event_kind_names()])  # type: ignore[misc]


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
EventKind = _EventKind(*range(len(_EventKind._fields)))
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
