"""Symmetries every model must respect, on a molecule, a periodic crystal and a slab (generated and real).

For each backbone and force mode: rotating, reflecting or translating a
structure leaves its energy unchanged and turns its forces with it; permuting
atoms permutes forces; conservative forces are the finite-difference gradient
of the energy. All in float64, with random parameters (the zero-initialised
output layers of a fresh model would make some of these checks trivial).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from ase import Atoms

from test_models import BACKBONES, FORCE_MODES, randomised, small
from trainer.data.batch import Batch
from trainer.data.graphs import GraphArrays
from trainer.data.reference import degree_histogram
from trainer.models import DataStats, build_model
from trainer.models.build import EnergyForceModel

RADIUS, CAP = 5.0, 50
ROLES = {"molecule": "molecules", "crystal": "crystals", "slab": "slabs"}
MODELS = [(mpnn_type, force_mode) for mpnn_type in BACKBONES for force_mode in FORCE_MODES]


@pytest.fixture(scope="module")
def structures(session_data, variant) -> dict[str, Atoms]:
    """Real: the first frame of each file, ethanol (9 atoms), a periodic Si cell (63), an OC20 slab (33).
    Generated: an ethanol, and the first crystal and slab where the neighbour cap does not bind
    (the denser fcc metals have 54 neighbours within 5 Å). The generated slab's fixed layers sit
    exactly on the ideal lattice, where many distances tie and PNA's min/max have no derivative:
    its conservative forces there depend on rounding, which a rotation changes. So, as in the
    finite-difference test below, every atom is first moved by ~0.01 Å (OC20's first frame
    passes as stored)."""
    if variant == "dft":
        return {name: session_data.frames("dft", role, 1)[0] for name, role in ROLES.items()}
    chosen = {"molecule": session_data.frames("emt", "ethanol", 1)[0]}
    for name in ("crystal", "slab"):
        chosen[name] = next(a for a in session_data.frames("emt", ROLES[name], 48) if max_in_degree(a) < CAP)
    chosen["slab"].set_constraint()
    chosen["slab"].rattle(stdev=0.01, seed=0)
    return chosen


def max_in_degree(atoms: Atoms) -> int:
    return int(np.bincount(GraphArrays.from_atoms([atoms], radius=RADIUS).edge_index[:, 1]).max())


def graphs_of(atoms: Atoms) -> GraphArrays:
    graphs = GraphArrays.from_atoms([atoms], radius=RADIUS, max_neighbours=CAP)
    # With a binding cap, ties at the cap could break differently after a rotation.
    assert np.bincount(graphs.edge_index[:, 1]).max() < CAP, "the neighbour cap binds; pick another frame"
    return graphs


def model_for(atoms: Atoms, mpnn_type: str, force_mode: str) -> EnergyForceModel:
    elements = sorted(set(atoms.numbers.tolist()))
    stats = DataStats(radius=RADIUS, elements=elements,
                      reference_energies=[{z: -1.0 - 0.1 * z for z in elements}],
                      energy_shift=0.2, energy_scale=0.5, force_scale=0.8,
                      degree_histogram=degree_histogram(graphs_of(atoms)))
    model = build_model(small(mpnn_type, force_mode=force_mode), stats, dtype=torch.float64)
    return randomised(model).eval()


def predict(model: EnergyForceModel, atoms: Atoms) -> tuple[float, np.ndarray]:
    with torch.no_grad():
        energy, forces = model(Batch.from_arrays(graphs_of(atoms), dtype=torch.float64))
    return energy.item(), forces.numpy()


def moved(atoms: Atoms, matrix: np.ndarray | None = None, shift: np.ndarray | None = None) -> Atoms:
    """A copy turned by an orthogonal `matrix` (cell included) and/or translated by `shift`."""
    copy = atoms.copy()
    if matrix is not None:
        copy.set_cell(atoms.cell.array @ matrix.T, scale_atoms=False)
        copy.positions = atoms.positions @ matrix.T
    if shift is not None:
        copy.positions = copy.positions + shift
    return copy


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def assert_same(energy: float, forces: np.ndarray, expected_energy: float, expected_forces: np.ndarray) -> None:
    scale = np.abs(expected_forces).max()
    assert scale > 1e-3, "forces are (nearly) zero: the check would be vacuous"
    assert energy == pytest.approx(expected_energy, rel=1e-10, abs=1e-9)
    np.testing.assert_allclose(forces, expected_forces, rtol=0, atol=1e-9 * scale)


@pytest.mark.parametrize("name", list(ROLES))
@pytest.mark.parametrize("mpnn_type, force_mode", MODELS)
def test_rotation_reflection_translation(structures, name, mpnn_type, force_mode):
    atoms = structures[name]
    model = model_for(atoms, mpnn_type, force_mode)
    energy, forces = predict(model, atoms)
    rng = np.random.default_rng(7)
    rotation = random_rotation(rng)
    for matrix in (rotation, rotation @ np.diag([1.0, 1.0, -1.0])):  # a proper rotation, then an improper one
        turned_energy, turned_forces = predict(model, moved(atoms, matrix=matrix))
        assert_same(turned_energy, turned_forces, energy, forces @ matrix.T)
    shifted_energy, shifted_forces = predict(model, moved(atoms, shift=rng.normal(scale=3.0, size=3)))
    assert_same(shifted_energy, shifted_forces, energy, forces)


@pytest.mark.parametrize("name", list(ROLES))
@pytest.mark.parametrize("mpnn_type, force_mode", MODELS)
def test_permuting_atoms_permutes_forces(structures, name, mpnn_type, force_mode):
    atoms = structures[name]
    model = model_for(atoms, mpnn_type, force_mode)
    energy, forces = predict(model, atoms)
    order = np.random.default_rng(3).permutation(len(atoms))
    permuted_energy, permuted_forces = predict(model, atoms[order])
    assert_same(permuted_energy, permuted_forces, energy, forces[order])


@pytest.mark.parametrize("name", list(ROLES))
@pytest.mark.parametrize("mpnn_type", BACKBONES)
def test_conservative_forces_are_minus_the_energy_gradient(structures, name, mpnn_type):
    # The slab's sub-surface atoms sit on an ideal lattice, where many distances tie exactly;
    # PNA's min/max have no derivative at a tie, so the atoms are first moved by ~0.01 Å
    # (all of them: ASE's rattle leaves atoms under FixAtoms in place).
    atoms = structures[name].copy()
    atoms.set_constraint()
    atoms.rattle(stdev=0.01, seed=0)
    model = model_for(atoms, mpnn_type, "conservative")
    batch = Batch.from_arrays(graphs_of(atoms), dtype=torch.float64)
    _, forces = model(batch)
    rng = np.random.default_rng(5)
    # Even rattled, the 63-atom Si cell leaves some atom two neighbours whose PNA messages differ
    # by only ~4e-7 in one channel: a step of 1e-5 Å can swap its min/max and miss the
    # derivative by 1 %. 1e-6 Å stays inside such gaps; float64 rounding is then ~1e-8.
    step = 1e-6
    for atom, axis in zip(rng.choice(len(atoms), 4, replace=False), rng.integers(0, 3, 4)):
        energies = []
        for sign in (1, -1):
            positions = batch.positions.clone()
            positions[atom, axis] += sign * step
            with torch.no_grad():
                energies.append(model(dataclasses.replace(batch, positions=positions))[0].item())
        finite_difference = -(energies[0] - energies[1]) / (2 * step)
        assert finite_difference == pytest.approx(forces[atom, axis].item(), rel=1e-5, abs=1e-6)
