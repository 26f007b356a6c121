"""Single-run driver: one parameter set over one market, with full ledgers and an optional equity curve.

Record buffers start at a modest size; if any fills up, the kernel stops with an overflow flag and the
run is repeated from scratch with that buffer doubled, so ledgers are complete or not returned at all.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

from gridctl.configs.errors import GridctlError
from gridctl.configs.schema import StrategyConfig, VenueConfig
from gridctl.engine import compile_ahead
from gridctl.engine.contexts import Bars, Detail, Funding, Records, Sim
from gridctl.engine.enums import MarkSource
from gridctl.engine.numba_compat import argument_type, cached_on_disk
from gridctl.engine.params import P_ADX_LEN, P_ATR_LEN, P_EMA_SLOW, REGIME_SLOTS, EngineParams, build_params
from gridctl.engine.records import (
    C_EQUITY,
    C_EVENTS,
    C_FILLS,
    C_FUNDING,
    C_OVERFLOW,
    EQUITY_DTYPE,
    EVENT_DTYPE,
    FILL_DTYPE,
    FUNDING_DTYPE,
    empty_buffers,
    new_counters,
    summarize_states,
)
from gridctl.engine.regime import regime_series as regime_series_of
from gridctl.engine.regime import warmup_bars
from gridctl.engine.state import init_state
from gridctl.engine.step import run_bars_nb

MAX_RERUNS = 40
#: Starting size of the fills / events buffers: one row per BARS_PER_*_ROW bars, at least INITIAL_CAPACITY.
INITIAL_CAPACITY = 1024
BARS_PER_FILL_ROW = 16
BARS_PER_EVENT_ROW = 64


@dataclass
class RunOutput:
    """Ledgers (numpy structured arrays, engine/records.py), summary, parameters and run facts."""

    fills: np.ndarray
    funding: np.ndarray
    events: np.ndarray
    equity: np.ndarray
    summary: dict[str, float]
    params: EngineParams
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MarketArrays:
    """The market's arrays in the dtypes and layout the kernels take."""

    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    funding_ts: np.ndarray
    funding_rate: np.ndarray
    funding_mark: np.ndarray


def read_only(a: np.ndarray) -> np.ndarray:
    """``a`` as a read-only view (Parquet-backed arrays are, numpy-built ones are not).

    numba specialises on the flag, so every source shares one kernel signature.
    """
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


def market_arrays(market: Any) -> MarketArrays:
    """Contiguous int64 / float64 read-only copies (or views) of a ``data.market.Market``'s arrays."""
    f8 = np.float64

    def arr(name: str, dtype: type) -> np.ndarray:
        return read_only(np.ascontiguousarray(getattr(market, name), dtype=dtype))

    out = MarketArrays(
        ts=arr("ts", np.int64),
        open=arr("open", f8),
        high=arr("high", f8),
        low=arr("low", f8),
        close=arr("close", f8),
        funding_ts=arr("funding_ts", np.int64),
        funding_rate=arr("funding_rate", f8),
        funding_mark=arr("funding_mark", f8),
    )
    n = out.ts.shape[0]
    if any(a.shape[0] != n for a in (out.open, out.high, out.low, out.close)):
        raise GridctlError(f"market {market.symbol}: ts/open/high/low/close have different lengths")
    if not (out.funding_ts.shape[0] == out.funding_rate.shape[0] == out.funding_mark.shape[0]):
        raise GridctlError(f"market {market.symbol}: funding_ts/rate/mark have different lengths")
    if n > 1 and np.any(np.diff(out.ts) <= 0):
        raise GridctlError(f"market {market.symbol}: bar timestamps are not strictly increasing")
    if out.funding_ts.shape[0] > 1 and np.any(np.diff(out.funding_ts) <= 0):
        raise GridctlError(f"market {market.symbol}: funding settlement times are not strictly increasing")
    return out


@dataclass(frozen=True)
class DetailArrays:
    """Detail bars for the path walk: their arrays and ``index[k] = (start, end)`` per run bar.

    ``end == start`` means bar k walks its own OHLC (no detail, or its detail bars are incomplete).
    ``warnings`` name the bars that fell back; ``fallback_bars`` counts them.
    """

    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    index: np.ndarray  # int64 [n_bars, 2]
    timeframe: str | None = None
    detailed_bars: int = 0
    fallback_bars: int = 0
    warnings: tuple[str, ...] = ()


def no_detail(n_bars: int) -> DetailArrays:
    """Empty detail arrays: every bar walks its own OHLC."""
    f8 = read_only(np.zeros(0, np.float64))
    index = read_only(np.zeros((n_bars, 2), np.int64))
    return DetailArrays(read_only(np.zeros(0, np.int64)), f8, f8, f8, f8, index)


