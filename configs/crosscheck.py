"""Checks that need both files: does this strategy fit the symbol's exchange rules and leverage brackets?

Each file can be valid alone and the pair still trade nothing: a ``grid.base_qty`` above the symbol's
``max_qty`` (every entry fails the precision guard), a ``trading.leverage`` above every bracket's
``max_leverage`` (no notional is allowed, every entry is a bracket rejection), or a ladder that needs more
open orders or stops than the symbol allows (``max_num_orders`` / ``max_num_algo_orders``). Every rule is
the one of the strategy's own symbol (``VenueConfig.rules_for``), and messages name it. Both
``gridctl config validate`` (given the other file) and ``gridctl backtest`` call
:func:`check_strategy_on_venue` before any work starts. Once the market is loaded, ``gridctl backtest``
also calls :func:`check_notional_in_range`: a ladder none of whose rungs reaches the order notional
limits at any price of the data would never place an order, and a tick wider than one grid step (or a
quantity step above ``grid.base_qty``) would round every order away, and an ``initial_balance`` below the
margin of the cheapest placeable order would have every entry refused: a silent zero-trade run.
"""

from __future__ import annotations

import math

from gridctl.configs.errors import GridctlError
from gridctl.configs.schema import StrategyConfig, VenueConfig


def pair_problems(strategy: StrategyConfig, venue: VenueConfig, symbol: str | None = None) -> list[str]:
    """Every reason the pair cannot trade ``symbol`` (default: the strategy's instrument), or []."""
    sym = symbol or strategy.ccxt_symbol
    rules = venue.rules_for(sym)
    problems: list[str] = []
    grid = strategy.grid
    if grid.base_qty is not None:
        quantities = _rung_sizes(strategy)
        levels = len(quantities)
        for rung, qty in enumerate(quantities, start=1):
            field = "grid.base_qty" if rung == 1 else f"grid.qty_scale (rung {rung} of {levels})"
            if not math.isfinite(qty):
                problems.append(f"{field}: rung {rung} quantity overflows ({qty})")
                break
            if qty < rules.min_qty * (1 - 1e-9):
                problems.append(
                    f"{field}: rung {rung} quantity {qty:g} is below {sym}'s minimum quantity "
                    f"{rules.min_qty:g} (min_qty); the exchange refuses such orders"
                )
                break
            if qty > rules.max_qty * (1 + 1e-9):
                problems.append(
                    f"{field}: rung {rung} quantity {qty:g} is above {sym}'s maximum quantity "
                    f"{rules.max_qty:g} (max_qty); the exchange refuses such orders"
                )
                break
    else:
        notionals = _rung_sizes(strategy)
        if not all(math.isfinite(n) for n in notionals):
            problems.append(f"grid.base_notional: a rung's notional overflows ({max(notionals)})")
        elif notionals[0] < rules.min_notional * (1 - 1e-9):
            problems.append(
                f"grid.base_notional {notionals[0]:g} USDT is below {sym}'s minimum order notional "
                f"{rules.min_notional:g} (min_notional); rung 1 would never be placed"
            )
    base = grid.base_qty
    if base is not None and rules.min_qty * (1 - 1e-9) <= base < rules.step_size * (1 - 1e-9):
        problems.append(
            f"grid.base_qty {grid.base_qty:g} is below {sym}'s quantity step {rules.step_size:g} "
            "(step_size): every entry would round to zero and nothing would trade"
        )
    problems += order_count_problems(strategy, venue, sym)
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


def order_count_problems(strategy: StrategyConfig, venue: VenueConfig, symbol: str) -> list[str]:
    """A full ladder needs ``levels_long + levels_short`` open orders and as many stops.

    Each rung holds either a resting entry (a LIMIT order) or a lot with its take-profit (a LIMIT order)
    and its stop (a STOP_MARKET, an algo order): at most one regular order and one stop per rung.
    """
    rules = venue.rules_for(symbol)
    grid = strategy.grid
    need = grid.grid_levels_long + grid.grid_levels_short
    problems = []
    if need > rules.max_num_algo_orders:
        problems.append(
            f"grid.grid_levels_long + grid.grid_levels_short = {need}: a lot on every rung needs {need} "
            f"stop orders but {symbol} allows {rules.max_num_algo_orders} open algo orders "
            "(max_num_algo_orders, MAX_NUM_ALGO_ORDERS)"
        )
    if need > rules.max_num_orders:
        problems.append(
            f"grid.grid_levels_long + grid.grid_levels_short = {need}: the ladder needs {need} open orders "
            f"but {symbol} allows {rules.max_num_orders} (max_num_orders, MAX_NUM_ORDERS)"
        )
    return problems


def check_strategy_on_venue(strategy: StrategyConfig, venue: VenueConfig, symbol: str | None = None) -> None:
    """Raise one GridctlError (naming both files and every field) if the pair cannot trade.

    A basket strategy (``strategy.symbols``, no ``symbol`` given) is checked symbol by symbol, each with
    its own overrides and rules: one line per symbol with problems (a symbol without rules included).
    """
    head = f"strategy {strategy.origin} on venue {venue.origin}: "
    if symbol is not None or strategy.strategy.symbols is None:
        problems = pair_problems(strategy, venue, symbol)
        if problems:
            raise GridctlError(head + "; ".join(problems))
        return
    from gridctl.configs.overrides import basket_strategies

    lines = []
    for sym, own in basket_strategies(strategy).items():
        try:
            problems = pair_problems(own, venue, sym)
        except GridctlError as err:  # no rules or brackets for the symbol
            problems = [str(err)]
        if problems:
            lines.append(f"{sym}: " + "; ".join(problems))
    if lines:
        raise GridctlError(head + "\nerror: ".join(lines))


