"""`gfm-hpo launch --warm-start EARLIER_RUN`: a second campaign's optimiser is told the first one's finished
trials (points outside the new space dropped and counted; another epoch budget refused unless asked for),
recorded in the new run's database, shown by status, and told again on resume."""
from __future__ import annotations

import json

import yaml

from datasets import emt_only
from hpo_helpers import assert_one_line_error, gfm_hpo
from orchestrator.search.backends import make_optimizer
from orchestrator.search.proposers import HpoProposer
from orchestrator.trialdb import load_trials
from orchestrator.trials.db import TrialDB
from search_spaces import parse_space

FIRST = """
backend: cbo
parameters:
  mpnn_type: {choices: [EGNN, SchNet]}
  hidden_dim: {low: 16, high: 64}
initial_points:
  - {mpnn_type: EGNN, hidden_dim: 16}
  - {mpnn_type: SchNet, hidden_dim: 40}
"""
# Overlapping: no SchNet (that point is dropped); one told result is enough for CBO's surrogate here.
SECOND = """
backend: cbo
parameters:
  mpnn_type: {choices: [EGNN, PNA]}
  hidden_dim: {low: 16, high: 64}
optimizer: {n_initial_points: 1}
"""


@emt_only
def test_a_second_campaign_starts_from_the_first_ones_trials(tmp_path, molecules_bp):
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first.write_text(FIRST)
    second.write_text(SECOND)
    common = ["--site", "local", "--nodes", "2", "--data", molecules_bp, "--set", "training.batch_size=16"]
    gfm_hpo("launch", *common, "--max-evals", "2", "--epochs", "2", "--space", first, "--run-dir", tmp_path / "a",
            check=True)
    assert list(load_trials(tmp_path / "a")["status"]) == ["completed", "completed"]

    # Bad warm starts fail at launch, in one line, before anything is written.
    for args, fragments in [(["--epochs", "3"], ["trained 2 epochs, this run 3 epochs", "--warm-start-any-fidelity"]),
                            (["--steps", "40"], ["trained 2 epochs, this run 40 steps"])]:
        done = gfm_hpo("launch", *common, *args, "--space", second, "--warm-start", tmp_path / "a",
                       "--run-dir", tmp_path / "bad")
        assert_one_line_error(done, *fragments)
    done = gfm_hpo("launch", *common, "--space", second, "--warm-start", tmp_path / "nowhere", "--run-dir", tmp_path / "bad")
    assert_one_line_error(done, "nowhere: not a run directory with a trial database")
    done = gfm_hpo("launch", *common, "--space", second, "--warm-start-any-fidelity", "--run-dir", tmp_path / "bad")
    assert_one_line_error(done, "--warm-start-any-fidelity: goes with --warm-start")
    assert not (tmp_path / "bad").exists()
    gfm_hpo("launch", *common, "--epochs", "3", "--space", second, "--warm-start", tmp_path / "a",
            "--warm-start-any-fidelity", "--dry-run", check=True)

    run = tmp_path / "b"
    gfm_hpo("launch", *common, "--max-evals", "1", "--epochs", "2", "--space", second, "--warm-start", tmp_path / "a",
            "--run-dir", run, check=True)
    trials = load_trials(run)
    # Cold, CBO's first proposal is from its random initial design; told the earlier EGNN trial, it is the surrogate's.
    assert list(trials["origin"]) == ["surrogate"] and list(trials["status"]) == ["completed"]
    status = gfm_hpo("status", run, check=True).stdout
    assert f"warm start: 1 trials imported from {tmp_path / 'a'} (0 of them failures; 1 outside this space dropped)" in status
    warm = json.loads(gfm_hpo("status", run, "--json", check=True).stdout)["phases"]["hpo"]["warm_start"]
    assert warm == {"from": str(tmp_path / "a"), "imported": 1, "dropped": 1, "failures": 0}
    earlier = load_trials(tmp_path / "a").set_index("mpnn_type")
    with TrialDB(run) as db:
        points = db.get_meta("warm_start_points")
        assert points == [[{"mpnn_type": "EGNN", "hidden_dim": 16}, earlier.loc["EGNN", "objective"]]]
        # A resumed manager tells them again, before its own trials, without the earlier run directory.
        space = parse_space(yaml.safe_load(SECOND), "second.yaml")
        optimizer = make_optimizer(space, 0, tmp_path / "optimizer")
        proposer = HpoProposer(space, optimizer, None, 5, [tuple(p) for p in points])  # restore needs no base trial
        proposer.restore(db)
    assert optimizer.num_told == 2 and optimizer.num_failed == 0
