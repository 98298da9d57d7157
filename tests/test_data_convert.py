"""`gfm-data convert` on generated EMT data and real DFT data: what goes in comes back out, by sample_id."""
from __future__ import annotations

import gzip
import json
import lzma
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import chemical_symbols

from datasets import REAL, VARIANTS
from trainer.data.adiosfile import SPLITS, DatasetReader
from trainer.data.cli import dataset_summary, main
from trainer.data.convert import report_path
from trainer.data.graphs import GraphArrays
from trainer.data.reference import degree_histogram
from trainer.data.splitting import SplitError, check_fractions, fraction_sizes, random_split
from trainer.data.structures import extract_labels, read_structures


def head(source: Path, frames: int, dest: Path) -> Path:
    """The first `frames` frames of an (ext)xyz file, plain or .xz, copied verbatim (streamed, no parsing)."""
    with (lzma.open(source, "rt") if source.suffix == ".xz" else open(source)) as packed, open(dest, "w") as out:
        for _ in range(frames):
            header = packed.readline()
            if not header.strip():
                break
            out.write(header)
            for _ in range(int(header) + 1):
                out.write(packed.readline())
    return dest


def gfm_data(*args: str) -> None:
    """Run the console script's main in-process (same code path as the installed `gfm-data`)."""
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in args])
    assert exit_.value.code == 0


def read_back(path: Path) -> tuple[dict[str, GraphArrays], dict]:
    with DatasetReader(path) as reader:
        return {split: reader.read(split) for split in SPLITS}, reader.info


def assert_round_trip(frames: list[Atoms], dataset: Path) -> None:
    """Every input frame is in exactly one split, with identical geometry and labels."""
    splits, info = read_back(dataset)
    stresses = extract_labels(frames, dataset).stress
    seen = []
    for split, graphs in splits.items():
        for g in range(len(graphs)):
            one = graphs.select([g])
            atoms = frames[int(one.sample_id[0])]
            seen.append(int(one.sample_id[0]))
            np.testing.assert_array_equal(one.atomic_numbers, atoms.numbers)
            np.testing.assert_array_equal(one.positions, atoms.positions)
            np.testing.assert_array_equal(one.cell[0], atoms.cell.array)
            np.testing.assert_array_equal(one.pbc[0], atoms.pbc)
            assert one.energy[0] == atoms.get_potential_energy()
            np.testing.assert_array_equal(one.forces, atoms.get_forces(apply_constraint=False))
            fixed = np.zeros(len(atoms), bool)
            for constraint in atoms.constraints:
                fixed[constraint.get_indices()] = True
            np.testing.assert_array_equal(one.fixed, fixed)
            stress = stresses[int(one.sample_id[0])]
            np.testing.assert_array_equal(one.stress[0], np.full((3, 3), np.nan) if stress is None else stress)
            assert one.num_edges[0] > 0
    assert sorted(seen) == list(range(len(frames)))
    assert sum(info.counts.values()) == len(frames)


ROUND_TRIPS = [(variant, role, frames) for variant in VARIANTS
               for role, frames in (("molecules", 80), ("slabs", 40), ("crystals", 60))]
if "dft" in VARIANTS:
    ROUND_TRIPS.append(("dft", "molecules_large", 40))  # 3BPA: 27 atoms, C H N O (no generated twin)


@pytest.mark.parametrize("variant, role, frames", ROUND_TRIPS)
def test_data_round_trips_through_the_dataset_file(tmp_path, session_data, variant, role, frames):
    source = head(session_data.file(variant, role), frames, tmp_path / "input.extxyz")
    output = tmp_path / "out.bp"
    gfm_data("convert", "--name", "real", "--output", output, "--radius", 5.0, "--max-neighbours", 40, source)
    expected = ase.io.read(source, ":")
    assert_round_trip(expected, output)
    _, info = read_back(output)
    assert info.name == "real" and info.radius == 5.0 and info.max_neighbours == 40
    assert info.elements == sorted(set(np.concatenate([a.numbers for a in expected]).tolist()))
    report = json.loads(report_path(output).read_text())
    assert report == info.cleaning_report
    assert report["total"] == {"read": frames, "kept": frames, "dropped": dict.fromkeys(report["rules"], 0)}


