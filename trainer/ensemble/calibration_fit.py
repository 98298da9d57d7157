"""Choosing and fitting a calibration of the ensemble std, per quantity, on held-out data.

Both forms (scalar a·σ, power a·σ^b) are fitted by minimising the
miscalibration area, the number `evaluate` judges a calibration by, and not by
the Gaussian NLL: the NLL's factor, s^2 = mean(z^2), is dominated by the few
largest z, which on the demo's ethanol ensemble gave x8.1 and made the force
miscalibration area worse (0.200 raw -> 0.306). The area of a form with its
parameters at the truth is 0 only when σ' ranks and scales the errors right
(a wrong b leaves a scale mixture, which is not Gaussian), so minimising it
fits b too.

The form is chosen by k-fold cross-validation over structures (the
components of one structure's forces are correlated, so they stay in one
fold): each fold's area is measured with the parameters fitted on the other
folds, and all held-out z-scores are pooled into one curve. Cheap, so used at
any size. The simplest of identity < scalar < power whose held-out area is
within MARGIN of the best wins; the winner is then refitted on all the data.
Never returned: a map whose area on the data it was fitted on is worse than
raw. The outcome and the reason for it are kept in `StdMap.fit`.
"""
from __future__ import annotations

import numpy as np
from scipy import stats

from trainer.ensemble.calibration import StdMap
from trainer.ensemble.uncertainty import LEVELS

FOLDS = 5
MIN_STRUCTURES = 10          # fewer: no calibration (each fold would hold one or two structures)
MARGIN = 0.005               # area a form with more parameters must gain to be chosen
B_GRID = np.round(np.arange(0.1, 2.5001, 0.05), 2)   # exponents tried by the power form
_WIDTHS = stats.norm.ppf((1.0 + LEVELS) / 2.0)        # z_p of each level (inf at p = 1)


def area_of(abs_z: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Miscalibration area of |z| / s for each s in `scales` (as uncertainty.miscalibration_area)."""
    ordered = np.sort(abs_z)
    limits = np.asarray(scales, dtype=np.float64)[:, None] * _WIDTHS[None, :]
    observed = np.searchsorted(ordered, limits.reshape(-1), side="right").reshape(limits.shape) / len(ordered)
    return np.trapezoid(np.abs(observed - LEVELS[None, :]), LEVELS, axis=1)


def fit_scale_by_area(abs_z: np.ndarray) -> tuple[float, float]:
    """(s, area): the factor minimising the area of |z| / s; s = 1 is always a candidate."""
    guess = max(float(np.median(abs_z)) / stats.norm.ppf(0.75), 1e-300)
    coarse = np.exp(np.log(guess) + np.linspace(-4.0, 4.0, 161))
    areas = area_of(abs_z, coarse)
    centre = coarse[int(np.argmin(areas))]
    fine = np.concatenate([centre * np.exp(np.linspace(-0.05, 0.05, 101)), [1.0]])
    areas = area_of(abs_z, fine)
    best = int(np.argmin(areas))
    return float(fine[best]), float(areas[best])


def fit_form(form: str, error: np.ndarray, std: np.ndarray) -> StdMap:
    """The map of `form` ("scalar" or "power") with the least area on (error, std); std > 0."""
    abs_error = np.abs(error)
    if form == "scalar":
        return StdMap.scalar(fit_scale_by_area(abs_error / std)[0])
    log_std = np.log(std)
    fits = [(*fit_scale_by_area(abs_error * np.exp(-b * log_std)), float(b)) for b in B_GRID]
    a, _, b = min(fits, key=lambda fit: (fit[1], abs(fit[2] - 1.0)))  # ties: the exponent nearest 1
    return StdMap("power", a, b) if b != 1.0 else StdMap.scalar(a)


def _area(error: np.ndarray, std: np.ndarray) -> float:
    return float(area_of(np.abs(error) / std, np.ones(1))[0])


def fit_quantity(error: np.ndarray, std: np.ndarray, groups: np.ndarray, folds: int = FOLDS,
                 seed: int = 0) -> StdMap:
    """The calibration of one quantity from signed errors, raw stds and the structure of each entry.

    Entries with std 0 carry no information (as in uncertainty.py) and are left out.
    """
    error, std, groups = (np.asarray(x).reshape(-1) for x in (error, std, groups))
    keep = std > 0
    error, std, groups = error[keep], std[keep].astype(np.float64), groups[keep]
    names, group = np.unique(groups, return_inverse=True)
    record = {"structures": int(len(names)), "values": int(len(error)), "folds": 0, "margin": MARGIN}
    if len(names) < MIN_STRUCTURES:
        reason = (f"{len(names)} structure(s) with a nonzero std, fewer than {MIN_STRUCTURES}: "
                  "too few to calibrate; raw std kept")
        return StdMap(fit={**record, "note": reason})
    folds = min(folds, len(names))
    fold_of_group = np.empty(len(names), np.int64)
    fold_of_group[np.random.default_rng(seed).permutation(len(names))] = np.arange(len(names)) % folds
    fold = fold_of_group[group]
    raw = _area(error, std)
    held_out = {"identity": raw}
    for form in ("scalar", "power"):
        z = np.empty_like(error)
        for k in range(folds):
            inside = fold == k
            fitted = fit_form(form, error[~inside], std[~inside])
            z[inside] = error[inside] / fitted.apply(std[inside])
        held_out[form] = _area(z, np.ones_like(z))
    best = min(held_out.values())
    chosen = next(form for form in ("identity", "scalar", "power") if held_out[form] <= best + MARGIN)
    record.update(folds=folds, held_out_area={k: round(v, 6) for k, v in held_out.items()})
    if chosen == "identity":
        note = ("raw std kept: no form beat it on the held-out folds by more than "
                f"{MARGIN} in miscalibration area")
        return StdMap(fit={**record, "area": {"raw": raw, "calibrated": raw}, "note": note})
    fitted = fit_form(chosen, error, std)
    area = _area(error, fitted.apply(std))
    record["area"] = {"raw": raw, "calibrated": area}
    if area > raw:   # the grid holds the identity, so this should not happen; never return worse than raw
        return StdMap(fit={**record, "area": {"raw": raw, "calibrated": raw},
                           "note": f"raw std kept: the fitted {chosen} form ({fitted.describe()}) had area "
                                   f"{area:.4f} > raw {raw:.4f} on its fitting data"})
    note = f"{chosen} form chosen on {folds}-fold held-out miscalibration area"
    if fitted.form != chosen:
        note += f" (its fit on all the data is {fitted.form})"
    return StdMap(fitted.form, fitted.a, fitted.b, {**record, "chosen": chosen, "note": note})
