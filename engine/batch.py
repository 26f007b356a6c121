"""Batch driver: many parameter sets over the same bars, in parallel, online summaries only.

Each set is the base strategy/venue with a few keys overridden (``{"grid.grid_step_bps": 40}``),
re-validated by the config schema, so a batch can never run a set the CLI would refuse. The regime
series is computed once per distinct regime tuple and shared (the missing ones in parallel; a
``RegimeCache`` the caller keeps reuses them across calls); per-set memory is the state vector,
the slot array and two small rings - nothing grows with the number of bars. Sets run under
``numba.prange`` and use the very same ``run_bars_nb`` / ``step_nb`` as ``run_single``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numba import prange, set_parallel_chunksize

from gridctl.configs.errors import GridctlError
from gridctl.configs.overrides import apply_overrides
from gridctl.configs.schema import StrategyConfig, VenueConfig
from gridctl.engine.basket import run_basket_nb
from gridctl.engine.contexts import Account, Bars, Detail, Funding, Records, Sim
from gridctl.engine.numba_compat import kernel_decorator
from gridctl.engine.params import P_LEVELS_LONG, P_LEVELS_SHORT, REGIME_SLOTS, build_params
from gridctl.engine.records import (
    N_COUNTERS,
    SUMMARY_DTYPE,
    SUMMARY_FIELDS,
    empty_buffers,
    summarize_states,
)
from gridctl.engine.regime import new_regime_state, regime_fill_nb
from gridctl.engine.run import check_detail_config, detail_arrays, market_arrays
from gridctl.engine.state import N_SLOT, N_STATE, init_state_row, ring_sizes
from gridctl.engine.step import run_bars_nb

#: The batch drivers: parallel loops over parameter sets, cached on disk like every kernel.
parallel_kernel = kernel_decorator(cache=True, parallel=True)
parallel_kernel_nogil = kernel_decorator(cache=True, parallel=True, nogil=True)


class RegimeCache:
    """Regime series that batches computed, kept for later batches on the same markets (bounded LRU).

    Keyed by the market object and the regime parameter tuple (``REGIME_SLOTS`` of the parameter
    vector); holds a reference to every market it has series of, so a key never outlives its market.
    Markets are immutable (``data.market.Market``), so a cached series stays the one
    ``regime_series`` would compute.
    """

    def __init__(self, max_bytes: int = 256 * 2**20) -> None:
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self.hits = 0
        self.computed = 0
        self._series: OrderedDict[tuple[int, tuple[float, ...]], np.ndarray] = OrderedDict()
        self._markets: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self._series)

    def get(self, market: Any, key: tuple[float, ...]) -> np.ndarray | None:
        """The cached series of ``key`` on ``market``, or None."""
        if self._markets.get(id(market)) is not market:
            return None
        series = self._series.get((id(market), key))
        if series is not None:
            self._series.move_to_end((id(market), key))
            self.hits += 1
        return series

    def put(self, market: Any, key: tuple[float, ...], series: np.ndarray) -> None:
        """Keep ``series`` (evicting the least recently used ones past ``max_bytes``)."""
        self.computed += 1
        if series.nbytes > self.max_bytes:
            return
        self._markets[id(market)] = market
        self._series[(id(market), key)] = series
        self.nbytes += series.nbytes
        while self.nbytes > self.max_bytes:
            _, old = self._series.popitem(last=False)
            self.nbytes -= old.nbytes


@parallel_kernel
def regime_series_many_nb(out, rs, op, hi, lo, cl, prm):
    """Row j of ``out``: the regime series of regime parameter row j of ``prm`` (rows in parallel).

    ``prm`` columns are ``REGIME_SLOTS`` in order (adx_len, ema_fast, ema_slow, atr_len, hysteresis,
    adx_threshold); each row runs the very ``regime_fill_nb`` that ``regime_series`` runs.
    """
    for j in prange(out.shape[0]):
        regime_fill_nb(
            out[j], rs[j], op, hi, lo, cl,
            int(prm[j, 0]), int(prm[j, 1]), int(prm[j, 2]), int(prm[j, 3]), prm[j, 4], prm[j, 5],
        )  # fmt: skip


def regime_series_batch(
    market: Any, arrays: Any, keys: Sequence[tuple[float, ...]], cache: RegimeCache | None = None
) -> np.ndarray:
    """One regime series per distinct parameter tuple in ``keys`` (row order), from ``cache`` or computed.

    The missing ones are computed together, in parallel across the cores.
    """
    n = arrays.close.shape[0]
    regs = np.empty((len(keys), n), dtype=np.int8)
    todo = []
    for j, key in enumerate(keys):
        hit = cache.get(market, key) if cache is not None else None
        if hit is None:
            todo.append(j)
        else:
            regs[j] = hit
    if todo:
        prm = np.array([keys[j] for j in todo], dtype=np.float64).reshape(len(todo), len(REGIME_SLOTS))
        rs = np.stack([new_regime_state() for _ in todo])
        fresh = np.empty((len(todo), n), dtype=np.int8)
        regime_series_many_nb(fresh, rs, arrays.open, arrays.high, arrays.low, arrays.close, prm)
        for row, j in enumerate(todo):
            regs[j] = fresh[row]
            if cache is not None:
                cache.put(market, keys[j], fresh[row].copy())
    return regs


@parallel_kernel_nogil
def run_batch_nb(bars, reg_idx, funding, detail, sims, rec):
    """Run every parameter set over all bars; summaries stay in the states.

    ``sims`` is a ``Sim`` whose ``p``, ``st``, ``slots``, ``errs`` and ``ords`` hold one row per set
    (``br`` shared); ``bars.reg`` one regime series per row, set ``i`` running on ``reg[reg_idx[i]]``;
    ``rec``'s buffers have no room and ``rec.cnt`` holds one zeroed counter row per set (``C_RECORD``
    0: nothing is recorded, only the states' online accumulators run).
    Releases the GIL (``nogil``): a caller may do Python work in another thread meanwhile.
    """
    ts = bars.ts
    op = bars.op
    hi = bars.hi
    lo = bars.lo
    cl = bars.cl
    regs = bars.reg
    vecs = sims.p
    br = sims.br
    states = sims.st
    slots = sims.slots
    errs = sims.errs
    ords = sims.ords
    fills = rec.fills
    fund = rec.fund
    ev = rec.ev
    eq = rec.eq
    cnts = rec.cnt
    n_sets = vecs.shape[0]
    n = ts.shape[0]
    for i in prange(n_sets):
        run_bars_nb(
            0,
            n,
            Bars(ts, op, hi, lo, cl, regs[reg_idx[i]]),
            funding,
            detail,
            Sim(vecs[i], br, states[i], slots[i], errs[i], ords[i]),
            Records(fills, fund, ev, eq, cnts[i]),
        )


def run_batch(
    market: Any,
    strategy: StrategyConfig,
    venue: VenueConfig,
    overrides: Sequence[Mapping[str, float]],
    detail: Any | None = None,
    regimes: RegimeCache | None = None,
) -> np.ndarray:
    """Summary row (``engine.records.SUMMARY_DTYPE``) per parameter set; set i = base + overrides[i].

    ``detail``: the finer market every set's ``backtest.detail_timeframe`` names (fills walk its bars).
    ``regimes``: a cache the caller keeps across calls, so a regime series is computed once per
    market and regime parameter tuple instead of once per call.
    """
    if len(overrides) == 0:
        raise GridctlError("run_batch needs at least one parameter set")
    vecs = []
    brackets = None
    for i, ov in enumerate(overrides):
        try:
            s, v = apply_overrides(strategy, venue, ov)
        except GridctlError as err:
            raise GridctlError(f"parameter set {i}: {err}") from None
        params = build_params(s, v, market)
        try:
            check_detail_config(s, detail)
        except GridctlError as err:
            raise GridctlError(f"parameter set {i}: {err}") from None
        if brackets is None:
            brackets = params.brackets
        elif not np.array_equal(brackets, params.brackets):
            raise GridctlError(f"parameter set {i}: margin brackets differ from set 0 (not overridable)")
        vecs.append(params.vector)
    vec_arr = np.ascontiguousarray(np.stack(vecs))
    arrays = market_arrays(market)
    det = detail_arrays(market, detail)
    # One regime series per distinct regime tuple (from ``regimes`` when a caller keeps one).
    keys = [tuple(float(x) for x in row[list(REGIME_SLOTS)]) for row in vec_arr]
    distinct: dict[tuple, int] = {}
    reg_idx = np.empty(len(keys), dtype=np.int64)
    for i, key in enumerate(keys):
        reg_idx[i] = distinct.setdefault(key, len(distinct))
    regs = regime_series_batch(market, arrays, list(distinct), regimes)
    m = vec_arr.shape[0]
    levels = int(vec_arr[:, [P_LEVELS_LONG, P_LEVELS_SHORT]].max())
    states = np.zeros((m, N_STATE))
    slots = np.zeros((m, 2, levels, N_SLOT))
    for i in range(m):
        init_state_row(states[i], slots[i], vec_arr[i])
    n_err, n_ord = ring_sizes(vec_arr)
    errs = np.zeros((m, max(n_err, 1)))
    ords = np.zeros((m, max(n_ord, 1)))
    fills, fund, ev, eq = empty_buffers()
    # Sets differ in cost (levels, fills): threads take them one at a time instead of in equal blocks.
    chunk = set_parallel_chunksize(1)
    try:
        run_batch_nb(
            Bars(arrays.ts, arrays.open, arrays.high, arrays.low, arrays.close, regs),
            reg_idx,
            Funding(arrays.funding_ts, arrays.funding_rate, arrays.funding_mark),
            Detail(det.ts, det.open, det.high, det.low, det.close, det.index),
            Sim(vec_arr, brackets, states, slots, errs, ords),
            Records(fills, fund, ev, eq, np.zeros((m, N_COUNTERS), np.int64)),
        )
    finally:
        set_parallel_chunksize(chunk)
    return summarize_states(states, vec_arr)


@parallel_kernel_nogil
def run_basket_batch_nb(bars, reg_idx, funding, foff, detail, sims, nbr, rec, accounts):
    """Run the basket once per parameter set, sets in parallel (groups: engine/contexts.py).

    ``sims`` and ``accounts`` carry a leading set axis (``sims.p[s]``: set s's parameter rows, one per
    symbol; ``sims.br`` shared) and ``bars.reg`` every distinct regime series, set ``s``'s symbols
    running on ``bars.reg[reg_idx[s]]``. Set ``s`` is ``engine.basket.run_basket_nb`` itself on its own
    states, slots, rings, account vector, work rows and running facts. Nothing is recorded
    (``rec.cnt[s]``: set s's zeroed counter rows, ``C_RECORD = 0``; ``rec``'s buffers and
    ``accounts.rows`` have no room): summaries stay in the states.
    """
    ts, op, hi, lo, cl, regs = bars  # the groups' fields in engine/contexts.py order
    vecs, brs, states, slots, errs, ords = sims
    fills, fund, ev, eq, set_cnts = rec
    accs, rows, infos, works, shs = accounts
    for s in prange(vecs.shape[0]):
        run_basket_nb(
            Bars(ts, op, hi, lo, cl, regs[reg_idx[s]]),
            funding,
            foff,
            detail,
            Sim(vecs[s], brs, states[s], slots[s], errs[s], ords[s]),
            nbr,
            Records(fills, fund, ev, eq, set_cnts[s]),
            Account(accs[s], rows, infos[s], works[s], shs[s]),
        )


def run_basket_batch(
    markets: Mapping[str, Any],
    strategy: StrategyConfig,
    venue: VenueConfig,
    overrides: Sequence[Mapping[str, Any]],
    detail: Mapping[str, Any] | None = None,
    regimes: RegimeCache | None = None,
    cache_key: Any = None,
) -> np.ndarray:
    """The account's summary row (``SUMMARY_DTYPE``) per parameter set: the basket batch driver.

    ``strategy`` is the basket strategy (``strategy.symbols``, ``symbol_overrides``); set i is it with
    ``overrides[i]`` applied (shared keys ``section.key`` and per-symbol keys
    ``symbol_overrides.<SYMBOL>.<section.key>``), split into each symbol's strategy by
    ``configs.overrides.basket_strategies``; ``markets`` (and ``detail``) are keyed by symbol in the
    basket's order. One kernel call runs every set (``run_basket_batch_nb``); each row is
    ``engine.basket.account_summary`` of its set, what ``run_basket`` reports for that config.
    ``regimes`` / ``cache_key``: a regime cache and the object its series are keyed by (the caller's
    basket of markets; the symbol's index is part of the key).
    """
    from gridctl.engine.basket import account_summary, basket_bars

    if len(overrides) == 0:
        raise GridctlError("run_basket_batch needs at least one parameter set")
    details = dict(detail or {})
    symbols, vecs, brs, nbr = _basket_set_params(markets, strategy, venue, overrides, details)
    m, n_sym = vecs.shape[0], vecs.shape[1]
    bars = basket_bars(symbols, markets, details)
    key_of = cache_key if cache_key is not None else markets
    regs, reg_idx = _basket_set_regimes(bars, vecs, key_of, regimes)
    sims, rec, accounts = _basket_set_groups(vecs, brs)
    chunk = set_parallel_chunksize(1)
    try:
        run_basket_batch_nb(
            Bars(bars.ts, bars.op, bars.hi, bars.lo, bars.cl, regs),
            reg_idx,
            Funding(bars.fts, bars.frate, bars.fmark),
            bars.foff,
            Detail(bars.dts, bars.dop, bars.dhi, bars.dlo, bars.dcl, bars.didx),
            sims,
            nbr,
            rec,
            accounts,
        )
    finally:
        set_parallel_chunksize(chunk)
    states = sims.st
    sym_rows = summarize_states(states.reshape(m * n_sym, N_STATE), vecs.reshape(m * n_sym, -1))
    acc_rows = summarize_states(accounts.acc, vecs[:, 0])
    out = np.zeros(m, SUMMARY_DTYPE)
    for s in range(m):
        summary = account_summary(acc_rows[s], sym_rows[s * n_sym : (s + 1) * n_sym])
        for name in SUMMARY_FIELDS:
            out[s][name] = summary[name]
    return out


def _basket_set_params(
    markets: Mapping[str, Any],
    strategy: StrategyConfig,
    venue: VenueConfig,
    overrides: Sequence[Mapping[str, Any]],
    details: Mapping[str, Any],
) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray]:
    """Every set's parameter rows ``[set, symbol, param]`` with the basket's symbols and the margin
    brackets all sets share (``engine.basket.basket_brackets``); a set that changes them is refused."""
    from gridctl.configs.overrides import basket_strategies
    from gridctl.engine.basket import _check_basket, basket_brackets, basket_params

    symbols: tuple[str, ...] | None = None
    vec_sets = []
    brs = nbr = None
    for i, ov in enumerate(overrides):
        try:
            s, v = apply_overrides(strategy, venue, ov)
            own = basket_strategies(s)
            if symbols is None:
                symbols = _check_basket(markets, own, details)
            elif tuple(own) != symbols:  # pragma: no cover - overrides cannot change strategy.symbols
                raise GridctlError(f"its basket {list(own)} is not set 0's {list(symbols)}")
            params = basket_params(symbols, own, v, markets, details)
        except GridctlError as err:
            raise GridctlError(f"parameter set {i}: {err}") from None
        b, nb = basket_brackets(params)
        if brs is None:
            brs, nbr = b, nb
        elif not (np.array_equal(nb, nbr) and np.array_equal(b, brs)):
            raise GridctlError(f"parameter set {i}: margin brackets differ from set 0 (not overridable)")
        vec_sets.append(np.stack([prm.vector for prm in params]))
    assert symbols is not None and brs is not None and nbr is not None
    return symbols, np.ascontiguousarray(np.stack(vec_sets)), brs, nbr


def _basket_set_regimes(
    bars: Any, vecs: np.ndarray, key_of: Any, regimes: RegimeCache | None
) -> tuple[np.ndarray, np.ndarray]:
    """One regime series per symbol and distinct regime tuple (from ``regimes`` when a caller keeps
    one) and ``reg_idx[set, symbol]``, the row of each set's symbol's series."""
    m, n_sym = vecs.shape[0], vecs.shape[1]
    n = bars.ts.shape[0]
    series: list[np.ndarray] = []
    reg_idx = np.empty((m, n_sym), dtype=np.int64)
    for j in range(n_sym):
        keys = [(float(j), *(float(x) for x in vecs[s, j, list(REGIME_SLOTS)])) for s in range(m)]
        distinct: dict[tuple, int] = {}
        for s, key in enumerate(keys):
            reg_idx[s, j] = len(series) + distinct.setdefault(key, len(distinct))
        got = _regimes_keyed(key_of, bars.arrays[j], list(distinct), regimes)
        series.extend(got)
    regs = np.ascontiguousarray(np.stack(series)) if series else np.zeros((0, n), np.int8)
    return regs, reg_idx


def _basket_set_groups(vecs: np.ndarray, brs: np.ndarray) -> tuple[Sim, Records, Account]:
    """Fresh kernel groups for every set: states, slots and rings, ledgers without room (nothing is
    recorded) with zeroed counters, the accounts' vectors, facts, work rows and running facts."""
    from gridctl.engine.basket import ACCOUNT_EQUITY_DTYPE, N_ACC_INFO, N_SHARED, N_WORK

    m, n_sym = vecs.shape[0], vecs.shape[1]
    levels = int(vecs[:, :, [P_LEVELS_LONG, P_LEVELS_SHORT]].max())
    states = np.zeros((m, n_sym, N_STATE))
    slots = np.zeros((m, n_sym, 2, levels, N_SLOT))
    accs = np.zeros((m, N_STATE))
    for s in range(m):
        for j in range(n_sym):
            init_state_row(states[s, j], slots[s, j], vecs[s, j])
        init_state_row(accs[s], np.zeros((2, 1, N_SLOT)), vecs[s, 0])
    n_err, n_ord = ring_sizes(vecs.reshape(m * n_sym, -1))
    errs = np.zeros((m, max(n_err, 1)))
    ords = np.zeros((m, max(n_ord, 1)))
    fill0, fund0, ev0, eq0 = empty_buffers()
    rec = Records(
        np.zeros((n_sym, 0), fill0.dtype),
        np.zeros((n_sym, 0), fund0.dtype),
        np.zeros((n_sym, 0), ev0.dtype),
        np.zeros((n_sym, 0), eq0.dtype),
        np.zeros((m, n_sym, N_COUNTERS), np.int64),
    )
    accounts = Account(
        accs,
        np.zeros(0, ACCOUNT_EQUITY_DTYPE),
        np.zeros((m, N_ACC_INFO), np.int64),
        np.zeros((m, n_sym, N_WORK)),
        np.zeros((m, N_SHARED)),
    )
    return Sim(vecs, brs, states, slots, errs, ords), rec, accounts


def _regimes_keyed(
    owner: Any, arrays: Any, keys: Sequence[tuple[float, ...]], cache: RegimeCache | None
) -> list[np.ndarray]:
    """``regime_series_batch`` for one basket symbol (its index leads each key) on its aligned bars."""
    plain = [key[1:] for key in keys]
    if cache is None:
        regs = regime_series_batch(owner, arrays, plain, None)
        return [regs[j] for j in range(len(keys))]
    out: list[np.ndarray | None] = [cache.get(owner, key) for key in keys]
    todo = [j for j, hit in enumerate(out) if hit is None]
    if todo:
        fresh = regime_series_batch(owner, arrays, [plain[j] for j in todo], None)
        for row, j in enumerate(todo):
            out[j] = fresh[row]
            cache.put(owner, keys[j], fresh[row].copy())
    return [x for x in out if x is not None]
