"""Small real Optuna studies over a small real market, for the study report and notebook tests.

Trials are asked in batches and scored with ``engine.batch.run_batch`` (the optimizer's own driver);
each trial then carries in-sample / out-of-sample metrics (the first and last half of the bars) and
its daily returns from a full ``run_single`` backtest, as user attrs ``is_metrics``, ``oos_metrics``
and ``daily_returns``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from gridctl.configs.loader import load_strategy, load_venue
from gridctl.configs.overrides import apply_overrides
from gridctl.data.market import Market, load_market, market_from_arrays
from gridctl.data.sample import SAMPLE_EXCHANGE, SAMPLE_SYMBOL, SAMPLE_TIMEFRAME, write_sample
from gridctl.engine.batch import run_batch
from gridctl.engine.run import run_single
from gridctl.research.stats import daily_equity, daily_returns

DAYS = 35
STRATEGY = "default"
VENUE = "binance_futures"
SPACE = {"grid.grid_step_bps": (20.0, 80.0), "exit.tp_steps": (1, 5)}


def sample_market(data_dir: Path, days: int = DAYS) -> Market:
    """``days`` of the bundled sample market, written to ``data_dir`` and loaded back."""
    write_sample(data_dir, days=days)
    return load_market(data_dir, SAMPLE_EXCHANGE, SAMPLE_SYMBOL, SAMPLE_TIMEFRAME)


def _metrics(row: np.void) -> dict[str, float]:
    return {k: float(row[k]) for k in ("final_equity", "max_drawdown_bar_close_pct", "n_entries", "sharpe")}


def _suggest(trial: optuna.Trial) -> dict[str, Any]:
    lo, hi = SPACE["grid.grid_step_bps"]
    tlo, thi = SPACE["exit.tp_steps"]
    return {
        "grid.grid_step_bps": trial.suggest_float("grid.grid_step_bps", lo, hi),
        "exit.tp_steps": trial.suggest_int("exit.tp_steps", tlo, thi),
    }


def build_study(
    market: Market,
    n_trials: int,
    storage: Any = None,
    name: str = "probe",
    multi: bool = False,
    returns: bool = True,
    seed: int = 3,
) -> optuna.Study:
    """A study of ``n_trials`` real backtests: maximise the final equity (and, with ``multi``, minimise
    the max drawdown)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    strategy, venue = load_strategy(STRATEGY), load_venue(VENUE)
    directions = ["maximize", "minimize"] if multi else ["maximize"]
    study = optuna.create_study(
        study_name=name, storage=storage, directions=directions, sampler=optuna.samplers.RandomSampler(seed)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["final_equity", "max_drawdown_bar_close_pct"] if multi else ["final_equity"])
    trials = [study.ask() for _ in range(n_trials)]
    sets = [_suggest(t) for t in trials]
    half = len(market.ts) // 2
    whole = run_batch(market, strategy, venue, sets)
    ins = run_batch(window(market, 0, half), strategy, venue, sets)
    oos = run_batch(window(market, half, len(market.ts)), strategy, venue, sets)
    for trial, ov, row, row_is, row_oos in zip(trials, sets, whole, ins, oos, strict=True):
        trial.set_user_attr("is_metrics", _metrics(row_is))
        trial.set_user_attr("oos_metrics", _metrics(row_oos))
        if returns:
            s, v = apply_overrides(strategy, venue, ov)
            run = run_single(market, s, v, curves=True)
            _, eq = daily_equity(run.equity["ts"], run.equity["equity"])
            trial.set_user_attr("daily_returns", daily_returns(eq, 10_000.0).tolist())
        values = [float(row["final_equity"])]
        if multi:
            values.append(float(row["max_drawdown_bar_close_pct"]))
        study.tell(trial, values)
    return study


def window(market: Market, lo: int, hi: int) -> Market:
    """Bars ``[lo, hi)`` of ``market`` with the funding settlements around them."""
    first, last = int(market.ts[lo]), int(market.ts[hi - 1]) + market.bar_ms
    keep = (market.funding_ts >= first - 8 * 3_600_000) & (market.funding_ts <= last + 8 * 3_600_000)
    return market_from_arrays(
        market.symbol,
        market.timeframe,
        market.ts[lo:hi],
        market.open[lo:hi],
        market.high[lo:hi],
        market.low[lo:hi],
        market.close[lo:hi],
        market.volume[lo:hi],
        market.funding_ts[keep],
        market.funding_rate[keep],
        market.funding_mark[keep],
        source="test window",
    )
