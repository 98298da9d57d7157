"""Diverse ensembles: K configurations x S seeds, bootstrap resamples, and a phase fixed once started."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import torch

from datasets import BIN, one_variant
from hpo_helpers import gfm_hpo
from orchestrator.phases.ensemble import (SELECTION_KEY, EnsemblePlan, Member, _selection, member_config,
                                          plan_members)
from orchestrator.trialdb import load_trials
from orchestrator.trials.db import TrialDB
from trainer.contract import typed
from trainer.contract.errors import UserError
from trainer.contract.trialconfig import TrialConfig
from trainer.data.adiosfile import DatasetReader
from trainer.data.structures import read_structures
from trainer.ensemble.manifest import load_manifest
from trainer.ensemble.predict import Ensemble

PARENT = typed.build(TrialConfig, {"name": "hpo-3", "data": {"sources": [{"path": "x.bp"}]},
                                   "training": {"seed": 0, "epochs": 2}}, "test")


def test_members_are_configurations_times_seeds_each_with_its_own_seed():
    members = plan_members([7, 3, 5], EnsemblePlan(3, 40, 10, seeds=2))
    assert members == [Member(7, 0), Member(3, 1), Member(5, 2), Member(7, 3), Member(3, 4), Member(5, 5)]
    config = member_config(PARENT, EnsemblePlan(3, 40, 10, seeds=2, bootstrap=True), seed=4)
    assert (config.training.seed, config.data.bootstrap, config.training.epochs) == (4, True, 40)
    assert config.name == "member-of-hpo-3-seed4"
    legacy = member_config(PARENT, EnsemblePlan(3, 40, 10), seed=None)   # the parent's seed, all the data
    assert (legacy.training.seed, legacy.data.bootstrap) == (0, False)


def _db_with_hpo(tmp_path, objectives) -> TrialDB:
    db = TrialDB(tmp_path)
    for k, objective in enumerate(objectives):
        trial_id = db.create_trial("hpo", {"hidden_dim": 10 + k})
        db.mark_running(trial_id, 0, ["n1"])
        db.mark_finished(trial_id, "completed", objective)
    return db


def test_selection_is_fixed_once_started(tmp_path):
    with _db_with_hpo(tmp_path, [0.3, 0.1, 0.2]) as db:
        plan = EnsemblePlan(2, 5, None, seeds=2, bootstrap=True)
        assert _selection(db, plan) == [Member(2, 0), Member(3, 1), Member(2, 2), Member(3, 3)]
        better = db.create_trial("hpo", {"hidden_dim": 99})   # a better trial found later changes nothing
        db.mark_running(better, 0, ["n1"])
        db.mark_finished(better, "completed", 0.01)
        assert _selection(db, plan) == [Member(2, 0), Member(3, 1), Member(2, 2), Member(3, 3)]
        for other in (EnsemblePlan(2, 5, None, seeds=3, bootstrap=True), EnsemblePlan(2, 5, None, seeds=2)):
            with pytest.raises(UserError, match="was started with"):
                _selection(db, other)


def test_a_phase_started_before_seeds_keeps_its_members(tmp_path):
    with _db_with_hpo(tmp_path, [0.3, 0.1]) as db:
        db.set_meta(SELECTION_KEY, [2, 1])
        db.set_meta("ensemble_plan", {"top_k": 2, "max_epochs": 5, "patience": None})
        assert _selection(db, EnsemblePlan(2, 5, None)) == [Member(2, None), Member(1, None)]
        with pytest.raises(UserError, match="was started with"):
            _selection(db, EnsemblePlan(2, 5, None, seeds=2))


@one_variant
def test_seeds_and_bootstrap_give_distinct_members(tmp_path, molecules_bp):
    """gfm-hpo, then gfm-ensemble train --top-k 1 --seeds 2 --bootstrap, as a user runs them."""
    run = tmp_path / "run"
    gfm_hpo("launch", "--site", "local", "--nodes", "2", "--max-evals", "1", "--epochs", "1", "--space", "small",
            "--data", molecules_bp, "--run-dir", run, "--set", "training.batch_size=16",
            "--set", "model.num_conv_layers=1", "--set", "model.hidden_dim=8", check=True)
    train = [str(BIN / "gfm-ensemble"), "train", str(run), "--top-k", "1", "--seeds", "2", "--bootstrap",
             "--max-epochs", "2", "--min-steps", "0"]   # short members: distinctness, not accuracy
    done = subprocess.run(train, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ensemble of 2 members" in done.stdout and "calibration on" in done.stdout
    manifest = load_manifest(run / "ensemble")
    assert [m.seed for m in manifest.members] == [0, 1]
    assert [m.name for m in manifest.members] == ["member00-hpo00001-seed0", "member01-hpo00001-seed1"]
    with DatasetReader(molecules_bp) as reader:
        train_samples = reader.info.counts["trainset"]
    assert all(m.data["bootstrap"] and m.data["distinct_train_samples"] < m.data["train_samples"] == train_samples
               for m in manifest.members)
    assert manifest.members[0].params == manifest.members[1].params   # one configuration, two seeds
    first, second = (state["model"] for state in manifest.checkpoints)
    assert any(not torch.equal(first[k], second[k]) for k in first)
    frames = read_structures(molecules_bp.with_suffix(".extxyz"))[:8]
    pred = Ensemble.load(run / "ensemble").predict(frames, members=True)
    # Total energies are float32 sums near 4000 eV (resolution ~0.5 meV): two members may round to the
    # same value on a frame, but not on most of them.
    assert (np.abs(pred.member_energy[0] - pred.member_energy[1]) > 0).mean() > 0.5
    assert (pred.energy_std_raw > 0).mean() > 0.5
    calibration = json.loads((run / "ensemble" / "manifest.json").read_text())["calibration"]
    assert calibration["energy"]["form"] in ("identity", "scalar", "power") and calibration["fitted_on"]
    trials = load_trials(run)
    assert len(trials[trials["phase"] == "ensemble"]) == 2
    # Resuming is fixed to the plan it started with; the same plan trains nothing again.
    three_seeds = list(train)
    three_seeds[train.index("--seeds") + 1] = "3"
    other = subprocess.run(three_seeds, capture_output=True, text=True, timeout=300)
    assert other.returncode == 2 and "was started with" in other.stderr
    again = subprocess.run(train, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert len(load_trials(run).query("phase == 'ensemble'")) == 2
