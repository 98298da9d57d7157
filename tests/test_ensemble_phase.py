"""The ensemble phase: top-K selection, and the whole campaign (the README's first command) end to end."""
from __future__ import annotations

import json
import subprocess
import sys

import ase.io
import numpy as np

from datasets import BIN
from hpo_helpers import gfm_hpo
from orchestrator.phases.ensemble import select_top
from orchestrator.trialdb import load_trials
from orchestrator.trials.schema import Trial


def trial(trial_id: int, objective: float | None, status: str = "completed", **params) -> Trial:
    params = {"mpnn_type": "EGNN", "hidden_dim": 10, **params}
    return Trial(trial_id=trial_id, phase="hpo", status=status, params=params, trial_dir=None, parent_id=None,
                 slice_index=0, nodes=[], attempt=1, submitted_at=0.0, started_at=0.0, finished_at=1.0,
                 objective=objective, epochs_done=2, num_parameters=1, wall_time=1.0, error=None)


def test_top_k_skips_failures_and_duplicate_configurations_and_breaks_ties_by_id():
    trials = [trial(1, 0.5, hidden_dim=10), trial(2, 0.3, hidden_dim=20), trial(3, 0.3, hidden_dim=30),
              trial(4, 0.2, hidden_dim=20),                      # same configuration as 2, better: kept instead
              trial(5, None, "failed", hidden_dim=40), trial(6, None, "running", hidden_dim=50),
              trial(7, 0.1, "interrupted", hidden_dim=60)]
    assert [t.trial_id for t in select_top(trials, 3)] == [4, 3, 1]
    assert [t.trial_id for t in select_top(trials, 10)] == [4, 3, 1]   # fewer than asked: all there are
    assert select_top([trial(5, None, "failed")], 3) == []


def test_demo_campaign_end_to_end(tmp_path):
    """`scripts/demo.sh` at a smaller size: HPO -> ensemble -> predict -> evaluate -> report."""
    out = tmp_path / "campaign"
    done = subprocess.run([sys.executable, "-m", "orchestrator.demo", "--out", str(out), "--trials", "6",
                           "--members", "2"], capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "campaign done" in done.stdout
    trials = load_trials(out / "run")
    hpo, members = trials[trials["phase"] == "hpo"], trials[trials["phase"] == "ensemble"]
    assert len(hpo) == 6 and set(hpo["status"]) == {"completed"}
    # The demo space starts CBO with 4 random points: on 2 slices the 6th trial at the latest is
    # the surrogate's, and every trial says which it was.
    origins = hpo["origin"].tolist()
    assert origins[:4] == ["initial_design"] * 4 and origins[-1] == "surrogate", origins
    assert set(origins) == {"initial_design", "surrogate"}
    # The live display (stdout is a pipe here): never the same line twice in a row but for the clock,
    # and the members' epochs and validation losses as they train.
    progress = [line.split("] ", 1)[1] for line in done.stdout.splitlines() if line.startswith("[")]
    assert progress and all(a != b for a, b in zip(progress, progress[1:])), progress
    assert any("ensemble: " in line and "(from HPO trial " in line and ", val loss " in line for line in progress)
    # The last lines say how to run the commands: they are in a virtual environment's bin.
    assert f"gfm-hpo status {out / 'run'}" in done.stdout.splitlines()[-1] + done.stdout.splitlines()[-2]
    assert "bin/activate" in done.stdout
    best_two = hpo.sort_values(["objective", "trial_id"])["trial_id"].head(2).tolist()
    assert sorted(members["parent_id"].astype(int)) == sorted(best_two)
    assert set(members["status"]) == {"completed"}
    manifest = json.loads((out / "run" / "ensemble" / "manifest.json").read_text())
    assert len(manifest["members"]) == 2 and manifest["calibration"]["energy"]["a"] > 0
    held_out = ase.io.read(out / "data" / "held_out.extxyz", ":")
    predicted = ase.io.read(out / "predictions.extxyz", ":")
    assert len(predicted) == len(held_out)
    for atoms in predicted[:5]:
        assert np.isfinite(atoms.info["energy_mean"]) and atoms.info["energy_std"] >= 0
        assert atoms.arrays["forces_mean"].shape == (len(atoms), 3)
        assert (atoms.arrays["forces_std"] >= 0).all()
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert metrics["data"]["structures"] == len(held_out)
    forces = np.concatenate([atoms.get_forces() for atoms in held_out])
    zero_force_mae = np.abs(forces).mean()
    # Even a 2-epoch search and a short full training learn forces: better than predicting zero.
    assert metrics["accuracy"]["ensemble_mean"]["forces_mae_eV_per_A"] < zero_force_mae
    for name in ("trajectory", "learning_curves", "objective_by_mpnn", "slice_timeline"):
        assert (out / "report" / f"{name}.png").stat().st_size > 5000
    status = gfm_hpo("status", out / "run", check=True).stdout
    assert "ensemble: 2 completed" in status
    surrogate = [int(t) for t in hpo.loc[hpo["origin"] == "surrogate", "trial_id"]]
    assert f"surrogate (the optimiser's surrogate model) #{surrogate[0]}" in status
    # gfm-ensemble info: each member's HPO trial, its own member trial and its seed, labelled.
    info = subprocess.run([str(BIN / "gfm-ensemble"), "info", str(out / "run" / "ensemble")], capture_output=True,
                          text=True, check=True).stdout.splitlines()
    assert info[2].split()[-5:] == ["HPO", "trial", "member", "trial", "seed"]
    shown = {tuple(map(int, line.split()[-3:-1])) for line in info[3:5]}
    assert shown == {(int(r.parent_id), int(r.trial_id)) for r in members.itertuples()}
    assert all(line.split()[0] == f"member{k:02d}-hpo{line.split()[-3].zfill(5)}-seed{line.split()[-1]}"
               for k, line in enumerate(info[3:5]))
