"""A stand-in for `gfm-train TRIAL_DIR` that sleeps instead of training (for bench_manager_scale.py).

    python bench/standin_trainer.py [--median-seconds S] TRIAL_DIR

It keeps the trainer's side of the contracts, so the manager cannot tell the
difference: it reads and validates TRIAL_DIR/trial.yaml, rewrites result.json
(trainer/result.py's format) after every epoch, ends "completed" with exit 0,
or "failed" on a non-finite loss with exit 1, as gfm-train does. It imports
no torch: thousands of these run on a two-core machine.

What it simulates, all drawn from a generator seeded by the trial's seed and
directory name (the same trial id gets the same draw under every optimiser):
- duration: HPO trials at a fixed 10 epochs take longer the bigger the model,
  with a floor (start-up, data loading) and a lognormal spread, plus a few
  stragglers (a slow node or file system); a right-skewed, heavy-tailed mix.
- objective: the best validation loss is a smooth function of the
  hyperparameters (optimum: PNA, 4 layers, width ~800) plus a little noise,
  so an optimiser has something to learn and random search does worse.
- failures: a loss that turns NaN at a random epoch, likelier for big models
  (as divergence and out-of-memory are), ~3% of Table IV samples.
"""
from __future__ import annotations

import argparse
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from trainer.cli import process_start_time
from trainer.contract.errors import UserError, run_cli
from trainer.contract.result import EXIT_BAD_CONFIG, EXIT_COMPLETED, EXIT_FAILED, EpochRecord, Result
from trainer.contract.trialconfig import ModelConfig, TrialConfig, load_trial

# Relative cost of a message-passing layer per width² (PNA runs four aggregators, SchNet is lean,
# PaiNN carries three vector channels per scalar one, MACE's tensor products are the heaviest).
LAYER_COST = {"SchNet": 1.0, "EGNN": 1.3, "PNA": 1.8, "PaiNN": 2.2, "MACE": 4.0}
COST_MEDIAN = 5.1e6     # median of model_cost over uniform Table IV samples (of its first three backbones)
COST_MAX = 4.6e7        # model_cost of the largest Table IV model
FLOOR = 0.3             # share of a median trial that does not grow with the model (start-up, data loading)
SPREAD = 0.35           # sigma of the lognormal noise on durations
STRAGGLERS = (0.03, 2.0, 4.0)   # probability, and range of the slow-down factor
FAILURE_RATE = (0.01, 0.12)     # base rate, and extra rate at COST_MAX
LOSS_TYPE = {"PNA": 0.0, "EGNN": 0.05, "SchNet": 0.15, "PaiNN": 0.04, "MACE": 0.02}


def model_cost(model: ModelConfig) -> float:
    """A FLOP proxy per sample: conv layers x width² plus the heads."""
    return (LAYER_COST[model.mpnn_type] * model.num_conv_layers * model.hidden_dim ** 2
            + model.num_fc_layers * model.fc_dim ** 2)


@dataclass(frozen=True)
class Plan:
    """Everything a trial will do, drawn up front: seconds per epoch and the validation loss of
    each epoch it reaches (the last one NaN when it fails)."""

    epoch_seconds: float
    val_losses: list[float]

    @property
    def fails(self) -> bool:
        return math.isnan(self.val_losses[-1])


def plan_trial(config: TrialConfig, name: str, median_seconds: float) -> Plan:
    """The draws of trial directory `name`: the same under every optimiser (seeded by seed and name)."""
    model, training = config.model, config.training
    rng = random.Random(f"{training.seed}:{name}")
    size = FLOOR + (1 - FLOOR) * math.sqrt(model_cost(model) / COST_MEDIAN)
    seconds = median_seconds * size * math.exp(rng.gauss(0.0, SPREAD))
    chance, low, high = STRAGGLERS
    seconds *= rng.uniform(low, high) if rng.random() < chance else 1.0
    # The loss a trial converges to in its epochs: a smooth bowl plus seed-to-seed noise.
    shape = (LOSS_TYPE[model.mpnn_type] + 0.04 * (model.num_conv_layers - 4) ** 2
             + 0.25 * math.log(model.hidden_dim / 800) ** 2 + 0.1 * math.log(model.fc_dim / 500) ** 2
             + 0.03 * (model.num_fc_layers - 2) + 0.2 * math.log10(training.learning_rate / 1e-3) ** 2)
    final = 0.02 * (1 + shape) * math.exp(rng.gauss(0.0, 0.02))
    losses = [final * (1 + 2 * math.exp(-epoch / 2.5)) * math.exp(rng.gauss(0.0, 0.01))
              for epoch in range(1, training.epochs + 1)]
    base, extra = FAILURE_RATE
    if rng.random() < base + extra * model_cost(model) / COST_MAX:
        nan_at = rng.randint(1, training.epochs)
        losses = losses[:nan_at - 1] + [math.nan]
    return Plan(seconds / training.epochs, losses)


def run(trial_dir: Path, median_seconds: float, started: float) -> int:
    result = Result(name=trial_dir.name, started_at=started)
    try:
        config = load_trial(trial_dir)
    except UserError as err:
        result.status, result.error = "failed", str(err)
        result.write(trial_dir)
        return EXIT_BAD_CONFIG
    plan = plan_trial(config, trial_dir.name, median_seconds)
    result.name = config.name
    result.num_parameters = int(model_cost(config.model) / 50)
    result.startup_seconds = time.time() - started
    result.write(trial_dir)
    for epoch, val in enumerate(plan.val_losses, start=1):
        time.sleep(plan.epoch_seconds)
        result.add_epoch(EpochRecord(epoch=epoch, train_loss=0.9 * val, val_loss=val, val_energy_mae=400 * val,
                                     val_force_mae=2000 * val, seconds=plan.epoch_seconds,
                                     graphs_per_second=1000 / plan.epoch_seconds,
                                     learning_rate=config.training.learning_rate))
        if math.isnan(val):  # as gfm-train: a non-finite loss ends the trial as failed
            result.status, result.error = "failed", f"non-finite loss at epoch {epoch} (val nan)"
            print(f"{result.name}: failed: {result.error}", file=sys.stderr, flush=True)
            result.write(trial_dir)
            return EXIT_FAILED
        result.write(trial_dir)
    result.status, result.stop_reason = "completed", "epoch budget"
    result.write(trial_dir)
    return EXIT_COMPLETED


def main(argv: Sequence[str] | None = None) -> int:
    started = process_start_time()
    parser = argparse.ArgumentParser(prog="standin-trainer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--median-seconds", type=float, default=2.0,
                        help="median trial duration (a median-cost model, no straggling) [2.0]")
    parser.add_argument("trial_dir", type=Path)
    args = parser.parse_args(argv)
    if not args.median_seconds > 0:
        raise UserError(f"--median-seconds must be > 0, got {args.median_seconds}")
    if not args.trial_dir.is_dir():
        raise UserError(f"{args.trial_dir}: not a directory")
    return run(args.trial_dir, args.median_seconds, started)


if __name__ == "__main__":
    run_cli(main, "standin-trainer")
