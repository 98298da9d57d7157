"""ENSEMBLE_DIR from trained members: the manifest, the members' weights, and a first calibration."""
from __future__ import annotations

from pathlib import Path

from trainer.data.adiosfile import DatasetReader
from trainer.ensemble.evaluate import fit_calibration, read_labelled
from trainer.ensemble.manifest import TrainedMember, set_calibration, write_manifest
from trainer.ensemble.predict import Ensemble


def build_ensemble(directory: Path, members: list[TrainedMember], origin: str, dataset: str) -> Path:
    """Write the ensemble of `members` into `directory`, calibrated on `dataset`'s validation split.

    `origin` says where the members come from (the run directory). Imports torch
    (it loads the members): the manager calls it after its loop, never inside it.
    """
    with DatasetReader(dataset) as reader:  # every source shares the cut-offs (the store checks)
        max_neighbours = reader.info.max_neighbours
    write_manifest(directory, members, origin, max_neighbours)
    if len(members) > 1:  # one member has no spread to calibrate
        fitted = fit_calibration(Ensemble.load(directory), read_labelled(dataset, "valset", "valset"))
        set_calibration(directory, fitted.energy, fitted.forces, fitted.fitted_on, fitted.energy_offsets)
    return directory
