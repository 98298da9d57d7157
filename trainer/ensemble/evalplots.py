"""The figures of `gfm-ensemble evaluate`, rendered to PNG bytes (matplotlib, Agg backend).

  parity_energy.png   predicted vs reference energy per atom, ±1 sigma (calibrated) bars
  parity_forces.png   the same for force components (a random subset when there are many)
  calibration.png     observed vs expected coverage of Gaussian intervals, raw and calibrated
  error_vs_std.png    |error| against calibrated std; a calibrated std lies on the band |e| ~ sigma
The last two only for an ensemble: a single model has no std.
"""
from __future__ import annotations

import io

import numpy as np

from trainer.ensemble import uncertainty
from trainer.ensemble.predict import Prediction

MAX_POINTS = 4000   # force components drawn: more only hides the structure of the cloud
_SEED = 0


def figures(pred: Prediction, ref_energy: np.ndarray, ref_forces: np.ndarray, energy_error: np.ndarray,
            forces_error: np.ndarray) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_atom = pred.num_atoms.astype(np.float64)
    pick = _subset(forces_error.size)
    out = {}

    fig, ax = plt.subplots(figsize=(5, 5))
    _parity(ax, ref_energy / per_atom, pred.energy_mean / per_atom, pred.energy_std / per_atom,
            "energy per atom (eV/atom)")
    out["parity_energy.png"] = _png(fig, plt)

    fig, ax = plt.subplots(figsize=(5, 5))
    _parity(ax, ref_forces.reshape(-1)[pick], pred.forces_mean.reshape(-1)[pick],
            pred.forces_std.reshape(-1)[pick], "force component (eV/Å)")
    out["parity_forces.png"] = _png(fig, plt)
    if len(pred.member_names) == 1:
        return out   # one model: no spread, so no calibration or error-vs-std figure

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, error, raw, calibrated, mapping, colour in (
            ("energy", energy_error, pred.energy_std_raw, pred.energy_std, pred.energy_calibration, "tab:blue"),
            ("forces", forces_error, pred.forces_std_raw, pred.forces_std, pred.forces_calibration, "tab:orange")):
        for std, style, label in ((raw, "--", "raw"), (calibrated, "-", f"calibrated ({mapping.describe()})")):
            if (std > 0).any():
                expected, observed = uncertainty.calibration_curve(error, std)
                ax.plot(expected, observed, style, color=colour, label=f"{name}, {label}")
    ax.plot([0, 1], [0, 1], ":", color="grey", label="ideal")
    ax.set(xlabel="expected coverage (Gaussian interval)", ylabel="observed coverage",
           xlim=(0, 1), ylim=(0, 1), title="calibration")
    ax.legend(fontsize=8)
    out["calibration.png"] = _png(fig, plt)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    _scatter(axes[0], pred.energy_std, np.abs(energy_error), "energy (eV)")
    _scatter(axes[1], pred.forces_std.reshape(-1)[pick], np.abs(forces_error.reshape(-1)[pick]),
             "force component (eV/Å)")
    out["error_vs_std.png"] = _png(fig, plt)
    return out


def _subset(size: int) -> np.ndarray:
    if size <= MAX_POINTS:
        return np.arange(size)
    return np.sort(np.random.default_rng(_SEED).choice(size, MAX_POINTS, replace=False))


def _parity(ax, reference: np.ndarray, predicted: np.ndarray, std: np.ndarray, quantity: str) -> None:
    ax.errorbar(reference, predicted, yerr=std, fmt="o", markersize=2, elinewidth=0.5, alpha=0.6)
    low, high = float(min(reference.min(), predicted.min())), float(max(reference.max(), predicted.max()))
    ax.plot([low, high], [low, high], ":", color="grey")
    ax.set(xlabel=f"reference {quantity}", ylabel=f"ensemble mean {quantity}", title="parity (±1σ)")
    ax.locator_params(nbins=5)   # total energies per atom are long numbers: few, turned labels stay legible
    ax.tick_params(axis="x", labelrotation=30)


def _scatter(ax, std: np.ndarray, abs_error: np.ndarray, quantity: str) -> None:
    floor = 1e-12   # log axes: exact zeros are drawn at the floor
    ax.scatter(np.maximum(std, floor), np.maximum(abs_error, floor), s=3, alpha=0.5)
    positive = std[std > 0]
    if positive.size:
        line = np.array([positive.min(), positive.max()])
        ax.plot(line, line, ":", color="grey", label="|error| = σ")
        ax.legend(fontsize=8)
    ax.set(xscale="log", yscale="log", xlabel=f"predicted σ, {quantity}", ylabel=f"|error|, {quantity}")


def _png(fig, plt) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()
