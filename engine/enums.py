"""Integer enums shared by the kernels, the drivers and the result readers, and the kernel decorator.

Each enum is a namedtuple *instance* of ints (vectorbt style): numba freezes global namedtuples as
compile-time constants, so ``Side.LONG`` costs nothing inside an ``@njit`` function, and Python code
gets readable names (``EventKind._fields[k]``) for the integers stored in the record arrays.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import NamedTuple

from numba import njit

from data.atomic import atomic_write_text

#: Engine modules holding kernels; their sources together key the on-disk kernel cache.
KERNEL_MODULES = (
    "accounting", "batch", "enums", "fills", "funding", "ladder", "margin", "params", "policy",
    "records", "regime", "risk", "state", "step", "throttle", "validation",
)  # fmt: skip


def drop_stale_kernel_cache(engine_dir: Path) -> bool:
    """Delete numba's cached kernels when any kernel module changed since they were compiled.

    Numba checks a cached function only against its own source file, but kernels bake in constants
    and inline functions from other engine modules; without this, editing ``state.py`` would leave
    stale machine code behind. Returns True when the cache was dropped.
    """
    digest = hashlib.sha256()
    for name in KERNEL_MODULES:
        digest.update((engine_dir / f"{name}.py").read_bytes())
    cache = engine_dir / "__pycache__"
    stamp = cache / "kernels.sha256"
    try:
        if stamp.read_text() == digest.hexdigest():
            return False
    except OSError:
        pass
    try:
        for f in cache.glob("*.nb[ic]"):
            f.unlink(missing_ok=True)
        atomic_write_text(stamp, digest.hexdigest())
    except OSError:  # read-only install: numba then caches elsewhere and compiles on first use
        return False
    return True


drop_stale_kernel_cache(Path(__file__).resolve().parent)

#: Decorator of every per-bar kernel: compiled once and cached on disk, and without numba's reference
#: counting. Kernels never allocate; with reference counting on, every call that passes arrays would
#: pay two atomic operations per array (measured: ~75 ns per call with 6 arrays, 7 ns without).
kernel = njit(cache=True, _nrt=False)

#: Decorator of the small kernels every bar runs (marking, gates, the quiet-bar checks, recording):
#: numba inlines them into the caller. A real call passes each array argument as seven words on the
#: stack; on a quiet bar those calls cost about as much as the work itself.
hot_kernel = njit(cache=True, _nrt=False, inline="always")


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


def enum_name(enum: NamedTuple, value: int) -> str:
    """Name of ``value`` in ``enum`` (e.g. ``enum_name(EventKind, 2) == "RECENTER"``)."""
    for name, v in zip(enum._fields, enum, strict=True):
        if v == value:
            return name
    raise ValueError(f"{value} is not a value of {type(enum).__name__.lstrip('_')}")
