"""One epoch of a trial on every rank: its training steps, the validation, and what they share.

A step's learning rate and loss weights follow the budget (trainer/budget.py);
after it the weight average is updated. Every STOP_CHECK_STEPS steps the
ranks agree (one tiny all-reduce) on whether a signal came and on the
training seconds, so all of them stop at the same step.
"""
from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field

import torch

from trainer import distributed, signals
from trainer.budget import Budget
from trainer.data.loader import EpochLoader
from trainer.ema import WeightAverage
from trainer.loss import SUM_FIELDS, LossWeights, batch_loss
from trainer.optim import Schedule
from trainer.progress import EpochProgress

STOP_CHECK_STEPS = 10      # steps between collective checks for a stop signal and the clock (one tiny all-reduce)


class StopSignal:
    """Remembers SIGTERM/SIGUSR1; all ranks agree on it at step boundaries."""

    def __init__(self) -> None:
        # This handler first, then what the early one recorded: a signal in between is not lost.
        for sig in signals.STOP_SIGNALS:
            signal.signal(sig, self._handle)
        self.received: int | None = signals.take_early()

    def _handle(self, signum: int, frame) -> None:
        self.received = signum

    def agreed(self, ctx: distributed.Context, seconds: float) -> tuple[bool, float]:
        """(whether any rank got a signal, the largest of the ranks' training seconds)."""
        signalled, seconds = distributed.all_max(ctx, [1.0 if self.received else 0.0, seconds])
        return signalled > 0, seconds


@dataclass
class Position:
    """Where training stands: the epoch in progress, the steps of it already done, the trial's totals."""
    epoch: int = 0
    step: int = 0
    sums: list[float] = field(default_factory=lambda: [0.0] * len(SUM_FIELDS))
    seconds: float = 0.0
    steps_done: int = 0       # optimiser steps of the whole trial
    elapsed: float = 0.0      # training seconds of the whole trial, as the ranks last agreed


class Clock:
    """Training seconds of the trial: those of earlier runs plus this run's since the loop began."""

    def __init__(self, earlier: float):
        self.earlier, self.started = earlier, time.monotonic()

    def __call__(self) -> float:
        return self.earlier + time.monotonic() - self.started


@dataclass
class Loop:
    """What every step of a trial uses."""
    model: torch.nn.Module            # the one trained (DDP-wrapped on several ranks)
    loader: EpochLoader
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    average: WeightAverage
    budget: Budget
    weights: LossWeights              # of the training loss in stage one
    stage_two_weights: LossWeights
    clip: float | None
    ctx: distributed.Context
    stop: StopSignal
    clock: Clock
    autocast: object
    dtype: torch.dtype


def train_epoch(loop: Loop, position: Position, progress: EpochProgress) -> bool:
    """Train from `position.step` to the end of the epoch or of the budget; True if stopped by a signal."""
    loop.model.train()
    sums = torch.tensor(position.sums, dtype=torch.float64)
    for step, (batch, global_graphs, global_atoms) in enumerate(loop.loader.epoch(position.epoch)):
        if step < position.step:
            continue  # resuming mid-epoch: the plan is deterministic, so skip what was done
        if loop.budget.spent(position.steps_done, position.elapsed):
            return False  # every rank decides alike: on the step count and the agreed seconds
        loop.schedule.set_for_step(position.steps_done, position.elapsed)
        stage_two = loop.budget.in_stage_two(position.steps_done, position.elapsed)
        batch = batch.to(loop.ctx.device, loop.dtype)
        with loop.autocast:
            energy, forces = loop.model(batch)
        loss, batch_sums = batch_loss(energy, forces.to(loop.dtype), batch,
                                      loop.stage_two_weights if stage_two else loop.weights,
                                      global_graphs, global_atoms)
        loop.optimizer.zero_grad(set_to_none=True)
        # DDP averages gradients over ranks; the loss is already a share of the global mean.
        (loss * loop.ctx.world_size).backward()
        if loop.clip is not None:
            torch.nn.utils.clip_grad_norm_(loop.model.parameters(), loop.clip)
        loop.optimizer.step()
        position.steps_done += 1
        loop.average.update(position.steps_done)
        sums += batch_sums.cpu()
        position.step = step + 1
        position.sums = sums.tolist()
        progress.update(position.step)
        if position.step % STOP_CHECK_STEPS == 0:
            signalled, position.elapsed = loop.stop.agreed(loop.ctx, loop.clock())
            if signalled:
                return True
    signalled, position.elapsed = loop.stop.agreed(loop.ctx, loop.clock())
    return signalled


def evaluate(model, loader: EpochLoader, weights: LossWeights, ctx: distributed.Context, autocast,
             dtype) -> list[float]:
    """Error sums over this rank's validation share, summed over ranks."""
    model.eval()
    sums = torch.zeros(len(SUM_FIELDS), dtype=torch.float64)
    # Conservative forces differentiate the energy, so gradients stay on (without a graph to keep).
    grad = torch.enable_grad() if model.config.force_mode == "conservative" else torch.no_grad()
    with grad:
        for batch in loader.local_batches():
            batch = batch.to(ctx.device, dtype)
            with autocast:
                energy, forces = model(batch)
            _, batch_sums = batch_loss(energy.detach(), forces.detach().to(dtype), batch,
                                       weights, 1, 1)
            sums += batch_sums.cpu()
    return distributed.all_sum(ctx, sums.tolist())
