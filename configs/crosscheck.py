"""Checks that need both files: does this strategy fit this venue's filters and leverage brackets?

Each file can be valid alone and the pair still trade nothing: a ``grid.base_qty`` above the venue's
``precision.max_qty`` (every entry fails the precision guard) or a ``trading.leverage`` above every
bracket's ``max_leverage`` (no notional is allowed, every entry is a bracket rejection). Both
``gridctl config validate`` (given the other file) and ``gridctl backtest`` call
:func:`check_strategy_on_venue` before any work starts. Once the market is loaded, ``gridctl backtest``
also calls :func:`check_notional_in_range`: a ladder none of whose rungs reaches the venue's order
notional limits at any price of the data would never place an order, and a tick wider than one grid
step (or a quantity step above ``grid.base_qty``) would round every order away: a silent zero-trade run.
"""

from __future__ import annotations

import math

from gridctl.configs.errors import GridctlError
from gridctl.configs.schema import StrategyConfig, VenueConfig


def pair_problems(strategy: StrategyConfig, venue: VenueConfig, symbol: str | None = None) -> list[str]:
    """Every reason the pair cannot trade ``symbol`` (default: the strategy's instrument), or []."""
    sym = symbol or strategy.ccxt_symbol
    problems: list[str] = []
    quantities = _rung_quantities(strategy)
    levels = len(quantities)
    for rung, qty in enumerate(quantities, start=1):
        field = "grid.base_qty" if rung == 1 else f"grid.qty_scale (rung {rung} of {levels})"
        if qty < venue.min_qty * (1 - 1e-9):
            problems.append(
                f"{field}: rung {rung} quantity {qty:g} is below the venue's minimum quantity "
                f"{venue.min_qty:g} (precision.min_qty); the exchange refuses such orders"
            )
            break
        if qty > venue.max_qty * (1 + 1e-9):
            problems.append(
                f"{field}: rung {rung} quantity {qty:g} is above the venue's maximum quantity "
                f"{venue.max_qty:g} (precision.max_qty); the exchange refuses such orders"
            )
            break
    grid = strategy.grid
    if venue.min_qty * (1 - 1e-9) <= grid.base_qty < venue.step_size * (1 - 1e-9):
        problems.append(
            f"grid.base_qty {grid.base_qty:g} is below the venue's quantity step {venue.step_size:g} "
            "(precision.step_size): every entry would round to zero and nothing would trade"
        )
    tiers = venue.brackets_for(sym)
    top = max(t.max_leverage for t in tiers)
    if venue.trading.leverage > top:
        problems.append(
            f"trading.leverage {venue.trading.leverage} is above the highest leverage any {sym} bracket "
            f"allows ({top:g}, margin.brackets); no position size would be allowed"
        )
    if strategy.position.max_leverage_used > top:
        problems.append(
            f"position.max_leverage_used {strategy.position.max_leverage_used:g} is above the highest "
            f"leverage any {sym} bracket allows ({top:g}, margin.brackets); the gate could never act"
        )
    return problems


def check_strategy_on_venue(strategy: StrategyConfig, venue: VenueConfig, symbol: str | None = None) -> None:
    """Raise one GridctlError (one line, naming both files and every field) if the pair cannot trade."""
    problems = pair_problems(strategy, venue, symbol)
    if problems:
        raise GridctlError(f"strategy {strategy.origin} on venue {venue.origin}: " + "; ".join(problems))


def _rung_quantities(strategy: StrategyConfig) -> list[float]:
    grid = strategy.grid
    levels = max(grid.grid_levels_long, grid.grid_levels_short)
    return [grid.base_qty * grid.qty_scale ** (rung - 1) for rung in range(1, levels + 1)]


def check_notional_in_range(
    strategy: StrategyConfig, venue: VenueConfig, low: float, high: float, where: str
) -> None:
    """Refuse a ladder that cannot place one order at any price in ``[low, high]`` (the data's range),
    or whose grid step at ``low`` is narrower than the venue's tick.

    A rung of quantity q can be placed at some price p in the range when ``q * p`` can lie within
    ``[max(precision.min_notional, risk.min_order_size_usdt), risk.max_order_size_usdt]``.
    """
    step_price = low * strategy.grid.grid_step_bps / 1e4
    if venue.tick_size > step_price * (1 + 1e-9):
        raise GridctlError(
            f"strategy {strategy.origin} on venue {venue.origin}: precision.tick_size {venue.tick_size:g} is "
            f"wider than one grid step ({strategy.grid.grid_step_bps:g} bps of the lowest price "
            f"{low:,.6g} of {where} = {step_price:,.6g}); the rungs would round onto the same prices and "
            "the run would trade nothing"
        )
    floor = max(venue.precision.min_notional, venue.risk.min_order_size_usdt)
    cap = venue.risk.max_order_size_usdt
    quantities = _rung_quantities(strategy)
    if any(q * high >= floor and q * low <= cap for q in quantities if math.isfinite(q)):
        return
    smallest, largest = min(quantities), max(quantities)
    if largest * high < floor:
        reason = (
            f"every rung's notional is below the venue's minimum order of {floor:g} USDT "
            f"(precision.min_notional / risk.min_order_size_usdt): at most {largest:g} x {high:,.6g}"
        )
    else:
        reason = (
            f"every rung's notional is above the venue's maximum order of {cap:g} USDT "
            f"(risk.max_order_size_usdt): at least {smallest:g} x {low:,.6g}"
        )
    raise GridctlError(
        f"strategy {strategy.origin} on venue {venue.origin}: grid.base_qty {strategy.grid.base_qty:g}: "
        f"{reason} at prices {low:,.6g}-{high:,.6g} of {where}; no order would ever be placed"
    )
