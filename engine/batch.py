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
from numba import njit, prange, set_parallel_chunksize
from pydantic import BaseModel, ValidationError

from gridctl.configs.errors import GridctlError
from gridctl.configs.schema import StrategyConfig, VenueConfig, size_unit_changes
from gridctl.engine.enums import INTRABAR_PATH_NAMES, POLICY_NAMES
from gridctl.engine.params import P_LEVELS_LONG, P_LEVELS_SHORT, REGIME_SLOTS, build_params
from gridctl.engine.records import N_COUNTERS, empty_buffers, summarize_states
from gridctl.engine.regime import new_regime_state, regime_fill_nb
from gridctl.engine.run import check_detail_config, detail_arrays, market_arrays
from gridctl.engine.state import N_SLOT, N_STATE, init_state_row, ring_sizes
from gridctl.engine.step import run_bars_nb


def _coerce(current: Any, value: Any, key: str) -> Any:
    """Override value in the type of the config field it replaces (numbers arrive as floats)."""
    if isinstance(current, bool):
        if value in (0, 1, True, False):
            return bool(value)
        raise GridctlError(f"override {key}={value!r}: expected 0/1 (a switch)")
    if isinstance(current, int):
        if float(value) != int(value):
            raise GridctlError(f"override {key}={value!r}: expected a whole number")
        return int(value)
    if isinstance(current, str) and key == "policy.strategy" and not isinstance(value, str):
        names = {v: k for k, v in POLICY_NAMES.items()}
        if value not in names:
            raise GridctlError(f"override {key}={value!r}: expected one of {POLICY_NAMES}")
        return names[value]
    if isinstance(current, str) and key == "backtest.intrabar_path" and not isinstance(value, str):
        paths = {v: k for k, v in INTRABAR_PATH_NAMES.items()}
        if value not in paths:
            raise GridctlError(f"override {key}={value!r}: expected one of {INTRABAR_PATH_NAMES}")
        return paths[value]
    if isinstance(current, float | None) and not isinstance(value, str):
        return float(value)
    return value


def _override(cfg: BaseModel, key: str, value: Any) -> BaseModel:
    section, _, name = key.partition(".")
    sub = getattr(cfg, section)
    data = {f: getattr(cfg, f) for f in type(cfg).model_fields}
    fields = sub.model_dump()
    fields[name] = _coerce(fields[name], value, key)
    if section == "grid":
        fields.update(size_unit_changes({name: fields[name]}))
    data[section] = fields
    try:
        new = type(cfg).model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        raise GridctlError(f"override {key}={value!r}: {first['msg']}") from None
    for attr in ("_origin", "_credentials", "_rules_file"):
        if attr in (cfg.__private_attributes__ or {}):
            setattr(new, attr, getattr(cfg, attr))
    return new


def apply_overrides(
    strategy: StrategyConfig, venue: VenueConfig, overrides: Mapping[str, Any]
) -> tuple[StrategyConfig, VenueConfig]:
    """Strategy and venue with ``overrides`` (``"section.key" -> value``) applied and re-validated.

    Each config is validated once with all of its overrides in place (the result does not depend on
    the order of the keys). When that fails, the keys are applied one at a time, each step
    validated, to name the first key that breaks the config.
    """
    changes: dict[str, dict[str, dict[str, Any]]] = {"strategy": {}, "venue": {}}
    for key, value in overrides.items():
        section, dot, name = key.partition(".")
        if not dot or "." in name:
            raise GridctlError(f"override key {key!r} must look like 'section.key'")
        if section in StrategyConfig.model_fields and name in _fields_of(strategy, section):
            which, cfg = "strategy", strategy
        elif section in VenueConfig.model_fields and name in _fields_of(venue, section):
            which, cfg = "venue", venue
        else:
            raise GridctlError(f"override key {key!r} is not a strategy or venue setting")
        current = getattr(getattr(cfg, section), name)
        changes[which].setdefault(section, {})[name] = _coerce(current, value, key)
    if "grid" in changes["strategy"]:
        changes["strategy"]["grid"] = size_unit_changes(changes["strategy"]["grid"])
    try:
        new_strategy = _with_sections(strategy, changes["strategy"])
        new_venue = _with_sections(venue, changes["venue"])
    except ValidationError:
        _raise_for_first_breaking_key(strategy, venue, overrides)
        raise  # pragma: no cover - the key-by-key pass always raises
    return new_strategy, new_venue  # type: ignore[return-value]


def _with_sections(cfg: BaseModel, sections: Mapping[str, Mapping[str, Any]]) -> BaseModel:
    """``cfg`` with the given fields of its sections replaced, validated once (private attrs kept)."""
    if not sections:
        return cfg
    data = {f: getattr(cfg, f) for f in type(cfg).model_fields}
    for section, fields in sections.items():
        data[section] = {**getattr(cfg, section).model_dump(), **fields}
    new = type(cfg).model_validate(data)
    for attr in ("_origin", "_credentials", "_rules_file"):
        if attr in (cfg.__private_attributes__ or {}):
            setattr(new, attr, getattr(cfg, attr))
    return new


def _raise_for_first_breaking_key(
    strategy: StrategyConfig, venue: VenueConfig, overrides: Mapping[str, Any]
) -> None:
    """Apply ``overrides`` key by key, validating each step; raises naming the first key that fails."""
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if section in StrategyConfig.model_fields and name in _fields_of(strategy, section):
            strategy = _override(strategy, key, value)  # type: ignore[assignment]
        else:
            venue = _override(venue, key, value)  # type: ignore[assignment]
    raise GridctlError(f"overrides {dict(overrides)}: the config they make is invalid")  # pragma: no cover


def _fields_of(cfg: BaseModel, section: str) -> set[str]:
    sub = getattr(cfg, section)
    return set(type(sub).model_fields) if isinstance(sub, BaseModel) else set()


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


@njit(cache=True, parallel=True)
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


@njit(cache=True, parallel=True, nogil=True)
def run_batch_nb(
    ts, op, hi, lo, cl, regs, reg_idx, fts, frate, fmark, dts, dop, dhi, dlo, dcl, didx, vecs, br,
    states, slots, errs, ords, fills, fund, ev, eq,
):  # fmt: skip
    """Run every parameter set (row of ``vecs``) over all bars; summaries stay in ``states``.

    Releases the GIL (``nogil``): a caller may do Python work in another thread meanwhile.
    """
    n_sets = vecs.shape[0]
    n = ts.shape[0]
    for i in prange(n_sets):
        cnt = np.zeros(N_COUNTERS, dtype=np.int64)  # C_RECORD = 0: online accumulators only
        run_bars_nb(
            0, n, ts, op, hi, lo, cl, regs[reg_idx[i]], fts, frate, fmark, dts, dop, dhi, dlo, dcl, didx,
            vecs[i], br,
            states[i], slots[i], errs[i], ords[i], fills, fund, ev, eq, cnt,
        )  # fmt: skip


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
            arrays.ts, arrays.open, arrays.high, arrays.low, arrays.close, regs, reg_idx,
            arrays.funding_ts, arrays.funding_rate, arrays.funding_mark,
            det.ts, det.open, det.high, det.low, det.close, det.index, vec_arr, brackets,
            states, slots, errs, ords, fills, fund, ev, eq,
        )  # fmt: skip
    finally:
        set_parallel_chunksize(chunk)
    return summarize_states(states, vec_arr)
