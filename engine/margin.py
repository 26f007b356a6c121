"""Binance USD-M maintenance margin: brackets, maintenance margin, liquidation check and price.

Brackets are rows ``(notional_floor, notional_cap, maint_margin_ratio, cum, max_leverage)`` sorted by
notional (bracket 1 first, as the venue file and the exchange list them). Maintenance margin of a side
is ``notional * mmr - cum`` with the bracket holding that notional; hedge-mode cross margin liquidates
when equity <= the sum over both sides.

Every bar needs the maintenance margin at the close (margin ratio) and at the bar's extreme (margin
safety), and the REDUCING gate needs the liquidation price. While the account (wallet, quantities,
averages) is unchanged, these depend on the price only through the bracket each side falls in, so a
margin cache in the state vector keeps both sides' brackets, the price band that keeps them, the
liquidation price and the closes that are certainly outside the emergency buffer. The cached answers
are bit-for-bit those of the direct functions; prices near a band edge take the direct way.
"""

from __future__ import annotations

import numpy as np

from gridctl.engine.enums import hot_kernel, kernel
from gridctl.engine.state import (
    S_LONG_AVG,
    S_LONG_QTY,
    S_MC_CUM_LONG,
    S_MC_CUM_SHORT,
    S_MC_HI,
    S_MC_LO,
    S_MC_LONG_AVG,
    S_MC_LONG_QTY,
    S_MC_LP,
    S_MC_MMR_LONG,
    S_MC_MMR_SHORT,
    S_MC_SAFE_HI,
    S_MC_SAFE_LO,
    S_MC_SHORT_AVG,
    S_MC_SHORT_QTY,
    S_MC_WALLET,
    S_SHORT_AVG,
    S_SHORT_QTY,
    S_WALLET,
    S_X_MM,
    S_X_UNREAL,
)

B_FLOOR = 0
B_CAP = 1
B_MMR = 2
B_CUM = 3
B_MAX_LEV = 4


@hot_kernel
def bracket_index_nb(br, notional):
    """Row of the bracket holding ``notional`` (the last bracket for anything beyond the table)."""
    n = br.shape[0]
    for i in range(n):
        if notional < br[i, B_CAP]:
            return i
    return n - 1


@hot_kernel
def maint_margin_nb(br, notional):
    """Maintenance margin of one side with position notional ``notional`` (0 for no position)."""
    if notional <= 0.0:
        return 0.0
    i = bracket_index_nb(br, notional)
    return notional * br[i, B_MMR] - br[i, B_CUM]


@hot_kernel
def total_maint_margin_nb(br, long_qty, short_qty, price):
    """Maintenance margin of both hedge-mode sides marked at ``price``."""
    return maint_margin_nb(br, long_qty * price) + maint_margin_nb(br, short_qty * price)


@kernel
def equity_at_nb(wallet, long_qty, long_avg, short_qty, short_avg, price):
    """Wallet plus unrealized PnL of both sides at ``price``."""
    return wallet + long_qty * (price - long_avg) + short_qty * (short_avg - price)


@kernel
def is_liquidated_nb(br, wallet, long_qty, long_avg, short_qty, short_avg, price):
    """True when the account holds a position and equity at ``price`` <= maintenance margin."""
    if long_qty <= 0.0 and short_qty <= 0.0:
        return False
    eq = equity_at_nb(wallet, long_qty, long_avg, short_qty, short_avg, price)
    return eq <= total_maint_margin_nb(br, long_qty, short_qty, price)


@hot_kernel
def liquidation_price_nb(br, wallet, long_qty, long_avg, short_qty, short_avg, price):
    """Binance hedge-mode cross liquidation price (brackets taken at the notional marked at ``price``).

    ``LP = (WB + cumL + cumS - L*avgL + S*avgS) / (L*mmrL + S*mmrS - L + S)``; NaN without a position,
    when the denominator is 0 or when the result is not a positive price (no liquidation price).
    """
    if long_qty <= 0.0 and short_qty <= 0.0:
        return float("nan")
    mmr_l, cum_l, _lo, _hi = _side_bracket_nb(br, long_qty, price)
    mmr_s, cum_s, _lo, _hi = _side_bracket_nb(br, short_qty, price)
    return _lp_nb(wallet, long_qty, long_avg, short_qty, short_avg, mmr_l, cum_l, mmr_s, cum_s)


@hot_kernel
def _lp_nb(wallet, long_qty, long_avg, short_qty, short_avg, mmr_l, cum_l, mmr_s, cum_s):
    """The liquidation-price formula for given brackets (NaN when it has no positive solution)."""
    den = long_qty * mmr_l + short_qty * mmr_s - long_qty + short_qty
    if den == 0.0:
        return float("nan")
    num = wallet + cum_l + cum_s - long_qty * long_avg + short_qty * short_avg
    lp = num / den
    return lp if lp > 0.0 else float("nan")


#: Cached price bands stay this far (relative) inside the exact bracket and buffer boundaries, far
#: above float rounding (~1e-16): a price that close to a boundary takes the exact, uncached way.
BAND_RTOL = 1e-9


@hot_kernel
def _side_bracket_nb(br, qty, price):
    """(mmr, cum, low, high) of one side: its bracket at ``price`` and the prices that keep it there.

    No position: zeros and the whole line. Bracket i holds notionals in ``[cap[i-1], cap[i])``.
    """
    if qty <= 0.0:
        return 0.0, 0.0, -np.inf, np.inf
    i = bracket_index_nb(br, qty * price)
    low = br[i - 1, B_CAP] / qty * (1.0 + BAND_RTOL) if i > 0 else 0.0
    high = br[i, B_CAP] / qty * (1.0 - BAND_RTOL) if i < br.shape[0] - 1 else np.inf
    return br[i, B_MMR], br[i, B_CUM], low, high


