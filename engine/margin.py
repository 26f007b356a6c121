"""Binance USD-M maintenance margin: brackets, maintenance margin, liquidation check and price.

Brackets are rows ``(notional_floor, notional_cap, maint_margin_ratio, cum, max_leverage)`` sorted by
notional (bracket 1 first, as the venue file and the exchange list them). Maintenance margin of a side
is ``notional * mmr - cum`` with the bracket holding that notional; hedge-mode cross margin liquidates
when equity <= the sum over both sides.
"""

from __future__ import annotations

from engine.enums import kernel

B_FLOOR = 0
B_CAP = 1
B_MMR = 2
B_CUM = 3
B_MAX_LEV = 4


@kernel
def bracket_index_nb(br, notional):
    """Row of the bracket holding ``notional`` (the last bracket for anything beyond the table)."""
    n = br.shape[0]
    for i in range(n):
        if notional < br[i, B_CAP]:
            return i
    return n - 1


@kernel
def maint_margin_nb(br, notional):
    """Maintenance margin of one side with position notional ``notional`` (0 for no position)."""
    if notional <= 0.0:
        return 0.0
    i = bracket_index_nb(br, notional)
    return notional * br[i, B_MMR] - br[i, B_CUM]


@kernel
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


@kernel
def liquidation_price_nb(br, wallet, long_qty, long_avg, short_qty, short_avg, price):
    """Binance hedge-mode cross liquidation price (brackets taken at the notional marked at ``price``).

    ``LP = (WB + cumL + cumS - L*avgL + S*avgS) / (L*mmrL + S*mmrS - L + S)``; NaN without a position,
    when the denominator is 0 or when the result is not a positive price (no liquidation price).
    """
    if long_qty <= 0.0 and short_qty <= 0.0:
        return float("nan")
    mmr_l = 0.0
    cum_l = 0.0
    mmr_s = 0.0
    cum_s = 0.0
    if long_qty > 0.0:
        i = bracket_index_nb(br, long_qty * price)
        mmr_l = br[i, B_MMR]
        cum_l = br[i, B_CUM]
    if short_qty > 0.0:
        i = bracket_index_nb(br, short_qty * price)
        mmr_s = br[i, B_MMR]
        cum_s = br[i, B_CUM]
    den = long_qty * mmr_l + short_qty * mmr_s - long_qty + short_qty
    if den == 0.0:
        return float("nan")
    num = wallet + cum_l + cum_s - long_qty * long_avg + short_qty * short_avg
    lp = num / den
    return lp if lp > 0.0 else float("nan")


@kernel
def max_notional_at_leverage_nb(br, leverage):
    """Largest position notional the brackets allow at ``leverage`` (0 when no bracket allows it)."""
    cap = 0.0
    for i in range(br.shape[0]):
        if br[i, B_MAX_LEV] >= leverage:
            cap = br[i, B_CAP]
    return cap
