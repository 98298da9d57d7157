"""gfm-train on generated and real data: the trial contract (trial.yaml in, result.json and checkpoints out).

The trainings whose outcome depends on the data run on both variants; the mechanics of a trial
(bad input, divergence, interrupt and resume, reruns, patience, DDP with memory techniques) run
on the generated data only: what they check is the same on any data, and each costs seconds."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from datasets import BIN, VARIANTS, emt_only
from trainer.contract import typed
from trainer.contract import typed
from trainer.contract.result import EXIT_BAD_CONFIG, EXIT_INTERRUPTED
from trainer.contract.result import EXIT_BAD_CONFIG, EXIT_INTERRUPTED
from trainer.contract.trialconfig import TrialConfig, write_trial
from trainer.contract.trialconfig import TrialConfig, write_trial

MPIEXEC = shutil.which("mpiexec", path=str(BIN))


def make_trial(trial_dir: Path, dataset: Path, **sections) -> Path:
    raw = {"data": {"sources": [{"path": str(dataset)}]},
           "model": {"mpnn_type": "EGNN", "num_conv_layers": 2, "hidden_dim": 16, "fc_dim": 16},
           "training": {"epochs": 2, "batch_size": 16, "threads": 1}}
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    write_trial(trial_dir, typed.build(TrialConfig, raw, "test"))
    return trial_dir


def gfm_train(trial_dir: Path, ranks: int = 1, **kwargs) -> subprocess.CompletedProcess:
    command = [str(BIN / "gfm-train"), str(trial_dir)]
    if ranks > 1:
        command = [MPIEXEC, "-n", str(ranks)] + command
    return subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)


def result_of(trial_dir: Path) -> dict:
    return json.loads((trial_dir / "result.json").read_text())


def state_of(trial_dir: Path, name: str = "checkpoint.pt") -> dict:
    return torch.load(trial_dir / name, weights_only=True)


def weights(trial_dir: Path, name: str = "checkpoint.pt") -> dict[str, torch.Tensor]:
    return state_of(trial_dir, name)["model"]


def assert_same_weights(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=1e-4, msg=key)


@pytest.mark.parametrize("mpnn_type", ["EGNN", "PNA", "SchNet", "PaiNN"])
def test_trial_completes_with_full_result(tmp_path, molecules_bp, mpnn_type):
    trial = make_trial(tmp_path / "t", molecules_bp, model={"mpnn_type": mpnn_type})
    run = gfm_train(trial)
    assert run.returncode == 0, run.stderr
    result = result_of(trial)
    assert result["status"] == "completed" and result["error"] is None
    assert result["epochs_done"] == 2 and [e["epoch"] for e in result["epochs"]] == [1, 2]
    val_losses = [e["val_loss"] for e in result["epochs"]]
    assert result["objective"] == result["best_val_loss"] == min(val_losses)
    assert result["best_epoch"] == 1 + val_losses.index(min(val_losses))
    assert result["num_parameters"] > 0 and result["world_size"] == 1
    assert result["peak_memory_bytes"] > 0 and result["startup_seconds"] > 0
    assert len(result["hostnames"]) == 1 and result["stop_reason"] == "epoch budget"
    assert (trial / "checkpoint.pt").exists() and (trial / "best.pt").exists()
    assert "epoch 2/2" in run.stdout  # the human-readable line per epoch


def test_periodic_crystal_and_conservative_forces(tmp_path, crystals_bp):
    trial = make_trial(tmp_path / "t", crystals_bp, model={"force_mode": "conservative"},
                       training={"epochs": 1, "batch_size": 4})
    run = gfm_train(trial)
    assert run.returncode == 0, run.stderr
    assert result_of(trial)["status"] == "completed"


@emt_only
def test_bad_trial_yaml_fails_cleanly(tmp_path, molecules_bp):
    trial = make_trial(tmp_path / "t", molecules_bp)
    text = (trial / "trial.yaml").read_text().replace("hidden_dim:", "hiden_dim:")
    (trial / "trial.yaml").write_text(text)
    run = gfm_train(trial)
    assert run.returncode == EXIT_BAD_CONFIG
    assert "Traceback" not in run.stderr
    assert "model.hiden_dim: unknown key (did you mean 'hidden_dim'?)" in run.stderr
    result = result_of(trial)
    assert result["status"] == "failed" and "hiden_dim" in result["error"]


def test_missing_dataset_fails_cleanly(tmp_path):
    trial = make_trial(tmp_path / "t", tmp_path / "nowhere.bp")
    run = gfm_train(trial)
    assert run.returncode == EXIT_BAD_CONFIG and "Traceback" not in run.stderr
    assert "nowhere.bp" in result_of(trial)["error"]


@emt_only
def test_divergence_is_a_failure_not_a_number(tmp_path, molecules_bp):
    trial = make_trial(tmp_path / "t", molecules_bp,
                       training={"learning_rate": 1e12, "gradient_clip": None, "optimizer": "sgd"})
    run = gfm_train(trial)
    assert run.returncode == 1
    result = result_of(trial)
    assert result["status"] == "failed" and "non-finite loss" in result["error"]
    assert result["objective"] is None


@emt_only
def test_template_is_a_valid_trial(tmp_path, molecules_bp):
    text = subprocess.run([BIN / "gfm-train", "--template"], capture_output=True, text=True, check=True).stdout
    trial = tmp_path / "t"
    trial.mkdir()
    text = text.replace("../data/ethanol.bp", str(molecules_bp)).replace("epochs: 10", "epochs: 1")
    (trial / "trial.yaml").write_text(text)
    run = gfm_train(trial)
    assert run.returncode == 0, run.stderr


@emt_only
@pytest.mark.parametrize("bootstrap", [False, True])
def test_interrupt_then_resume_equals_uninterrupted(tmp_path, molecules_bp, bootstrap):
    """SIGTERM mid-epoch: checkpoint, status interrupted, exit 75; rerun finishes as if never stopped
    (also when training on a bootstrap resample, which the resumed run must draw again identically).

    With the default recipe: the weight average, cosine schedule and stage two (the last 20 % of the
    3 epochs' steps, so the stop in epoch 2 falls before it and the resumed run crosses into it)."""
    options = {"training": {"epochs": 3, "batch_size": 4, "seed": 3}, "data": {"bootstrap": bootstrap}}
    reference = make_trial(tmp_path / "reference", molecules_bp, **options)
    assert gfm_train(reference).returncode == 0
    trial = make_trial(tmp_path / "stopped", molecules_bp, **options)
    process = subprocess.Popen([BIN / "gfm-train", str(trial)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline:  # wait for the first epoch to be on record, then stop mid-epoch 2
        if (trial / "result.json").exists() and result_of(trial)["epochs_done"] >= 1:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == EXIT_INTERRUPTED, stderr
    stopped = result_of(trial)
    assert stopped["status"] == "interrupted" and stopped["epochs_done"] == 1
    state = torch.load(trial / "checkpoint.pt", weights_only=True)
    assert state["position"]["epoch"] == 1 and state["position"]["step"] > 0  # saved mid-epoch
    resumed = gfm_train(trial)
    assert resumed.returncode == 0, resumed.stderr
    final, expected = result_of(trial), result_of(reference)
    assert final["status"] == "completed" and final["resumed_from_epoch"] == 1
    for got, want in zip(final["epochs"], expected["epochs"], strict=True):
        assert got["val_loss"] == pytest.approx(want["val_loss"], rel=1e-4)
        assert got["steps"] == want["steps"] and got["learning_rate"] == pytest.approx(want["learning_rate"])
    assert final["steps_done"] == expected["steps_done"] and final["stop_reason"] == "epoch budget"
    assert_same_weights(weights(trial), weights(reference), atol=1e-5)
    assert_same_weights(state_of(trial)["ema"], state_of(reference)["ema"], atol=1e-5)
    assert_same_weights(weights(trial, "best.pt"), weights(reference, "best.pt"), atol=1e-5)


@emt_only
def test_rerunning_a_completed_trial_changes_nothing(tmp_path, molecules_bp):
    trial = make_trial(tmp_path / "t", molecules_bp, training={"epochs": 1})
    assert gfm_train(trial).returncode == 0
    before = result_of(trial)
    assert gfm_train(trial).returncode == 0
    after = result_of(trial)
    assert after["epochs"] == before["epochs"] and after["status"] == "completed"


@emt_only
def test_early_stopping_on_patience(tmp_path, molecules_bp):
    # A learning rate of almost zero cannot improve the validation loss after the first epoch.
    trial = make_trial(tmp_path / "t", molecules_bp,
                       training={"epochs": 20, "patience": 2, "learning_rate": 1e-12, "lr_schedule": "constant"})
    assert gfm_train(trial).returncode == 0
    result = result_of(trial)
    assert result["status"] == "completed" and result["stop_reason"] == "early stopping"
    assert result["epochs_done"] < 20


@pytest.mark.skipif(MPIEXEC is None, reason="mpiexec (mpich wheel) is not installed in this environment")
@pytest.mark.parametrize("variant, technique", [  # plain DDP on both variants, the memory techniques on one
    *(pytest.param(v, {}, id=f"{v}-plain") for v in VARIANTS),
    pytest.param("emt", {"zero1": True}, id="emt-zero1"),
    pytest.param("emt", {"activation_checkpointing": True}, id="emt-activation_checkpointing"),
    pytest.param("emt", {"loss": "huber", "huber_delta": 0.3, "amsgrad": True}, id="emt-huber-amsgrad"),
], indirect=["variant"])
def test_two_ranks_equal_one_rank_with_the_same_global_batch(tmp_path, molecules_bp, technique):
    """DDP: 2 ranks x 8 graphs give the model of 1 rank x 16 graphs (memory techniques included)."""
    base = {"epochs": 2, "seed": 1, "optimizer": "adam", "lr_schedule": "constant", **technique}
    single = make_trial(tmp_path / "one", molecules_bp, training={**base, "batch_size": 16})
    double = make_trial(tmp_path / "two", molecules_bp, training={**base, "batch_size": 8})
    assert gfm_train(single).returncode == 0
    run = gfm_train(double, ranks=2)
    assert run.returncode == 0, run.stderr
    result = result_of(double)
    assert result["world_size"] == 2 and len(result["hostnames"]) == 2
    assert_same_weights(weights(double), weights(single), atol=2e-5)
    assert result["epochs"][-1]["val_loss"] == pytest.approx(result_of(single)["epochs"][-1]["val_loss"], rel=1e-4)
