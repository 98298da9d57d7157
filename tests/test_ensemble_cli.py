"""`gfm-ensemble` as users meet it: the console script on files of ethanol (generated and real), and its refusals."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import ase.io
import numpy as np
import pytest

from datasets import BIN, emt_only
from ensembles import ethanol_ensemble  # noqa: F401  (fixture)
from tables import assert_columns_aligned
from trainer.data.structures import read_structures
from trainer.ensemble import calibration_fit, uncertainty
from trainer.ensemble.calibration import energy_spread, member_offsets
from trainer.ensemble.evaluate import read_labelled
from trainer.ensemble.manifest import read_manifest
from trainer.ensemble.predict import Ensemble

PNG = b"\x89PNG\r\n\x1a\n"


def gfm_ensemble(*args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "gfm-ensemble"), *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def assert_clean_failure(run: subprocess.CompletedProcess, *words: str) -> None:
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gfm-ensemble: error: "), run.stderr
    for word in words:
        assert word in lines[0]


@pytest.fixture
def ethanol_input(tmp_path, session_data, variant) -> Path:
    """12 labelled held-out ethanol frames in a compressed extxyz of our own (outputs land next to it)."""
    path = tmp_path / "ethanol.extxyz.xz"
    ase.io.write(path, session_data.frames(variant, "ethanol_test", 12), format="extxyz")
    return path


def test_predict_writes_extxyz_next_to_the_input(ethanol_ensemble, ethanol_input):
    run = gfm_ensemble("predict", ethanol_input, "-e", ethanol_ensemble, "--members", "--batch-size", "5")
    assert run.returncode == 0, run.stderr
    output = ethanol_input.with_name("ethanol.pred.extxyz")
    frames = ase.io.read(output, ":")
    expected = Ensemble.load(ethanol_ensemble).predict(read_structures(ethanol_input), members=True)
    assert len(frames) == 12
    # Float32 members batched 5 and 64 at a time round differently (~1e-11 eV here); the float64
    # totals keep that, where float32 totals used to round it away.
    for k, atoms in enumerate(frames):
        assert atoms.info["energy_unit"] == "eV" and atoms.info["forces_unit"] == "eV/Angstrom"
        assert atoms.info["energy_mean"] == pytest.approx(expected.energy_mean[k], rel=1e-12, abs=1e-6)
        assert atoms.info["energy_std"] == pytest.approx(expected.energy_std[k], rel=1e-6)
        rows = expected.atoms_of(k)
        np.testing.assert_allclose(atoms.arrays["forces_mean"], expected.forces_mean[rows], atol=1e-7)
        np.testing.assert_allclose(atoms.arrays["forces_std"], expected.forces_std[rows], atol=1e-7)
        np.testing.assert_allclose(atoms.info["member_energies"], expected.member_energy[:, k], rtol=1e-12, atol=1e-6)
        members = atoms.arrays["member_forces"].reshape(len(atoms), 3, 3).transpose(1, 0, 2)
        np.testing.assert_allclose(members, expected.member_forces[:, rows], atol=1e-7)
    assert frames[0].info["member_names"] == "egnn16 schnet12 pna8"


def test_predict_csv_and_json(ethanol_ensemble, ethanol_input, tmp_path):
    assert gfm_ensemble("predict", ethanol_input, "-e", ethanol_ensemble, "-o", tmp_path / "p.csv",
                        "--members").returncode == 0
    assert gfm_ensemble("predict", ethanol_input, "-e", ethanol_ensemble, "-o", tmp_path / "p.json").returncode == 0
    with open(tmp_path / "p.csv") as handle:
        rows = list(csv.DictReader(handle))
    document = json.loads((tmp_path / "p.json").read_text())
    assert document["units"] == {"energy": "eV", "forces": "eV/Angstrom"}
    assert len(rows) == len(document["structures"]) == 12
    for row, record in zip(rows, document["structures"]):
        assert row["formula"] == record["formula"] == "C2H6O"
        assert float(row["energy_mean_eV"]) == pytest.approx(record["energy_mean"], rel=1e-12)
        members = [float(row[f"energy_{name}_eV"]) for name in ("egnn16", "schnet12", "pna8")]
        assert float(row["energy_std_raw_eV"]) == pytest.approx(np.std(members), rel=1e-6, abs=1e-9)
        assert np.asarray(record["forces_std"]).shape == (9, 3)
        assert float(row["max_atom_force_std_eV_per_A"]) == pytest.approx(
            np.linalg.norm(record["forces_std"], axis=1).max(), rel=1e-9)


def test_default_ensemble_is_found_in_the_newest_run(ethanol_ensemble, ethanol_input, tmp_path):
    shutil.copytree(ethanol_ensemble, tmp_path / "runs" / "hpo-1" / "ensemble")
    run = gfm_ensemble("predict", ethanol_input, "-o", tmp_path / "p.csv", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "runs/hpo-1/ensemble" in run.stdout


def test_calibrate_then_evaluate(ethanol_ensemble, tmp_path):
    ensemble = shutil.copytree(ethanol_ensemble, tmp_path / "ensemble")
    dataset = ethanol_ensemble.parent.parent / "ethanol.bp"
    run = gfm_ensemble("calibrate", ensemble, dataset)
    assert run.returncode == 0, run.stderr
    calibration = read_manifest(ensemble).calibration
    # the stored maps are those fitted on the raw stds of the validation split, never worse than raw there
    labelled = read_labelled(dataset, None, "valset")
    pred = Ensemble.load(ethanol_ensemble).predict(labelled.structures, members=True)   # not calibrated
    # Each member's constant energy offset is fitted there too, and removed from the spread.
    offsets = calibration.energy_offsets
    assert offsets == pytest.approx(member_offsets(pred.member_energy, pred.num_atoms), abs=1e-12)
    assert len(offsets) == len(pred.member_names) and abs(sum(offsets)) < 1e-12
    spread = energy_spread(pred.member_energy, pred.num_atoms, offsets)
    calibrated = Ensemble.load(ensemble).predict(labelled.structures)
    np.testing.assert_allclose(calibrated.energy_std_raw, spread, rtol=1e-9)
    np.testing.assert_allclose(calibrated.energy_mean, pred.energy_mean, rtol=1e-12)
    assert "energy offsets of the members" in run.stdout
    structures = np.arange(20)
    assert calibration.energy == calibration_fit.fit_quantity(pred.energy_mean - labelled.energy, spread, structures)
    assert calibration.forces == calibration_fit.fit_quantity(
        pred.forces_mean - labelled.forces, pred.forces_std_raw, np.repeat(structures, 27))
    for quantity, error, raw in (("energy", pred.energy_mean - labelled.energy, spread),
                                 ("forces", pred.forces_mean - labelled.forces, pred.forces_std_raw)):
        mapping = getattr(calibration, quantity)
        assert uncertainty.miscalibration_area(error, mapping.apply(raw)) <= uncertainty.miscalibration_area(
            error, raw) + 1e-12
        assert f"{quantity}: {mapping.describe()}" in run.stdout and "held-out miscalibration area" in run.stdout
    assert calibration.fitted_on["split"] == "valset" and calibration.fitted_on["structures"] == 20

    run = gfm_ensemble("evaluate", ensemble, dataset, "-o", tmp_path / "report")
    assert run.returncode == 0, run.stderr
    assert "ensemble mean" in run.stdout and "forces calibrated" in run.stdout
    lines = run.stdout.splitlines()
    assert_columns_aligned(lines[1:4], "E MAE meV/atom", "E RMSE meV/atom", "F MAE eV/Å", "F RMSE eV/Å")
    assert_columns_aligned(lines[5:10], "spearman", "±1σ", "±2σ", "miscal. area")
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["data"]["split"] == "testset" and metrics["data"]["structures"] == 20
    test = read_labelled(dataset, "testset", "testset")
    pred = Ensemble.load(ensemble).predict(test.structures, members=True)
    error = pred.energy_mean - test.energy
    assert metrics["accuracy"]["ensemble_mean"]["energy_mae_eV"] == pytest.approx(np.abs(error).mean(), rel=1e-9)
    assert metrics["accuracy"]["ensemble_mean"]["forces_rmse_eV_per_A"] == pytest.approx(
        np.sqrt(((pred.forces_mean - test.forces) ** 2).mean()), rel=1e-9)
    best = metrics["accuracy"]["best_member"]
    k = pred.member_names.index(best["name"])
    assert best["energy_mae_eV"] == pytest.approx(np.abs(pred.member_energy[k] - test.energy).mean(), rel=1e-9)
    raw, calibrated = metrics["uncertainty"]["raw"], metrics["uncertainty"]["calibrated"]
    assert raw["energy"]["coverage_1sigma"] == uncertainty.coverage(error, pred.energy_std_raw, 1.0)
    assert calibrated["energy"]["coverage_2sigma"] == uncertainty.coverage(error, pred.energy_std, 2.0)
    assert calibrated["forces"]["miscalibration_area"] == pytest.approx(
        uncertainty.miscalibration_area(pred.forces_mean - test.forces, pred.forces_std), rel=1e-9)
    for name in ("parity_energy.png", "parity_forces.png", "calibration.png", "error_vs_std.png"):
        assert (tmp_path / "report" / name).read_bytes().startswith(PNG)


def test_evaluate_an_ase_file_with_default_output(ethanol_ensemble, ethanol_input, tmp_path):
    ensemble = shutil.copytree(ethanol_ensemble, tmp_path / "ensemble")
    run = gfm_ensemble("evaluate", ensemble, ethanol_input)
    assert run.returncode == 0, run.stderr
    metrics = json.loads((ensemble / "evaluations" / "ethanol" / "metrics.json").read_text())
    assert metrics["data"]["structures"] == 12 and metrics["data"]["split"] is None
    assert -1 <= metrics["uncertainty"]["raw"]["forces"]["spearman_per_atom_norm"] <= 1


def test_info_lists_verified_members(ethanol_ensemble, tmp_path):
    run = gfm_ensemble("info", ethanol_ensemble)
    assert run.returncode == 0, run.stderr
    assert "3 members (all verified)" in run.stdout and "SchNet" in run.stdout and "conservative" in run.stdout
    lines = run.stdout.splitlines()
    members = lines[2:6]
    assert_columns_aligned(members, "hidden", "val loss", "epoch", "HPO trial", "member trial")
    manifest = read_manifest(ethanol_ensemble)
    for line, member in zip(members[1:], manifest.members):
        cells = line.split()
        assert cells[0] == member.name and float(cells[4]) == pytest.approx(member.val_loss, rel=1e-3)
        assert len(cells[4].replace(".", "").lstrip("0")) <= 4     # 4 significant digits, not 17
        assert cells[-3:-1] == ["-", str(member.trial_id)]          # no HPO trial recorded by these tests
        assert cells[-1] == ("-" if member.seed is None else str(member.seed))   # the member's training seed
    assert "HPO trial: the search trial whose configuration it retrains" in lines[6]
    # An ensemble that names its members' HPO trials (as gfm-ensemble train writes them) shows them.
    copy = shutil.copytree(ethanol_ensemble, tmp_path / "ensemble")
    document = json.loads((copy / "manifest.json").read_text())
    for k, member in enumerate(document["members"]):
        member["hpo_trial_id"] = 40 + k
    (copy / "manifest.json").write_text(json.dumps(document))
    run = gfm_ensemble("info", copy)
    assert [line.split()[-3:-1] for line in run.stdout.splitlines()[3:6]] == [["40", "0"], ["41", "1"], ["42", "2"]]


def _tampered(ensemble: Path, tmp_path: Path) -> Path:
    copy = shutil.copytree(ensemble, tmp_path / "tampered")
    path = copy / "members" / "egnn16.pt"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    return copy


@emt_only  # refusals before any prediction: the data behind the ensemble changes nothing here
@pytest.mark.parametrize("case", ["garbage", "empty", "missing-input", "unknown-element", "no-ensemble",
                                  "tampered", "bad-suffix", "bad-batch-size", "unlabelled-evaluate",
                                  "split-on-ase-file"])
def test_bad_input_fails_cleanly(case, ethanol_ensemble, ethanol_input, tmp_path, slabs_file):
    previous = tmp_path / "previous.csv"
    previous.write_text("an earlier result\n")
    output = ["-o", previous]
    inputs = {"garbage": tmp_path / "garbage.xyz", "empty": tmp_path / "empty.extxyz"}
    inputs["garbage"].write_text("3\nthis is not\nC 0 0 zero\n")
    inputs["empty"].write_text("")
    ensemble = ethanol_ensemble
    words: tuple[str, ...]
    if case in inputs:
        args, words = ["predict", inputs[case], "-e", ensemble, *output], (str(inputs[case]),)
    elif case == "missing-input":
        args, words = ["predict", tmp_path / "none.xyz", "-e", ensemble, *output], ("none.xyz", "no such file")
    elif case == "unknown-element":
        args, words = ["predict", slabs_file, "-e", ensemble, *output], ("structure 0", "was not in the ensemble's")
    elif case == "no-ensemble":
        args, words = ["predict", ethanol_input, "-e", tmp_path / "nowhere", *output], ("no such ensemble",)
    elif case == "tampered":
        args = ["predict", ethanol_input, "-e", _tampered(ensemble, tmp_path), *output]
        words = ("egnn16.pt", "SHA-256 does not match")
    elif case == "bad-suffix":
        args, words = ["predict", ethanol_input, "-e", ensemble, "-o", tmp_path / "p.parquet"], ("unknown output",)
    elif case == "bad-batch-size":
        args, words = ["predict", ethanol_input, "-e", ensemble, "--batch-size", "0", *output], ("--batch-size",)
    elif case == "unlabelled-evaluate":
        bare = tmp_path / "bare.xyz"
        ase.io.write(bare, [atoms.copy() for atoms in read_structures(ethanol_input)])  # copies drop labels
        args, words = ["evaluate", ensemble, bare, "-o", tmp_path / "report"], ("structure 0 has no finite energy",)
    else:
        args, words = ["calibrate", ensemble, ethanol_input, "--split", "valset"], ("--split applies to .bp",)
    before = read_manifest(ensemble).to_json()
    assert_clean_failure(gfm_ensemble(*args), *words)
    assert previous.read_text() == "an earlier result\n"   # nothing half-written, nothing damaged
    assert not (tmp_path / "report").exists() and not list(tmp_path.glob("*.pred.extxyz"))
    assert read_manifest(ensemble).to_json() == before
