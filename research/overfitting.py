"""Overfitting diagnostics for optimisation studies: the deflated Sharpe ratio and the probability of
backtest overfitting. Both take per-period (not annualised) quantities.

* Deflated Sharpe ratio, Bailey and Lopez de Prado (2014), "The Deflated Sharpe Ratio: Correcting for
  Selection Bias, Backtest Overfitting and Non-Normality", J. Portfolio Management 40(5):

      SR0 = sqrt(V[SR]) * ((1 - g) * Z^-1(1 - 1/N) + g * Z^-1(1 - 1/(N e)))      (expected max of N trials)
      DSR = Z((SR - SR0) * sqrt(T - 1) / sqrt(1 - skew * SR + (kurt - 1) / 4 * SR^2))

  with g the Euler-Mascheroni constant, Z the standard normal CDF, T the number of returns, and ``kurt``
  the non-excess kurtosis (3 for normal returns).
* Probability of backtest overfitting by combinatorially symmetric cross-validation (CSCV), Bailey,
  Borwein, Lopez de Prado and Zhu (2015), "The Probability of Backtest Overfitting", J. Computational
  Finance 20(4): split the T x N matrix of returns into S row blocks; for every choice of S/2 blocks as
  in-sample (the rest out-of-sample), take the in-sample best trial n* (by Sharpe ratio), its relative rank
  w = rank_oos(n*) / (N + 1) among the out-of-sample Sharpe ratios, and the logit l = ln(w / (1 - w)).
  PBO is the share of splits with l <= 0, i.e. whose in-sample winner ranks at or below the
  out-of-sample median.
"""

from __future__ import annotations

import itertools
import math
from statistics import NormalDist

import numpy as np

from gridctl.configs.errors import GridctlError

EULER_GAMMA = 0.5772156649015329
_Z = NormalDist()


def expected_max_sharpe(trials_sharpe_variance: float, n_trials: int) -> float:
    """SR0: the Sharpe ratio the best of ``n_trials`` skill-less trials reaches by luck (per period)."""
    if n_trials < 2:
        return 0.0
    a = _Z.inv_cdf(1.0 - 1.0 / n_trials)
    b = _Z.inv_cdf(1.0 - 1.0 / (n_trials * math.e))
    return math.sqrt(max(trials_sharpe_variance, 0.0)) * ((1.0 - EULER_GAMMA) * a + EULER_GAMMA * b)


def deflated_sharpe_ratio(
    sharpe: float,
    trials_sharpe_variance: float,
    n_trials: int,
    n_obs: int,
    skew: float,
    kurtosis: float,
) -> float:
    """Probability that the true Sharpe ratio exceeds what ``n_trials`` trials would reach by luck.

    ``sharpe`` is the selected trial's per-period Sharpe ratio over ``n_obs`` returns with the given skew
    and non-excess ``kurtosis``; ``trials_sharpe_variance`` is the variance of the per-period Sharpe ratios
    across all trials of the study.
    """
    if n_obs < 2:
        raise GridctlError(f"deflated_sharpe_ratio: needs at least 2 observations, got {n_obs}")
    if n_trials < 1:
        raise GridctlError(f"deflated_sharpe_ratio: needs at least 1 trial, got {n_trials}")
    sr0 = expected_max_sharpe(trials_sharpe_variance, n_trials)
    denom = 1.0 - skew * sharpe + (kurtosis - 1.0) / 4.0 * sharpe * sharpe
    if not denom > 0.0:
        raise GridctlError(
            f"deflated_sharpe_ratio: skew {skew} and kurtosis {kurtosis} give a non-positive variance term"
        )
    return _Z.cdf((sharpe - sr0) * math.sqrt(n_obs - 1) / math.sqrt(denom))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..N (ascending), ties sharing their average rank."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(values.shape[0])
    sorted_vals = values[order]
    i = 0
    while i < values.shape[0]:
        j = i
        while j + 1 < values.shape[0] and sorted_vals[j + 1] == sorted_vals[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def _sharpe_from_sums(s1: np.ndarray, s2: np.ndarray, n: int) -> np.ndarray:
    mean = s1 / n
    var = np.maximum(s2 / n - mean * mean, 0.0) * n / (n - 1)
    std = np.sqrt(var)
    with np.errstate(divide="ignore", invalid="ignore"):
        sr = np.where(std > 0, mean / np.where(std > 0, std, 1.0), np.sign(mean) * np.inf)
    return np.nan_to_num(sr, nan=0.0)


def cscv_logits(returns: np.ndarray, n_blocks: int = 16) -> np.ndarray:
    """The logit of the in-sample winner's out-of-sample relative rank, one per CSCV split."""
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 2:
        raise GridctlError(f"returns must be a (T, N) array, got shape {r.shape}")
    t, n = r.shape
    if n < 2:
        raise GridctlError(f"probability_of_backtest_overfitting: needs at least 2 trials, got {n}")
    if n_blocks < 2 or n_blocks % 2:
        raise GridctlError(f"n_blocks must be an even number >= 2, got {n_blocks}")
    if t < 2 * n_blocks:
        raise GridctlError(f"{t} periods are too few for {n_blocks} blocks (need at least {2 * n_blocks})")
    if not np.all(np.isfinite(r)):
        raise GridctlError("returns contain NaN or inf")
    size = t // n_blocks
    r = r[t - size * n_blocks :]  # drop the oldest rows that do not fill a block
    blocks = r.reshape(n_blocks, size, n)
    s1, s2 = blocks.sum(axis=1), (blocks * blocks).sum(axis=1)  # (S, N)
    total1, total2 = s1.sum(axis=0), s2.sum(axis=0)
    half = n_blocks // 2
    rows = size * half
    logits = []
    for chosen in itertools.combinations(range(n_blocks), half):
        idx = list(chosen)
        is1, is2 = s1[idx].sum(axis=0), s2[idx].sum(axis=0)
        sr_is = _sharpe_from_sums(is1, is2, rows)
        sr_oos = _sharpe_from_sums(total1 - is1, total2 - is2, rows)
        best = int(np.argmax(sr_is))
        w = _average_ranks(sr_oos)[best] / (n + 1)
        logits.append(math.log(w / (1.0 - w)))
    return np.asarray(logits)


def probability_of_backtest_overfitting(returns: np.ndarray, n_blocks: int = 16) -> float:
    """PBO by CSCV: share of splits whose in-sample best trial ranks at or below the out-of-sample median.

    ``returns`` is a (T, N) array of per-period returns of N trials; performance is the Sharpe ratio.
    """
    return float(np.mean(cscv_logits(returns, n_blocks) <= 0.0))
