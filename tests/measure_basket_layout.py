"""Where a two-symbol basket's time goes: the same two single-symbol kernels in four schedules (CPU s).

Not a test (never asserts timings): ``python tests/measure_basket_layout.py [--bars 1000000]`` builds two
of ``gridctl bench --symbols 2``'s synthetic markets and prints one JSON line, each figure the best of 5
after a warm-up (compiles its two loops first, and the project kernels on a cold cache):

* ``sequential_s``: ``run_bars_nb`` on each market, one after the other (what ``basket_vs_singles``
  divides by, without the set-up around the kernels);
* ``interleaved_s``: ``step_nb`` of both markets at every bar in one loop, each market's groups its own
  arguments (numba inlines two copies of the step): stepping the symbols together, nothing else;
* ``stacked_s``: the same loop over the symbols at run time, each symbol's groups views of stacked
  arrays rebuilt at every bar (the basket's layout), still without any account work;
* ``basket_s``: ``run_basket_nb``, the basket kernel itself (the account's work added), on the same
  markets and groups ``run_basket`` builds (its set-up not timed, as for the others).

The ratios to ``sequential_s`` separate the cost of stepping symbols together, of the stacked layout
and of the account model (DESIGN.md "Baskets", **Speed**). The machine is shared: CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit

from gridctl.engine.basket import basket_bars, basket_groups, basket_params, run_basket_nb, stack_params
from gridctl.engine.contexts import Bars, Funding, Records, Sim
from gridctl.engine.numba_compat import KERNEL_OPTIONS
from gridctl.engine.params import build_params
from gridctl.engine.records import (
    C_EQUITY,
    C_EVENTS,
    C_FILLS,
    C_FUNDING,
    EQUITY_DTYPE,
    EVENT_DTYPE,
    FILL_DTYPE,
    FUNDING_DTYPE,
    new_counters,
)
from gridctl.engine.run import _run_bars_args, detail_arrays, market_arrays, regime_series, run_bars_nb
from gridctl.engine.state import init_state
from gridctl.engine.step import step_nb
from gridctl.research.bench import basket_markets

_OPTIONS = {**KERNEL_OPTIONS, "cache": False}


def _bar_loop(fn: Callable) -> Any:
    """Compile ``fn`` under the name numba's inline cost model inlines ``step_nb`` into (``BAR_LOOPS``)."""
    fn.__name__ = fn.__qualname__ = "run_bars_nb"
    return njit(**_OPTIONS)(fn)


def _interleaved(n, b1, f1, d1, s1, r1, b2, f2, d2, s2, r2):
    for k in range(n):
        step_nb(k, b1, f1, d1, s1, r1)
        step_nb(k, b2, f2, d2, s2, r2)


def _stacked(n, bars, funding, foff, det, sims, nbr, rec):
    ts, op, hi, lo, cl, regs = bars
    fts, frate, fmark = funding
    vecs, brs, states, slots, errs, ords = sims
    fills, fund, ev, eq, cnts = rec
    for k in range(n):
        for i in range(states.shape[0]):
            a, b = foff[i], foff[i + 1]
            step_nb(
                k,
                Bars(ts, op[i], hi[i], lo[i], cl[i], regs[i]),
                Funding(fts[a:b], frate[a:b], fmark[a:b]),
                det,
                Sim(vecs[i], brs[i, : nbr[i]], states[i], slots[i], errs[i], ords[i]),
                Records(fills[i], fund[i], ev[i], eq[i], cnts[i]),
            )


def _single_args(market: Any, strategy: Any, venue: Any) -> tuple:
    """``run_bars_nb``'s arguments for a fresh run of ``market`` (ledgers with room, no equity curve)."""
    prm = build_params(strategy, venue, market)
    arrays = market_arrays(market)
    n = arrays.ts.shape[0]
    det = detail_arrays(market, None, n)
    bufs = (
        np.empty(n // 4 + 64, FILL_DTYPE),
        np.empty(2 * arrays.funding_ts.shape[0] + 2, FUNDING_DTYPE),
        np.empty(n // 4 + 64, EVENT_DTYPE),
        np.empty(0, EQUITY_DTYPE),
    )
    reg = regime_series(arrays, prm.vector)
    return _run_bars_args(arrays, det, prm, reg, init_state(prm.vector), bufs, new_counters(True, False), n)


def _stack_args(a1: tuple, a2: tuple) -> tuple:
    """``_stacked``'s arguments: both markets' groups stacked row by row (funding concatenated)."""
    g1, g2 = a1[2:], a2[2:]

    def stack(i: int) -> tuple:
        return tuple(np.ascontiguousarray(np.stack([x, y])) for x, y in zip(g1[i], g2[i], strict=True))

    f1, f2 = g1[1], g2[1]
    foff = np.array([0, f1.ts.shape[0], f1.ts.shape[0] + f2.ts.shape[0]])
    funding = Funding(*(np.concatenate([x, y]) for x, y in zip(f1, f2, strict=True)))
    bars = Bars(g1[0].ts, *stack(0)[1:])
    nbr = np.array([g1[3].br.shape[0], g2[3].br.shape[0]])
    return (a1[1], bars, funding, foff, g1[2], Sim(*stack(3)), nbr, Records(*stack(4)))


def best_cpu_s(run: Callable[[], float], repeats: int = 5) -> float:
    """Best of ``repeats`` CPU-second figures ``run`` returns, after one warm-up call."""
    run()
    return min(run() for _ in range(repeats))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bars", type=int, default=1_000_000)
    args = ap.parse_args()
    markets, strategies, venue = basket_markets(args.bars, 2)
    syms = list(markets)
    interleaved = _bar_loop(_interleaved)
    stacked = _bar_loop(_stacked)

    def fresh() -> tuple[tuple, tuple]:
        return tuple(_single_args(markets[s], strategies[s], venue) for s in syms)  # type: ignore[return-value]

    def cpu(fn: Callable[[], None]) -> float:
        t = time.process_time()
        fn()
        return time.process_time() - t

    def sequential() -> float:
        a1, a2 = fresh()
        return cpu(lambda: (run_bars_nb(*a1), run_bars_nb(*a2)))

    def together() -> float:
        a1, a2 = fresh()
        return cpu(lambda: interleaved(a1[1], *a1[2:], *a2[2:]))

    def layout() -> float:
        s = _stack_args(*fresh())
        return cpu(lambda: stacked(*s))

    symbols = tuple(syms)
    params = basket_params(symbols, strategies, venue, markets, {})
    bars = basket_bars(symbols, markets, {})
    regs = np.ascontiguousarray(
        np.stack([regime_series(a, prm.vector) for a, prm in zip(bars.arrays, params, strict=True)])
    )
    n = bars.ts.shape[0]
    caps = {C_FILLS: n // 4 + 64, C_EVENTS: n // 4 + 64, C_FUNDING: 2 * int(np.diff(bars.foff).max()) + 2,
            C_EQUITY: 0}  # fmt: skip

    def basket() -> float:
        groups = basket_groups(bars, regs, stack_params(params), caps, False)
        return cpu(lambda: run_basket_nb(*groups))

    out = {name: best_cpu_s(fn) for name, fn in
           (("sequential_s", sequential), ("interleaved_s", together), ("stacked_s", layout),
            ("basket_s", basket))}  # fmt: skip
    base = out["sequential_s"]
    out.update({f"{k[:-2]}_vs_sequential": v / base for k, v in list(out.items()) if k != "sequential_s"})
    out["bars"] = args.bars
    print(json.dumps(out))


if __name__ == "__main__":
    main()
