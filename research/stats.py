"""Summary statistics of one backtest, computed from its ledgers and equity curve (not from the kernel).

Why recompute: the kernel keeps online accumulators for the optimizer; computing the same numbers
again from the written ledgers is an independent check (tests compare the two) and lets anyone
reproduce a stat from the parquet files alone.

Conventions:
- Daily equity = equity at the last bar of each UTC day (day of the bar's open time); the first
  day's return is against the initial balance; the last, possibly partial, day counts.
- Sharpe = mean(daily return) / stdev(daily return, ddof=1) * sqrt(365); Sortino uses the downside
  deviation sqrt(sum(min(r, 0)^2) / n) instead of the stdev; both are None with fewer than 2 days or
  a zero denominator. CAGR compounds over the bars run (first bar open to last bar close; a
  liquidation ends the run) in 365-day years; Calmar = CAGR / max bar-close drawdown (None when
  that drawdown is 0).
- Drawdowns, each from the running peak of the series it names (the peak starts at the initial
  balance): ``max_drawdown_daily_close_pct`` on UTC-day closing equity, ``max_drawdown_bar_close_pct``
  on every bar's closing equity, ``max_drawdown_intrabar_pct`` on each bar's worst point - equity at
  the bar's adverse extreme (low or high) for the positions held at its close - from the bar-close
  peak. The batch summary has the same three names.
- Profit factor and win rate count closed lots: a lot's PnL is measured from its own entry price and
  is after its entry fee and its exit fee (a flatten or liquidation fill closes every open lot of the
  side, each with its qty's share of that fill's fee).
- Percentages end in ``_pct``; money is in the quote currency (USDT).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Protocol

import numpy as np

from gridctl.configs.schema import StrategyConfig, VenueConfig
from gridctl.data.market import Market
from gridctl.engine.enums import (
    EventKind,
    FillKind,
    Liquidity,
    MarkSource,
    Reason,
    RiskState,
    Side,
    enum_name,
)

DAY_MS = 86_400_000
DAYS_PER_YEAR = 365.0
REJECTION_KINDS = np.array([EventKind.ORDER_REJECTED, EventKind.POST_ONLY_REJECT])
#: What each ``backtest.intrabar_path`` rule assumes about the order of a bar's extremes.
INTRABAR_PATHS = {
    "nearer_first": "open -> nearer extreme -> farther extreme -> close "
    "(high first when high-open <= open-low)",
    "farther_first": "open -> farther extreme -> nearer extreme -> close "
    "(low first when high-open <= open-low)",
    "high_first": "open -> high -> low -> close",
    "low_first": "open -> low -> high -> close",
}
#: Every rule a backtest runs to bracket what OHLC bars cannot settle (the configured one is the run).
BRACKET_RULES = tuple(INTRABAR_PATHS)


class RunLike(Protocol):
    """What the stats read from a run (``engine.run.RunOutput`` satisfies it)."""

    fills: np.ndarray
    funding: np.ndarray
    events: np.ndarray
    equity: np.ndarray
    summary: dict[str, float]


def daily_equity(ts: np.ndarray, equity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(UTC day number, equity at the last bar of that day) for each day present in the curve."""
    if len(ts) == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    day = np.asarray(ts, dtype=np.int64) // DAY_MS
    last = np.flatnonzero(np.append(day[1:] != day[:-1], True))
    return day[last], np.asarray(equity, dtype=np.float64)[last]


def daily_returns(day_equity: np.ndarray, initial: float) -> np.ndarray:
    """Simple returns of day-close equities, the first against ``initial`` (0 after a non-positive close)."""
    prev = np.concatenate(([initial], day_equity[:-1]))
    safe = np.where(prev > 0.0, prev, 1.0)
    return np.where(prev > 0.0, day_equity / safe - 1.0, 0.0)


#: Bars per block of ``_max_fall_pct`` (keeps its temporaries at ~1 MB whatever the curve's length).
_FALL_BLOCK = 1 << 16


def _max_fall_pct(equity: np.ndarray, lows: np.ndarray, initial: float) -> float:
    """Largest fall of ``lows`` below the running peak of ``equity`` (starting at ``initial``), in
    percent of the peak; 0 where the peak is not positive (NaN anywhere gives NaN).

    Runs block by block, carrying the peak: the same numbers as on the whole curve, without whole-curve
    temporaries at the backtest's memory peak (a year of 1m bars makes each one 4 MB).
    """
    carry = float(initial)
    block_max: list[float] = []
    for lo in range(0, len(equity), _FALL_BLOCK):
        hi = lo + _FALL_BLOCK
        peak = np.concatenate(([carry], np.asarray(equity[lo:hi], dtype=np.float64)))
        np.maximum.accumulate(peak, out=peak)
        peak = peak[1:]
        carry = float(peak[-1])
        positive = peak > 0.0
        dd = peak - lows[lo:hi]
        dd /= np.where(positive, peak, 1.0)
        dd *= 100.0
        dd[~positive] = 0.0
        block_max.append(dd.max())
    return float(max(np.max(block_max), 0.0))


