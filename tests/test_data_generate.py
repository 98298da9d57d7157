"""`gfm-data generate`: EMT-labelled slabs and bulk alloys that `convert` ingests."""
from __future__ import annotations

import ase.io
import numpy as np
import pytest
from ase.calculators.emt import EMT

from trainer.data.adiosfile import DatasetReader
from trainer.data.cli import main
from trainer.data.generate import METALS, GenerateOptions, generate


def gfm_data(*args) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in args])
    assert exit_.value.code == 0


@pytest.mark.parametrize("kind", ["slabs", "bulk"])
def test_generate_count_determinism_and_physics(tmp_path, kind):
    path = tmp_path / f"{kind}.extxyz"
    gfm_data("generate", "--kind", kind, "--count", 29, "--seed", 4, "--output", path, "--workers", 1)
    frames = ase.io.read(path, ":")
    assert len(frames) == 29
    # The same request from a pool of two processes gives identical structures and labels.
    again = generate(GenerateOptions(kind=kind, count=29, seed=4, workers=2))
    other_seed = generate(GenerateOptions(kind=kind, count=29, seed=5, workers=1))
    for a, b in zip(frames, again):
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-8)  # extxyz keeps 8 decimals
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-7)
    assert not np.array_equal(frames[0].numbers, other_seed[0].numbers) or \
        not np.allclose(frames[0].positions, other_seed[0].positions)

    metals = set(METALS)
    for atoms in frames:
        forces = atoms.get_forces(apply_constraint=False)
        assert np.linalg.norm(forces, axis=1).max() < 100.0
        assert 8 <= len(atoms) <= 60
        assert metals & set(atoms.get_chemical_symbols())
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
        assert all(set(a.get_chemical_symbols()) & {"H", "C", "N", "O"} for a in frames)
        vacuum = [a.cell[2, 2] - np.ptp(a.positions[:, 2]) for a in frames]
        assert min(vacuum) > 8.0
    else:
        assert all(a.pbc.all() and not a.constraints for a in frames)
        assert all(a.calc.results.get("stress") is not None for a in frames)

    output = tmp_path / f"{kind}.bp"
    gfm_data("convert", "--name", kind, "-o", output, path)
    with DatasetReader(output) as reader:
        report = reader.info.cleaning_report
        assert report["total"]["kept"] == 29 and sum(reader.info.counts.values()) == 29
        assert reader.info.reference_energies.keys() <= set(reader.info.elements)


def test_max_atoms_is_respected(tmp_path):
    frames = generate(GenerateOptions(kind="bulk", count=24, seed=0, max_atoms=12, workers=1))
    assert max(len(a) for a in frames) <= 12
