"""Exponential moving average of the weights: the model that is validated and kept in best.pt.

The average is a second copy of the model updated after every optimiser
step, `average += (1 - decay) * (weights - average)`. Its decay warms up as
min(decay, (1 + n) / (10 + n)) after n updates (as TensorFlow's
ExponentialMovingAverage with num_updates does), so that a short HPO trial's
average is not dominated by its first, random weights: after 100 steps it
averages over roughly the last 10, and reaches 0.999's window of ~1000 steps
only after ~9000. Under DDP every rank holds the same weights, so every rank
keeps the same average without communicating.
"""
from __future__ import annotations

import copy

import torch


class WeightAverage:
    def __init__(self, model: torch.nn.Module, decay: float | None):
        self.decay = decay
        if decay is None:
            self.model = model  # off: the trained weights are the ones validated and kept
            return
        self.model = copy.deepcopy(model)
        self.model.requires_grad_(False)
        self._averaged = [p for p in self.model.parameters()]
        self._trained = [p for p in model.parameters()]
        # Buffers (reference energies, radial frequencies) are not trained; copied in case one ever is.
        self._buffers = list(zip(self.model.buffers(), model.buffers()))

    @property
    def enabled(self) -> bool:
        return self.decay is not None

    @torch.no_grad()
    def update(self, updates: int) -> None:
        """After the `updates`-th optimiser step of the trial."""
        if self.decay is None:
            return
        decay = min(self.decay, (1.0 + updates) / (10.0 + updates))
        torch._foreach_lerp_(self._averaged, self._trained, 1.0 - decay)
        for averaged, trained in self._buffers:
            averaged.copy_(trained)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)
