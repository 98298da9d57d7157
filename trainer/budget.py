"""A trial's budget: how many optimiser steps it takes, where stage two begins, and why it stops.

The paper's epoch counts assume epochs of millions of structures; on 800
ethanol frames 30 epochs are 750 steps, far from converged. So the budget is
counted in steps: `epochs` x steps per epoch, raised to `min_steps` (full
training on small data) and capped at `max_steps`; a wall-time budget
(`max_seconds`) may end it first. Progress through the budget is the larger
of the two fractions used, steps and seconds, so the learning-rate schedule
and stage two follow whichever budget will actually end training.

Seconds are the training loop's (start-up excluded), summed over resumed runs
and agreed by all ranks (their maximum at each check), so that every rank
takes the same decisions. Without `max_seconds` nothing depends on the
clock, and an interrupted-then-resumed trial ends exactly as an
uninterrupted one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from trainer.contract.trialconfig import TrainingConfig


@dataclass(frozen=True)
class Budget:
    steps_per_epoch: int
    total_steps: int | None       # planned optimiser steps; None: only the wall time ends training
    steps_reason: str             # why training ends at total_steps: "epoch budget" or "step budget"
    max_seconds: float | None
    min_steps: int
    patience: int | None
    stage_two: float | None       # the last fraction of the budget in stage two; None: no stage two

    @staticmethod
    def plan(config: TrainingConfig, steps_per_epoch: int) -> "Budget":
        total, reason = None, "epoch budget"
        if config.epochs is not None:
            total = config.epochs * steps_per_epoch
            if config.min_steps is not None and config.min_steps > total:
                total, reason = config.min_steps, "step budget"
        if config.max_steps is not None and (total is None or config.max_steps < total):
            total, reason = config.max_steps, "step budget"
        return Budget(steps_per_epoch, total, reason, config.max_seconds, config.min_steps or 0,
                      config.patience, config.stage_two.fraction if config.stage_two is not None else None)

    @property
    def epochs(self) -> int | None:
        """Epochs the step budget spans (the last may be partial)."""
        return None if self.total_steps is None else math.ceil(self.total_steps / self.steps_per_epoch)

    @property
    def stage_two_step(self) -> int | None:
        """The first step of stage two under the step budget."""
        if self.stage_two is None or self.total_steps is None:
            return None
        return self.total_steps - round(self.stage_two * self.total_steps)

    def in_stage_two(self, steps: int, seconds: float) -> bool:
        """Whether the step after `steps` steps and `seconds` seconds is one of stage two."""
        if self.stage_two is None:
            return False
        if self.total_steps is not None and steps >= self.stage_two_step:
            return True
        return self.max_seconds is not None and seconds >= (1.0 - self.stage_two) * self.max_seconds

    def schedule_progress(self, steps: int, seconds: float) -> float:
        """How far through the learning-rate schedule (stage one, or all of it without stage two), 0..1."""
        share = 1.0 - (self.stage_two or 0.0)
        done = 0.0
        if self.total_steps is not None:
            span = self.stage_two_step if self.stage_two is not None else self.total_steps
            done = steps / span if span > 0 else 1.0
        if self.max_seconds is not None:
            done = max(done, seconds / (share * self.max_seconds))
        return min(done, 1.0)

    def spent(self, steps: int, seconds: float) -> bool:
        """Whether no further step may be taken (checked before every step)."""
        if self.total_steps is not None and steps >= self.total_steps:
            return True
        return self.max_seconds is not None and seconds >= self.max_seconds

    def stop_reason(self, steps: int, seconds: float, epochs_without_better: int) -> str | None:
        """At the end of an epoch: why training stops now, or None to go on."""
        if self.max_seconds is not None and seconds >= self.max_seconds:
            return "wall time"
        if self.total_steps is not None and steps >= self.total_steps:
            return self.steps_reason
        if self.patience is not None and epochs_without_better >= self.patience and steps >= self.min_steps:
            return "early stopping"
        return None