#: At most this many fallback ranges are named in the warning (the count covers all of them).
MAX_FALLBACK_RANGES = 8


def _iso_minute(ms: int) -> str:
    return np.datetime64(int(ms), "ms").astype("datetime64[m]").item().strftime("%Y-%m-%dT%H:%MZ")


def detail_arrays(market: Any, detail: Any | None, stop: int | None = None) -> DetailArrays:
    """Index ``detail`` (a finer ``data.market.Market`` of the same symbol) into ``market``'s bars.

    The detail timeframe must be shorter than the market's and divide it. A bar of ``market`` whose
    ``bar_ms / detail_ms`` detail bars are not all present and finite walks its own OHLC; the warning
    names those bars as ranges of consecutive bars.
    """
    arrays = market_arrays(market)
    n = arrays.ts.shape[0] if stop is None else int(stop)
    if detail is None:
        return no_detail(arrays.ts.shape[0])
    if detail.symbol != market.symbol:
        raise GridctlError(f"detail bars are for {detail.symbol}, the run's market is {market.symbol}")
    coarse_ms, fine_ms = int(market.bar_ms), int(detail.bar_ms)
    if not (fine_ms < coarse_ms and coarse_ms % fine_ms == 0):
        raise GridctlError(
            f"detail timeframe {detail.timeframe} must be shorter than the run's {market.timeframe} "
            "and divide it"
        )
    dts = read_only(np.ascontiguousarray(detail.ts, dtype=np.int64))
    cols = [
        read_only(np.ascontiguousarray(getattr(detail, c), dtype=np.float64))
        for c in ("open", "high", "low", "close")
    ]
    if any(c.shape[0] != dts.shape[0] for c in cols):
        raise GridctlError(f"detail market {detail.timeframe}: ts/open/high/low/close have different lengths")
    if dts.shape[0] > 1 and np.any(np.diff(dts) <= 0):
        raise GridctlError(f"detail market {detail.timeframe}: bar timestamps are not strictly increasing")
    start = np.searchsorted(dts, arrays.ts, side="left")
    end = np.searchsorted(dts, arrays.ts + coarse_ms, side="left")
    bad = ~np.isfinite(cols[0]) | ~np.isfinite(cols[1]) | ~np.isfinite(cols[2]) | ~np.isfinite(cols[3])
    bad_cum = np.concatenate(([0], np.cumsum(bad)))
    complete = (end - start == coarse_ms // fine_ms) & (bad_cum[end] - bad_cum[start] == 0)
    index = read_only(np.stack([start, np.where(complete, end, start)], axis=1).astype(np.int64))
    coarse_ok = (
        np.isfinite(arrays.open)
        & np.isfinite(arrays.high)
        & np.isfinite(arrays.low)
        & np.isfinite(arrays.close)
    )
    fallback = np.flatnonzero(~complete[:n] & coarse_ok[:n])
    warnings: list[str] = []
    if len(fallback):
        breaks = np.flatnonzero(np.diff(fallback) != 1)
        firsts = np.concatenate(([fallback[0]], fallback[breaks + 1]))
        lasts = np.concatenate((fallback[breaks], [fallback[-1]]))
        shown = [
            _iso_minute(arrays.ts[a])
            if a == b
            else f"{_iso_minute(arrays.ts[a])}..{_iso_minute(arrays.ts[b])}"
            for a, b in zip(firsts[:MAX_FALLBACK_RANGES], lasts[:MAX_FALLBACK_RANGES], strict=True)
        ]
        more = len(firsts) - len(shown)
        warnings.append(
            f"detail {detail.timeframe}: {len(fallback):,} of {n:,} {market.timeframe} bars lack complete "
            f"{detail.timeframe} bars (missing or not finite) and walk their own OHLC: {', '.join(shown)}"
            + (f" and {more:,} more ranges" if more else "")
        )
    return DetailArrays(
        dts, *cols, index=index, timeframe=detail.timeframe,
        detailed_bars=int(complete[:n].sum()), fallback_bars=len(fallback), warnings=tuple(warnings),
    )  # fmt: skip


def check_detail_config(strategy: StrategyConfig, detail: Any | None) -> None:
    """``backtest.detail_timeframe`` and the detail market handed to a driver must agree."""
    want = strategy.backtest.detail_timeframe
    have = None if detail is None else detail.timeframe
    if want != have:
        if want is None:
            raise GridctlError(
                f"detail bars ({have}) given but backtest.detail_timeframe is not set in {strategy.origin}"
            )
        raise GridctlError(
            f"backtest.detail_timeframe is {want!r} in {strategy.origin} but the detail bars given are "
            f"{have!r}: load the {want} market over the same window and pass it as detail"
        )


def regime_series(arrays: MarketArrays, vec: np.ndarray) -> np.ndarray:
    """Regime after each bar for the regime parameters in ``vec``."""
    adx, fast, slow, atr, hyst, thr = (vec[i] for i in REGIME_SLOTS)
    return regime_series_of(
        arrays.open, arrays.high, arrays.low, arrays.close, adx, fast, slow, atr, hyst, thr
    )


def _run_bars_args(
    arrays: MarketArrays,
    det: DetailArrays,
    params: EngineParams,
    reg: np.ndarray,
    ks: Any,
    buffers: tuple,
    cnt: np.ndarray,
    stop: int,
) -> tuple:
    """``run_bars_nb``'s arguments, in order (one place, shared by the run and the signature check):
    the bar range and the engine/contexts.py groups."""
    fills, fund, ev, eq = buffers
    return (
        0,
        stop,
        Bars(arrays.ts, arrays.open, arrays.high, arrays.low, arrays.close, reg),
        Funding(arrays.funding_ts, arrays.funding_rate, arrays.funding_mark),
        Detail(det.ts, det.open, det.high, det.low, det.close, det.index),
        Sim(params.vector, params.brackets, ks.state, ks.slots, ks.err_ring, ks.ord_ring),
        Records(fills, fund, ev, eq, cnt),
    )


def _probe_args(arrays: MarketArrays, det: DetailArrays, params: EngineParams, curves: bool) -> tuple:
    """Arguments of ``run_bars_nb`` with this run's types (empty buffers): for signatures only."""
    ks = init_state(params.vector)
    return _run_bars_args(
        arrays, det, params, np.empty(0, np.int8), ks,
        tuple(np.empty(0, d) for d in (FILL_DTYPE, FUNDING_DTYPE, EVENT_DTYPE, EQUITY_DTYPE)),
        new_counters(record=True, curves=curves), arrays.ts.shape[0],
    )  # fmt: skip


def kernels_ready(arrays: MarketArrays, det: DetailArrays, params: EngineParams, curves: bool) -> bool:
    """True when ``run_single`` will find ``run_bars_nb`` compiled for these inputs' types.

    Either compiled in this process already, or present in numba's on-disk cache index (for this
    exact signature, numba version and CPU, and the current kernel sources: the stale-cache guard
    in engine/numba_compat.py empties the cache when any engine module changes).
    """
    sig = tuple(argument_type(a) for a in _probe_args(arrays, det, params, curves))
    if sig in run_bars_nb.overloads:
        return True
    return cached_on_disk(run_bars_nb, sig)


def compile_early(strategy: StrategyConfig, venue: VenueConfig, symbol: str, bar_ms: int) -> None:
    """Start a cold run's two-core compile before its market is read (or generated).

    The kernel signature depends only on the arrays' types, so a one-bar stand-in of the market gives
    it; ``run_single`` then takes over the helper started here. Nothing happens when the kernels are
    cached, with detail bars (their own arrays), or when the stand-in is refused.
    """
    if strategy.backtest.detail_timeframe is not None:
        return
    one = np.ones(1)
    stand_in = SimpleNamespace(
        symbol=symbol, bar_ms=int(bar_ms), ts=np.zeros(1, np.int64), open=one, high=one, low=one,
        close=one, funding_ts=np.zeros(1, np.int64), funding_rate=one, funding_mark=one,
    )  # fmt: skip
    try:
        params = build_params(strategy, venue, stand_in)
    except GridctlError:
        return
    arrays, det = market_arrays(stand_in), no_detail(1)
    if not kernels_ready(arrays, det, params, True):
        compile_ahead.start(_probe_args(arrays, det, params, True), early=True)


def run_single(
    market: Any,
    strategy: StrategyConfig,
    venue: VenueConfig,
    curves: bool = True,
    stop_at: int | None = None,
    detail: Any | None = None,
    compile_notice: Callable[[], AbstractContextManager[Any]] | None = None,
) -> RunOutput:
    """Backtest ``strategy`` on ``venue`` over ``market`` (bars ``[0, stop_at)``, default all).

    ``detail``: the finer market named by ``backtest.detail_timeframe`` (fills walk its bars).
    ``compile_notice`` (e.g. a spinner) is entered around the run only when numba has no machine
    code for this run's kernel signature, neither in this process nor in its on-disk cache; such a
    cold run compiles on two cores (engine/compile_ahead.py).
    """
    params = build_params(strategy, venue, market)
    check_detail_config(strategy, detail)
    arrays = market_arrays(market)
    n = arrays.ts.shape[0]
    stop = n if stop_at is None else int(stop_at)
    if not 0 <= stop <= n:
        raise GridctlError(f"stop_at {stop_at} is outside 0..{n} (the market has {n} bars)")
    det = detail_arrays(market, detail, stop)
    cold = not kernels_ready(arrays, det, params, curves)
    with compile_notice() if cold and compile_notice is not None else nullcontext():
        ahead = compile_ahead.start(_probe_args(arrays, det, params, curves)) if cold else None
        try:
            return _run_single(market, params, arrays, det, stop, curves, ahead)
        finally:
            if ahead is not None:
                ahead.abandon()


def _run_single(
    market: Any,
    params: EngineParams,
    arrays: MarketArrays,
    det: DetailArrays,
    stop: int,
    curves: bool,
    ahead: compile_ahead.CompileAhead | None = None,
) -> RunOutput:
    n = arrays.ts.shape[0]
    vec = params.vector
    reg = regime_series(arrays, vec)
    if ahead is not None:
        ahead.finish()  # the decision kernels here, the fill path in the helper: both cached now
    caps = {
        C_FILLS: max(INITIAL_CAPACITY, stop // BARS_PER_FILL_ROW),
        C_EVENTS: max(INITIAL_CAPACITY, stop // BARS_PER_EVENT_ROW),
        C_FUNDING: 2 * arrays.funding_ts.shape[0] + 2,  # at most one row per side per settlement
        C_EQUITY: stop if curves else 0,
    }
    reruns = 0
    for _ in range(MAX_RERUNS):
        ks = init_state(vec)
        cnt = new_counters(record=True, curves=curves)
        fills = np.empty(caps[C_FILLS], FILL_DTYPE)
        fund = np.empty(caps[C_FUNDING], FUNDING_DTYPE)
        ev = np.empty(caps[C_EVENTS], EVENT_DTYPE)
        eq = np.empty(caps[C_EQUITY], EQUITY_DTYPE)
        run_bars_nb(*_run_bars_args(arrays, det, params, reg, ks, (fills, fund, ev, eq), cnt, stop))
        if cnt[C_OVERFLOW] == 0:
            break
        for slot, buf in ((C_FILLS, fills), (C_EVENTS, ev), (C_FUNDING, fund), (C_EQUITY, eq)):
            if cnt[slot] >= buf.shape[0]:
                caps[slot] = max(2 * buf.shape[0], 16)
        reruns += 1
    else:  # pragma: no cover - only reachable with a kernel bug that writes without bound
        raise RuntimeError(f"record buffers still overflowing after {MAX_RERUNS} re-runs")
    row = summarize_states(ks.state[None, :], vec[None, :])[0]
    summary = {name: float(row[name]) for name in row.dtype.names}
    fund_rows = fund[: cnt[C_FUNDING]]
    meta = dict(params.meta)
    meta.update(
        bars=int(stop),
        bars_total=int(n),
        reruns=reruns,
        warmup_bars=warmup_bars(int(vec[P_ADX_LEN]), int(vec[P_EMA_SLOW]), int(vec[P_ATR_LEN])),
        liquidated=bool(summary["liquidated"]),
        liquidated_at=None if np.isnan(summary["liquidated_ts"]) else int(summary["liquidated_ts"]),
        halted_at=None if np.isnan(summary["halted_ts"]) else int(summary["halted_ts"]),
        detail={
            "timeframe": det.timeframe,
            "detailed_bars": det.detailed_bars,
            "fallback_bars": det.fallback_bars,
            "warnings": list(det.warnings),
        },
        mark_source_counts={
            "mark_series": int(np.sum(fund_rows["mark_source"] == MarkSource.MARK_SERIES)),
            "trade_open": int(np.sum(fund_rows["mark_source"] == MarkSource.TRADE_OPEN)),
        },
    )
    return RunOutput(
        fills=fills[: cnt[C_FILLS]].copy(),
        funding=fund_rows.copy(),
        events=ev[: cnt[C_EVENTS]].copy(),
        equity=eq[: cnt[C_EQUITY]],  # sized to the bars run: no copy needed
        summary=summary,
        params=params,
        meta=meta,
    )


def run_summary(
    market: Any, strategy: StrategyConfig, venue: VenueConfig, detail: Any | None = None
) -> dict[str, float]:
    """One run's summary (``engine.records.SUMMARY_FIELDS``) with nothing recorded: no ledgers, no curve.

    The same ``run_bars_nb`` signature as ``run_single`` (what to record is a runtime counter), so it
    needs no compile of its own; the batch driver is for many sets across the cores.
    """
    params = build_params(strategy, venue, market)
    check_detail_config(strategy, detail)
    arrays = market_arrays(market)
    n = arrays.ts.shape[0]
    det = detail_arrays(market, detail, n)
    ks = init_state(params.vector)
    reg = regime_series(arrays, params.vector)
    cnt = new_counters(record=False, curves=False)
    run_bars_nb(*_run_bars_args(arrays, det, params, reg, ks, empty_buffers(), cnt, n))
    row = summarize_states(ks.state[None, :], params.vector[None, :])[0]
    return {name: float(row[name]) for name in row.dtype.names}
