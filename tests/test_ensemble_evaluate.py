"""`gfm-ensemble evaluate` on a single trained trial, and the distribution-shift check (--against)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase.calculators.emt import EMT

from ensembles import ethanol_ensemble  # noqa: F401  (fixture)
from test_ensemble_cli import PNG, assert_clean_failure, gfm_ensemble
from trainer.ensemble.evaluate import read_labelled
from trainer.ensemble.predict import Ensemble
from trainer.ensemble.single import trial_manifest


@pytest.fixture
def trial(ethanol_ensemble, tmp_path) -> Path:
    """A copy of one member's trial directory (trial.yaml, result.json, best.pt, checkpoint.pt)."""
    return Path(shutil.copytree(ethanol_ensemble.parent / "trials" / "egnn16", tmp_path / "egnn16"))


@pytest.fixture
def dataset(ethanol_ensemble) -> Path:
    return ethanol_ensemble.parent.parent / "ethanol.bp"


@pytest.fixture
def shifted(tmp_path, session_data, variant) -> Path:
    """Ethanol far from the MD frames the members saw: rattled by 0.25 Å, labelled by ASE's EMT."""
    frames = session_data.frames(variant, "ethanol_test", 16)
    rng = np.random.default_rng(0)
    for atoms in frames:
        atoms.calc = None
        atoms.positions += rng.normal(0.0, 0.25, atoms.positions.shape)
        atoms.calc = EMT()
        atoms.get_forces()
    path = tmp_path / "rattled.extxyz"
    ase.io.write(path, frames, format="extxyz")
    return path


def test_a_single_trial_gets_errors_only(trial, dataset):
    run = gfm_ensemble("evaluate", trial, dataset)
    assert run.returncode == 0, run.stderr
    assert "errors only" in run.stdout and "model egnn16" in run.stdout
    out = trial / "evaluations" / "ethanol-testset"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["uncertainty"] is None and "errors only" in metrics["note"]
    test = read_labelled(dataset, "testset", "testset")
    # The same numbers as the trial's model run directly (its weights, its cut-offs).
    state = torch.load(trial / "best.pt", weights_only=True)
    pred = Ensemble.from_manifest(trial_manifest(trial)).predict(test.structures)
    assert pred.member_names == ["egnn16"] and state["training"]["max_neighbours"] == 50
    model = metrics["accuracy"]["model"]
    assert model["energy_mae_eV"] == pytest.approx(np.abs(pred.energy_mean - test.energy).mean(), rel=1e-9)
    assert model["forces_mae_eV_per_A"] == pytest.approx(np.abs(pred.forces_mean - test.forces).mean(), rel=1e-9)
    assert (out / "parity_forces.png").read_bytes().startswith(PNG)
    assert not (out / "calibration.png").exists()   # no std, so no calibration figure


def test_an_older_best_pt_takes_its_neighbour_cap_from_the_trial_data(trial, dataset, tmp_path):
    state = torch.load(trial / "best.pt", weights_only=True)
    del state["training"]
    torch.save(state, trial / "best.pt")
    assert trial_manifest(trial).max_neighbours == 50   # from trial.yaml's dataset
    shutil.move(dataset, tmp_path / "moved.bp")
    try:
        run = gfm_ensemble("evaluate", trial, tmp_path / "moved.bp", "-o", tmp_path / "report")
        assert_clean_failure(run, "does not record the neighbour cap", "trial.yaml")
    finally:
        shutil.move(tmp_path / "moved.bp", dataset)


def test_against_a_shifted_set(ethanol_ensemble, dataset, shifted, tmp_path):
    out = tmp_path / "report"
    run = gfm_ensemble("evaluate", ethanol_ensemble, dataset, "--against", shifted, "-o", out)
    assert run.returncode == 0, run.stderr
    assert "distribution shift" in run.stdout and "mean forces std, raw (eV/Å)" in run.stdout
    assert "forces per atom: spearman" in run.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    against = json.loads((out / "against" / "metrics.json").read_text())
    assert against["data"]["file"] == str(shifted) and against["data"]["structures"] == 16
    assert (out / "against" / "calibration.png").read_bytes().startswith(PNG)
    ensemble = Ensemble.load(ethanol_ensemble)
    near = ensemble.predict(read_labelled(dataset, "testset", "testset").structures)
    far = ensemble.predict(read_labelled(shifted, None, "testset").structures)
    shift = metrics["shift"]
    assert shift["mean_std_ratio"]["raw"]["energy"] == pytest.approx(
        far.energy_std_raw.mean() / near.energy_std_raw.mean(), rel=1e-9)
    assert shift["mean_std_ratio"]["calibrated"]["forces"] == pytest.approx(
        far.forces_std.mean() / near.forces_std.mean(), rel=1e-9)
    # (Whether the std grows with the shift is a property of trained members, measured in the README,
    # not of these 1-2 epoch test members.)
    assert shift["error_ratio"]["forces_mae"] == pytest.approx(
        np.abs(far.forces_mean - read_labelled(shifted, None, "testset").forces).mean()
        / metrics["accuracy"]["ensemble_mean"]["forces_mae_eV_per_A"], rel=1e-9)
    assert shift["accuracy"]["shifted"] == against["accuracy"]["ensemble_mean"]
    per_atom = metrics["uncertainty"]["raw"]["forces"]["spearman_per_atom_norm"]
    assert -1 <= per_atom <= 1 and f"raw {per_atom:.3f}" in run.stdout


def test_a_single_trial_against_a_shifted_set(trial, dataset, shifted, tmp_path):
    # --split picks the dataset's split; the shifted ASE file is used whole.
    run = gfm_ensemble("evaluate", trial, dataset, "--split", "valset", "--against", shifted,
                       "-o", tmp_path / "report")
    assert run.returncode == 0, run.stderr
    shift = json.loads((tmp_path / "report" / "metrics.json").read_text())["shift"]
    assert shift["in_distribution"]["split"] == "valset" and shift["shifted"]["structures"] == 16
    assert "mean_std_ratio" not in shift and "errors only" in shift["note"]
    assert shift["error_ratio"]["energy_mae"] > 0


def test_bad_against_fails_before_anything_is_written(ethanol_ensemble, dataset, tmp_path, session_data, variant):
    bare = tmp_path / "bare.xyz"
    ase.io.write(bare, [a.copy() for a in session_data.frames(variant, "ethanol_test", 3)])
    run = gfm_ensemble("evaluate", ethanol_ensemble, dataset, "--against", bare, "-o", tmp_path / "report")
    assert_clean_failure(run, "bare.xyz", "structure 0 has no finite energy")
    assert not (tmp_path / "report").exists()
    run = gfm_ensemble("evaluate", tmp_path, dataset, "-o", tmp_path / "report")   # neither ensemble nor trial
    assert_clean_failure(run, "no manifest")