def test_fixed_atoms_and_mixed_periodicity_survive(tmp_path, slabs_file):
    source = head(slabs_file, 10, tmp_path / "oc20.extxyz")
    frames = ase.io.read(source, ":")
    assert all(len(a.constraints) == 1 for a in frames)  # both files have FixAtoms on sub-surface atoms
    for atoms in frames:  # slabs are often stored without z periodicity; the graph must follow
        results = atoms.calc.results
        atoms.pbc = (True, True, False)
        atoms.calc = SinglePointCalculator(atoms, **results)  # labels stay valid: same positions
    ase.io.write(tmp_path / "slab.traj", frames)
    gfm_data("convert", "--name", "oc20", "-o", tmp_path / "oc20.bp", "--val", 0, "--test", 0, tmp_path / "slab.traj")
    assert_round_trip(frames, tmp_path / "oc20.bp")
    splits, _ = read_back(tmp_path / "oc20.bp")
    assert splits["trainset"].fixed.sum() == sum(len(a.constraints[0].index) for a in frames)


def test_other_formats_and_compression_give_the_same_dataset(tmp_path, molecules_file):
    source = head(molecules_file, 30, tmp_path / "eth.extxyz")
    frames = ase.io.read(source, ":")
    ase.io.write(tmp_path / "eth.traj", frames)
    ase.io.write(tmp_path / "eth.db", frames)
    with open(source, "rb") as plain:
        (tmp_path / "eth.extxyz.gz").write_bytes(gzip.compress(plain.read()))
    reference = None
    for name in ("eth.extxyz", "eth.traj", "eth.db", "eth.extxyz.gz"):
        output = tmp_path / f"{name}.bp"
        gfm_data("convert", "--name", "eth", "-o", output, tmp_path / name)
        splits, _ = read_back(output)
        if reference is None:
            reference = splits
        for split in SPLITS:
            for field in ("sample_id", "positions", "energy", "forces", "edge_index", "edge_shift"):
                np.testing.assert_array_equal(getattr(splits[split], field), getattr(reference[split], field))


