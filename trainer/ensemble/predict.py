"""Deep-ensemble inference: energy and forces as mean ± std over the members.

Graphs are built exactly as in training (`GraphArrays.from_atoms` with the
members' cut-off and neighbour cap, periodic cells honoured) once per batch of
structures, and every member runs on that whole batch. Evaluating members
together with torch.func (stack_module_state + functional_call + vmap) was
measured too and was 2-5x SLOWER on CPU for ten EGNN members (ethanol and
OC20 slabs, bench/bench_predict.py, which also times the plain loop over
structures), and torch.autograd.grad, which conservative forces use, does
not run under vmap at all. So a loop over members, each on a large batch, is
what runs.

Uncertainty is the population standard deviation over members (ddof=0,
numpy's default), mapped by the ensemble's calibration (a·σ or a·σ^b per
quantity, calibration.py); both the raw and the calibrated std are kept.
Structures with an element that the members never saw are refused as a
whole (the error names the structure and element): a number for them would
be extrapolation without a warning.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from ase import Atoms
from ase.data import chemical_symbols

from trainer.contract import typed
from trainer.contract.errors import UserError, one_line
from trainer.contract.trialconfig import ModelConfig
from trainer.data.batch import Batch
from trainer.data.graphs import GraphArrays, offsets
from trainer.ensemble.calibration import StdMap, energy_spread
from trainer.ensemble.manifest import EnsembleError, Manifest, load_manifest
from trainer.models.build import DataStats, EnergyForceModel, build_model

Progress = Callable[[int, int], None]   # (structures done, total)


class StructureError(UserError):
    """A structure the ensemble cannot (or must not) predict."""


@dataclass
class Prediction:
    """Ensemble predictions for G structures with A atoms in all (structures' atoms concatenated)."""
    num_atoms: np.ndarray             # [G]
    energy_mean: np.ndarray           # [G] eV
    energy_std_raw: np.ndarray        # [G] eV, std over members (their energy offsets removed: calibration.py)
    forces_mean: np.ndarray           # [A, 3] eV/Å
    forces_std_raw: np.ndarray        # [A, 3] eV/Å, std over members, per component
    energy_calibration: StdMap        # raw std -> calibrated std (calibration.py)
    forces_calibration: StdMap
    member_names: list[str]
    member_energy: np.ndarray | None = None   # [K, G] eV, when asked for
    member_forces: np.ndarray | None = None   # [K, A, 3] eV/Å, when asked for

    @property
    def energy_std(self) -> np.ndarray:
        """Calibrated energy std (eV)."""
        return self.energy_calibration.apply(self.energy_std_raw)

    @property
    def forces_std(self) -> np.ndarray:
        """Calibrated force std per component (eV/Å)."""
        return self.forces_calibration.apply(self.forces_std_raw)

    @cached_property
    def atom_offsets(self) -> np.ndarray:
        return offsets(self.num_atoms)

    def atoms_of(self, index: int) -> slice:
        """Rows of the per-atom arrays that belong to structure `index`."""
        start = int(self.atom_offsets[index])
        return slice(start, start + int(self.num_atoms[index]))


class Ensemble:
    """The members of an ensemble, ready to predict on `device`."""

    def __init__(self, manifest: Manifest, models: list[EnergyForceModel], device: torch.device,
                 dtype: torch.dtype = torch.float32):
        self.manifest, self.models, self.device, self.dtype = manifest, models, device, dtype
        self.names = [m.name for m in manifest.members]
        self._offsets = manifest.calibration.energy_offsets

    @classmethod
    def load(cls, ensemble_dir: str | Path, device: str | torch.device = "cpu") -> "Ensemble":
        return cls.from_manifest(load_manifest(ensemble_dir), device)

    @classmethod
    def from_manifest(cls, manifest: Manifest, device: str | torch.device = "cpu") -> "Ensemble":
        """The members of a loaded manifest (checkpoints verified and read: `load_manifest`)."""
        device = _device(device)
        models = []
        for member, state in zip(manifest.members, manifest.checkpoints):
            path = manifest.path_of(member)
            try:
                config = typed.build(ModelConfig, state["model_config"], origin=f"{path}: model_config")
                model = build_model(config, DataStats.from_dict(state["stats"]))
                model.load_state_dict(state["model"])
            except (KeyError, TypeError, ValueError, RuntimeError) as err:
                raise EnsembleError(f"{path}: weights do not fit the model they describe "
                                    f"({one_line(err, limit=200)})") from None
            model.eval().requires_grad_(False)  # no parameter gradients, ever (conservative forces take dE/dx only)
            models.append(model.to(device))
        return cls(manifest, models, device)

    @property
    def radius(self) -> float:
        return self.manifest.radius

    def check(self, structures: Sequence[Atoms], source: int = 0) -> None:
        """Refuse, with the structure's index, anything the members cannot predict."""
        if not structures:
            raise StructureError("no structures to predict")
        if not 0 <= source < len(self.manifest.source_elements):
            raise StructureError(f"source {source}: the members were trained on "
                                 f"{len(self.manifest.source_elements)} source(s), numbered from 0")
        sizes = np.array([len(atoms) for atoms in structures])
        if (sizes == 0).any():
            raise StructureError(f"structure {int(np.argmax(sizes == 0))}: has no atoms")
        numbers = np.concatenate([atoms.numbers for atoms in structures])
        unknown = ~np.isin(numbers, self.manifest.source_elements[source])
        if unknown.any():
            owner = np.repeat(np.arange(len(structures)), sizes)[unknown]
            first = int(np.argmax(unknown))
            others = len(np.unique(owner)) - 1
            known = ", ".join(chemical_symbols[z] for z in self.manifest.source_elements[source])
            more = f" (and {others} more structure{'s' if others > 1 else ''})" if others else ""
            raise StructureError(f"structure {int(owner[0])}{more}: element {chemical_symbols[numbers[first]]} "
                                 f"was not in the ensemble's training data (it knows {known})")
        for index, atoms in enumerate(structures):
            _check_geometry(atoms, index)

    def predict(self, structures: Sequence[Atoms], batch_size: int = 64, members: bool = False,
                source: int = 0, progress: Progress | None = None) -> Prediction:
        """Mean and std over members for every structure, `batch_size` structures per forward pass."""
        if batch_size < 1:
            raise UserError(f"batch size must be at least 1, got {batch_size}")
        self.check(structures, source)
        num_atoms = np.array([len(atoms) for atoms in structures], dtype=np.int64)
        atom_start = offsets(num_atoms)
        k, g, a = len(self.models), len(structures), int(num_atoms.sum())
        out = Prediction(num_atoms, np.empty(g), np.empty(g), np.empty((a, 3)), np.empty((a, 3)),
                         self.manifest.calibration.energy, self.manifest.calibration.forces, list(self.names),
                         np.empty((k, g)) if members else None, np.empty((k, a, 3)) if members else None)
        for start in range(0, g, batch_size):
            stop = min(start + batch_size, g)
            energy, forces = self._run_members(self._graphs(structures, start, stop, source))
            atoms = slice(atom_start[start], atom_start[stop - 1] + num_atoms[stop - 1])
            # The offsets sum to zero, so they leave the mean as the members' own.
            out.energy_mean[start:stop] = energy.mean(0)
            out.energy_std_raw[start:stop] = energy_spread(energy, num_atoms[start:stop], self._offsets)
            out.forces_mean[atoms], out.forces_std_raw[atoms] = forces.mean(0), forces.std(0)
            if members:
                out.member_energy[:, start:stop], out.member_forces[:, atoms] = energy, forces
            if progress is not None:
                progress(stop, g)
        return out

    def _graphs(self, structures: Sequence[Atoms], start: int, stop: int, source: int) -> Batch:
        parts = []
        for index in range(start, stop):
            try:
                parts.append(GraphArrays.from_atoms([structures[index]], self.radius, self.manifest.max_neighbours,
                                                    source=source, sample_ids=[index]))
            except RuntimeError as err:  # the neighbour-list library's complaints about a geometry
                raise StructureError(f"structure {index}: no neighbour list ({err})") from None
        return Batch.from_arrays(GraphArrays.concat(parts), self.dtype).to(self.device)

    def _run_members(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """([K, G] energies, [K, A, 3] forces) of every member on one batch, in float64."""
        energies, forces = [], []
        with torch.no_grad():  # conservative members switch gradients back on for dE/dx themselves
            for model in self.models:
                energy, force = model(batch)
                energies.append(energy.detach().to("cpu", torch.float64))
                forces.append(force.detach().to("cpu", torch.float64))
        return torch.stack(energies).numpy(), torch.stack(forces).numpy()


def _check_geometry(atoms: Atoms, index: int) -> None:
    if not np.isfinite(atoms.positions).all():
        raise StructureError(f"structure {index}: positions are not all finite")
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if not pbc.any():
        return  # molecules need no cell
    rows = np.asarray(atoms.cell.array, dtype=np.float64)[pbc]
    lengths = np.linalg.norm(rows, axis=1)
    axes = "".join(a for a, p in zip("xyz", pbc) if p)
    if not np.isfinite(rows).all() or (lengths < 1e-6).any():
        raise StructureError(f"structure {index}: periodic along {axes} but its cell vector there is zero "
                             "(give the cell, or set pbc=False for a molecule)")
    # Volume spanned by the periodic vectors relative to a box of the same lengths: ~0 when they are dependent.
    spanned = np.sqrt(max(np.linalg.det(rows @ rows.T), 0.0)) / np.prod(lengths)
    if spanned < 1e-6:
        raise StructureError(f"structure {index}: periodic along {axes} but its cell vectors are linearly "
                             "dependent (a degenerate cell)")


def _device(device: str | torch.device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("device cuda: no CUDA device is available here (use --device cpu)")
    return device