def max_drawdown_pct(equity: np.ndarray, initial: float) -> float:
    """Largest fall from a running peak (the peak starts at ``initial``), in percent of the peak."""
    if len(equity) == 0:
        return 0.0
    return _max_fall_pct(equity, equity, initial)


def intrabar_worst_equity(eq: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    """Per equity row, equity at the bar's adverse extreme for the positions held at its close.

    Equity is linear in price: ``equity + (L - S) * (x - close)`` at ``x`` in {low, high}; rows with
    no position or a bar with missing prices keep their close equity.
    """
    equity = eq["equity"]
    net = eq["long_qty"] - eq["short_qty"]
    # The adverse extreme is the low for a net long, the high for a net short (for a flat book both
    # give the close equity): the lower of the two values, computed once, in place (a year of 1m bars
    # makes every temporary 4 MB, and this runs at the backtest's memory peak).
    with np.errstate(invalid="ignore"):
        worst = np.where(net >= 0.0, low, high)
        worst -= close
        worst *= net
        worst += equity
        np.minimum(worst, equity, out=worst)
    del net
    ok = (eq["long_qty"] > 0.0) | (eq["short_qty"] > 0.0)
    ok &= np.isfinite(high)
    ok &= np.isfinite(low)
    ok &= np.isfinite(close)
    np.copyto(worst, equity, where=~ok)
    return worst


def intrabar_drawdown_pct(equity: np.ndarray, worst: np.ndarray, initial: float) -> float:
    """Largest fall from the running bar-close peak (starting at ``initial``) to a bar's worst point."""
    if len(equity) == 0:
        return 0.0
    return _max_fall_pct(equity, worst, initial)


class Lot(NamedTuple):
    """One lot of a fills ledger (``walk_lots``): a rung's entry and, once closed, its exit."""

    side: int  # Side
    entry_ts: int
    entry: float
    qty: float  # the exit fill's qty for a TP or SL, the lot's for a flatten or liquidation
    entry_fee: float
    exit_ts: int | None = None  # None: still open at the end of the ledger
    exit: float | None = None
    exit_kind: int | None = None  # FillKind
    exit_fee: float = 0.0  # a flatten's or liquidation's share of its fill's fee

    @property
    def pnl(self) -> float:
        """PnL from the lot's own entry price, after its entry fee and its exit fee (closed lots)."""
        assert self.exit is not None, "an open lot has no PnL"
        gross = (
            self.qty * (self.exit - self.entry)
            if self.side == Side.LONG
            else self.qty * (self.entry - self.exit)
        )
        return gross - self.entry_fee - self.exit_fee


def walk_lots(fills: np.ndarray) -> tuple[list[Lot], list[Lot]]:
    """The lots of a fills ledger (``engine.records.FILL_DTYPE`` rows, in order): the closed ones in
    closing order, and those still open at the end in entry order.

    A lot is a rung's (side, level) entry fill; its TP or SL fill closes it, and a flatten or liquidation
    fill closes every open lot of its side, each lot taking its qty's share of that fill's fee. An exit
    with no lot open on its rung (a stop that filled while its side was being flattened) closes nothing.
    The one reading of lots: profit factor and win rate, same-bar round trips, the report's round trips.
    """
    open_lots: dict[tuple[int, int], tuple[int, float, float, float]] = {}  # ts, qty, price, fee
    closed: list[Lot] = []
    cols = [fills[name].tolist() for name in ("ts", "side", "kind", "level", "price", "qty", "fee")]
    for ts, side, kind, level, price, qty, fee in zip(*cols, strict=True):
        if kind == FillKind.ENTRY:
            open_lots[(side, level)] = (ts, qty, price, fee)
        elif kind in (FillKind.TP, FillKind.SL):
            lot = open_lots.pop((side, level), None)
            if lot is not None:
                closed.append(Lot(side, lot[0], lot[2], qty, lot[3], ts, price, kind, fee))
        else:  # flatten / liquidation: every open lot of the side, sharing the fill's fee by qty
            for key in sorted(k for k in open_lots if k[0] == side):
                entry_ts, q, entry, entry_fee = open_lots.pop(key)
                closed.append(Lot(side, entry_ts, entry, q, entry_fee, ts, price, kind, fee * q / qty))
    still = sorted(open_lots.items(), key=lambda kv: kv[1][0])
    return closed, [Lot(side, ts, entry, q, fee) for (side, _), (ts, q, entry, fee) in still]


def closed_lot_pnl(fills: np.ndarray) -> np.ndarray:
    """PnL after fees of every closed lot, in closing order (see the module conventions)."""
    return np.array([lot.pnl for lot in walk_lots(fills)[0]], dtype=np.float64)


def sharpe(returns: np.ndarray) -> float | None:
    """Annualised Sharpe ratio of daily returns (risk-free rate 0)."""
    if len(returns) < 2:
        return None
    sd = float(np.std(returns, ddof=1))
    return float(np.mean(returns) / sd * math.sqrt(DAYS_PER_YEAR)) if sd > 0.0 else None


def sortino(returns: np.ndarray) -> float | None:
    """Annualised Sortino ratio of daily returns (target 0, downside deviation over all days)."""
    if len(returns) < 2:
        return None
    down = math.sqrt(float(np.sum(np.minimum(returns, 0.0) ** 2)) / len(returns))
    return float(np.mean(returns) / down * math.sqrt(DAYS_PER_YEAR)) if down > 0.0 else None


def cagr_pct(initial: float, final: float, span_ms: int) -> float:
    """Compound annual growth in percent over ``span_ms`` (-100 when the account is wiped out)."""
    if final <= 0.0:
        return -100.0
    years = span_ms / DAY_MS / DAYS_PER_YEAR
    return float(((final / initial) ** (1.0 / years) - 1.0) * 100.0)


def _label(enum: Any, value: int) -> str:
    return enum_name(enum, int(value)).lower()


def _counts(values: np.ndarray, enum: Any) -> dict[str, int]:
    """How often each enum label occurs, by label."""
    out: dict[str, int] = {}
    for v in values.tolist():
        key = _label(enum, v)
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


def _iso(ms: float) -> str | None:
    if ms is None or not math.isfinite(ms):
        return None
    return np.datetime64(int(ms), "ms").astype("datetime64[s]").item().strftime("%Y-%m-%dT%H:%M:%SZ")


def compute_stats(
    run: RunLike, market: Market, strategy: StrategyConfig, venue: VenueConfig
) -> dict[str, Any]:
    """All headline stats plus what the run assumed, as a JSON-ready dict (None where undefined)."""
    if len(market.ts) and len(run.equity) == 0:
        raise ValueError("compute_stats needs the equity curve: run the backtest with curves=True")
    initial = float(strategy.backtest.initial_balance)
    return {
        "strategy": strategy.strategy.name,
        "strategy_source": strategy.origin,
        "venue": venue.venue.name,
        "symbol": market.symbol,
        "timeframe": market.timeframe,
        "data_start": _iso(float(market.ts[0])) if len(market.ts) else None,
        "data_end": _iso(float(market.ts[-1] + market.bar_ms)) if len(market.ts) else None,
        "bars": len(market.ts),
        "bars_run": len(run.equity),
        "gaps": int(market.report.gap_count),
        "missing_bars": int(market.report.missing_bars),
        **_performance(run.equity, market, initial),
        **_trading(run.fills, run.funding),
        **_risk_time_and_events(run, run.equity),
        "assumptions": _assumptions(run, market, strategy, venue),
    }


def _performance(eq: np.ndarray, market: Market, initial: float) -> dict[str, Any]:
    """Days, balances, return, CAGR, the three drawdowns, Sharpe, Sortino and Calmar of an equity curve."""
    equity = eq["equity"]  # f8 already: a view, no copy of the curve
    final = float(equity[-1]) if len(equity) else initial
    _, day_eq = daily_equity(eq["ts"], equity)
    rets = daily_returns(day_eq, initial)
    span_ms = int(eq["ts"][-1] - eq["ts"][0]) + market.bar_ms if len(eq) else market.bar_ms
    cagr = cagr_pct(initial, final, span_ms)
    dd_bar = max_drawdown_pct(equity, initial)
    n = len(equity)
    worst = intrabar_worst_equity(eq, market.high[:n], market.low[:n], market.close[:n])
    return {
        "days": len(day_eq),
        "initial_balance": initial,
        "final_equity": final,
        "total_return_pct": (final / initial - 1.0) * 100.0,
        "cagr_pct": cagr,
        "max_drawdown_daily_close_pct": max_drawdown_pct(day_eq, initial),
        "max_drawdown_bar_close_pct": dd_bar,
        "max_drawdown_intrabar_pct": intrabar_drawdown_pct(equity, worst, initial),
        "sharpe": sharpe(rets),
        "sortino": sortino(rets),
        # One Calmar everywhere (the optimizer's objective too): CAGR / max bar-close drawdown.
        "calmar": cagr / dd_bar if dd_bar > 0.0 else None,
    }


def _trading(fills: np.ndarray, funding: np.ndarray) -> dict[str, Any]:
    """Profit factor and win rate of the closed lots, fill counts, fees, funding and the maker share."""
    exits = fills[fills["kind"] != FillKind.ENTRY]
    lot_pnl = closed_lot_pnl(fills)
    gross_profit = float(lot_pnl[lot_pnl > 0.0].sum())
    gross_loss = float(-lot_pnl[lot_pnl < 0.0].sum())
    amounts = funding["amount"]
    return {
        "profit_factor": gross_profit / gross_loss if gross_loss > 0.0 else None,
        "win_rate_pct": float((lot_pnl > 0.0).sum() / len(lot_pnl) * 100.0) if len(lot_pnl) else None,
        "n_lots_closed": len(lot_pnl),
        "realized_pnl": float(exits["realized_pnl"].sum()),
        "n_fills": len(fills),
        "n_entries": int((fills["kind"] == FillKind.ENTRY).sum()),
        "n_exits": len(exits),
        "exits_by_kind": _counts(exits["kind"], FillKind),
        "fees_paid": float(fills["fee"].sum()),
        "funding_paid": float(-amounts[amounts < 0.0].sum()),
        "funding_received": float(amounts[amounts > 0.0].sum()),
        "funding_payments": len(funding),
        "maker_share_pct": float((fills["liquidity"] == Liquidity.MAKER).sum() / len(fills) * 100.0)
        if len(fills)
        else None,
    }


def _risk_time_and_events(run: RunLike, eq: np.ndarray) -> dict[str, Any]:
    """Shares of bars exposed and in each risk state, liquidation and halt times, event and rejection
    counts, deferred and skipped orders, and the round trips decided inside one bar."""
    bars = len(eq)
    events, state = run.events, eq["state"]
    exposed = (eq["long_qty"] > 0.0) | (eq["short_qty"] > 0.0)
    liq = events[events["kind"] == EventKind.LIQUIDATION]
    halt = events[events["kind"] == EventKind.DRAWDOWN_HALT]
    rejected = events[np.isin(events["kind"], REJECTION_KINDS)]
    same_bar = same_bar_round_trips(run.fills)

    def share(mask: np.ndarray) -> float:
        return float(mask.sum() / bars * 100.0) if bars else 0.0

    return {
        "exposure_pct": share(exposed),
        "halted_pct": share(state == RiskState.HALTED),
        "cooldown_pct": share(state == RiskState.COOLDOWN),
        "reducing_pct": share(state == RiskState.REDUCING),
        "liquidated": bool(len(liq) > 0),
        "liquidated_at": _iso(float(liq["ts"][0])) if len(liq) else None,
        "halted_at": _iso(float(halt["ts"][0])) if len(halt) else None,
        "events": _counts(events["kind"], EventKind),
        "rejections": _counts(rejected["reason"], Reason),
        "orders_deferred": int(run.summary.get("orders_deferred", 0)),
        "skipped_precision": int(run.summary.get("skipped_precision", 0)),
        "same_bar_round_trips": same_bar[0],
        "same_bar_round_trip_pnl": same_bar[1],
    }


def _assumptions(
    run: RunLike, market: Market, strategy: StrategyConfig, venue: VenueConfig
) -> dict[str, Any]:
    """What the run assumed: fees and rules, funding mark sources, gates off, path rule, data warnings."""
    funding = run.funding
    return {
        "fees_source": venue.fees_source,
        "exchange_rules": _rules_text(venue, market.symbol),
        "maker_fee": float(venue.fees.maker),
        "taker_fee": float(venue.fees.taker),
        "funding_mark_source": {
            "mark price series": int((funding["mark_source"] == MarkSource.MARK_SERIES).sum()),
            "trade open (mark unknown)": int((funding["mark_source"] == MarkSource.TRADE_OPEN).sum()),
        },
        "gates_disabled": strategy.gates_disabled(),
        "intrabar_path": INTRABAR_PATHS[strategy.backtest.intrabar_path],
        "detail_timeframe": strategy.backtest.detail_timeframe,
        "liquidation_rule": liquidation_rule(venue),
        "fill_on_touch": bool(strategy.backtest.fill_on_touch),
        "slippage_bps": float(strategy.backtest.slippage_bps),
        "data_warnings": list(market.report.warnings)
        + list(getattr(run, "meta", {}).get("detail", {}).get("warnings", [])),
    }


def same_bar_round_trips(fills: np.ndarray) -> tuple[int, float]:
    """(count, PnL after fees) of lots whose entry fill and TP/SL fill carry the same bar ts.

    Those round trips opened and closed inside one bar, so the intrabar path rule decided them. A lot's
    PnL is measured from its own entry price, after its entry and exit fees (``walk_lots``, as the profit
    factor's lots and the report's round trips), not the exit fill's ``realized_pnl``: that is against
    the side's average entry, which older lots still open move.
    """
    same = [
        lot
        for lot in walk_lots(fills)[0]
        if lot.exit_kind in (FillKind.TP, FillKind.SL) and lot.exit_ts == lot.entry_ts
    ]
    return len(same), sum((lot.pnl for lot in same), 0.0)


def liquidation_rule(venue: VenueConfig) -> str:
    """Which liquidation clearance rule the engine applies for ``venue`` (engine/fills.py)."""
    fee = venue.margin.liquidation_clearance_fee if venue.margin is not None else None
    if fee is None:
        return "remaining maintenance margin lost (to the insurance fund)"
    return f"clearance fee {fee:g} x liquidated notional (margin.liquidation_clearance_fee)"


#: The drawdowns each path-bracket entry carries (engine.records.SUMMARY_FIELDS names).
BRACKET_DRAWDOWNS = (
    "max_drawdown_daily_close_pct",
    "max_drawdown_bar_close_pct",
    "max_drawdown_intrabar_pct",
)


def path_bracket(
    market: Market,
    strategy: StrategyConfig,
    venue: VenueConfig,
    summary: dict[str, float],
    detail: Market | None = None,
) -> dict[str, Any]:
    """The run under every intrabar path rule, next to its configured rule (``summary``).

    The other rules run one after another (``engine.run.run_summary``: summaries only, same detail
    bars, the kernel ``run_single`` compiled, so a first backtest compiles nothing more). Each entry has
    ``total_return_pct``, the three drawdowns named for what they measure (daily close, bar close,
    intrabar worst point) and ``n_fills``; ``worst`` / ``best`` take each figure's worst / best over
    the rules (lowest / highest return, highest / lowest drawdowns). No rule brackets the others:
    ``nearer_first`` can lie outside ``high_first`` .. ``low_first``.
    """
    from gridctl.configs.overrides import apply_overrides
    from gridctl.engine.run import run_summary

    configured = strategy.backtest.intrabar_path
    others = [rule for rule in BRACKET_RULES if rule != configured]
    rows = [
        run_summary(market, *apply_overrides(strategy, venue, {"backtest.intrabar_path": r}), detail=detail)
        for r in others
    ]

    def entry(row: Any) -> dict[str, float | int]:
        return {
            "total_return_pct": float(row["total_return_pct"]),
            **{name: float(row[name]) for name in BRACKET_DRAWDOWNS},
            "n_fills": int(row["n_fills"]),
        }

    out: dict[str, Any] = {"rule": configured, "configured": entry(summary)}
    out[configured] = out["configured"]
    for rule, row in zip(others, rows, strict=True):
        out[rule] = entry(row)
    entries = [out[rule] for rule in BRACKET_RULES]
    returns = [e["total_return_pct"] for e in entries]
    out["worst"] = {"total_return_pct": min(returns)}
    out["best"] = {"total_return_pct": max(returns)}
    for name in BRACKET_DRAWDOWNS:
        out["worst"][name] = max(e[name] for e in entries)
        out["best"][name] = min(e[name] for e in entries)
    return out


def _rules_text(venue: VenueConfig, symbol: str) -> str:
    """The run symbol's exchange rules in one line, with where they came from."""
    r = venue.rules_for(symbol)
    return (
        f"tick {r.tick_size:g}, lot {r.step_size:g}, min notional {r.min_notional:g}, "
        f"{r.max_num_algo_orders} stops / {r.max_num_orders} orders ({venue.rules_source(symbol)})"
    )


def backtest_stats(
    output: Any,
    market: Market,
    strategy: StrategyConfig,
    venue: VenueConfig,
    detail: Market | None = None,
) -> dict[str, Any]:
    """``compute_stats`` plus the run's ``path_bracket``: what every backtest (and replay) reports."""
    stats = compute_stats(output, market, strategy, venue)
    stats["path_bracket"] = path_bracket(market, strategy, venue, output.summary, detail=detail)
    return stats
