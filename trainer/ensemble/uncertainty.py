"""How good an uncertainty is: ranking, coverage, calibration, and a one-number recalibration.

Every function takes signed errors (prediction - reference) and predicted
standard deviations of the same shape, flattened. The Gaussian reading of a
std (the ensemble's members scatter around the truth like N(0, sigma^2)) is
what turns a std into an interval: the central interval holding probability
p is mean ± z_p sigma with z_p = Phi^-1((1 + p) / 2), so ±1 sigma should
hold 68.3 % of the errors and ±2 sigma 95.4 %.

Entries whose std is 0 (e.g. an ensemble of one) say nothing about
calibration: `fit_scale` and the z-score based numbers skip them, and raise
if none is left. numpy and scipy only, so the orchestrator can use it too.
"""
from __future__ import annotations

import numpy as np
from scipy import stats

LEVELS = np.linspace(0.0, 1.0, 101)   # confidence levels of the calibration curve


def _pair(error: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    error = np.asarray(error, dtype=np.float64).reshape(-1)
    std = np.asarray(std, dtype=np.float64).reshape(-1)
    if error.shape != std.shape:
        raise ValueError(f"{error.size} errors but {std.size} stds")
    if error.size == 0:
        raise ValueError("no errors to assess")
    return error, std


def _z_scores(error: np.ndarray, std: np.ndarray) -> np.ndarray:
    error, std = _pair(error, std)
    informative = std > 0
    if not informative.any():
        raise ValueError("every predicted std is 0: the members agree exactly (one member?), "
                         "so there is no uncertainty to assess")
    return error[informative] / std[informative]


def accuracy(error: np.ndarray) -> dict[str, float]:
    """Mean absolute and root-mean-square error."""
    error = np.asarray(error, dtype=np.float64).reshape(-1)
    return {"mae": float(np.abs(error).mean()), "rmse": float(np.sqrt((error ** 2).mean()))}


def spearman(std: np.ndarray, abs_error: np.ndarray) -> float:
    """Rank correlation of predicted std and absolute error: does a larger std flag a larger error?

    NaN when either side is constant (no ranking exists).
    """
    std, abs_error = _pair(std, abs_error)
    if np.ptp(std) == 0 or np.ptp(abs_error) == 0:
        return float("nan")
    return float(stats.spearmanr(std, abs_error).statistic)


def coverage(error: np.ndarray, std: np.ndarray, k: float) -> float:
    """Fraction of errors inside ±k sigma."""
    error, std = _pair(error, std)
    return float((np.abs(error) <= k * std).mean())


def calibration_curve(error: np.ndarray, std: np.ndarray,
                      levels: np.ndarray = LEVELS) -> tuple[np.ndarray, np.ndarray]:
    """(expected, observed): for each confidence level p, the fraction of errors inside its Gaussian interval."""
    z = np.abs(_z_scores(error, std))
    width = stats.norm.ppf((1.0 + np.asarray(levels)) / 2.0)   # z_p; inf at p = 1
    observed = (z[None, :] <= width[:, None]).mean(axis=1)
    return np.asarray(levels, dtype=np.float64), observed


def miscalibration_area(error: np.ndarray, std: np.ndarray, levels: np.ndarray = LEVELS) -> float:
    """Area between the calibration curve and the diagonal (0: calibrated; at most 0.5)."""
    expected, observed = calibration_curve(error, std, levels)
    return float(np.trapezoid(np.abs(observed - expected), expected))


def fit_scale(error: np.ndarray, std: np.ndarray) -> float:
    """The factor s that minimises the Gaussian NLL of the errors under std -> s * std.

    d/ds [ sum log(s sigma) + e^2 / (2 s^2 sigma^2) ] = 0  gives  s^2 = mean((e / sigma)^2).
    """
    return float(np.sqrt((_z_scores(error, std) ** 2).mean()))


def gaussian_nll(error: np.ndarray, std: np.ndarray) -> float:
    """Mean negative log-likelihood of the errors under N(0, std^2) (entries with std > 0)."""
    error, std = _pair(error, std)
    keep = std > 0
    if not keep.any():
        raise ValueError("every predicted std is 0")
    e, s = error[keep], std[keep]
    return float(np.mean(0.5 * np.log(2 * np.pi * s ** 2) + 0.5 * (e / s) ** 2))


def assess(error: np.ndarray, std: np.ndarray) -> dict[str, float]:
    """All uncertainty-quality numbers of one quantity, as a JSON-ready mapping."""
    error, std = _pair(error, std)
    return {
        "spearman_std_vs_abs_error": spearman(std, np.abs(error)),
        "coverage_1sigma": coverage(error, std, 1.0),
        "coverage_2sigma": coverage(error, std, 2.0),
        "expected_coverage_1sigma": float(stats.norm.cdf(1.0) - stats.norm.cdf(-1.0)),
        "expected_coverage_2sigma": float(stats.norm.cdf(2.0) - stats.norm.cdf(-2.0)),
        "miscalibration_area": miscalibration_area(error, std),
        "gaussian_nll": gaussian_nll(error, std),
        "mean_std": float(std.mean()),
        "rms_z": fit_scale(error, std),   # 1 when calibrated; the factor `fit_scale` would apply
    }
