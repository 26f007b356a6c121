"""Regime detection: EMA fast/slow, Wilder ATR and ADX, updated incrementally one bar at a time.

``regime_update_nb`` is the per-bar function (the live bridge calls it on each closed bar).
``regime_series`` runs it over a whole market once; the backtest and batch drivers pass that series
to the per-bar step, so a batch computes it once per distinct regime parameter tuple.

Definitions (DESIGN.md "Regime"): EMA(n) is seeded with the SMA of the first n closes; TR, +DM, -DM
start at the second bar; Wilder RMA(n) of a series is seeded with the SMA of its first n values, then
``r = (r*(n-1) + x)/n``; ADX is the RMA(adx_len) of DX. Bars with a non-finite OHLC are skipped (the
regime is carried), so "previous close" means the previous valid bar's close.
"""

from __future__ import annotations

import numpy as np

from gridctl.engine.enums import Regime, hot_kernel, kernel

R_N = 0  # valid bars seen
R_PREV_H = 1
R_PREV_L = 2
R_PREV_C = 3
R_EMA_FAST = 4  # running sum while seeding, then the EMA
R_EMA_SLOW = 5
R_TR_ADX = 6  # RMA(adx_len) of TR (sum while seeding)
R_PDM = 7  # RMA(adx_len) of +DM
R_MDM = 8  # RMA(adx_len) of -DM
R_ATR = 9  # RMA(atr_len) of TR
R_DX_N = 10  # DX values seen
R_ADX = 11  # RMA(adx_len) of DX (sum while seeding)
R_PDI = 12
R_MDI = 13
R_DX = 14
R_REGIME = 15
R_WARM = 16
N_REGIME = 17


def new_regime_state() -> np.ndarray:
    """Empty indicator state (regime SIDEWAYS, nothing seeded)."""
    r = np.zeros(N_REGIME)
    r[R_REGIME] = Regime.SIDEWAYS
    return r


def warmup_bars(adx_len: int, ema_slow: int, atr_len: int) -> int:
    """Bars before the regime can leave SIDEWAYS: ``max(ema_slow, 2*adx_len, atr_len + 1)``."""
    return max(ema_slow, 2 * adx_len, atr_len + 1)


@hot_kernel
def _rma_step(r, slot, m, n, x):
    """Feed value number ``m`` (1-based) of a series into Wilder RMA(n) stored at ``r[slot]``."""
    if m < n:
        r[slot] += x
    elif m == n:
        r[slot] = (r[slot] + x) / n
    else:
        r[slot] = (r[slot] * (n - 1) + x) / n


@hot_kernel
def _ema_step(r, slot, j, n, c):
    """Feed close number ``j`` (0-based) into EMA(n) stored at ``r[slot]``."""
    if j < n - 1:
        r[slot] += c
    elif j == n - 1:
        r[slot] = (r[slot] + c) / n
    else:
        a = 2.0 / (n + 1.0)
        r[slot] = c * a + r[slot] * (1.0 - a)


@hot_kernel
def regime_update_nb(r, h, lo, c, adx_len, ema_fast, ema_slow, atr_len, hysteresis_bps, adx_threshold):
    """Update indicators with one valid bar (finite h, lo, c) and return the regime after it."""
    j = int(r[R_N])
    _ema_step(r, R_EMA_FAST, j, ema_fast, c)
    _ema_step(r, R_EMA_SLOW, j, ema_slow, c)
    has_atr = False
    has_adx = False
    if j >= 1:
        pc = r[R_PREV_C]
        tr = max(h - lo, abs(h - pc), abs(lo - pc))
        up = h - r[R_PREV_H]
        down = r[R_PREV_L] - lo
        pdm = up if (up > down and up > 0.0) else 0.0
        mdm = down if (down > up and down > 0.0) else 0.0
        m = j  # index of this value in series that start at bar 1
        _rma_step(r, R_ATR, m, atr_len, tr)
        _rma_step(r, R_TR_ADX, m, adx_len, tr)
        _rma_step(r, R_PDM, m, adx_len, pdm)
        _rma_step(r, R_MDM, m, adx_len, mdm)
        has_atr = m >= atr_len
        if m >= adx_len:
            trs = r[R_TR_ADX]
            pdi = 100.0 * r[R_PDM] / trs if trs > 0.0 else 0.0
            mdi = 100.0 * r[R_MDM] / trs if trs > 0.0 else 0.0
            s = pdi + mdi
            dx = 100.0 * abs(pdi - mdi) / s if s > 0.0 else 0.0
            r[R_PDI] = pdi
            r[R_MDI] = mdi
            r[R_DX] = dx
            d = int(r[R_DX_N]) + 1
            r[R_DX_N] = d
            _rma_step(r, R_ADX, d, adx_len, dx)
            has_adx = d >= adx_len
    r[R_PREV_H] = h
    r[R_PREV_L] = lo
    r[R_PREV_C] = c
    r[R_N] = j + 1
    warm = has_atr and has_adx and j >= ema_slow - 1 and j >= ema_fast - 1
    r[R_WARM] = 1.0 if warm else 0.0
    if not warm or r[R_ADX] < adx_threshold:
        r[R_REGIME] = Regime.SIDEWAYS
    else:
        spread = (r[R_EMA_FAST] - r[R_EMA_SLOW]) / r[R_EMA_SLOW] * 1e4
        if abs(spread) >= hysteresis_bps:
            r[R_REGIME] = Regime.UP if spread > 0.0 else Regime.DOWN
    return int(r[R_REGIME])


@kernel
def regime_fill_nb(
    out, r, open_, high, low, close, adx_len, ema_fast, ema_slow, atr_len, hyst, adx_threshold
):
    """Write the regime after each bar into ``out`` (int8), carrying it over bars with non-finite OHLC.

    Wide because: the output, the indicator state, the four price series and the
    six regime parameters ``regime_update_nb`` takes as scalars (``REGIME_SLOTS`` order); the batch
    driver calls it from a parallel loop with one parameter row per series.
    """
    for k in range(close.shape[0]):
        h = high[k]
        lo = low[k]
        c = close[k]
        if np.isfinite(open_[k]) and np.isfinite(h) and np.isfinite(lo) and np.isfinite(c):
            regime_update_nb(r, h, lo, c, adx_len, ema_fast, ema_slow, atr_len, hyst, adx_threshold)
        out[k] = np.int8(r[R_REGIME])


def regime_series(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    adx_len: int,
    ema_fast: int,
    ema_slow: int,
    atr_len: int,
    hysteresis_bps: float,
    adx_threshold: float,
) -> np.ndarray:
    """Regime after each bar of a market (int8 array), from the same per-bar update the live bridge uses."""
    out = np.empty(close.shape[0], dtype=np.int8)
    regime_fill_nb(
        out, new_regime_state(), open_, high, low, close,
        int(adx_len), int(ema_fast), int(ema_slow), int(atr_len), float(hysteresis_bps), float(adx_threshold),
    )  # fmt: skip
    return out
