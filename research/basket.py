"""Basket backtests: several symbols in one cross-margin wallet (``engine.basket.run_basket``), with
stats and a path bracket per symbol and for the account, and the result files.

What the numbers mean (docs/DESIGN.md "Baskets: results"):

- **Account** (``stats["account"]``): the wallet's equity curve (``BasketOutput.account_equity``) gives
  final equity, returns, drawdowns, Sharpe, CAGR, time halted; ledger counts (fills, fees, funding,
  events, rejections) are the sums over the symbols; profit factor and win rate pool every symbol's
  closed lots. The intrabar drawdown takes every symbol's adverse extreme of a bar together.
- **Symbol** (``stats["symbols"][symbol]``): the same stat names, on the symbol's *contribution
  curve*: ``initial_balance + cumulative (realized PnL - fees + funding) + its own unrealized PnL`` at
  every bar close. Its ``final_equity - initial_balance`` is what the symbol added to the account, so
  the account's final equity is the initial balance plus the sum of the symbols' contributions.
- **Path bracket**: the basket runs once per intrabar path rule; the account's bracket reads each run's
  account summary, a symbol's the same run's summary of that symbol (``SYMBOL_BRACKET_MEANING``).
- Ledgers are written once per table with a ``symbol`` column (``fills.parquet`` etc.), plus
  ``account_equity.parquet`` and ``path_bracket.parquet``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np

from gridctl.configs.errors import GridctlError
from gridctl.data.validate import ValidationReport
from gridctl.engine.records import EQUITY_DTYPE, EVENT_DTYPE, FILL_DTYPE, FUNDING_DTYPE
from gridctl.research.stats import (
    BRACKET_DRAWDOWNS,
    BRACKET_RULES,
    closed_lot_pnl,
    compute_stats,
    intrabar_drawdown_pct,
    intrabar_worst_equity,
)
from gridctl.research.stats import _iso as iso_time

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from rich.console import Console

    from gridctl.configs.schema import StrategyConfig, VenueConfig
    from gridctl.data.market import Market
    from gridctl.engine.basket import BasketOutput

#: Stats summed over the symbols for the account block.
SUMMED = (
    "realized_pnl",
    "n_fills",
    "n_entries",
    "n_exits",
    "fees_paid",
    "funding_paid",
    "funding_received",
    "funding_payments",
    "n_lots_closed",
    "orders_deferred",
    "skipped_precision",
    "same_bar_round_trips",
    "same_bar_round_trip_pnl",
)
#: Stats that count by label, summed label by label.
COUNTED = ("exits_by_kind", "events", "rejections")


@dataclass(frozen=True)
class BasketBacktest:
    """A basket run with everything its results are made of."""

    output: BasketOutput
    markets: dict[str, Market]
    strategies: dict[str, StrategyConfig]
    venue: VenueConfig
    detail: dict[str, Market]
    stats: dict[str, Any]


def run_basket_backtest(
    strategy: StrategyConfig,
    venue: VenueConfig,
    data_dir: Path,
    exchange: str,
    timeframe: str,
    start_ms: int | None,
    end_ms: int | None,
    status: Console | None = None,
    run: Callable[..., BasketOutput] | None = None,
) -> BasketBacktest:
    """Load every basket symbol's stored bars, check each against the venue, run the basket, compute stats.

    ``strategy`` is the loaded basket strategy (``strategy.symbols``, ``symbol_overrides``); with
    ``backtest.detail_timeframe`` set, each symbol walks its finer stored bars where the store holds
    them over the window, and its own OHLC otherwise (a data warning says which). ``run`` steps the
    basket (default ``engine.basket.run_basket``; `gridctl live --paper --replay` passes its basket
    session's replay, ``live_bridge.basket.replay_basket``, which has no detail bars).
    """
    from gridctl.configs.crosscheck import check_strategy_on_venue
    from gridctl.configs.overrides import basket_strategies
    from gridctl.data.sample import SAMPLE_EXCHANGE, SAMPLE_SYMBOL, ensure_sample
    from gridctl.engine.basket import run_basket

    check_strategy_on_venue(strategy, venue)  # every symbol, with its overrides and its rules
    strategies = basket_strategies(strategy)
    if run is not None:
        _refuse_detail_in_replay(strategies)
    if exchange == SAMPLE_EXCHANGE and SAMPLE_SYMBOL in strategies:
        ensure_sample(data_dir, "--data-dir")
    window = (exchange, timeframe, start_ms, end_ms)
    markets = load_basket_markets(strategies, venue, data_dir, window)
    detail, notes = load_basket_detail(strategies, markets, data_dir, window, status)
    if status is not None:
        status.print(
            f"[dim]running {strategy.strategy.name} on a basket of {len(markets)} symbols "
            f"({', '.join(f'{s} {len(m.ts):,}' for s, m in markets.items())} {timeframe} bars; the first "
            "basket run after an install or an engine change compiles its kernel, about a minute) ...[/dim]"
        )
    if run is None:
        output = run_basket(markets, strategies, venue, curves=True, detail=detail or None)
    else:
        output = run(markets, strategies, venue)
    if status is not None:
        status.print("[dim]path bracket: the basket under the other intrabar path rules ...[/dim]")
    stats = basket_stats(output, markets, strategies, venue, detail, notes)
    return BasketBacktest(output, markets, strategies, venue, detail, stats)


def _refuse_detail_in_replay(strategies: dict[str, StrategyConfig]) -> None:
    """A replay (live's basket session) steps closed bars only: no symbol may ask for detail bars."""
    for symbol, strat in strategies.items():
        if strat.backtest.detail_timeframe is not None:
            raise GridctlError(
                f"{symbol}: backtest.detail_timeframe {strat.backtest.detail_timeframe}: a replay steps "
                "closed bars as live does, without detail bars (unset it)"
            )


def load_basket_markets(
    strategies: dict[str, StrategyConfig],
    venue: VenueConfig,
    data_dir: Path,
    window: tuple[str, str, int | None, int | None],
) -> dict[str, Market]:
    """Every symbol's stored bars over ``window`` (exchange, timeframe, start ms, end ms), in basket
    order, each checked for its regime warm-up and for its rung notional over its price range."""
    from gridctl.configs.crosscheck import check_notional_in_range
    from gridctl.data.market import load_market
    from gridctl.engine.regime import warmup_bars

    exchange, timeframe, start_ms, end_ms = window
    markets: dict[str, Market] = {}
    problems: list[str] = []  # every symbol's, one line each (not only the first symbol's)
    for symbol, strat in strategies.items():
        try:
            market = load_market(data_dir, exchange, symbol, timeframe, start_ms, end_ms)
            regime = strat.regime  # a symbol's overrides may change its warm-up
            warmup = warmup_bars(regime.adx_len, regime.ema_slow, regime.atr_len)
            if len(market.ts) < warmup:
                raise GridctlError(
                    f"{exchange} {symbol} {timeframe}: only {len(market.ts):,} bar(s) in the selected range, "
                    f"fewer than the strategy's regime warm-up of {warmup} bars"
                    "; choose a longer --start/--end range"
                )
            low, high = float(np.nanmin(market.low)), float(np.nanmax(market.high))
            check_notional_in_range(strat, venue, low, high, f"{exchange} {symbol} {timeframe}")
        except GridctlError as err:
            problems.append(str(err))
            continue
        markets[symbol] = market
    if problems:
        raise GridctlError("\nerror: ".join(problems))
    return markets


def load_basket_detail(
    strategies: dict[str, StrategyConfig],
    markets: dict[str, Market],
    data_dir: Path,
    window: tuple[str, str, int | None, int | None],
    status: Console | None = None,
) -> tuple[dict[str, Market], list[str]]:
    """The detail bars (``backtest.detail_timeframe``) of every symbol whose store holds them over its
    bars, and data warnings for the others; a symbol without them walks its own OHLC (its strategy in
    ``strategies`` is replaced by one without a detail timeframe)."""
    from gridctl.data.market import load_market
    from gridctl.data.store import coverage

    exchange, timeframe = window[:2]
    detail: dict[str, Market] = {}
    notes: list[str] = []
    detail_tf = next(iter(strategies.values())).backtest.detail_timeframe  # an account setting
    if detail_tf is None:
        return detail, notes
    for symbol, market in markets.items():
        first, end = int(market.ts[0]), int(market.ts[-1]) + market.bar_ms
        held = [(a, b) for a, b in coverage(data_dir, exchange, symbol, detail_tf) if a < end and b >= first]
        if held:
            if status is not None:
                status.print(f"[dim]loading {symbol} {detail_tf} detail bars ...[/dim]")
            detail[symbol] = load_market(data_dir, exchange, symbol, detail_tf, first, end)
        else:
            own = strategies[symbol]
            strategies[symbol] = own.model_copy(
                update={"backtest": own.backtest.model_copy(update={"detail_timeframe": None})}
            )
            notes.append(
                f"{exchange} {symbol}: no {detail_tf} bars stored in the window; it walks its own "
                f"{timeframe} OHLC (detail for {', '.join(detail) or 'no symbol'} so far)"
            )
    return detail, notes


def _aligned(market: Market, ts: np.ndarray) -> Market:
    """``market``'s bars at the times ``ts`` (the basket's aligned rows): NaN where it has no bar."""
    idx = np.searchsorted(market.ts, ts)
    inside = idx < len(market.ts)
    hit = np.zeros(len(ts), dtype=bool)
    hit[inside] = market.ts[idx[inside]] == ts[inside]
    cols = {}
    for name in ("open", "high", "low", "close", "volume"):
        values = np.full(len(ts), np.nan)
        values[hit] = getattr(market, name)[idx[hit]]
        cols[name] = values
    return dataclasses.replace(market, ts=np.asarray(ts, dtype=np.int64), **cols)


def contribution_curve(run: Any, bar_ms: int, initial: float) -> np.ndarray:
    """A symbol's equity rows with ``equity`` / ``wallet_balance`` replaced by its contribution curve.

    wallet = initial + cumulative (realized PnL - fee) of its fills + its funding amounts, each booked
    in the row of the bar it happened in; equity = wallet + the symbol's own unrealized PnL.
    """
    eq = run.equity.copy()
    n = len(eq)
    if n == 0:
        return eq
    ends = eq["ts"] + bar_ms  # a fill or settlement at t belongs to the bar whose close is after t

    def booked(ts: np.ndarray, amount: np.ndarray) -> np.ndarray:
        rows = np.minimum(np.searchsorted(ends, ts, side="right"), n - 1)
        return np.bincount(rows, weights=amount, minlength=n)[:n]

    f, fu = run.fills, run.funding
    cash = booked(f["ts"], f["realized_pnl"] - f["fee"]) + booked(fu["ts"], fu["amount"])
    wallet = initial + np.cumsum(cash)
    eq["wallet_balance"] = wallet
    eq["equity"] = wallet + eq["unrealized_pnl"]
    return eq


def _by_account_row(account_ts: np.ndarray, ts: np.ndarray, values: np.ndarray, fill: float) -> np.ndarray:
    """``values`` (one per row at times ``ts``) placed on the account's rows; ``fill`` where absent."""
    out = np.full(len(account_ts), fill, dtype=np.float64)
    idx = np.searchsorted(account_ts, ts)
    ok = idx < len(account_ts)
    ok[ok] = account_ts[idx[ok]] == ts[ok]
    out[idx[ok]] = values[ok]
    return out


def basket_stats(
    output: BasketOutput,
    markets: dict[str, Market],
    strategies: dict[str, StrategyConfig],
    venue: VenueConfig,
    detail: dict[str, Market] | None = None,
    notes: list[str] | None = None,
) -> dict[str, Any]:
    """``{"basket", "account": {...}, "symbols": {symbol: {...}}}``: the same stat names as a single run.

    ``path_bracket`` of the account and of every symbol come from the same basket runs, one per
    intrabar path rule (``basket_path_brackets``).
    """
    first = next(iter(strategies.values()))
    acc_ts = np.asarray(output.account_equity["ts"], dtype=np.int64)
    per: dict[str, dict[str, Any]] = {}
    paths = SymbolPaths(np.zeros(len(acc_ts)), np.zeros(len(acc_ts), dtype=bool), [], 0.0)
    for symbol, run in output.per_symbol.items():
        per[symbol] = symbol_stats(run, markets[symbol], strategies[symbol], venue, acc_ts, paths)
    a = account_stats(output, markets, first, venue, per, paths, notes or [])
    # The detail timeframe any symbol walked (symbols without stored detail bars run without).
    walked = [strategies[s].backtest.detail_timeframe for s in (detail or {})]
    a["assumptions"]["detail_timeframe"] = walked[0] if walked else None
    a["path_bracket"], brackets = basket_path_brackets(output, markets, strategies, venue, detail or None)
    for symbol, bracket in brackets.items():
        per[symbol]["path_bracket"] = bracket
    return {
        "basket": list(per),
        "strategy": a["strategy"],
        "venue": a["venue"],
        "timeframe": a["timeframe"],
        "account": a,
        "symbols": per,
    }


@dataclass
class SymbolPaths:
    """What the account's stats gather from the symbols, one account row each where a row applies:
    ``adverse`` sums every symbol's (intrabar worst point - close) equity, ``exposed`` marks rows where
    any symbol holds a position; ``lots`` each symbol's closed-lot PnL; ``maker`` its maker fills."""

    adverse: np.ndarray
    exposed: np.ndarray
    lots: list[np.ndarray]
    maker: float


def symbol_stats(
    run: Any,
    raw: Market,
    strategy: StrategyConfig,
    venue: VenueConfig,
    acc_ts: np.ndarray,
    paths: SymbolPaths,
) -> dict[str, Any]:
    """One symbol's stats on its contribution curve (``contribution_curve``); adds what the account
    needs from it to ``paths``."""
    initial = float(strategy.backtest.initial_balance)
    curve = contribution_curve(run, raw.bar_ms, initial)
    aligned = _aligned(raw, curve["ts"])
    view = SimpleNamespace(
        fills=run.fills, funding=run.funding, events=run.events, equity=curve, summary=run.summary,
        meta=run.meta,
    )  # fmt: skip
    s = compute_stats(view, aligned, strategy, venue)
    # Bars and the window of the symbol's own data, not of the basket's aligned rows.
    s["bars"] = len(raw.ts)
    s["data_start"] = iso_time(float(raw.ts[0]))
    s["data_end"] = iso_time(float(raw.ts[-1] + raw.bar_ms))
    s["pnl"] = s["final_equity"] - initial
    s["equity_basis"] = "contribution: initial balance + realized PnL - fees + funding + unrealized PnL"
    paths.lots.append(closed_lot_pnl(run.fills))
    n = len(curve)
    worst = intrabar_worst_equity(curve, aligned.high[:n], aligned.low[:n], aligned.close[:n])
    paths.adverse += _by_account_row(acc_ts, curve["ts"], worst - curve["equity"], 0.0)
    held = (curve["long_qty"] > 0.0) | (curve["short_qty"] > 0.0)
    paths.exposed |= _by_account_row(acc_ts, curve["ts"], held.astype(np.float64), 0.0) > 0.0
    paths.maker += (s["maker_share_pct"] or 0.0) / 100.0 * s["n_fills"]
    return s


def account_stats(
    output: BasketOutput,
    markets: dict[str, Market],
    first: StrategyConfig,
    venue: VenueConfig,
    per: dict[str, dict[str, Any]],
    paths: SymbolPaths,
    notes: list[str],
) -> dict[str, Any]:
    """The account's stats: ``compute_stats`` on the wallet's equity rows, ledger figures summed or
    pooled over the symbols' stats ``per``, the intrabar drawdown with every symbol's adverse extreme;
    ``notes`` are data warnings of the run (detail bars a symbol lacks)."""
    acc = output.account_equity
    initial = float(first.backtest.initial_balance)
    rows = np.zeros(len(acc), dtype=EQUITY_DTYPE)
    rows["ts"] = acc["ts"]
    for name in ("equity", "wallet_balance", "unrealized_pnl", "state", "margin_ratio"):
        rows[name] = acc[name]
    report = ValidationReport()
    for m in markets.values():
        report.gap_count += m.report.gap_count
        report.missing_bars += m.report.missing_bars
        report.warnings += m.report.warnings
    report.warnings += notes
    nan = np.full(len(acc), np.nan)
    account_market = dataclasses.replace(
        next(iter(markets.values())), ts=rows["ts"], open=nan, high=nan, low=nan, close=nan, volume=nan,
        report=report,
    )  # fmt: skip
    empty = SimpleNamespace(
        fills=np.zeros(0, FILL_DTYPE), funding=np.zeros(0, FUNDING_DTYPE), events=np.zeros(0, EVENT_DTYPE),
        equity=rows, summary=output.summary, meta={},
    )  # fmt: skip
    a = compute_stats(empty, account_market, first, venue)
    for name in SUMMED:
        a[name] = sum(s[name] for s in per.values())
    for name in COUNTED:
        a[name] = _sum_counts(s[name] for s in per.values())
    a["assumptions"]["funding_mark_source"] = _sum_counts(
        s["assumptions"]["funding_mark_source"] for s in per.values()
    )
    a["assumptions"]["exchange_rules"] = "; ".join(
        f"{symbol}: {s['assumptions']['exchange_rules']}" for symbol, s in per.items()
    )
    # A symbol's own warnings (its detail bars' fallback names no symbol) are the account's too.
    warned = a["assumptions"]["data_warnings"]
    warned += [
        f"{symbol}: {w}"
        for symbol, s in per.items()
        for w in s["assumptions"]["data_warnings"]
        if w not in warned
    ]
    pooled = np.concatenate(paths.lots) if paths.lots else np.zeros(0)
    gross_profit = float(pooled[pooled > 0.0].sum())
    gross_loss = float(-pooled[pooled < 0.0].sum())
    a["profit_factor"] = gross_profit / gross_loss if gross_loss > 0.0 else None
    a["win_rate_pct"] = float((pooled > 0.0).sum() / len(pooled) * 100.0) if len(pooled) else None
    a["maker_share_pct"] = paths.maker / a["n_fills"] * 100.0 if a["n_fills"] else None
    a["exposure_pct"] = float(paths.exposed.sum() / len(acc) * 100.0) if len(acc) else 0.0
    worst = rows["equity"] + paths.adverse
    a["max_drawdown_intrabar_pct"] = intrabar_drawdown_pct(rows["equity"], worst, initial)
    a["liquidated"] = any(s["liquidated"] for s in per.values())
    a["liquidated_at"] = min((s["liquidated_at"] for s in per.values() if s["liquidated_at"]), default=None)
    a["halted_at"] = min((s["halted_at"] for s in per.values() if s["halted_at"]), default=None)
    a["symbol"] = ", ".join(per)
    return a


def _sum_counts(counts: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in counts:
        for key, value in c.items():
            out[key] = out.get(key, 0) + value
    return dict(sorted(out.items()))


#: What a symbol's ``path_bracket`` is (stats.json, the CLI summary and the report say it).
SYMBOL_BRACKET_MEANING = (
    "the symbol's PnL within the whole basket run under each intrabar path rule (one account run per "
    "rule; not the symbol run alone); worst / best are this symbol's min / max PnL over the rules and "
    "name the rules that give it: the account's worst rule need not be each symbol's worst"
)


def basket_path_brackets(
    output: BasketOutput,
    markets: dict[str, Market],
    strategies: dict[str, StrategyConfig],
    venue: VenueConfig,
    detail: dict[str, Market] | None = None,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The account's path bracket (``research.stats.path_bracket`` for a basket) and each symbol's.

    ``output`` is the run under the configured rule; the other rules run the whole basket again
    without curves (same detail bars). The account's entries read each run's account summary; a
    symbol's read the same run's summary of that symbol (``SYMBOL_BRACKET_MEANING``).
    """
    from gridctl.configs.overrides import apply_overrides
    from gridctl.engine.basket import run_basket

    configured = next(iter(strategies.values())).backtest.intrabar_path
    runs = {configured: output}
    for rule in BRACKET_RULES:
        if rule != configured:
            changed = {
                s: apply_overrides(strat, venue, {"backtest.intrabar_path": rule})[0]
                for s, strat in strategies.items()
            }
            runs[rule] = run_basket(markets, changed, venue, curves=False, detail=detail)
    initial = float(next(iter(strategies.values())).backtest.initial_balance)
    account = _account_bracket({rule: runs[rule].summary for rule in BRACKET_RULES}, configured, initial)
    symbols = {
        symbol: symbol_bracket(
            {rule: runs[rule].per_symbol[symbol].summary for rule in BRACKET_RULES}, configured, initial
        )
        for symbol in output.per_symbol
    }
    return account, symbols


def _rules_at(values: dict[str, float], target: float) -> list[str]:
    """The rules (``BRACKET_RULES`` order) whose value is ``target``."""
    return [rule for rule in BRACKET_RULES if values[rule] == target]


def _account_bracket(
    summaries: dict[str, dict[str, float]], configured: str, initial: float
) -> dict[str, Any]:
    """The account's entries per rule (its ``pnl``, final equity - initial balance, the figures of
    ``research.stats.path_bracket``, and when the drawdown halt or a liquidation stopped every symbol:
    ``halted_at`` / ``liquidated_at``, null if never), worst / best of each figure, and the rules of the
    worst / best return (``return_rules``)."""

    def entry(row: dict[str, float]) -> dict[str, float]:
        return {
            "pnl": float(row.get("final_equity", np.nan)) - initial,
            "total_return_pct": float(row.get("total_return_pct", np.nan)),
            **{name: float(row.get(name, np.nan)) for name in BRACKET_DRAWDOWNS},
            "n_fills": int(row.get("n_fills", 0)),
            "halted_at": iso_time(float(row.get("halted_ts", np.nan))),
            "liquidated_at": iso_time(float(row.get("liquidated_ts", np.nan))),
        }

    out: dict[str, Any] = {"rule": configured}
    for rule in BRACKET_RULES:
        out[rule] = entry(summaries[rule])
    out["configured"] = out[configured]
    returns = {rule: out[rule]["total_return_pct"] for rule in BRACKET_RULES}
    out["worst"] = {"total_return_pct": min(returns.values())}
    out["best"] = {"total_return_pct": max(returns.values())}
    for name in BRACKET_DRAWDOWNS:
        out["worst"][name] = max(out[rule][name] for rule in BRACKET_RULES)
        out["best"][name] = min(out[rule][name] for rule in BRACKET_RULES)
    out["worst"]["return_rules"] = _rules_at(returns, out["worst"]["total_return_pct"])
    out["best"]["return_rules"] = _rules_at(returns, out["best"]["total_return_pct"])
    return out


def symbol_bracket(summaries: dict[str, dict[str, float]], configured: str, initial: float) -> dict[str, Any]:
    """One symbol's path bracket from its summaries in the account runs, one per rule
    (``SYMBOL_BRACKET_MEANING``).

    Each rule's entry: ``pnl`` (the symbol's final equity - initial balance: realized PnL - fees +
    funding + unrealized), ``total_return_pct`` (that PnL in % of the account's initial balance: the
    symbol's share of the account's return) and ``n_fills``; ``worst`` / ``best`` the lowest / highest
    PnL over the rules with ``rules``, every rule that gives it.
    """
    out: dict[str, Any] = {"meaning": SYMBOL_BRACKET_MEANING, "rule": configured}
    for rule in BRACKET_RULES:
        pnl = float(summaries[rule]["final_equity"]) - initial
        out[rule] = {
            "pnl": pnl,
            "total_return_pct": pnl / initial * 100.0,
            "n_fills": int(summaries[rule]["n_fills"]),
        }
    out["configured"] = out[configured]
    pnls = {rule: out[rule]["pnl"] for rule in BRACKET_RULES}
    for side, pick in (("worst", min), ("best", max)):
        rules = _rules_at(pnls, pick(pnls.values()))
        out[side] = {
            "pnl": out[rules[0]]["pnl"],
            "total_return_pct": out[rules[0]]["total_return_pct"],
            "rules": rules,
        }
    return out
