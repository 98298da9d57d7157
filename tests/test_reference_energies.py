"""Per-element reference energies fitted by `gfm-data convert`: exact where the training
compositions determine them, one shared mean energy per atom where they do not."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

from datasets import SHARED_DATA
from test_data_convert import gfm_data, head, read_back
from trainer.data.cli import main
from trainer.data.convert import report_path
from trainer.data.graphs import GraphArrays
from trainer.data.reference import fit_reference_energies, fit_references


def test_reference_energies_recover_known_per_element_energies():
    rng = np.random.default_rng(3)
    truth = {1: -13.6, 6: -1029.0, 8: -2041.5, 29: -1.7}
    structures, energies = [], []
    for _ in range(40):
        numbers = rng.choice(list(truth), size=int(rng.integers(1, 12)))
        structures.append(Atoms(numbers=numbers, positions=rng.uniform(0, 6, (len(numbers), 3))))
        energies.append(sum(truth[int(z)] for z in numbers))
    graphs = GraphArrays.from_atoms(structures, radius=2.0, energies=energies)
    fitted = fit_reference_energies(graphs)
    assert fitted.keys() == truth.keys()
    for z, e in truth.items():
        assert fitted[z] == pytest.approx(e, abs=1e-8)
    # One element, varying atom counts (an mlearn-like set): still exact.
    silicon = [Atoms(f"Si{n}", positions=rng.uniform(0, 6, (n, 3))) for n in (2, 8, 63)]
    graphs = GraphArrays.from_atoms(silicon, radius=2.0, energies=[-5.4 * len(a) for a in silicon])
    assert fit_reference_energies(graphs) == {14: pytest.approx(-5.4, abs=1e-10)}
    assert fit_references(graphs).method == "least_squares"


def test_collinear_compositions_fall_back_to_a_shared_mean_per_atom():
    rng = np.random.default_rng(4)
    # B and C always come as a BC pair: e_A and e_B + e_C are determined, their split is not.
    truth = {3: -1.0, 4: -3.0, 5: -5.0}
    structures = [Atoms(numbers=[3] * a + [4, 5] * bc, positions=rng.uniform(0, 6, (a + 2 * bc, 3)))
                  for a, bc in ((1, 0), (2, 0), (1, 1), (2, 2), (3, 1))]
    energies = [sum(truth[int(z)] for z in atoms.numbers) for atoms in structures]
    fit = fit_references(GraphArrays.from_atoms(structures, radius=2.0, energies=energies))
    assert (fit.method, fit.rank, fit.num_compositions) == ("shared_mean", 2, 5)
    # The determined energy is fitted; the undetermined split stays symmetric about the shared mean.
    assert fit.energies == {3: pytest.approx(-1.0), 4: pytest.approx(-4.0), 5: pytest.approx(-4.0)}
    assert "5 compositions" in fit.message() and "rank 2 of 3" in fit.message()


def test_ethanol_references_are_the_mean_energy_per_atom(tmp_path, session_data, variant, capsys):
    # Real rMD17 ethanol, or generated ethanol-only frames: one composition either way.
    source = head(session_data.file(variant, "ethanol"), 50, tmp_path / "eth.extxyz")
    output = tmp_path / "eth.bp"
    gfm_data("convert", "--name", "ethanol", "-o", output, source)
    printed = capsys.readouterr().out
    splits, info = read_back(output)
    train = splits["trainset"]
    mean = float(np.sum(train.energy * train.num_atoms) / np.sum(train.num_atoms ** 2))  # 9 atoms each
    assert mean == pytest.approx(float(np.mean(train.energy / 9)))
    # Every element gets the mean (not the minimum-norm split, H -616 eV), and the output says why.
    assert info.reference_energies == dict.fromkeys([1, 6, 8], pytest.approx(mean, abs=1e-9))
    assert "all have the composition C2H6O" in printed and f"{mean:.4f} eV" in printed
    fitted = json.loads(report_path(output).read_text())["reference_energies"]
    assert fitted["method"] == "shared_mean" and fitted["rank"] == 1 and fitted["compositions"] == 1
    assert fitted["shared_mean_eV_per_atom"] == pytest.approx(mean)
    assert info.cleaning_report["reference_energies"] == fitted
    gfm_data("info", output)
    assert "all have the composition C2H6O" in capsys.readouterr().out


def counts_of(graphs: GraphArrays, elements: list[int]) -> np.ndarray:
    """[structures, elements] atom counts, computed here independently of the code under test."""
    return np.array([[np.sum(graphs.select([g]).atomic_numbers == z) for z in elements] for g in range(len(graphs))])


def test_mixed_sets_keep_their_fitted_references(tmp_path, session_data, variant, capsys):
    if variant == "dft":  # three elemental crystal sets of mlearn
        crystals = [head(SHARED_DATA / f"crystals/mlearn_{el}_training.extxyz.xz", 15, tmp_path / f"{el}.extxyz")
                    for el in ("Ge", "Si", "Mo")]
    else:  # random fcc alloys of seven metals, many compositions
        crystals = [head(session_data.file(variant, "crystals"), 45, tmp_path / "alloys.extxyz")]
    gfm_data("convert", "--name", "mlearn", "-o", tmp_path / "mlearn.bp", *crystals)
    assert "per-element least squares" in capsys.readouterr().out
    splits, info = read_back(tmp_path / "mlearn.bp")
    train = splits["trainset"]
    counts = counts_of(train, sorted(info.reference_energies))
    exact, *_ = np.linalg.lstsq(counts, train.energy, rcond=None)
    assert list(info.reference_energies.values()) == pytest.approx(exact.tolist(), abs=1e-9)
    assert info.cleaning_report["reference_energies"]["method"] == "least_squares"
    # Slabs with adsorbates (OC20: fewer compositions than elements). What they determine is kept:
    # the training totals are fitted as well as by plain least squares, with physical per-atom values.
    slabs = head(session_data.file(variant, "slabs"), 60, tmp_path / "slabs.extxyz")
    gfm_data("convert", "--name", "slabs", "-o", tmp_path / "slabs.bp", slabs)
    splits, info = read_back(tmp_path / "slabs.bp")
    fitted = info.cleaning_report["reference_energies"]
    if variant == "dft":
        assert fitted["method"] == "shared_mean" and 1 < fitted["rank"] < fitted["elements"]
    train = splits["trainset"]
    elements = sorted(info.reference_energies)
    counts = counts_of(train, elements)
    ours = counts @ np.array([info.reference_energies[z] for z in elements]) - train.energy
    plain = counts @ np.linalg.lstsq(counts, train.energy, rcond=None)[0] - train.energy
    assert np.abs(ours).max() == pytest.approx(np.abs(plain).max(), abs=1e-6)
    # Physical per-atom values: DFT totals are large and negative; EMT's are small cohesive-energy differences.
    low, high = (-15.0, 0.0) if variant == "dft" else (-5.0, 5.0)
    assert all(low < e < high for e in info.reference_energies.values())


def isolated_atoms_file(variant: str, directory: Path, symbols: str = "HCO") -> Path:
    """The DFT energies of rMD17's isolated atoms, or EMT's energy of each element alone."""
    if variant == "dft" and symbols == "HCO":
        return SHARED_DATA / "molecules" / "ethanol_isolated_atoms.xyz.xz"
    from ase.calculators.emt import EMT
    from ase.io import write

    atoms = []
    for symbol in symbols:
        alone = Atoms(symbol, positions=[[0.0, 0.0, 0.0]])
        alone.calc = EMT()
        alone.get_potential_energy()
        atoms.append(alone)
    path = directory / f"isolated_{symbols}.extxyz"
    write(path, atoms, format="extxyz")
    return path


def test_isolated_atom_energies_replace_the_fitted_references(tmp_path, session_data, variant, capsys):
    from ase.io import read

    source = head(session_data.file(variant, "ethanol"), 50, tmp_path / "eth.extxyz")
    isolated = isolated_atoms_file(variant, tmp_path)
    # Only the data's elements are kept (the rMD17 file also has N).
    expected = {int(a.numbers[0]): a.get_potential_energy() for a in read(isolated, ":") if a.numbers[0] in (1, 6, 8)}
    output = tmp_path / "eth.bp"
    gfm_data("convert", "--name", "ethanol", "-o", output, source, "--isolated-atoms", isolated)
    printed = capsys.readouterr().out
    _, info = read_back(output)
    assert info.reference_energies == {z: pytest.approx(e, abs=1e-12) for z, e in expected.items()}
    assert "isolated-atom energies of H C O" in printed
    assert json.loads(report_path(output).read_text())["reference_energies"]["method"] == "isolated_atoms"


def test_isolated_atoms_must_cover_every_element(tmp_path, session_data, variant, capsys):
    source = head(session_data.file(variant, "ethanol"), 20, tmp_path / "eth.extxyz")
    isolated = isolated_atoms_file("emt", tmp_path, symbols="HC")
    output = tmp_path / "eth.bp"
    with pytest.raises(SystemExit) as exit_:
        main(["convert", "--name", "ethanol", "-o", str(output), str(source), "--isolated-atoms", str(isolated)])
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error == (f"gfm-data: error: {isolated}: no isolated-atom energy for O (it has H C); "
                     "give one for every element of the data")
    assert not output.exists() and not report_path(output).exists()
    # A file of molecules only is refused before any input is read.
    with pytest.raises(SystemExit):
        main(["convert", "--name", "ethanol", "-o", str(output), str(source), "--isolated-atoms", str(source)])
    assert "no one-atom structure with an energy" in capsys.readouterr().err