def notional_margin_problem(strategy: StrategyConfig, venue: VenueConfig) -> str | None:
    """For a ladder sized in quote notional (no prices needed): why ``backtest.initial_balance`` cannot
    margin its cheapest order, or None (also None for a ladder sized in base quantity)."""
    if strategy.grid.base_qty is not None:
        return None
    floor = max(venue.rules_for(strategy.ccxt_symbol).min_notional, venue.risk.min_order_size_usdt)
    try:
        cheapest = _cheapest_placeable(_rung_sizes(strategy), floor, by_notional=True)
        if cheapest is not None:  # none at all: check_notional_in_range names that
            _check_balance_margins_a_rung(strategy, venue, cheapest)
    except GridctlError as err:
        return str(err)
    return None


def _check_balance_margins_a_rung(strategy: StrategyConfig, venue: VenueConfig, notional: float) -> None:
    """Refuse a ``backtest.initial_balance`` below the initial margin of the cheapest order the ladder can
    place (its notional at the venue's ``trading.leverage``): every entry would be refused for margin and
    the run would trade nothing (it ran to the end with zero fills and a tripped circuit breaker)."""
    balance = strategy.backtest.initial_balance
    leverage = venue.trading.leverage
    margin = notional / leverage
    if balance < margin:
        raise GridctlError(
            f"strategy {strategy.origin} on venue {venue.origin}: backtest.initial_balance {balance:g} USDT "
            f"cannot margin one order: the cheapest rung is {notional:,.6g} USDT at leverage {leverage:g} "
            f"(trading.leverage) = {margin:,.6g} USDT of margin; the run would trade nothing"
        )


def _cheapest_placeable(notionals: list[float], floor: float, by_notional: bool) -> float | None:
    """The smallest notional a rung can be placed at (None: no rung can be): rung 1 unless qty_scale < 1
    shrinks the later ones. A rung sized in quote notional below the venue's floor is never placed
    (engine.validation); one sized in base quantity reaches the floor at a higher price, so its
    notional at the lowest price counts as the floor."""
    finite = [n for n in notionals if math.isfinite(n)]
    if by_notional:
        finite = [n for n in finite if n >= floor]
        return min(finite) if finite else None
    return min(max(n, floor) for n in finite) if finite else None


def _rung_sizes(strategy: StrategyConfig) -> list[float]:
    """Rung sizes in the strategy's unit: base quantity (``base_qty``) or quote (``base_notional``)."""
    grid = strategy.grid
    levels = max(grid.grid_levels_long, grid.grid_levels_short)
    base = grid.base_qty if grid.base_qty is not None else grid.base_notional
    assert base is not None  # GridSection._one_size_unit
    return [base * grid.qty_scale ** (rung - 1) for rung in range(1, levels + 1)]


def check_notional_in_range(
    strategy: StrategyConfig, venue: VenueConfig, low: float, high: float, where: str
) -> None:
    """Refuse a ladder that cannot place one order at any price in ``[low, high]`` (the data's range),
    or whose grid step at ``low`` is narrower than the venue's tick.

    A rung of quantity q can be placed at some price p in the range when ``q * p`` can lie within
    ``[max(min_notional, risk.min_order_size_usdt), risk.max_order_size_usdt]``; a rung given in quote
    notional has that notional at every price.
    """
    sym = strategy.ccxt_symbol
    rules = venue.rules_for(sym)
    step_price = low * strategy.grid.grid_step_bps / 1e4
    if rules.tick_size > step_price * (1 + 1e-9):
        raise GridctlError(
            f"strategy {strategy.origin} on venue {venue.origin}: {sym}'s tick_size {rules.tick_size:g} is "
            f"wider than one grid step ({strategy.grid.grid_step_bps:g} bps of the lowest price "
            f"{low:,.6g} of {where} = {step_price:,.6g}); the rungs would round onto the same prices and "
            "the run would trade nothing"
        )
    floor = max(rules.min_notional, venue.risk.min_order_size_usdt)
    cap = venue.risk.max_order_size_usdt
    sizes = [s for s in _rung_sizes(strategy) if math.isfinite(s)]
    by_notional = strategy.grid.base_qty is None
    lo_n = [s if by_notional else s * low for s in sizes]
    hi_n = [s if by_notional else s * high for s in sizes]
    if any(h >= floor and lo <= cap for lo, h in zip(lo_n, hi_n, strict=True)):
        cheapest = _cheapest_placeable(lo_n, floor, by_notional)
        if cheapest is not None:
            _check_balance_margins_a_rung(strategy, venue, cheapest)
        return
    field = "grid.base_notional" if by_notional else "grid.base_qty"
    size = strategy.grid.base_notional if by_notional else strategy.grid.base_qty
    unit = " USDT" if by_notional else f" x {high:,.6g}"
    if max(hi_n) < floor:
        reason = (
            f"every rung's notional is below {sym}'s minimum order of {floor:g} USDT "
            f"(min_notional / risk.min_order_size_usdt): at most {max(sizes):g}{unit}"
        )
    else:
        unit = " USDT" if by_notional else f" x {low:,.6g}"
        reason = (
            f"every rung's notional is above the venue's maximum order of {cap:g} USDT "
            f"(risk.max_order_size_usdt): at least {min(sizes):g}{unit}"
        )
    raise GridctlError(
        f"strategy {strategy.origin} on venue {venue.origin}: {field} {size:g}: "
        f"{reason} at prices {low:,.6g}-{high:,.6g} of {where}; no order would ever be placed"
    )
