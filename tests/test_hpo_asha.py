"""A local campaign with ASHA (space file `fidelity: {kind: asha}`): the real manager stops the trials a rung
discards through the wall-time stop's signal, the real trainer checkpoints and exits, the trial is recorded
as discarded at its rung with its partial curve, its slice takes the next trial, and status and report
show the rungs and what they saved."""
from __future__ import annotations

import json
from pathlib import Path

from datasets import emt_only
from hpo_helpers import gfm_hpo, result_of
from orchestrator.search.backends import make_optimizer
from orchestrator.search.base import restore
from orchestrator.trialdb import load_curves, load_trials
from orchestrator.trials.db import TrialDB
from search_spaces import load_space

EPOCHS = 6
# Trial 1 learns; trials 2-5 barely move (learning rate 1e-7), so at rung 1 trials 3-5 meet at least two
# earlier values, one of them far better, and are discarded (only the best max(1, n // 3) continue).
# Trial 2 runs beside trial 1 and may reach the rung first (then it continues: ASHA's early arrivals).
SPACE = f"""
backend: cbo
parameters:
  mpnn_type: {{choices: [EGNN, SchNet]}}
  hidden_dim: {{low: 16, high: 64}}
  learning_rate: {{low: 1.0e-7, high: 3.0e-3, prior: log-uniform}}
initial_points:
  - {{mpnn_type: EGNN, hidden_dim: 32, learning_rate: 3.0e-3}}
  - {{mpnn_type: EGNN, hidden_dim: 20, learning_rate: 1.0e-7}}
  - {{mpnn_type: EGNN, hidden_dim: 24, learning_rate: 1.0e-7}}
  - {{mpnn_type: SchNet, hidden_dim: 28, learning_rate: 1.0e-7}}
  - {{mpnn_type: SchNet, hidden_dim: 36, learning_rate: 1.0e-7}}
fidelity: {{kind: asha, rungs: [1, 3], reduction_factor: 3}}
"""


@emt_only
def test_asha_campaign_discards_at_rungs_and_reuses_the_slices(tmp_path, molecules_bp):
    space, run = tmp_path / "asha.yaml", tmp_path / "run"
    space.write_text(SPACE)
    gfm_hpo("launch", "--site", "local", "--nodes", "2", "--max-evals", "6", "--epochs", EPOCHS, "--space", space,
            "--data", molecules_bp, "--run-dir", run, "--set", "training.batch_size=4", check=True)
    trials = load_trials(run).set_index("trial_id")
    assert len(trials) == 6 and set(trials["status"]) <= {"completed", "discarded"}
    discarded = trials[trials["status"] == "discarded"]
    assert {3, 4, 5} <= set(discarded.index), trials[["status", "objective", "learning_rate"]]
    assert trials.loc[1, "status"] == "completed" and trials.loc[1, "epochs_done"] == EPOCHS
    curves = load_curves(run)
    with TrialDB(run) as db:
        decisions = db.rung_decisions()
        for trial_id, row in discarded.iterrows():
            verdict = next(d for d in decisions if d.trial_id == trial_id and not d.kept)
            assert row.discarded_at == verdict.rung and row.objective == verdict.value   # the value the rule used
            assert verdict.rank > 1 and row.epochs_done < EPOCHS
            # Stopped gracefully: the trainer checkpointed and said so; its partial curve is on record.
            result = result_of(row.trial_dir)
            assert result["status"] == "interrupted" and (Path(row.trial_dir) / "checkpoint.pt").exists()
            partial = curves[curves["trial_id"] == trial_id]
            assert verdict.rung <= len(partial) < EPOCHS
            assert min(partial["val_loss"].iloc[:verdict.rung]) == verdict.value
            # Its slice took a later trial.
            later = trials[(trials.index > trial_id) & (trials["slice_index"] == row.slice_index)]
            assert trial_id >= 5 or len(later) > 0
        assert all(d.kept for d in decisions if d.trial_id not in discarded.index)
        # Every trial told to an optimiser as a value (a restarted manager's view), none as a failure.
        optimizer = make_optimizer(load_space(str(space)), 0, tmp_path / "optimizer")
        assert restore(optimizer, db) == (6, 0) and optimizer.num_failed == 0
    assert "discarded at rung 1" in (run / "manager.log").read_text()
    # A discarded configuration is never proposed again: all six differ.
    assert len({json.dumps(p, sort_keys=True) for p in trials[["mpnn_type", "hidden_dim", "learning_rate"]]
                .to_dict("records")}) == 6

    status = gfm_hpo("status", run, check=True).stdout
    reached_1 = sum(d.rung == 1 for d in decisions)
    assert f"epoch 1: {reached_1} reached, {sum(d.rung == 1 and not d.kept for d in decisions)} discarded" in status
    assert "rungs (ASHA, reduction factor 3)" in status and "saved" in status
    fidelity = json.loads(gfm_hpo("status", run, "--json", check=True).stdout)["phases"]["hpo"]["fidelity"]
    saved = sum(EPOCHS - e for e in discarded["epochs_done"])
    assert fidelity["epochs_saved"] == saved > 0 and fidelity["discarded"] == len(discarded)
    assert fidelity["epochs_constant"] == 6 * EPOCHS and fidelity["node_hours_saved"] > 0
    assert [r["epochs"] for r in fidelity["rungs"]] == [1, 3] and fidelity["rungs"][0]["reached"] == 6
    gfm_hpo("report", run, "-o", tmp_path / "report", check=True)
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["phases"]["hpo"]["counts"]["discarded"] == len(discarded)
    assert summary["phases"]["hpo"]["fidelity"]["epochs_saved"] == saved
