"""The training recipe through gfm-train: budgets, the weight average, stage two, Huber and AMSGrad."""
from __future__ import annotations

import signal

import pytest
import torch

from datasets import emt_only
from test_train import gfm_train, make_trial, result_of, weights
from trainer.contract import typed
from trainer.contract.trialconfig import ModelConfig
from trainer.data.adiosfile import DatasetReader
from trainer.data.batch import Batch
from trainer.epoch import STOP_CHECK_STEPS
from trainer.models.build import DataStats, build_model

STEPS_PER_EPOCH = 15   # ethanol_bp's 240 training frames in batches of 16


@pytest.fixture(scope="module")
def ethanol_bp(session_data, variant):
    """300 ethanol frames (real rMD17, or generated EMT dynamics): 240 train / 30 val / 30 test."""
    return session_data.dataset(variant, "ethanol", 300)


def errors_of(state: dict, dataset, split: str, dtype=torch.float32) -> dict[str, float]:
    """MAEs (meV/atom, meV/Å) of a checkpoint's weights on a split, and of the trivial predictors."""
    stats = DataStats.from_dict(state["stats"])
    model = build_model(typed.build(ModelConfig, state["model_config"]), stats).to(dtype)
    model.load_state_dict(state["model"])
    model.eval()
    with DatasetReader(dataset) as reader:
        batch = Batch.from_arrays(reader.read(split), dtype=dtype)
    with torch.no_grad():
        energy, forces = model(batch)
        reference = model.reference_energies[batch.source[batch.graph_index], batch.atomic_numbers]
        mean = torch.zeros_like(energy).index_add_(0, batch.graph_index, reference + stats.energy_shift)
    atoms = batch.num_atoms.to(dtype)
    return {"energy": 1000 * ((energy - batch.energy) / atoms).abs().mean().item(),
            "force": 1000 * (forces - batch.forces).abs().mean().item(),
            "mean_energy": 1000 * ((mean - batch.energy) / atoms).abs().mean().item(),
            "zero_force": 1000 * batch.forces.abs().mean().item()}


def test_best_checkpoint_holds_the_validated_average_weights(tmp_path, ethanol_bp):
    # 60 small steps at a high rate: the trained weights move enough for their average to lag behind.
    trial = make_trial(tmp_path / "t", ethanol_bp, training={"epochs": 1, "batch_size": 4, "learning_rate": 3e-3})
    run = gfm_train(trial)
    assert run.returncode == 0, run.stderr
    state = torch.load(trial / "checkpoint.pt", weights_only=True)
    best = torch.load(trial / "best.pt", weights_only=True)
    for key, value in state["ema"].items():
        torch.testing.assert_close(best["model"][key], value, rtol=0, atol=0, msg=key)
    assert any(not torch.equal(state["ema"][k], state["model"][k]) for k in state["model"])
    # The validation MAE on record is that of the averaged weights, not of the trained ones.
    recorded = result_of(trial)["epochs"][0]["val_force_mae"]
    averaged = errors_of(best, ethanol_bp, "valset")["force"]
    trained = errors_of({**best, "model": state["model"]}, ethanol_bp, "valset")["force"]
    print(f"validation force MAE: recorded {recorded}, averaged weights {averaged}, trained {trained}")
    assert averaged == pytest.approx(recorded, rel=1e-5)
    assert abs(trained - recorded) > 1e-3 * recorded   # far beyond the 1e-5 agreement above


@emt_only  # the mechanics are the same on any data
@pytest.mark.parametrize("training, steps, epochs, reason", [
    ({"epochs": 10, "max_steps": 20}, 20, 2, "step budget"),                  # stops mid-epoch 2
    ({"epochs": 1, "min_steps": 40}, 40, 3, "step budget"),                   # past 1 epoch to 40 steps
    ({"epochs": None, "max_seconds": 1e-3}, STOP_CHECK_STEPS, 1, "wall time"),  # over at the first check
    ({"epochs": 2}, 2 * STEPS_PER_EPOCH, 2, "epoch budget"),
])
def test_budgets_stop_where_they_should(tmp_path, ethanol_bp, training, steps, epochs, reason):
    trial = make_trial(tmp_path / "t", ethanol_bp, training=training)
    run = gfm_train(trial)
    assert run.returncode == 0, run.stderr
    result = result_of(trial)
    assert (result["status"], result["stop_reason"]) == ("completed", reason)
    assert result["steps_done"] == steps and result["epochs_done"] == epochs
    assert result["epochs"][-1]["steps"] == steps and result["steps_per_epoch"] == STEPS_PER_EPOCH
    assert (trial / "best.pt").exists()  # a partial last epoch is validated too


