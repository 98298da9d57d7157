"""`gfm-data generate`: EMT-labelled slabs, bulk alloys and molecules that `convert` ingests."""
from __future__ import annotations

import argparse

import ase.io
import numpy as np
import pytest
from ase.build import molecule
from ase.calculators.emt import EMT
from scipy.sparse.csgraph import connected_components

from trainer.contract.errors import UserError
from trainer.data import cli
from trainer.data.adiosfile import DatasetReader
from trainer.data.cli import main
from trainer.data.generate import KINDS, MD_FRAMES, METALS, MIN_ATOMS, MOLECULES, GenerateOptions, generate

ORGANIC = {"H", "C", "N", "O"}
BOND = 1.8  # Å: longest bond of a generated molecule; real and EMT C-H, C-C, C-O bonds are shorter


def gfm_data(*args) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in args])
    assert exit_.value.code == 0


@pytest.mark.parametrize("kind", ["slabs", "bulk", "molecules"])
def test_generate_count_determinism_and_physics(tmp_path, kind):
    path = tmp_path / f"{kind}.extxyz"
    gfm_data("generate", "--kind", kind, "--count", 29, "--seed", 4, "--output", path, "--workers", 1)
    frames = ase.io.read(path, ":")
    assert len(frames) == 29
    # The same request from a pool of two processes gives identical structures and labels.
    again = generate(GenerateOptions(kind=kind, count=29, seed=4, workers=2))
    other_seed = generate(GenerateOptions(kind=kind, count=29, seed=5, workers=1))
    for a, b in zip(frames, again, strict=True):
        np.testing.assert_array_equal(a.numbers, b.numbers)
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-8)  # extxyz keeps 8 decimals
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-7)
    assert not np.array_equal(frames[0].numbers, other_seed[0].numbers) or \
        not np.allclose(frames[0].positions, other_seed[0].positions)

    metals = set(METALS)
    for atoms in frames:
        forces = atoms.get_forces(apply_constraint=False)
        assert np.linalg.norm(forces, axis=1).max() < 100.0
        assert MIN_ATOMS[kind] <= len(atoms) <= 60
        assert bool(metals & set(atoms.get_chemical_symbols())) == (kind != "molecules")
    for sample in (frames[2], frames[7]):  # the stored labels are EMT's (a relaxation and a rattled frame)
        recomputed = sample.copy()
        recomputed.calc = EMT()
        assert recomputed.get_potential_energy() == pytest.approx(sample.get_potential_energy(), abs=1e-6)
        np.testing.assert_allclose(recomputed.get_forces(apply_constraint=False),
                                   sample.get_forces(apply_constraint=False), atol=1e-6)

    forces = np.concatenate([a.get_forces(apply_constraint=False) for a in frames])
    assert 0.05 < np.median(np.linalg.norm(forces, axis=1)) < 10.0  # realistic, neither relaxed nor wild
    if kind == "slabs":
        assert all(tuple(a.pbc) == (True, True, False) for a in frames)
        assert all(len(a.constraints) == 1 and len(a.constraints[0].index) > 0 for a in frames)
        assert all(set(a.get_chemical_symbols()) & ORGANIC for a in frames)
        vacuum = [a.cell[2, 2] - np.ptp(a.positions[:, 2]) for a in frames]
        assert min(vacuum) > 8.0
    elif kind == "bulk":
        assert all(a.pbc.all() and not a.constraints for a in frames)
        assert all(a.calc.results.get("stress") is not None for a in frames)
    else:
        assert all(not a.pbc.any() and not a.constraints and "stress" not in a.calc.results for a in frames)
        assert all(set(a.get_chemical_symbols()) <= ORGANIC for a in frames)

    output = tmp_path / f"{kind}.bp"
    gfm_data("convert", "--name", kind, "-o", output, path)
    with DatasetReader(output) as reader:
        report = reader.info.cleaning_report
        assert report["total"]["kept"] == 29 and sum(reader.info.counts.values()) == 29
        assert reader.info.reference_energies.keys() <= set(reader.info.elements)


