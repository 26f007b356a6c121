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

``overfitting_report`` is the one place both are computed for a study (``gridctl study show``, ``--json``,
``gridctl study report`` and the notebook all call it): from the per-period returns of every distinct,
completed, feasible trial, it clusters near-duplicates by the correlation of their returns (average
linkage, cut where the mean correlation between two groups falls below ``CLUSTER_MIN_CORRELATION``),
takes N = the number of clusters and V[SR] = the variance of the Sharpe ratios of the clusters' medoids
(estimated robustly, ``robust_variance``; the sample variance is reported beside it), and deflates
the selected trial's own Sharpe ratio (with its own skew, kurtosis and T). One cluster (N = 1) has no
V[SR] (None) and SR0 = 0: the deflated Sharpe ratio is then the probabilistic Sharpe ratio against 0,
and a note says so; PBO runs CSCV over all
those trials, with as many blocks as the periods allow (at most ``PBO_MAX_BLOCKS``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

import numpy as np

from gridctl.configs.errors import GridctlError

EULER_GAMMA = 0.5772156649015329
_Z = NormalDist()


def expected_max_sharpe(trials_sharpe_variance: float, n_trials: int) -> float:
    """SR0: the Sharpe ratio the best of ``n_trials`` skill-less trials reaches by luck (per period).

    One trial: 0, the expected maximum of one draw of a zero-mean Sharpe ratio is its mean (the
    paper's approximation has Z^-1(0) = -inf there), so the deflated Sharpe ratio is the probabilistic
    Sharpe ratio against 0.
    """
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


#: Trials whose return series correlate at least this much on average (average linkage) count as one
#: independent trial in the deflated Sharpe ratio.
CLUSTER_MIN_CORRELATION = 0.5
#: CSCV uses at most this many blocks (C(16, 8) = 12,870 splits) and at least ``PBO_MIN_BLOCKS``.
PBO_MAX_BLOCKS = 16
PBO_MIN_BLOCKS = 4
#: Every CSCV block holds at least this many periods (a Sharpe ratio needs two).
PBO_MIN_PERIODS_PER_BLOCK = 2


def sharpe_ratios(returns: np.ndarray) -> np.ndarray:
    """Per-period Sharpe ratio (mean / sample standard deviation) of each column; NaN without dispersion."""
    r = np.asarray(returns, dtype=np.float64)
    sd = r.std(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sd > 0.0, r.mean(axis=0) / np.where(sd > 0.0, sd, 1.0), np.nan)


def skew_kurtosis(returns: np.ndarray) -> tuple[float, float]:
    """Sample skewness m3 / m2^1.5 and non-excess kurtosis m4 / m2^2 (3 for normal returns)."""
    r = np.asarray(returns, dtype=np.float64)
    d = r - r.mean()
    m2 = float(np.mean(d * d))
    if not m2 > 0.0:
        raise GridctlError("skew_kurtosis: the returns have no dispersion")
    return float(np.mean(d**3)) / m2**1.5, float(np.mean(d**4)) / m2**2


def correlation_clusters(returns: np.ndarray, min_correlation: float = CLUSTER_MIN_CORRELATION) -> np.ndarray:
    """Cluster label (0..K-1, in order of first member) of each column of ``returns`` (T, N).

    Average-linkage agglomerative clustering on the distance 1 - correlation, cut at
    1 - ``min_correlation``: two groups merge while the mean correlation between their members is at
    least ``min_correlation``. Every column must have dispersion.
    """
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    r = np.asarray(returns, dtype=np.float64)
    n = r.shape[1]
    if n == 1:
        return np.zeros(1, dtype=np.int64)
    if not np.all(r.std(axis=0) > 0.0):
        raise GridctlError("correlation_clusters: a return series has no dispersion")
    corr = np.clip(np.corrcoef(r, rowvar=False), -1.0, 1.0)
    dist = 1.0 - corr
    np.fill_diagonal(dist, 0.0)
    dist = (dist + dist.T) / 2.0
    raw = fcluster(
        linkage(squareform(dist, checks=False), method="average"), 1.0 - min_correlation, "distance"
    )
    first: dict[int, int] = {}
    for label in raw:
        first.setdefault(int(label), len(first))
    return np.asarray([first[int(label)] for label in raw], dtype=np.int64)


def cluster_medoids(returns: np.ndarray, labels: np.ndarray) -> list[int]:
    """Column index of each cluster's medoid: the member with the highest mean correlation to the others
    of its cluster (ties: the first column)."""
    r = np.asarray(returns, dtype=np.float64)
    corr = np.corrcoef(r, rowvar=False) if r.shape[1] > 1 else np.ones((1, 1))
    out = []
    for k in range(int(labels.max()) + 1):
        members = np.flatnonzero(labels == k)
        mean_corr = corr[np.ix_(members, members)].mean(axis=1)
        out.append(int(members[int(np.argmax(mean_corr))]))
    return out


def robust_variance(values: np.ndarray) -> float:
    """(1.4826 * median absolute deviation)^2: the variance of normal values, unmoved by a tail.

    A study's configurations that bleed fees every day or halt after a loss have Sharpe ratios far
    below the rest (a -10 annualised next to a bulk within +-1); the sample variance would let that
    tail set SR0, the luck threshold for the BEST trial. For normal values both agree.
    """
    v = np.asarray(values, dtype=np.float64)
    mad = float(np.median(np.abs(v - np.median(v))))
    return (1.4826 * mad) ** 2


def pbo_blocks(n_periods: int) -> int | None:
    """CSCV blocks for ``n_periods`` returns: the largest even number up to ``PBO_MAX_BLOCKS`` that gives
    each block ``PBO_MIN_PERIODS_PER_BLOCK`` periods; None when fewer than ``PBO_MIN_BLOCKS`` fit."""
    s = min(PBO_MAX_BLOCKS, n_periods // PBO_MIN_PERIODS_PER_BLOCK)
    s -= s % 2
    return s if s >= PBO_MIN_BLOCKS else None


def _add_deflated_sharpe(
    out: dict[str, Any],
    r: np.ndarray,
    sr_all: np.ndarray,
    keep: np.ndarray,
    col: int,
    scale: float,
    min_correlation: float,
) -> None:
    """Fill ``out``'s deflated Sharpe of column ``col`` and its inputs: the trials with dispersion
    (``keep``) clustered by correlation, N = the clusters, V[SR] over the clusters' medoids."""
    t = r.shape[0]
    sr = float(sr_all[col])
    skew, kurt = skew_kurtosis(r[:, col])
    used = r[:, keep]
    labels = correlation_clusters(used, min_correlation)
    medoids = cluster_medoids(used, labels)
    k = len(medoids)
    medoid_sr = sr_all[keep][medoids]
    # one cluster: one Sharpe ratio, no variance across trials (reported as None) and none needed
    sample_variance = float(np.var(medoid_sr, ddof=1)) if k >= 2 else None
    variance = robust_variance(medoid_sr) if k >= 2 else None
    sr0 = expected_max_sharpe(variance or 0.0, k)
    if k == 1:
        out["notes"].append(
            f"N = 1: the {len(keep)} trial(s) used form one correlation cluster, so there is no search to "
            "deflate for: SR0 = 0 (the expected best of one skill-less trial) and the deflated Sharpe "
            "ratio is the probabilistic Sharpe ratio against 0"
        )
    out.update(
        sharpe=sr,
        sharpe_annualised=sr * scale,
        skew=skew,
        kurtosis=kurt,
        clusters=k,
        sharpe_variance=variance,
        sharpe_variance_sample=sample_variance,
        sr0=sr0,
        sr0_annualised=sr0 * scale,
    )
    try:
        out["deflated_sharpe"] = deflated_sharpe_ratio(sr, variance or 0.0, k, t, skew, kurt)
    except GridctlError as err:
        out["notes"].append(f"no deflated Sharpe: {err}")


def _add_pbo(out: dict[str, Any], r: np.ndarray, keep: np.ndarray) -> None:
    """Fill ``out``'s PBO (CSCV over the trials with dispersion), or a note saying why there is none."""
    t = r.shape[0]
    blocks = pbo_blocks(t)
    if len(keep) < 2:
        out["notes"].append(f"PBO needs at least 2 trials with dispersion (have {len(keep)})")
    elif blocks is None:
        need = PBO_MIN_BLOCKS * PBO_MIN_PERIODS_PER_BLOCK
        out["notes"].append(f"not enough data for PBO: {t} periods, CSCV needs at least {need}")
    else:
        out["pbo"] = probability_of_backtest_overfitting(r[:, keep], n_blocks=blocks)
        out["pbo_blocks"] = blocks
        out["pbo_splits"] = math.comb(blocks, blocks // 2)


def overfitting_report(
    returns: np.ndarray,
    numbers: Sequence[int],
    selected: int,
    periods_per_year: float = 365.0,
    min_correlation: float = CLUSTER_MIN_CORRELATION,
) -> dict[str, Any]:
    """Deflated Sharpe ratio of trial ``selected`` and PBO over all trials, with every input stated.

    ``returns`` is (T, N): column j holds the per-period returns of trial ``numbers[j]`` (distinct,
    completed, feasible trials over one window); ``selected`` is the study's winner. Columns without
    dispersion (a trial that never moved its equity) are left out and counted. Sharpe ratios are per
    period throughout; the ``*_annualised`` fields multiply by sqrt(``periods_per_year``) for display.
    """
    r = np.asarray(returns, dtype=np.float64)
    numbers = [int(n) for n in numbers]
    if r.ndim != 2 or r.shape[1] != len(numbers):
        raise GridctlError(f"returns must be (T, {len(numbers)}), got shape {r.shape}")
    if selected not in numbers:
        raise GridctlError(f"the selected trial {selected} is not among the trials with returns")
    if not np.all(np.isfinite(r)):
        raise GridctlError("returns contain NaN or inf")
    t = r.shape[0]
    scale = math.sqrt(periods_per_year)
    sr_all = sharpe_ratios(r) if t >= 2 else np.full(len(numbers), np.nan)
    keep = np.flatnonzero(np.isfinite(sr_all))
    out: dict[str, Any] = {
        "deflated_sharpe": None,
        "pbo": None,
        "selected_trial": selected,
        "periods": t,
        "periods_per_year": periods_per_year,
        "trials_with_returns": len(numbers),
        "trials_without_dispersion": len(numbers) - len(keep),
        "trials_used": len(keep),
        "sharpe": None,
        "sharpe_annualised": None,
        "skew": None,
        "kurtosis": None,
        "clusters": None,
        "cluster_min_correlation": min_correlation,
        "sharpe_variance": None,
        "sharpe_variance_sample": None,
        "sr0": None,
        "sr0_annualised": None,
        "pbo_blocks": None,
        "pbo_splits": None,
        "notes": [],
    }
    col = numbers.index(selected)
    if t < 2 or not math.isfinite(sr_all[col]):
        out["notes"].append(
            f"trial {selected}'s returns have no dispersion over {t} periods: no deflated Sharpe"
        )
    else:
        _add_deflated_sharpe(out, r, sr_all, keep, col, scale, min_correlation)
    _add_pbo(out, r, keep)
    return out
