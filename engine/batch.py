"""Batch driver: many parameter sets over the same bars, in parallel, online summaries only.

Each set is the base strategy/venue with a few keys overridden (``{"grid.grid_step_bps": 40}``),
re-validated by the config schema, so a batch can never run a set the CLI would refuse. The regime
series is computed once per distinct regime tuple and shared; per-set memory is the state vector,
the slot array and two small rings - nothing grows with the number of bars. Sets run under
``numba.prange`` and use the very same ``run_bars_nb`` / ``step_nb`` as ``run_single``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numba import njit, prange
from pydantic import BaseModel, ValidationError

from configs.errors import GridctlError
from configs.schema import StrategyConfig, VenueConfig
from engine.enums import INTRABAR_PATH_NAMES, POLICY_NAMES
from engine.params import P_LEVELS_LONG, P_LEVELS_SHORT, REGIME_SLOTS, build_params
from engine.records import N_COUNTERS, empty_buffers, summarize_states
from engine.run import check_detail_config, detail_arrays, market_arrays, regime_series
from engine.state import N_SLOT, N_STATE, init_state_row, ring_sizes
from engine.step import run_bars_nb


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
    data[section] = fields
    try:
        new = type(cfg).model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        raise GridctlError(f"override {key}={value!r}: {first['msg']}") from None
    for attr in ("_origin", "_credentials"):
        if attr in (cfg.__private_attributes__ or {}):
            setattr(new, attr, getattr(cfg, attr))
    return new


def apply_overrides(
    strategy: StrategyConfig, venue: VenueConfig, overrides: Mapping[str, Any]
) -> tuple[StrategyConfig, VenueConfig]:
    """Strategy and venue with ``overrides`` (``"section.key" -> value``) applied and re-validated."""
    for key, value in overrides.items():
        section, dot, name = key.partition(".")
        if not dot or "." in name:
            raise GridctlError(f"override key {key!r} must look like 'section.key'")
        if section in StrategyConfig.model_fields and name in _fields_of(strategy, section):
            strategy = _override(strategy, key, value)  # type: ignore[assignment]
        elif section in VenueConfig.model_fields and name in _fields_of(venue, section):
            venue = _override(venue, key, value)  # type: ignore[assignment]
        else:
            raise GridctlError(f"override key {key!r} is not a strategy or venue setting")
    return strategy, venue


def _fields_of(cfg: BaseModel, section: str) -> set[str]:
    sub = getattr(cfg, section)
    return set(type(sub).model_fields) if isinstance(sub, BaseModel) else set()


@njit(cache=True, parallel=True)
def run_batch_nb(
    ts, op, hi, lo, cl, regs, reg_idx, fts, frate, fmark, dts, dop, dhi, dlo, dcl, didx, vecs, br,
    states, slots, errs, ords, fills, fund, ev, eq,
):  # fmt: skip
    """Run every parameter set (row of ``vecs``) over all bars; summaries stay in ``states``."""
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
) -> np.ndarray:
    """Summary row (``engine.records.SUMMARY_DTYPE``) per parameter set; set i = base + overrides[i].

    ``detail``: the finer market every set's ``backtest.detail_timeframe`` names (fills walk its bars).
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
    # One regime series per distinct regime tuple.
    keys = [tuple(row[list(REGIME_SLOTS)]) for row in vec_arr]
    distinct: dict[tuple, int] = {}
    reg_idx = np.empty(len(keys), dtype=np.int64)
    for i, key in enumerate(keys):
        reg_idx[i] = distinct.setdefault(key, len(distinct))
    regs = np.empty((len(distinct), arrays.ts.shape[0]), dtype=np.int8)
    for key, j in distinct.items():
        regs[j] = regime_series(arrays, vec_arr[keys.index(key)])
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
    run_batch_nb(
        arrays.ts, arrays.open, arrays.high, arrays.low, arrays.close, regs, reg_idx,
        arrays.funding_ts, arrays.funding_rate, arrays.funding_mark,
        det.ts, det.open, det.high, det.low, det.close, det.index, vec_arr, brackets,
        states, slots, errs, ords, fills, fund, ev, eq,
    )  # fmt: skip
    return summarize_states(states, vec_arr)
