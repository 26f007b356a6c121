"""research.overfitting against the papers' worked numbers and hand-computed small cases."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from gridctl.configs.errors import GridctlError
from gridctl.research.overfitting import (
    correlation_clusters,
    cscv_logits,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    overfitting_report,
    pbo_blocks,
    probability_of_backtest_overfitting,
)

# Bailey and Lopez de Prado (2014), numerical example: annualised SR 2.5 over 5 years of daily returns
# (T = 1250, 250 days a year), N = 100 trials whose annualised Sharpe ratios have variance 1/2, skew -3,
# kurtosis 10. The paper gives SR0 = 0.1132 per day and DSR = 0.9004.
DAYS = 250
SR = 2.5 / math.sqrt(DAYS)
VAR = 0.5 / DAYS


def test_expected_max_sharpe_matches_the_paper() -> None:
    assert expected_max_sharpe(VAR, 100) == pytest.approx(0.1132, abs=5e-5)


def test_deflated_sharpe_matches_the_paper() -> None:
    assert deflated_sharpe_ratio(SR, VAR, 100, 1250, -3.0, 10.0) == pytest.approx(0.9004, abs=2e-4)


def test_deflated_sharpe_hand_case_normal_returns_one_trial() -> None:
    # One trial: SR0 = 0, so DSR is the probabilistic Sharpe ratio against 0. SR 0.1 per period, T = 101,
    # normal returns: z = 0.1 * 10 / sqrt(1 + 2/4 * 0.01) = 1 / sqrt(1.005) = 0.997509 -> Z(z) = 0.84074.
    assert deflated_sharpe_ratio(0.1, 0.04, 1, 101, 0.0, 3.0) == pytest.approx(0.84074, abs=1e-4)


def test_one_cluster_gives_the_probabilistic_sharpe_against_zero_and_says_so() -> None:
    # Bailey and Lopez de Prado (2014) with N = 1: the expected maximum of one skill-less draw is its
    # mean, 0 (the approximation's Z^-1(1 - 1/N) is -inf there), so SR0 = 0 and DSR = PSR(0).
    # Trial 7 returns r = (2, 0, 1, 3, 2, 0, 1, 3) %: mean 1.5 %, squared deviations sum 1e-3, so the
    # sample variance is 1e-3 / 7 and SR^2 = 2.25e-4 * 7 / 1e-3 = 1.575; deviations +-0.5, +-1.5 % are
    # symmetric (skew 0); m2 = 1.25e-4, m4 = 2.5625e-8, kurtosis 1.64; the variance term is
    # 1 + (1.64 - 1) / 4 * 1.575 = 1.252, z = sqrt(1.575 * 7 / 1.252). Trial 8 is 2 r (correlation 1),
    # trial 9 r plus an uncorrelated +-0.1 % (correlation 0.996): one cluster.
    from gridctl.research.optimize_cli import overfitting_lines

    r = np.array([0.02, 0.0, 0.01, 0.03] * 2)
    wiggle = 0.001 * np.array([1.0, -1.0] * 4)
    rep = overfitting_report(np.column_stack([r, 2 * r, r + wiggle]), [7, 8, 9], 7)
    assert rep["clusters"] == 1 and rep["trials_used"] == 3
    assert rep["sharpe"] == pytest.approx(math.sqrt(1.575), rel=1e-12)
    assert rep["skew"] == pytest.approx(0.0, abs=1e-12) and rep["kurtosis"] == pytest.approx(1.64, rel=1e-12)
    assert rep["sr0"] == 0.0 and rep["sharpe_variance"] is None and rep["sharpe_variance_sample"] is None
    assert rep["deflated_sharpe"] == pytest.approx(NormalDist().cdf(math.sqrt(1.575 * 7 / 1.252)), rel=1e-12)
    assert rep["deflated_sharpe"] == pytest.approx(0.998499, abs=1e-6)
    (note,) = [n for n in rep["notes"] if n.startswith("N = 1")]
    assert "probabilistic Sharpe ratio against 0" in note and "SR0 = 0" in note
    text = " ".join(overfitting_lines(rep))  # what `study show` prints
    assert "one cluster: no V[SR], SR0 0 annualised" in text and note in text


def test_more_trials_deflate_more() -> None:
    values = [deflated_sharpe_ratio(SR, VAR, n, 1250, -3.0, 10.0) for n in (1, 10, 100, 1000)]
    assert values == sorted(values, reverse=True) and values[0] > values[-1]


def test_deflated_sharpe_refuses_bad_input() -> None:
    with pytest.raises(GridctlError, match="observations"):
        deflated_sharpe_ratio(0.1, 0.01, 10, 1, 0.0, 3.0)
    with pytest.raises(GridctlError, match="non-positive"):
        deflated_sharpe_ratio(1.0, 0.01, 10, 100, 5.0, 3.0)


def _two_block_market(a_first_half: float, a_second_half: float) -> np.ndarray:
    # Two trials over 4 periods; each block of 2 periods has a mean and some spread so Sharpe is finite.
    a = [a_first_half + 0.01, a_first_half - 0.01, a_second_half + 0.01, a_second_half - 0.01]
    b = [0.005, -0.005, 0.005, -0.005]  # trial B: mean 0 in every block
    return np.column_stack([a, b])


def test_pbo_hand_case_always_overfit() -> None:
    # A wins block 1 and loses block 2: whichever block is in-sample, A wins it and loses out of sample.
    # N = 2: the loser has rank 1, w = 1/3, logit ln(1/2) < 0, in both of the C(2,1) = 2 splits -> PBO 1.
    r = _two_block_market(0.02, -0.02)
    logits = cscv_logits(r, n_blocks=2)
    assert logits == pytest.approx([math.log(0.5), math.log(0.5)])
    assert probability_of_backtest_overfitting(r, n_blocks=2) == 1.0


def test_pbo_hand_case_never_overfit() -> None:
    # A beats B in both blocks: the in-sample winner also ranks first (w = 2/3, logit ln 2) -> PBO 0.
    r = _two_block_market(0.02, 0.03)
    assert cscv_logits(r, n_blocks=2) == pytest.approx([math.log(2.0), math.log(2.0)])
    assert probability_of_backtest_overfitting(r, n_blocks=2) == 0.0


def test_pbo_noise_is_about_one_half_and_skill_is_low() -> None:
    rng = np.random.default_rng(3)
    noise = rng.normal(0.0, 0.01, size=(800, 20))
    pbo_noise = probability_of_backtest_overfitting(noise, n_blocks=8)  # C(8,4) = 70 splits
    assert 0.25 < pbo_noise < 0.75
    skilled = noise.copy()
    skilled[:, 0] += 0.004  # one trial with a real edge in every period
    assert probability_of_backtest_overfitting(skilled, n_blocks=8) < 0.1


def test_pbo_split_count_and_bad_shapes() -> None:
    rng = np.random.default_rng(1)
    assert cscv_logits(rng.normal(size=(64, 3)), n_blocks=4).shape == (6,)  # C(4, 2)
    assert cscv_logits(rng.normal(size=(320, 3)), n_blocks=16).shape == (12870,)  # C(16, 8)
    with pytest.raises(GridctlError, match="even"):
        cscv_logits(rng.normal(size=(64, 3)), n_blocks=3)
    with pytest.raises(GridctlError, match="too few"):
        cscv_logits(rng.normal(size=(10, 3)), n_blocks=16)
    with pytest.raises(GridctlError, match="2 trials"):
        cscv_logits(rng.normal(size=(64, 1)), n_blocks=4)


# ----------------------------------------------------------------------------------------------------
# overfitting_report: the one DSR / PBO every view of a study shows
# ----------------------------------------------------------------------------------------------------


def _noise(seed: int, t: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 0.01, size=(t, n))


def _by_hand_sharpe(x: np.ndarray) -> float:
    mean = sum(x) / len(x)
    var = sum((v - mean) ** 2 for v in x) / (len(x) - 1)
    return mean / math.sqrt(var)


def test_near_duplicates_count_once_and_the_inputs_are_the_papers_formula() -> None:
    # Three independent return series; each trial is one of them scaled by a positive factor (a
    # different position size: correlation 1, the same Sharpe ratio). 9 trials, 3 independent ones.
    base = _noise(11, 400, 3) + np.array([0.001, 0.0, -0.0005])
    scales = [1.0, 2.0, 0.5]
    cols = [base[:, k] * c for k in range(3) for c in scales]
    r = np.column_stack(cols)
    numbers = list(range(100, 109))
    assert correlation_clusters(r).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    rep = overfitting_report(r, numbers, selected=100)
    assert rep["clusters"] == 3 and rep["trials_used"] == 9 and rep["periods"] == 400
    # By hand: the three clusters' Sharpe ratios, their MAD-based variance, SR0 and DSR (paper's formula).
    srs = sorted(_by_hand_sharpe(list(base[:, k])) for k in range(3))
    median = srs[1]
    mad = sorted(abs(v - median) for v in srs)[1]
    var = (1.4826 * mad) ** 2
    z = NormalDist()
    sr0 = math.sqrt(var) * (
        (1 - 0.5772156649) * z.inv_cdf(1 - 1 / 3) + 0.5772156649 * z.inv_cdf(1 - 1 / (3 * math.e))
    )
    x = list(base[:, 0])
    mean = sum(x) / 400
    m2 = sum((v - mean) ** 2 for v in x) / 400
    skew = sum((v - mean) ** 3 for v in x) / 400 / m2**1.5
    kurt = sum((v - mean) ** 4 for v in x) / 400 / m2**2
    sr = _by_hand_sharpe(x)
    dsr = z.cdf((sr - sr0) * math.sqrt(399) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr**2))
    assert rep["sharpe"] == pytest.approx(sr, rel=1e-9)
    assert rep["skew"] == pytest.approx(skew, rel=1e-9) and rep["kurtosis"] == pytest.approx(kurt, rel=1e-9)
    assert rep["sharpe_variance"] == pytest.approx(var, rel=1e-9)
    assert rep["sr0"] == pytest.approx(sr0, rel=1e-9)
    assert rep["sr0_annualised"] == pytest.approx(sr0 * math.sqrt(365), rel=1e-9)
    assert rep["deflated_sharpe"] == pytest.approx(dsr, rel=1e-9)
    assert rep["pbo_blocks"] == 16 and rep["pbo_splits"] == 12870


def test_a_tail_of_bleeding_configurations_does_not_set_the_luck_threshold() -> None:
    # 40 noise trials (Sharpe variance about 1/T = 0.002) plus 5 that lose steadily (Sharpe -4 per
    # period): the tail makes the sample variance about 5/45 * 16 = 1.8; the robust one stays near 1/T.
    r = _noise(5, 500, 45)
    r[:, 40:] = r[:, 40:] * 0.1 - 0.004
    rep = overfitting_report(r, list(range(45)), selected=int(np.argmax(r[:, :40].mean(axis=0))))
    assert 0.5 / 500 < rep["sharpe_variance"] < 2.5 / 500
    assert rep["sharpe_variance_sample"] > 1.0


def test_pure_noise_studies_give_a_low_dsr_and_pbo_near_one_half() -> None:
    dsrs, pbos = [], []
    for seed in range(8):
        r = _noise(100 + seed, 640, 40)
        best = int(np.argmax(r.mean(axis=0) / r.std(axis=0, ddof=1)))
        rep = overfitting_report(r, list(range(40)), selected=best)
        assert rep["clusters"] == 40  # independent series: no two correlate
        dsrs.append(rep["deflated_sharpe"])
        pbos.append(rep["pbo"])
    # The best of 40 noise series is about what luck gives: never significant, about even on average.
    assert max(dsrs) < 0.95 and 0.15 < float(np.mean(dsrs)) < 0.85
    assert 0.35 < float(np.mean(pbos)) < 0.65


def test_a_planted_edge_gives_a_high_dsr_and_a_low_pbo() -> None:
    for seed in range(3):
        r = _noise(200 + seed, 640, 40)
        r[:, 7] += 0.002  # a true edge of Sharpe 0.2 per day (3.8 annualised) on trial 7
        rep = overfitting_report(r, list(range(40)), selected=7)
        assert rep["deflated_sharpe"] > 0.99
        assert rep["pbo"] < 0.05


def test_short_studies_choose_blocks_that_fit_or_say_not_enough_data() -> None:
    # Two periods per block, an even number of blocks, at most 16, at least 4.
    assert [pbo_blocks(t) for t in (7, 8, 16, 20, 31, 32, 1000)] == [None, 4, 8, 10, 14, 16, 16]
    r = _noise(1, 20, 6)
    rep = overfitting_report(r, list(range(6)), selected=0)
    assert rep["pbo_blocks"] == 10 and rep["pbo_splits"] == 252 and rep["pbo"] is not None
    rep = overfitting_report(_noise(1, 6, 6), list(range(6)), selected=0)
    assert rep["pbo"] is None and any("not enough data for PBO: 6 periods" in n for n in rep["notes"])
    assert rep["deflated_sharpe"] is not None


def test_flat_trials_are_left_out_and_counted() -> None:
    r = _noise(2, 100, 5)
    r[:, 3] = 0.0  # a trial that never moved its equity
    rep = overfitting_report(r, [10, 11, 12, 13, 14], selected=10)
    assert rep["trials_without_dispersion"] == 1 and rep["trials_used"] == 4
    rep = overfitting_report(r, [10, 11, 12, 13, 14], selected=13)
    assert rep["deflated_sharpe"] is None and "no dispersion" in rep["notes"][0]
    with pytest.raises(GridctlError, match="not among"):
        overfitting_report(r, [10, 11, 12, 13, 14], selected=99)
