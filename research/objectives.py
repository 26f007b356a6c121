"""Trial objectives and hard limits, computed from the batch driver's summary rows.

Everything here reads one ``engine.records.SUMMARY_DTYPE`` row (the batch and ``run_single`` produce
the same row for the same parameters), so a trial's value can be recomputed exactly from a backtest of
its exported config.

Metric conventions (all from the kernel's online accumulators):
- ``sharpe``: annualised daily Sharpe (sqrt(365)); undefined (NaN) counts as the lower bound.
- ``profit_factor``: gross profit / gross loss of exits; no losses with profit -> the upper bound,
  no exits -> the lower bound.
- ``calmar``: CAGR over the bars run (365-day years) / ``max_drawdown_bar_close_pct``; no drawdown ->
  the upper bound.
- ``max_drawdown_bar_close_pct``: the kernel's maximum drawdown of bar-close equity in percent (the
  summary row's field of that name; gridctl's other drawdowns are ``max_drawdown_daily_close_pct``
  and ``max_drawdown_intrabar_pct``).
- ``trades``: closed lots (exit fills).

The composite score (the audited bot's) is ``sum(weight_m * clip((m - lo_m) / (hi_m - lo_m), 0, 1))``
with the profile's FIXED bounds, so a score means the same in every study using that profile.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from gridctl.research.profiles import LimitsSpec, ObjectiveSpec

DAY_MS = 86_400_000
#: Metric holding the worse bar-close max drawdown of the high_first / low_first path rules (set by
#: the optimizer when ``limits.max_worst_path_drawdown_pct`` is given).
WORST_PATH_METRIC = "worst_path_max_drawdown_bar_close_pct"
#: Names of every Optuna constraint, in the order ``limit_values`` returns those a profile sets
#: (``limit_names``).
CONSTRAINT_NAMES = (
    "min_trades",
    "max_drawdown_bar_close_pct",
    "liquidation",
    "max_worst_path_drawdown_pct",
    "max_path_return_spread_pct",
    "max_same_bar_profit_share_pct",
)
#: Per-window metrics the optional limits read (set by research.optimize.evaluation.window_metrics).
SPREAD_METRIC = "path_return_spread_pct"
SAME_BAR_METRIC = "same_bar_profit_share_pct"


def limit_names(limits: LimitsSpec) -> list[str]:
    """The constraint names of ``limit_values(..., limits)``, in its order."""
    optional = {
        "max_worst_path_drawdown_pct": limits.max_worst_path_drawdown_pct,
        "max_path_return_spread_pct": limits.max_path_return_spread_pct,
        "max_same_bar_profit_share_pct": limits.max_same_bar_profit_share_pct,
    }
    return [n for n in CONSTRAINT_NAMES if n not in optional or optional[n] is not None]


def row_metrics(row: np.void | dict[str, float], bar_ms: int) -> dict[str, float]:
    """Headline metrics of one summary row (NaN/inf kept as they are; scoring decides)."""
    final = float(row["final_equity"])
    total = float(row["total_return_pct"])
    initial = final / (1.0 + total / 100.0) if total > -100.0 else math.nan
    years = float(row["bars"]) * bar_ms / DAY_MS / 365.0
    if final <= 0.0 or not math.isfinite(initial):
        cagr = -100.0
    elif years <= 0.0:
        cagr = 0.0
    else:
        cagr = ((final / initial) ** (1.0 / years) - 1.0) * 100.0
    dd = float(row["max_drawdown_bar_close_pct"])
    calmar = cagr / dd if dd > 0.0 else (math.inf if cagr > 0 else math.nan)
    return {
        "sharpe": float(row["sharpe"]),
        "profit_factor": float(row["profit_factor"]),
        "calmar": float(calmar),
        "max_drawdown_bar_close_pct": dd,
        "total_return_pct": total,
        "cagr_pct": float(cagr),
        "trades": float(row["n_exits"]),
        "liquidated": float(row["liquidated"]),
    }


def _norm(value: float, lo: float, hi: float) -> float:
    if math.isnan(value):
        return 0.0
    return min(max((value - lo) / (hi - lo), 0.0), 1.0)


def composite_score(metrics: dict[str, float], spec: ObjectiveSpec) -> float:
    """The composite score of a metrics dict (``drawdown`` is ``max_drawdown_bar_close_pct``)."""
    assert spec.composite is not None
    total = 0.0
    for name, weight in spec.composite.weights.items():
        lo, hi = spec.composite.bounds[name]
        value = metrics["max_drawdown_bar_close_pct"] if name == "drawdown" else metrics[name]
        if name == "drawdown" and math.isnan(value):
            value = hi
        total += weight * _norm(value, lo, hi)
    return total


def _finite(value: float, fallback: float) -> float:
    return value if math.isfinite(value) else fallback


def objective_values(metrics: dict[str, float], spec: ObjectiveSpec) -> tuple[float, ...]:
    """The value(s) Optuna is told for one window's metrics (directions: ``spec.directions``)."""
    if spec.kind == "composite":
        return (composite_score(metrics, spec),)
    if spec.kind == "sharpe":
        return (_finite(metrics["sharpe"], -10.0),)
    if spec.kind == "calmar":
        calmar = metrics["calmar"]
        return (-10.0 if math.isnan(calmar) else min(calmar, 100.0),)
    if spec.kind == "total_return":
        return (metrics["total_return_pct"],)
    return (metrics["total_return_pct"], metrics["max_drawdown_bar_close_pct"])


def combine_windows(values: Sequence[tuple[float, ...]], spec: ObjectiveSpec) -> tuple[float, ...]:
    """One value per objective over several walk-forward windows: the mean (drawdown: the worst)."""
    arr = np.asarray(values, dtype=np.float64)
    if spec.kind == "return_drawdown":
        return (float(arr[:, 0].mean()), float(arr[:, 1].max()))
    return tuple(float(v) for v in arr.mean(axis=0))


def limit_values(windows: Sequence[dict[str, float]], limits: LimitsSpec) -> list[float]:
    """Optuna constraint values (<= 0 means satisfied) over the scored windows.

    Order (``limit_names``): minimum trades (summed over windows), maximum drawdown (worst window),
    liquidation (any window), then, when the profile sets them, the worst drawdown over the intrabar
    path rules, the return spread over the rules and the same-bar share of gross profit (worst window).
    """
    trades = sum(w["trades"] for w in windows)
    worst_dd = max(w["max_drawdown_bar_close_pct"] for w in windows)
    liquidated = max(w["liquidated"] for w in windows)
    out = [
        float(limits.min_trades - trades),
        float(worst_dd - limits.max_drawdown_bar_close_pct),
        float(liquidated - 0.5) if not limits.allow_liquidation else -1.0,
    ]
    if limits.max_worst_path_drawdown_pct is not None:
        worst = max(w[WORST_PATH_METRIC] for w in windows)
        out.append(float(worst - limits.max_worst_path_drawdown_pct))
    if limits.max_path_return_spread_pct is not None:
        spread = max(w[SPREAD_METRIC] for w in windows)
        out.append(float(spread - limits.max_path_return_spread_pct))
    if limits.max_same_bar_profit_share_pct is not None:
        share = max(w[SAME_BAR_METRIC] for w in windows)
        out.append(float(share - limits.max_same_bar_profit_share_pct))
    return out


def feasible(constraints: Sequence[float]) -> bool:
    """True when every constraint value is <= 0."""
    return all(c <= 0.0 for c in constraints)
