"""Optimiser and learning-rate schedule from the training config.

ZeRO-1 (the scaling-laws paper's optimiser-state sharding) is torch's
ZeroRedundancyOptimizer around the same optimiser class: each rank keeps
the optimiser state of 1/W of the parameters.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.distributed as dist
from torch.distributed.optim import ZeroRedundancyOptimizer

from trainer.contract.trialconfig import TrainingConfig

_CLASSES = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


def make_optimizer(parameters: Iterable[torch.nn.Parameter], config: TrainingConfig) -> torch.optim.Optimizer:
    cls = _CLASSES[config.optimizer]
    options: dict[str, Any] = {"lr": config.learning_rate, "weight_decay": config.weight_decay}
    if config.optimizer == "sgd":
        options["momentum"] = 0.9
    else:
        # One fused kernel instead of a dozen small ops per parameter: 1.8 -> 0.3 ms per SMALL step.
        options["fused"] = True
    if config.zero1 and dist.is_initialized() and dist.get_world_size() > 1:
        return ZeroRedundancyOptimizer(list(parameters), optimizer_class=cls, **options)
    return cls(parameters, **options)


def full_state_dict(optimizer: torch.optim.Optimizer) -> dict | None:
    """The optimiser state to checkpoint; collective under ZeRO-1 (rank 0 receives it, others None)."""
    if isinstance(optimizer, ZeroRedundancyOptimizer):
        optimizer.consolidate_state_dict(to=0)
        return optimizer.state_dict() if dist.get_rank() == 0 else None
    return optimizer.state_dict()


class Schedule:
    """The learning-rate schedule, advanced once per epoch with that epoch's validation loss."""

    def __init__(self, optimizer: torch.optim.Optimizer, config: TrainingConfig):
        self.kind = config.lr_schedule
        if self.kind == "cosine":
            self._scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
        elif self.kind == "plateau":
            self._scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5,
                                                                         patience=3)
        else:
            self._scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)
        self._optimizer = optimizer

    def after_epoch(self, val_loss: float) -> None:
        if self.kind == "plateau":
            self._scheduler.step(val_loss)
        else:
            self._scheduler.step()

    @property
    def learning_rate(self) -> float:
        return float(self._optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict:
        return self._scheduler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self._scheduler.load_state_dict(state)
