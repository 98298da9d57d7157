"""Accuracy and uncertainty quality of an ensemble on labelled data, and fitting its calibration.

Labelled data is either a split of a dataset written by `gfm-data convert`
(ADIOS2 .bp: `valset` to calibrate, `testset` to evaluate) or any file ASE
reads with energies and forces. Graphs are rebuilt from positions with the
ensemble's own cut-off, so the numbers are those a user of `predict` gets.

What is compared (all in the units of `predict`):
  - energy per structure (eV) for the uncertainty numbers, since the std is
    of the total energy; accuracy also per atom (meV/atom, as training reports);
  - forces per Cartesian component (eV/Å), the std being per component; the
    rank correlation is also given per atom (|error vector| vs |std vector|).
Accuracy is reported for the ensemble mean and for the best single member
(lowest validation loss), uncertainty both raw and with the calibration of
the manifest; a single trained trial gets errors only. `shift` compares two
labelled sets (in distribution and shifted).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from ase import Atoms

from trainer.contract import typed
from trainer.contract.errors import UserError
from trainer.data.structures import extract_labels, read_structures
from trainer.ensemble import calibration_fit, uncertainty
from trainer.ensemble.calibration import Calibration, energy_spread, member_offsets

if TYPE_CHECKING:   # these import torch (vesin does too), which reading labelled data does not need
    from trainer.data.graphs import GraphArrays
    from trainer.ensemble.predict import Ensemble, Prediction, Progress


@dataclass
class Labelled:
    """Structures with reference energy [G] (eV) and forces [A, 3] (eV/Å)."""
    structures: list[Atoms]
    energy: np.ndarray
    forces: np.ndarray
    origin: dict[str, str | None]    # {"file": ..., "split": ...}


def read_labelled(path: str | Path, split: str | None, default_split: str) -> Labelled:
    """A .bp dataset's split (default `default_split`) or every frame of an ASE-readable file."""
    path = Path(path)
    if path.suffix == ".bp":
        return _from_dataset(path, split or default_split)
    if split is not None:
        raise UserError(f"{path}: --split applies to .bp datasets only (an ASE file is used whole)")
    structures = read_structures(path)
    labels = extract_labels(structures, path)
    for index, (energy, forces) in enumerate(zip(labels.energy, labels.forces)):
        if energy is None or forces is None or not np.isfinite(energy) or not np.isfinite(forces).all():
            raise UserError(f"{path}: structure {index} has no finite energy and forces to compare with")
    return Labelled(structures, np.array(labels.energy, dtype=np.float64),
                    np.concatenate(labels.forces).astype(np.float64), {"file": str(path), "split": None})


def _from_dataset(path: Path, split: str) -> Labelled:
    from trainer.data.adiosfile import SPLITS, DatasetReader

    if split not in SPLITS:
        raise UserError(f"--split {split}: must be one of {', '.join(SPLITS)}")
    with DatasetReader(path) as reader:
        graphs = reader.read(split)
    if len(graphs) == 0:
        raise UserError(f"{path}: the {split} split is empty")
    structures = _atoms_of(graphs)
    if not (np.isfinite(graphs.energy).all() and np.isfinite(graphs.forces).all()):
        raise UserError(f"{path}: {split} has structures without energy or force labels")
    return Labelled(structures, graphs.energy.astype(np.float64), graphs.forces.astype(np.float64),
                    {"file": str(path), "split": split})


def _atoms_of(graphs: GraphArrays) -> list[Atoms]:
    starts = graphs.atom_offsets
    return [Atoms(numbers=graphs.atomic_numbers[s:s + n], positions=graphs.positions[s:s + n],
                  cell=graphs.cell[g], pbc=graphs.pbc[g])
            for g, (s, n) in enumerate(zip(starts, graphs.num_atoms))]


@dataclass
class Errors:
    """Signed errors (prediction - reference) and stds of one prediction."""
    energy: np.ndarray           # [G] eV
    energy_per_atom: np.ndarray  # [G] eV/atom
    forces: np.ndarray           # [A, 3] eV/Å


def errors_of(energy: np.ndarray, forces: np.ndarray, labelled: Labelled) -> Errors:
    num_atoms = np.array([len(a) for a in labelled.structures])
    error = energy - labelled.energy
    return Errors(error, error / num_atoms, forces - labelled.forces)


def _accuracy(errors: Errors) -> dict[str, float]:
    energy, per_atom, forces = (uncertainty.accuracy(e) for e in (errors.energy, errors.energy_per_atom, errors.forces))
    return {"energy_mae_eV": energy["mae"], "energy_rmse_eV": energy["rmse"],
            "energy_mae_meV_per_atom": 1000 * per_atom["mae"], "energy_rmse_meV_per_atom": 1000 * per_atom["rmse"],
            "forces_mae_eV_per_A": forces["mae"], "forces_rmse_eV_per_A": forces["rmse"]}


def _uncertainty(errors: Errors, energy_std: np.ndarray, forces_std: np.ndarray) -> dict[str, dict]:
    forces = uncertainty.assess(errors.forces, forces_std)
    forces["spearman_per_atom_norm"] = uncertainty.spearman(np.linalg.norm(forces_std, axis=1),
                                                            np.linalg.norm(errors.forces, axis=1))
    return {"energy": uncertainty.assess(errors.energy, energy_std), "forces": forces}


