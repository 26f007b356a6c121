"""research.overfitting against the papers' worked numbers and hand-computed small cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gridctl.configs.errors import GridctlError
from gridctl.research.overfitting import (
    cscv_logits,
    deflated_sharpe_ratio,
    expected_max_sharpe,
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