@hot_kernel
def margin_wallet_nb(st):
    """The wallet this symbol's margin sees: ``W + S_X_UNREAL - S_X_MM`` (the wallet in a single run).

    In a basket the other symbols' unrealized PnL and maintenance margin move into it, so the
    single-symbol formulas (liquidation check and price, buffer test) give the account's answer:
    ``W + U_all <= MM_all`` is ``margin_wallet + U_own <= MM_own`` (Binance's cross formula with
    UPNL1 and TMM1 of the other contracts).
    """
    return st[S_WALLET] + st[S_X_UNREAL] - st[S_X_MM]


@hot_kernel
def _margin_cache_current_nb(st):
    """True when the margin cache was filled for the account as it is now (margin wallet, qty, avg)."""
    return (
        st[S_MC_WALLET] == margin_wallet_nb(st)
        and st[S_MC_LONG_QTY] == st[S_LONG_QTY]
        and st[S_MC_SHORT_QTY] == st[S_SHORT_QTY]
        and st[S_MC_LONG_AVG] == st[S_LONG_AVG]
        and st[S_MC_SHORT_AVG] == st[S_SHORT_AVG]
    )


@kernel
def margin_cache_fill_nb(st, br, price, buffer):
    """Cache the account's brackets at ``price``, its liquidation price and its buffer-safe closes.

    Outside ``[lp/(1+buffer), lp/(1-buffer)]`` (each end widened by BAND_RTOL) the test
    ``|c - lp|/c < buffer`` is false; the above-LP side is cached only for buffer <= 0.5, where the
    distance to the boundary dwarfs the rounding of the test.
    """
    lq = st[S_LONG_QTY]
    sq = st[S_SHORT_QTY]
    mmr_l, cum_l, lo_l, hi_l = _side_bracket_nb(br, lq, price)
    mmr_s, cum_s, lo_s, hi_s = _side_bracket_nb(br, sq, price)
    lo = max(lo_l, lo_s)
    hi = min(hi_l, hi_s)
    wallet = margin_wallet_nb(st)
    lp = _lp_nb(wallet, lq, st[S_LONG_AVG], sq, st[S_SHORT_AVG], mmr_l, cum_l, mmr_s, cum_s)
    safe_lo = lo
    safe_hi = hi
    if lp == lp:
        above = lp / (1.0 - buffer) * (1.0 + BAND_RTOL) if buffer <= 0.5 else np.inf
        below = lp / (1.0 + buffer) * (1.0 - BAND_RTOL)
        if price > above:
            safe_lo = max(lo, above)
        elif price < below:
            safe_hi = min(hi, below)
        else:
            safe_lo = np.inf
            safe_hi = -np.inf
    st[S_MC_WALLET] = wallet
    st[S_MC_LONG_QTY] = lq
    st[S_MC_LONG_AVG] = st[S_LONG_AVG]
    st[S_MC_SHORT_QTY] = sq
    st[S_MC_SHORT_AVG] = st[S_SHORT_AVG]
    st[S_MC_LO] = lo
    st[S_MC_HI] = hi
    st[S_MC_MMR_LONG] = mmr_l
    st[S_MC_CUM_LONG] = cum_l
    st[S_MC_MMR_SHORT] = mmr_s
    st[S_MC_CUM_SHORT] = cum_s
    st[S_MC_LP] = lp
    st[S_MC_SAFE_LO] = safe_lo
    st[S_MC_SAFE_HI] = safe_hi


@hot_kernel
def account_maint_margin_nb(st, br, price):
    """``total_maint_margin_nb`` of the account's position at ``price``, from the cache when it holds.

    The brackets depend only on the quantities (and the price band), so only those must match.
    """
    lq = st[S_LONG_QTY]
    sq = st[S_SHORT_QTY]
    if not (st[S_MC_LO] < price < st[S_MC_HI] and st[S_MC_LONG_QTY] == lq and st[S_MC_SHORT_QTY] == sq):
        return total_maint_margin_nb(br, lq, sq, price)
    mm_l = 0.0
    notional = lq * price
    if notional > 0.0:
        mm_l = notional * st[S_MC_MMR_LONG] - st[S_MC_CUM_LONG]
    mm_s = 0.0
    notional = sq * price
    if notional > 0.0:
        mm_s = notional * st[S_MC_MMR_SHORT] - st[S_MC_CUM_SHORT]
    return mm_l + mm_s


@hot_kernel
def near_liquidation_nb(st, br, c, buffer):
    """``|c - LP|/c < buffer`` for a finite liquidation price LP of the account marked at ``c``.

    Same answer as computing ``liquidation_price_nb`` at ``c``; while the account is unchanged and
    ``c`` stays inside the cached safe band, no bracket lookup and no division runs.
    """
    if st[S_MC_SAFE_LO] < c < st[S_MC_SAFE_HI] and _margin_cache_current_nb(st):
        return False
    if not (st[S_MC_LO] < c < st[S_MC_HI] and _margin_cache_current_nb(st)):
        margin_cache_fill_nb(st, br, c, buffer)
    lp = st[S_MC_LP]
    return lp == lp and abs(c - lp) / c < buffer


@kernel
def max_notional_at_leverage_nb(br, leverage):
    """Largest position notional the brackets allow at ``leverage`` (0 when no bracket allows it)."""
    cap = 0.0
    for i in range(br.shape[0]):
        if br[i, B_MAX_LEV] >= leverage:
            cap = br[i, B_CAP]
    return cap
