"""Named groups of arrays the kernels and drivers pass instead of long positional lists.

numba types each group as a named tuple of its arrays' types and resolves ``group.field`` when it
compiles, so a group costs nothing at run time: a kernel receives the same arrays it would receive
one by one. The groups are plain tuples (build them with keyword or positional arguments, in Python or
inside a kernel); a cached kernel's signature names them, so they live here, at module level.

=============  ===================================================================================
group          holds
=============  ===================================================================================
``Bars``       the run's bars: ``ts`` (int64 open times), ``op/hi/lo/cl`` (float64 OHLC) and
               ``reg`` (int8, the regime after each bar, ``engine.regime.regime_series``)
``Funding``    the symbol's funding settlements: ``ts`` (int64), ``rate`` and ``mark`` (float64;
               NaN when unknown)
``Detail``     the detail bars the path walk uses: ``ts``, ``op/hi/lo/cl`` as in ``Bars`` and
               ``idx`` (int64 [n_bars, 2]: bar k walks detail bars ``idx[k, 0]..idx[k, 1]-1``, none
               when equal); ``engine.run.no_detail`` gives empty ones
``Sim``        one simulated account's parameters and state: ``p`` (the parameter vector,
               engine/params.py ``P_*``), ``br`` (margin brackets), ``st`` (state vector ``S_*``),
               ``slots`` ([2, levels, ``SL_*``]), ``errs`` (circuit-breaker error ring) and
               ``ords`` (order-pacing ring)
``Records``    the ledgers a run writes: ``fills``, ``fund``, ``ev``, ``eq`` (structured arrays,
               engine/records.py) and ``cnt`` (their counters ``C_*``)
``Account``    a basket's one wallet (engine/basket.py): ``acc`` (the account's state vector, its
               summary accumulators), ``rows`` (its equity rows), ``info`` (int64 facts ``A_*``),
               ``work`` ([n_sym, ``W_*``]: each symbol's contribution) and ``sh`` (running facts
               ``SH_*``)
=============  ===================================================================================

The batch driver (``engine.batch.run_batch_nb``) takes a ``Sim`` whose arrays carry a leading
parameter-set axis (``p[i]``, ``st[i]``, ``slots[i]``, ``errs[i]``, ``ords[i]``; ``br`` shared) and a
``Bars`` whose ``reg`` holds one regime series per row, picked per set by ``reg_idx``. In a basket
(``basket_bar_nb``, ``run_basket_nb``) ``Bars`` (but ``ts``), ``Detail.idx``, ``Sim`` (but the
account's rings ``errs`` / ``ords``) and ``Records`` hold one row per symbol, ``Funding`` every
symbol's settlements concatenated (symbol i's at ``foff[i]:foff[i+1]``), ``Sim.br`` symbol i's
brackets in its first ``nbr[i]`` rows; the basket batch adds a leading set axis as the batch does.
Kernels that unpack a group positionally (``ts, op, hi, lo, cl, reg = bars``) rely on the field
order below.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Bars(NamedTuple):
    """The run's bars (see the module table)."""

    ts: np.ndarray
    op: np.ndarray
    hi: np.ndarray
    lo: np.ndarray
    cl: np.ndarray
    reg: np.ndarray


class Funding(NamedTuple):
    """Funding settlements: times, rates, marks."""

    ts: np.ndarray
    rate: np.ndarray
    mark: np.ndarray


class Detail(NamedTuple):
    """Detail bars and their index into the run's bars."""

    ts: np.ndarray
    op: np.ndarray
    hi: np.ndarray
    lo: np.ndarray
    cl: np.ndarray
    idx: np.ndarray


class Sim(NamedTuple):
    """One account's parameters, brackets, state, slots and rings."""

    p: np.ndarray
    br: np.ndarray
    st: np.ndarray
    slots: np.ndarray
    errs: np.ndarray
    ords: np.ndarray


class Records(NamedTuple):
    """Ledger buffers and their counters."""

    fills: np.ndarray
    fund: np.ndarray
    ev: np.ndarray
    eq: np.ndarray
    cnt: np.ndarray


class Account(NamedTuple):
    """A basket's one wallet: the account's state, equity rows, facts, work rows and running facts."""

    acc: np.ndarray
    rows: np.ndarray
    info: np.ndarray
    work: np.ndarray
    sh: np.ndarray