def test_labels_from_info_keys_and_mlearn_stress(tmp_path):
    atoms = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])
    atoms.info.update(REF_energy=-31.5, virial_stress_kbar=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    atoms.arrays["REF_forces"] = np.array([[0, 0, 0.5], [0, 0, -0.5]])
    labelled = extract_labels([atoms], "x")
    assert labelled.energy == [-31.5]
    np.testing.assert_array_equal(labelled.forces[0], atoms.arrays["REF_forces"])
    kbar = 0.1 * 1e9 / 1.602176634e-19 * 1e-30  # eV/Å^3 per kbar
    np.testing.assert_allclose(labelled.stress[0], -kbar * np.array([[1, 4, 6], [4, 2, 5], [6, 5, 3]]), rtol=1e-6)
    ase_voigt = atoms.copy()  # ASE's own Voigt order is xx yy zz yz xz xy
    ase_voigt.calc = SinglePointCalculator(ase_voigt, energy=0.0, stress=[1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(extract_labels([ase_voigt], "x").stress[0], [[1, 6, 5], [6, 2, 4], [5, 4, 3]])


def strained_cells(tmp_path: Path) -> list[Atoms]:
    """One rattled 32-atom Cu cell under 12 random strains up to 1 %, labelled by EMT, through extxyz."""
    rng = np.random.default_rng(0)
    base = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    base.rattle(stdev=0.05, seed=1)
    frames = []
    for _ in range(12):
        strain = rng.uniform(-0.01, 0.01, (3, 3))
        atoms = base.copy()
        atoms.set_cell(base.cell.array @ (np.eye(3) + 0.5 * (strain + strain.T)), scale_atoms=True)
        atoms.calc = EMT()
        atoms.calc = SinglePointCalculator(atoms, energy=atoms.get_potential_energy(), forces=atoms.get_forces(),
                                           stress=atoms.get_stress())
        frames.append(atoms)
    ase.io.write(tmp_path / "strained.extxyz", frames)
    return read_structures(tmp_path / "strained.extxyz")


def test_stress_sign_matches_the_energy_change_under_strain(tmp_path, session_data, variant):
    """dE ~= V sigma : d(strain) between nearby strained cells: on mlearn Mo's, this fixes the
    kbar -> eV/Å^3 sign of VASP's virial; on EMT's, that ASE's own stress keeps its sign."""
    if variant == "dft":
        frames = [a for a in session_data.frames("dft", "crystals_elastic")
                  if a.info["group"] == "Elastic" and len(a) == 54]
    else:
        frames = strained_cells(tmp_path)
    labelled = extract_labels(frames, "strained")
    ref = int(np.argmin([np.abs(s).sum() for s in labelled.stress]))
    predicted, actual = [], []
    for k, atoms in enumerate(frames):
        deformation = np.linalg.solve(frames[ref].cell.array, atoms.cell.array).T
        strain = 0.5 * (deformation + deformation.T) - np.eye(3)
        if k == ref or np.abs(strain).max() > 0.02:
            continue
        mean_stress = 0.5 * (labelled.stress[ref] + labelled.stress[k])
        predicted.append(frames[ref].get_volume() * np.sum(mean_stress * strain))
        actual.append(labelled.energy[k] - labelled.energy[ref])
    assert len(predicted) >= 5
    predicted, actual = np.array(predicted), np.array(actual)
    assert np.corrcoef(predicted, actual)[0, 1] > 0.95
    assert np.abs(predicted - actual).mean() < 0.3 * np.abs(actual).mean()


def _labelled(symbols: str, positions, energy, forces) -> Atoms:
    atoms = Atoms(symbols, positions=positions)
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
    return atoms


def test_cleaning_counts_are_exact(tmp_path):
    good = lambda e: _labelled("H2O", [[0, 0, 0], [0, 0, 0.96], [0, 0.96, 0]], e, np.full((3, 3), 0.1))
    huge = good(-1.0)
    huge.calc.results["forces"][1] = [0.0, 150.0, 0.0]   # 150 eV/Å on one atom
    nan_energy = good(float("nan"))
    inf_position = good(-2.0)
    inf_position.positions[2, 0] = np.inf
    no_forces = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])
    no_forces.calc = SinglePointCalculator(no_forces, energy=-1.0)
    empty = Atoms()
    empty.calc = SinglePointCalculator(empty, energy=0.0)
    frames = [good(-3.0), huge, nan_energy, good(-4.0), inf_position, no_forces, empty, good(-5.0)]
    ase.io.write(tmp_path / "crafted.extxyz", frames)
    output = tmp_path / "crafted.bp"
    gfm_data("convert", "--name", "crafted", "-o", output, "--val", 0, "--test", 0, tmp_path / "crafted.extxyz")
    splits, info = read_back(output)
    report = info.cleaning_report
    assert report["sources"][0]["read"] == 8 and report["sources"][0]["kept"] == 3
    assert report["sources"][0]["dropped"] == {"no_atoms": 1, "missing_energy": 0, "missing_forces": 1,
                                               "non_finite": 2, "max_force": 1}
    assert sorted(splits["trainset"].sample_id.tolist()) == [0, 3, 7]
    # Just under the limit is kept: the rule is "norm above --max-force".
    gfm_data("convert", "--name", "crafted", "-o", output, "--overwrite", "--max-force", 151,
             "--val", 0, "--test", 0, tmp_path / "crafted.extxyz")
    assert read_back(output)[1].cleaning_report["total"]["dropped"]["max_force"] == 0


def test_degree_histogram_counts_in_degrees_per_atom():
    chain = Atoms("H4", positions=[[0, 0, 0], [1, 0, 0], [2, 0, 0], [10, 0, 0]])
    graphs = GraphArrays.from_atoms([chain, chain], radius=1.5)
    # Ends of the 3-chain see 1 neighbour, its middle 2, the far atom none; twice.
    assert degree_histogram(graphs) == [2, 4, 2]


def test_split_is_deterministic_disjoint_and_complete():
    a = random_split(101, 0.1, 0.2, seed=7, where="x")
    b = random_split(101, 0.1, 0.2, seed=7, where="x")
    c = random_split(101, 0.1, 0.2, seed=8, where="x")
    assert all(np.array_equal(a[s], b[s]) for s in SPLITS)
    assert not all(np.array_equal(a[s], c[s]) for s in SPLITS)
    together = np.concatenate([a[s] for s in SPLITS])
    assert sorted(together.tolist()) == list(range(101))
    assert [len(a[s]) for s in SPLITS] == [71, 10, 20]
    assert fraction_sizes(5, 0.01, 0.0) == (4, 1, 0)  # a requested split is never silently empty
    with pytest.raises(SplitError, match="too few"):
        random_split(2, 0.3, 0.3, seed=0, where="tiny.xyz")
    with pytest.raises(SplitError, match="leaves no training"):
        check_fractions(0.5, 0.5)


def test_explicit_splits_and_fractions_together(tmp_path, molecules_file, molecules_test_file, variant):
    train = head(molecules_file, 50, tmp_path / "train.extxyz")
    test = head(molecules_test_file, 20, tmp_path / "test.extxyz")
    output = tmp_path / "eth.bp"
    gfm_data("convert", "--name", "ethanol", "-o", output, "--val", 0.2, "--seed", 3,
             "--split", f"test={test}", train)
    splits, info = read_back(output)
    # test comes whole from the explicit file (its fraction defaults to 0); val is 20% of train.
    assert info.counts == {"trainset": 40, "valset": 10, "testset": 20}
    assert splits["testset"].sample_id.tolist() == list(range(50, 70))
    assert set(splits["trainset"].sample_id) | set(splits["valset"].sample_id) == set(range(50))
    assert info.split_rule["explicit"]["testset"] == [str(test)]
    test_frames = ase.io.read(test, ":")
    np.testing.assert_array_equal(splits["testset"].positions, np.concatenate([a.positions for a in test_frames]))
    # Reference energies come from the training split only: changing the test set leaves them alone.
    gfm_data("convert", "--name", "ethanol", "-o", tmp_path / "eth2.bp", "--val", 0.2, "--seed", 3,
             "--split", f"test={train}", "--split", f"train={test}")
    assert read_back(tmp_path / "eth2.bp")[1].reference_energies != info.reference_energies
    summary = dataset_summary(output)
    frames = ase.io.read(train, ":") + test_frames
    sizes = [len(a) for a in frames]
    assert summary["samples"] == info.counts
    assert summary["elements"] == [chemical_symbols[z] for z in sorted({int(z) for a in frames for z in a.numbers})]
    assert summary["atoms_per_sample"] == {"min": min(sizes), "mean": pytest.approx(np.mean(sizes)),
                                           "max": max(sizes), "total": sum(sizes)}
    if variant == "dft":  # what the real ethanol files are
        assert summary["elements"] == ["H", "C", "O"]
        assert summary["atoms_per_sample"] == {"min": 9, "mean": 9.0, "max": 9, "total": 70 * 9}


def test_chunked_and_parallel_conversion_equals_whole_file(tmp_path, molecules_file, monkeypatch):
    import trainer.data.convert as convert_module

    source = head(molecules_file, 80, tmp_path / "eth.extxyz")
    gfm_data("convert", "--name", "eth", "-o", tmp_path / "whole.bp", source)
    monkeypatch.setattr(convert_module, "MIN_CHUNK_FRAMES", 10)
    monkeypatch.setattr(convert_module, "MAX_CHUNK_FRAMES", 25)
    gfm_data("convert", "--name", "eth", "-o", tmp_path / "chunks.bp", source)
    gfm_data("convert", "--name", "eth", "-o", tmp_path / "pool.bp", "--workers", 2, source)
    whole, info = read_back(tmp_path / "whole.bp")
    for other in ("chunks.bp", "pool.bp"):
        splits, other_info = read_back(tmp_path / other)
        assert other_info.cleaning_report == info.cleaning_report
        assert other_info.reference_energies == info.reference_energies
        for split in SPLITS:
            for field in ("sample_id", "positions", "energy", "forces", "edge_index", "edge_shift"):
                np.testing.assert_array_equal(getattr(splits[split], field), getattr(whole[split], field))


def test_info_prints_json(tmp_path, molecules_file, variant, capsys):
    source = head(molecules_file, 20, tmp_path / "eth.extxyz")
    gfm_data("convert", "--name", "eth", "-o", tmp_path / "eth.bp", source)
    capsys.readouterr()
    gfm_data("info", tmp_path / "eth.bp", "--json")
    summary = json.loads(capsys.readouterr().out)
    assert summary["samples"] == {"trainset": 16, "valset": 2, "testset": 2}
    assert summary["radius"] == 5.0 and summary["max_neighbours"] == 50
    # Small molecules: every pair of atoms is within the 5 Å cut-off, so a molecule of n atoms has n (n - 1) edges.
    pairs = [len(a) * (len(a) - 1) for a in ase.io.read(source, ":")]
    edges = summary["edges_per_sample"]
    assert (edges["min"], edges["max"], edges["total"]) == (min(pairs), max(pairs), sum(pairs))
    if variant == "dft":
        assert edges["min"] == edges["max"] == 9 * 8  # ethanol, 9 atoms
    assert summary["cleaning_report"]["total"]["kept"] == 20