def evaluate(ensemble: Ensemble, labelled: Labelled, batch_size: int = 64, source: int = 0,
             progress: Progress | None = None) -> tuple[dict, Prediction]:
    """All metrics (a JSON-ready mapping) and the prediction they were computed from.

    One member (a single trained trial) has no spread: its metrics are errors only,
    with `uncertainty` None and a `note` that says so.
    """
    pred = ensemble.predict(labelled.structures, batch_size, members=True, source=source, progress=progress)
    errors = errors_of(pred.energy_mean, pred.forces_mean, labelled)
    calibration = ensemble.manifest.calibration
    metrics = {
        "data": {**labelled.origin, "structures": len(labelled.structures), "atoms": int(pred.num_atoms.sum())},
        "ensemble": {"directory": str(ensemble.manifest.directory), "members": pred.member_names,
                     "calibration": {"energy": typed.to_dict(calibration.energy),
                                     "forces": typed.to_dict(calibration.forces)}},
        "units": {"energy": "eV", "energy_per_atom": "meV/atom", "forces": "eV/Angstrom"},
    }
    if len(pred.member_names) == 1:
        metrics["accuracy"] = {"model": {"name": pred.member_names[0], **_accuracy(errors)}}
        metrics["uncertainty"] = None
        metrics["note"] = "a single model: errors only (no spread, so no uncertainty to assess)"
        return metrics, pred
    best = ensemble.manifest.best_member
    per_member = {name: _accuracy(errors_of(pred.member_energy[k], pred.member_forces[k], labelled))
                  for k, name in enumerate(pred.member_names)}
    try:
        raw = _uncertainty(errors, pred.energy_std_raw, pred.forces_std_raw)
        calibrated = _uncertainty(errors, pred.energy_std, pred.forces_std)
    except ValueError as err:
        raise UserError(f"{ensemble.manifest.directory}: {err}") from None
    metrics["accuracy"] = {"ensemble_mean": _accuracy(errors),
                           "best_member": {"name": pred.member_names[best], **per_member[pred.member_names[best]]},
                           "members": per_member}
    metrics["uncertainty"] = {"raw": raw, "calibrated": calibrated}
    return metrics, pred


def headline_accuracy(metrics: dict) -> dict[str, float]:
    """The accuracy of what predicts: the ensemble mean, or the single model."""
    accuracy = metrics["accuracy"]
    return accuracy["ensemble_mean"] if "ensemble_mean" in accuracy else accuracy["model"]


def shift(in_distribution: dict, shifted: dict) -> dict:
    """The distribution-shift check: mean std and errors on the shifted set over those in distribution.

    A useful uncertainty grows where the errors grow: the std ratio should follow the error ratio.
    Mean std is over structures (energy, eV) and force components (eV/Å), raw and calibrated.
    """
    a, b = headline_accuracy(in_distribution), headline_accuracy(shifted)
    out = {"in_distribution": in_distribution["data"], "shifted": shifted["data"],
           "accuracy": {"in_distribution": a, "shifted": b},
           "error_ratio": {"energy_mae": _ratio(b["energy_mae_eV"], a["energy_mae_eV"]),
                           "forces_mae": _ratio(b["forces_mae_eV_per_A"], a["forces_mae_eV_per_A"])}}
    if in_distribution["uncertainty"] is None or shifted["uncertainty"] is None:
        out["note"] = "a single model: errors only, no std to compare"
        return out
    mean_std = {name: {kind: {quantity: metrics["uncertainty"][kind][quantity]["mean_std"]
                              for quantity in ("energy", "forces")} for kind in ("raw", "calibrated")}
                for name, metrics in (("in_distribution", in_distribution), ("shifted", shifted))}
    out["mean_std"] = mean_std
    out["mean_std_ratio"] = {kind: {quantity: _ratio(mean_std["shifted"][kind][quantity],
                                                     mean_std["in_distribution"][kind][quantity])
                                    for quantity in ("energy", "forces")} for kind in ("raw", "calibrated")}
    return out


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator > 0 else float("nan")


def fit_calibration(ensemble: Ensemble, labelled: Labelled, batch_size: int = 64, source: int = 0,
                    progress: Progress | None = None) -> Calibration:
    """Each quantity's std map, chosen and fitted on `labelled` from the RAW stds (calibration_fit.py)."""
    pred = ensemble.predict(labelled.structures, batch_size, members=True, source=source, progress=progress)
    errors = errors_of(pred.energy_mean, pred.forces_mean, labelled)
    structures = np.arange(len(labelled.structures))
    # Refitted from the members' own energies, whatever offsets the manifest holds.
    offsets = member_offsets(pred.member_energy, pred.num_atoms)
    spread = energy_spread(pred.member_energy, pred.num_atoms, offsets)
    energy = calibration_fit.fit_quantity(errors.energy, spread, structures)
    # Forces per component, folds by structure: one structure's components are not independent.
    forces = calibration_fit.fit_quantity(errors.forces, pred.forces_std_raw,
                                          np.repeat(structures, 3 * pred.num_atoms))
    return Calibration(energy, forces, {
        **labelled.origin, "structures": len(labelled.structures),
        "fitted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "method": f"least miscalibration area; form by {calibration_fit.FOLDS}-fold held-out area"}, offsets)


def write_report(outdir: str | Path, metrics: dict, pred: Prediction, labelled: Labelled) -> list[Path]:
    """metrics.json and the PNG figures in OUTDIR; all are rendered before the first file is written."""
    import json

    from trainer.contract.atomicio import atomic_write_bytes, atomic_write_json
    from trainer.ensemble.evalplots import figures

    outdir = Path(outdir)
    errors = errors_of(pred.energy_mean, pred.forces_mean, labelled)
    rendered = figures(pred, labelled.energy, labelled.forces, errors.energy, errors.forces)
    json.dumps(metrics, allow_nan=True)  # fail here, not half-way, if something is not serialisable
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in rendered.items():
        atomic_write_bytes(outdir / name, data)
        written.append(outdir / name)
    atomic_write_json(outdir / "metrics.json", metrics)
    return written + [outdir / "metrics.json"]
