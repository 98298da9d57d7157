"""The budget, the learning-rate schedule over it, and the weight average, without training a model."""
from __future__ import annotations

import math

import pytest
import torch

from trainer.budget import Budget
from trainer.contract import typed
from trainer.contract.trialconfig import TrainingConfig
from trainer.ema import WeightAverage
from trainer.optim import Schedule


def training(**values) -> TrainingConfig:
    return typed.build(TrainingConfig, values, "test")


def test_steps_come_from_epochs_raised_to_min_steps_and_capped_by_max_steps():
    assert Budget.plan(training(epochs=30), 25).total_steps == 750
    small = Budget.plan(training(epochs=30, min_steps=5000), 25)       # 800 ethanol frames: 25 steps an epoch
    assert (small.total_steps, small.steps_reason, small.epochs) == (5000, "step budget", 200)
    large = Budget.plan(training(epochs=30, min_steps=5000), 40000)    # large data keeps its epoch count
    assert (large.total_steps, large.steps_reason) == (1_200_000, "epoch budget")
    capped = Budget.plan(training(epochs=30, min_steps=100, max_steps=400), 25)
    assert (capped.total_steps, capped.steps_reason, capped.epochs) == (400, "step budget", 16)
    fidelity = Budget.plan(training(epochs=None, max_steps=50), 7)     # gfm-hpo launch --steps 50
    assert (fidelity.total_steps, fidelity.epochs) == (50, 8)
    timed = Budget.plan(training(epochs=None, max_seconds=60.0), 25)
    assert timed.total_steps is None and timed.epochs is None


def test_stop_reasons_in_order_and_early_stopping_waits_for_min_steps():
    budget = Budget.plan(training(epochs=4, patience=2, min_steps=30, max_seconds=100.0), 10)
    assert budget.total_steps == 40
    assert budget.stop_reason(20, 10.0, 2) is None                 # stale, but short of min_steps
    assert budget.stop_reason(30, 10.0, 2) == "early stopping"
    assert budget.stop_reason(40, 10.0, 0) == "epoch budget"
    assert budget.stop_reason(40, 100.0, 0) == "wall time"         # the hard budget is named first
    assert not budget.spent(39, 99.9) and budget.spent(40, 0.0) and budget.spent(3, 100.0)


def test_stage_two_starts_at_the_last_fraction_of_steps_or_seconds():
    budget = Budget.plan(training(epochs=10, stage_two={"fraction": 0.2}), 10)
    assert budget.stage_two_step == 80
    assert not budget.in_stage_two(79, 0.0) and budget.in_stage_two(80, 0.0)
    timed = Budget.plan(training(epochs=None, max_seconds=50.0, stage_two={"fraction": 0.2}), 10)
    assert not timed.in_stage_two(10**6, 39.9) and timed.in_stage_two(0, 40.0)
    assert timed.schedule_progress(0, 20.0) == pytest.approx(0.5)
    assert not Budget.plan(training(epochs=10, stage_two=None), 10).in_stage_two(99, 0.0)


def rates(config: TrainingConfig, steps_per_epoch: int, val_losses=None) -> list[float]:
    budget = Budget.plan(config, steps_per_epoch)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.learning_rate)
    schedule = Schedule(optimizer, config, budget)
    out = []
    for step in range(budget.total_steps):
        out.append(schedule.set_for_step(step, 0.0))
        assert optimizer.param_groups[0]["lr"] == out[-1]          # the rate is the optimiser's
        if val_losses is not None and (step + 1) % steps_per_epoch == 0:
            schedule.after_epoch(val_losses[step // steps_per_epoch])
    return out


def test_cosine_follows_the_real_number_of_steps_down_to_stage_two_rate():
    stage_two = {"fraction": 0.2, "learning_rate_factor": 0.1}
    lr = rates(training(epochs=1, min_steps=100, learning_rate=1e-3, stage_two=stage_two), 10)
    assert len(lr) == 100 and lr[0] == pytest.approx(1e-3)
    assert all(a > b for a, b in zip(lr[:80], lr[1:80]))           # decreasing over stage one's 80 steps
    assert lr[40] == pytest.approx(1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr[79] > 1e-4 and lr[80:] == pytest.approx([1e-4] * 20)  # then stage two's rate, no jump
    plain = rates(training(epochs=10, learning_rate=1e-3, stage_two=None), 10)
    assert plain[50] == pytest.approx(0.5e-3)
    assert plain[-1] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 0.99)))   # down to ~0 at the end


def test_constant_and_plateau_schedules_with_stage_two():
    constant = rates(training(epochs=5, lr_schedule="constant", learning_rate=1e-3), 10)
    assert constant[:40] == [1e-3] * 40 and constant[40:] == pytest.approx([1e-4] * 10)
    # plateau: halved after more than 3 epochs without a better validation loss
    plateau = rates(training(epochs=8, lr_schedule="plateau", learning_rate=1e-3, stage_two=None), 1,
                    [1.0, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6])
    assert plateau == pytest.approx([1e-3] * 6 + [5e-4] * 2)


def test_weight_average_warms_up_then_keeps_its_decay():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    average = WeightAverage(model, 0.9)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    average.update(1)   # decay min(0.9, 2/11): the average moves most of the way at once
    torch.testing.assert_close(average.model.weight, start + 9 / 11)
    before = average.model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    average.update(1000)  # decay 0.9 from here on
    torch.testing.assert_close(average.model.weight, before + 0.1 * (model.weight - before))
    assert not average.model.weight.requires_grad and model.weight.requires_grad
    off = WeightAverage(model, None)
    assert off.model is model and not off.enabled
