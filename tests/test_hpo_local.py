"""gfm-hpo on the local site and as a dry run: the manager, the database, status, and bad input."""
from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from datasets import BIN, emt_only
from hpo_helpers import assert_one_line_error, gfm_hpo, intervals_overlap, result_of
from orchestrator.trialdb import load_curves, load_trials


def test_dry_run_at_frontier_scale_needs_no_data_or_account():
    done = gfm_hpo("launch", "--site", "frontier", "--nodes", "8192", "--dry-run", "--json", check=True)
    plan = json.loads(done.stdout)
    assert len(plan["slices"]) == 32 and plan["spare"] == []
    assert all(len(s["nodes"]) == 256 for s in plan["slices"])
    assert plan["slices"][0]["nodes"][0] == "frontier00001" and plan["slices"][-1]["nodes"][-1] == "frontier08192"
    every = [n for s in plan["slices"] for n in s["nodes"]]
    assert len(set(every)) == 8192
    first = plan["commands"][0].split()
    assert first[:1] == ["srun"] and "--nodes=256" in first and "--ntasks=2048" in first
    assert "--ntasks-per-node=8" in first and "--gpus-per-task=1" in first and "--gpu-bind=closest" in first
    assert "'--nodelist=frontier[00001-00256]'" in plan["commands"][0]
    assert first[-2] == "gfm-train" and first[-1].endswith("trials/00001")
    text = gfm_hpo("launch", "--site", "frontier", "--nodes", "8200", "--dry-run", check=True).stdout
    assert "32 slices of 256 nodes" in text and "8 spare (frontier[08193-08200])" in text


def test_dry_run_inside_an_allocation_uses_its_node_list():
    env = {**os.environ, "SLURM_JOB_ID": "1234",
           "SLURM_JOB_NODELIST": "frontier[00001-00004,00010],nid[001000-001003]"}
    done = gfm_hpo("launch", "--site", "frontier", "--nodes-per-trial", "4", "--dry-run", "--json", env=env, check=True)
    plan = json.loads(done.stdout)
    assert [s["nodes"] for s in plan["slices"]] == [
        ["frontier00001", "frontier00002", "frontier00003", "frontier00004"],
        ["frontier00010", "nid001000", "nid001001", "nid001002"]]
    assert plan["spare"] == ["nid001003"]


@emt_only  # refused before any trial runs: the data changes nothing
@pytest.mark.parametrize("args, fragments", [
    (["--site", "nowhere"], ["nowhere"]),
    (["--max-evals", "0"], ["--max-evals", "must be at least 1"]),
    (["--space", "no-such-space"], ["no-such-space", "not a packaged search space"]),
    (["--set", "training.batchsize=4"], ["training.batchsize", "did you mean 'batch_size'"]),
    (["--set", "nonsense"], ["--set nonsense"]),
    (["--nodes", "2", "--nodes-per-trial", "3"], ["nodes per trial (3) is more than the 2 nodes"]),
])
def test_bad_launch_input_is_one_line(tmp_path, molecules_bp, args, fragments):
    base = {"--site": "local", "--nodes": "2", "--data": str(molecules_bp), "--run-dir": str(tmp_path / "run")}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    done = gfm_hpo("launch", *[x for pair in base.items() for x in pair])
    assert_one_line_error(done, *fragments)
    assert not (tmp_path / "run").exists()


@emt_only
def test_bad_space_file_and_missing_data(tmp_path, molecules_bp):
    space = tmp_path / "space.yaml"
    space.write_text("parameters:\n  hidden_dim: {low: 50, high: 10}\n")
    done = gfm_hpo("launch", "--nodes", "1", "--data", molecules_bp, "--space", space, "--run-dir", tmp_path / "r")
    assert_one_line_error(done, str(space), "parameters.hidden_dim.low", "greater than high")
    done = gfm_hpo("launch", "--nodes", "1", "--data", tmp_path / "missing.bp", "--run-dir", tmp_path / "r")
    assert_one_line_error(done, "missing.bp: no such dataset")
    assert not (tmp_path / "r").exists()


def test_local_search_end_to_end(tmp_path, molecules_bp):
    run = tmp_path / "run"
    done = gfm_hpo("launch", "--site", "local", "--nodes", "2", "--max-evals", "4", "--epochs", "2",
                   "--space", "small", "--data", molecules_bp, "--run-dir", run, "--set", "training.batch_size=16",
                   check=True)
    assert "hpo: 4/4 done" in done.stdout
    trials = load_trials(run)
    assert len(trials) == 4 and set(trials["status"]) == {"completed"}
    for column in ("trial_id", "status", "objective", "mpnn_type", "num_conv_layers", "hidden_dim",
                   "num_fc_layers", "fc_dim", "epochs_done", "nodes", "started_at", "finished_at", "error"):
        assert column in trials.columns, column
    assert (trials["epochs_done"] == 2).all()
    for row in trials.itertuples():
        result = result_of(row.trial_dir)
        assert row.objective == pytest.approx(result["objective"])
        assert result["epochs_done"] == 2
        assert row.mpnn_type == _trial_yaml(row.trial_dir)["model"]["mpnn_type"]
    # Two slices: at most two trials at once, and concurrent trials never share a slice.
    rows = list(trials.itertuples())
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            if intervals_overlap(a, b):
                assert a.slice_index != b.slice_index and set(a.nodes).isdisjoint(b.nodes)
    curves = load_curves(run)
    assert len(curves) == 8 and set(curves["epoch"]) == {1, 2}
    status = gfm_hpo("status", run, check=True).stdout
    assert "hpo: 4 completed" in status and "best trials:" in status
    # 4 trials of a 5-dimensional space: all from CBO's random initial design (2 x 5 + 1 points).
    assert list(trials["origin"]) == ["initial_design"] * 4
    assert "proposed by: initial_design (the optimiser's random initial design) #1-4" in status
    report = json.loads(gfm_hpo("status", run, "--json", check=True).stdout)
    assert report["phases"]["hpo"]["counts"]["completed"] == 4
    assert report["phases"]["hpo"]["origins"] == {"initial_design": [1, 2, 3, 4]}
    best = report["phases"]["hpo"]["best"][0]
    assert best["objective"] == pytest.approx(trials["objective"].min())
    again = gfm_hpo("launch", "--nodes", "2", "--data", molecules_bp, "--run-dir", run)
    assert_one_line_error(again, "already holds a run", "gfm-hpo resume")
    assert len(load_trials(run)) == 4


@emt_only  # the lock on the run directory, whatever the data
def test_one_manager_per_run_directory(tmp_path, molecules_bp):
    run = tmp_path / "run"
    first = subprocess.Popen([BIN / "gfm-hpo", "launch", "--nodes", "1", "--max-evals", "2", "--epochs", "2",
                              "--space", "small", "--data", molecules_bp, "--run-dir", run],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not (run / "trials.db").exists() and time.time() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, "the first manager ended before the second could try"
        second = gfm_hpo("run", run)
        assert_one_line_error(second, "another manager", "is running on this run directory")
    finally:
        first.communicate(timeout=300)
    assert first.returncode == 0


def _trial_yaml(trial_dir) -> dict:
    import yaml

    return yaml.safe_load(open(f"{trial_dir}/trial.yaml"))