def test_molecules_are_whole_thermal_trajectories():
    """Each system: one g2 molecule, intact, in frames a few fs apart that really move."""
    frames = generate(GenerateOptions(kind="molecules", count=10 * MD_FRAMES, seed=1, workers=1))
    systems: dict[int, list] = {}
    for atoms in frames:
        systems.setdefault(atoms.info["system"], []).append(atoms)
    names = {run[0].info["molecule"] for run in systems.values()}
    assert len(systems) == 10 and len(names) >= 4 and names <= set(MOLECULES)  # a mix, not one molecule
    assert {"C", "N", "O"} <= {s for a in frames for s in a.get_chemical_symbols()}
    for run in systems.values():
        name = run[0].info["molecule"]
        assert [a.info["frame"] for a in run] == list(range(MD_FRAMES))
        for atoms in run:
            assert atoms.info["molecule"] == name
            assert atoms.get_chemical_formula() == molecule(name).get_chemical_formula()
            # Intact: one connected piece at EMT's bond lengths (its C-H bonds are 1.2-1.5 Å, longer
            # than real ones), and no two atoms on top of each other.
            distances = atoms.get_all_distances()
            assert connected_components(distances < BOND, directed=False)[0] == 1, name
            assert distances[np.triu_indices(len(atoms), 1)].min() > 0.7, name
        steps = [np.abs(b.positions - a.positions).max() for a, b in zip(run, run[1:])]
        assert 0.005 < min(steps) and max(steps) < 0.5, (name, steps)  # a trajectory, 2 fs per frame
        energies = [a.get_potential_energy() for a in run]
        assert np.ptp(energies) > 1e-3  # the potential energy moves with the vibrations
    # Thermal, not wild: MD17 ethanol at 500 K has a median force of ~1 eV/Å.
    norms = np.linalg.norm(np.concatenate([a.get_forces() for a in frames]), axis=1)
    assert 0.1 < np.median(norms) < 3.0 and norms.max() < 20.0


@pytest.mark.parametrize("kind, limit", [("bulk", 12), ("molecules", 5)])
def test_max_atoms_is_respected(kind, limit):
    frames = generate(GenerateOptions(kind=kind, count=24, seed=0, max_atoms=limit, workers=1))
    assert len(frames) == 24 and max(len(a) for a in frames) <= limit


def test_cli_lists_agree_with_the_generator_and_every_option_is_explained():
    assert cli.GENERATE_KINDS == KINDS and cli.GENERATE_MIN_ATOMS == MIN_ATOMS
    assert MIN_ATOMS["molecules"] == min(len(molecule(name)) for name in MOLECULES)
    commands = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    generate_parser = commands.choices["generate"]
    options = [a for a in generate_parser._actions if a.option_strings and a.dest != "help"]
    assert {a.dest for a in options} == {"kind", "count", "seed", "output", "max_atoms", "molecule", "workers",
                                         "overwrite"}
    for action in options:
        assert action.help and action.help != argparse.SUPPRESS, action.dest
    assert f"a mix of {len(MOLECULES)} small" in " ".join(generate_parser.format_help().split())


def test_one_molecule_makes_an_md17_like_set(tmp_path):
    path = tmp_path / "ethanol.extxyz"
    gfm_data("generate", "--kind", "molecules", "--molecule", "CH3CH2OH", "--count", 30, "--seed", 2,
             "--workers", 1, "-o", path)
    frames = ase.io.read(path, ":")
    assert len(frames) == 30 and {a.get_chemical_formula() for a in frames} == {"C2H6O"}
    assert len({a.info["system"] for a in frames}) == 3  # three runs, each from its own orientation and momenta
    two = generate(GenerateOptions(kind="molecules", count=30, seed=2, workers=1, molecules=("CH3CH2OH", "H2O")))
    assert {a.get_chemical_formula() for a in two} == {"C2H6O", "H2O"}
    with pytest.raises(UserError, match="--molecule C60: choose from CH3CH2OH, "):
        generate(GenerateOptions(kind="molecules", count=3, molecules=("C60",)))
    with pytest.raises(UserError, match="--molecule applies to --kind molecules, not slabs"):
        generate(GenerateOptions(kind="slabs", count=3, molecules=("H2O",)))
    with pytest.raises(UserError, match="--max-atoms 5: smaller than every molecule asked for"):
        generate(GenerateOptions(kind="molecules", count=3, max_atoms=5, molecules=("CH3CH2OH",)))
