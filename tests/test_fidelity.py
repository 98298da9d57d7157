"""Where the manager sets budgets: the HPO fidelity in epochs or steps, and the ensemble members' minimum."""
from __future__ import annotations

import json

import pytest

from orchestrator.cli import ensemble as ensemble_cli
from orchestrator.cli import hpo
from orchestrator.phases.ensemble import EnsemblePlan, member_config, member_walltime
from orchestrator.trials import runconfig
from orchestrator.trials.runconfig import RunSettings
from trainer.contract import typed
from trainer.contract.errors import UserError


def settings(*flags: str) -> RunSettings:
    return hpo.settings_from(hpo._parser().parse_args(["launch", "--data", "x.bp", *flags]))


def test_the_fidelity_is_epochs_or_exactly_so_many_steps():
    default = settings()
    assert (default.epochs, default.steps) == (10, None)
    assert runconfig.base_trial(default, threads=1).training.epochs == 10
    steps = settings("--steps", "40")
    assert (steps.epochs, steps.steps) == (None, 40)
    trial = runconfig.base_trial(steps, threads=1).training
    assert (trial.epochs, trial.max_steps, trial.min_steps) == (None, 40, None)
    with pytest.raises(SystemExit):  # argparse: not both
        settings("--steps", "40", "--epochs", "2")
    with pytest.raises(UserError, match="--steps: must be at least 1"):
        settings("--steps", "0")
    # run.yaml: exactly one of them
    with pytest.raises(UserError, match="steps: the fidelity is either epochs or steps"):
        typed.build(RunSettings, {"site": "local", "data": ["x.bp"], "epochs": 2, "steps": 5}, "run.yaml")


def test_members_train_past_the_fidelity_to_at_least_min_steps():
    parent = runconfig.base_trial(settings("--steps", "40", "--set", "training.max_seconds=600"), threads=1)
    member = member_config(parent, EnsemblePlan(top_k=3, max_epochs=40, patience=10, min_steps=5000)).training
    assert (member.epochs, member.min_steps, member.max_steps, member.max_seconds, member.patience) == (
        40, 5000, None, None, 10)
    assert ensemble_cli._parser().parse_args(["train", "run"]).min_steps == ensemble_cli.MIN_STEPS


def test_member_wall_time_scales_with_the_steps_a_member_may_take():
    hpo_settings = typed.build(RunSettings, {"site": "local", "data": ["x.bp"], "epochs": 10,
                                             "trial_walltime": 100.0}, "test")
    plan = EnsemblePlan(top_k=2, max_epochs=40, patience=10, min_steps=5000)
    small = {"steps_per_epoch": 25, "steps_done": 250}          # 800 frames: members take 5000 steps
    large = {"steps_per_epoch": 10_000, "steps_done": 100_000}  # 40 epochs: 4x the HPO trial
    assert member_walltime(hpo_settings, plan, [large]) == pytest.approx(400.0)
    assert member_walltime(hpo_settings, plan, [small, large]) == pytest.approx(2000.0)
    assert member_walltime(hpo_settings, plan, [{}]) == pytest.approx(400.0)   # no step counts: by epochs
    no_limit = typed.build(RunSettings, {"site": "local", "data": ["x.bp"]}, "test")
    assert member_walltime(no_limit, plan, [small]) is None
    assert json.dumps(plan.record())  # what the database keeps to resume the same phase