@emt_only  # the mechanics are the same on any data
def test_early_stopping_waits_for_min_steps(tmp_path, ethanol_bp):
    # A learning rate of almost zero cannot improve the validation loss after the first epoch.
    still = {"learning_rate": 1e-12, "lr_schedule": "constant", "ema_decay": None, "stage_two": None,
             "epochs": 20, "patience": 1}
    trial = make_trial(tmp_path / "t", ethanol_bp, training={**still, "min_steps": 3 * STEPS_PER_EPOCH})
    assert gfm_train(trial).returncode == 0
    result = result_of(trial)
    assert result["stop_reason"] == "early stopping" and result["steps_done"] == 3 * STEPS_PER_EPOCH


@emt_only  # the mechanics are the same on any data
def test_stage_two_switches_learning_rate_and_energy_weight_at_its_step(tmp_path, ethanol_bp, monkeypatch):
    """Each training step's rate and loss weights, seen from inside one in-process gfm-train run."""
    import trainer.epoch
    from trainer.optim import Schedule
    from trainer.train import run

    rates, loss_weights = [], []
    set_for_step, batch_loss = Schedule.set_for_step, trainer.epoch.batch_loss
    monkeypatch.setattr(Schedule, "set_for_step", lambda self, *a: rates.append(set_for_step(self, *a)) or rates[-1])

    def spy(energy, forces, batch, weights, *counts):
        if energy.requires_grad:  # a training step, not validation
            loss_weights.append((weights.energy, weights.force))
        return batch_loss(energy, forces, batch, weights, *counts)

    monkeypatch.setattr(trainer.epoch, "batch_loss", spy)
    stage_two = {"fraction": 0.25, "learning_rate_factor": 0.2, "energy_weight": 50.0, "force_weight": 2.0}
    trial = make_trial(tmp_path / "t", ethanol_bp, training={"epochs": 4, "learning_rate": 1e-3,
                                                             "stage_two": stage_two})
    handlers, threads = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}, torch.get_num_threads()
    try:
        assert run(trial) == 0
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        torch.set_num_threads(threads)
    switch = 45  # the last quarter of 4 x 15 steps
    assert len(rates) == len(loss_weights) == 60
    assert loss_weights[:switch] == [(1.0, 10.0)] * switch and loss_weights[switch:] == [(50.0, 2.0)] * 15
    assert all(rate > 2e-4 for rate in rates[:switch]) and rates[switch:] == pytest.approx([2e-4] * 15)
    assert [e["learning_rate"] for e in result_of(trial)["epochs"]][-1] == pytest.approx(2e-4)


@emt_only  # the mechanics are the same on any data
def test_huber_and_amsgrad_train(tmp_path, ethanol_bp):
    plain = make_trial(tmp_path / "plain", ethanol_bp, training={"epochs": 1})
    robust = make_trial(tmp_path / "robust", ethanol_bp,
                        training={"epochs": 1, "loss": "huber", "huber_delta": 0.1, "amsgrad": True})
    assert gfm_train(plain).returncode == 0
    run = gfm_train(robust)
    assert run.returncode == 0, run.stderr
    state = torch.load(robust / "checkpoint.pt", weights_only=True)["optimizer"]["state"]
    assert all("max_exp_avg_sq" in entry for entry in state.values())  # AMSGrad's running maximum
    assert any(not torch.equal(a, b) for a, b in zip(weights(plain).values(), weights(robust).values()))


def test_new_defaults_learn_a_short_run(tmp_path, ethanol_bp):
    """Relations, not times: 800 steps of the default recipe beat the trivial predictors on the test split."""
    trial = make_trial(tmp_path / "t", ethanol_bp, model={"num_conv_layers": 3, "hidden_dim": 32, "fc_dim": 32},
                       training={"epochs": 1, "min_steps": 800})
    run = gfm_train(trial)
    assert run.returncode == 0, run.stderr
    test = errors_of(torch.load(trial / "best.pt", weights_only=True), ethanol_bp, "testset")
    # Measured: force 0.17 x zero forces, energy 0.63 x the mean predictor (800 steps on 240 frames).
    assert test["force"] < 0.3 * test["zero_force"], test
    assert test["energy"] < 0.8 * test["mean_energy"], test
