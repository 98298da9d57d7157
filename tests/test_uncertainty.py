"""Uncertainty metrics on synthetic errors whose right answers are known."""
from __future__ import annotations

import math

import numpy as np
import pytest

from trainer.ensemble import uncertainty

N = 200_000


@pytest.fixture
def calibrated():
    """Errors drawn from N(0, sigma_i^2) with sigma_i spread over a decade: a perfect uncertainty."""
    rng = np.random.default_rng(0)
    std = rng.uniform(0.1, 1.0, N)
    return rng.normal(0.0, std), std


def test_calibrated_gaussian_errors(calibrated):
    error, std = calibrated
    assert uncertainty.coverage(error, std, 1.0) == pytest.approx(math.erf(1 / math.sqrt(2)), abs=0.005)
    assert uncertainty.coverage(error, std, 2.0) == pytest.approx(math.erf(2 / math.sqrt(2)), abs=0.003)
    assert uncertainty.miscalibration_area(error, std) < 0.005
    assert uncertainty.fit_scale(error, std) == pytest.approx(1.0, abs=0.01)
    # a larger sigma draws larger errors, so the ranking is informative
    assert uncertainty.spearman(std, np.abs(error)) > 0.2


@pytest.mark.parametrize("factor", [2.0, 0.5])
def test_miscalibrated_by_a_factor(calibrated, factor):
    error, std = calibrated
    error = factor * error
    fitted = uncertainty.fit_scale(error, std)
    assert fitted == pytest.approx(factor, rel=0.01)
    assert uncertainty.miscalibration_area(error, std) > 0.1
    # the fitted factor restores calibration
    assert uncertainty.coverage(error, fitted * std, 1.0) == pytest.approx(0.6827, abs=0.005)
    assert uncertainty.miscalibration_area(error, fitted * std) < 0.005


def test_fitted_scale_minimises_the_gaussian_nll(calibrated):
    error, std = calibrated
    error = 1.7 * error
    s = uncertainty.fit_scale(error, std)
    best = uncertainty.gaussian_nll(error, s * std)
    for other in (0.8 * s, 0.95 * s, 1.05 * s, 1.25 * s):
        assert uncertainty.gaussian_nll(error, other * std) > best


def test_calibration_curve_known_points():
    error = np.array([0.5, -1.5, 2.5])
    std = np.ones(3)
    levels = np.array([0.0, math.erf(1.2 / math.sqrt(2)), math.erf(2.0 / math.sqrt(2)), 1.0])
    expected, observed = uncertainty.calibration_curve(error, std, levels)
    np.testing.assert_allclose(expected, levels)
    np.testing.assert_allclose(observed, [0.0, 1 / 3, 2 / 3, 1.0])


def test_underconfident_area_approaches_one_half():
    rng = np.random.default_rng(1)
    error = rng.normal(0.0, 1e-3, 10_000)
    area = uncertainty.miscalibration_area(error, np.ones_like(error))
    assert area == pytest.approx(0.5, abs=0.01)


def test_uninformative_std_ranks_nothing():
    rng = np.random.default_rng(2)
    error = rng.normal(size=N)
    assert abs(uncertainty.spearman(rng.uniform(size=N), np.abs(error))) < 0.01
    assert math.isnan(uncertainty.spearman(np.ones(N), np.abs(error)))


def test_zero_stds():
    error = np.array([0.1, -0.2, 0.3, 0.0])
    with pytest.raises(ValueError, match="std is 0"):
        uncertainty.fit_scale(error, np.zeros(4))
    # zero-std entries carry no calibration information and are left out
    assert uncertainty.fit_scale(error, np.array([0.1, 0.2, 0.0, 0.0])) == pytest.approx(1.0)


def test_assess_and_accuracy():
    error = np.array([1.0, -1.0, 3.0, -3.0])
    assert uncertainty.accuracy(error) == {"mae": 2.0, "rmse": pytest.approx(math.sqrt(5.0))}
    report = uncertainty.assess(error, np.full(4, 2.0))
    assert report["coverage_1sigma"] == 0.5 and report["coverage_2sigma"] == 1.0
    assert report["rms_z"] == pytest.approx(math.sqrt(5.0) / 2)
    with pytest.raises(ValueError, match="4 errors but 3 stds"):
        uncertainty.assess(error, np.ones(3))
