"""Energy-and-force loss and the error sums behind every reported metric.

Errors are normalised by the training data's scales (per-atom energy std,
RMS force) so one weight pair fits datasets of any chemistry, and the loss is
the weighted MEAN of the two (the weights are divided by their sum), so the
weights only set the balance. That keeps the gradient norm independent of
their size, which the fixed clip threshold (training.gradient_clip = 10)
relies on: with the weighted sum and force weight 10, SMALL EGNN's gradient
norm on ethanol was 25-90 in every step, so the clip rescaled every step and
the test force error after 30 epochs was ~15 % worse (bench/bench_accuracy.py
workload); as a mean the norm stays under 10 there and the clip only catches
spikes. Adam itself does not care about the scale of the loss.

The loss of a rank's batch is divided by the GLOBAL numbers of graphs and atoms in the step:
summed over ranks it is exactly the loss of one process holding the whole
global batch, whatever the size-balanced sampler gave each rank.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from trainer.data.batch import Batch

# Entries of the error-sums vector: summed over batches and ranks, they give every metric.
SUM_FIELDS = ("energy_sq", "force_sq", "graphs", "atoms", "energy_abs", "force_abs")


@dataclass(frozen=True)
class LossWeights:
    energy: float
    force: float
    energy_scale: float   # eV/atom
    force_scale: float    # eV/Å

    @property
    def shares(self) -> tuple[float, float]:
        """(energy, force) weights divided by their sum."""
        total = self.energy + self.force
        if not total > 0:
            raise ValueError("the energy and force weights cannot both be 0")
        return self.energy / total, self.force / total

    def loss(self, sums: dict[str, float]) -> float:
        """Mean loss over everything the sums cover (the same formula as `batch_loss`)."""
        energy, force = self.shares
        return (energy * sums["energy_sq"] / max(sums["graphs"], 1.0)
                + force * sums["force_sq"] / max(sums["atoms"], 1.0))


def batch_loss(energy: torch.Tensor, forces: torch.Tensor, batch: Batch, weights: LossWeights,
               global_graphs: int, global_atoms: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss to backpropagate, detached error sums in the order of SUM_FIELDS)."""
    energy_error = (energy - batch.energy) / batch.num_atoms.to(energy.dtype)   # eV/atom
    force_error = forces - batch.forces                                         # eV/Å
    energy_sq = (batch.weight * (energy_error / weights.energy_scale) ** 2).sum()
    force_sq = (batch.weight[batch.graph_index] * ((force_error / weights.force_scale) ** 2).mean(dim=1)).sum()
    energy_share, force_share = weights.shares
    loss = energy_share * energy_sq / max(global_graphs, 1) + force_share * force_sq / max(global_atoms, 1)
    with torch.no_grad():
        sums = torch.stack([
            energy_sq, force_sq,
            energy.new_tensor(float(batch.num_graphs)), energy.new_tensor(float(forces.shape[0])),
            energy_error.abs().sum(), force_error.abs().mean(dim=1).sum(),
        ]).to(torch.float64)
    return loss, sums


def summarise(sums: list[float], weights: LossWeights) -> dict[str, float]:
    """Loss, energy MAE (meV/atom) and force MAE (meV/Å) from error sums."""
    total = dict(zip(SUM_FIELDS, sums))
    return {
        "loss": weights.loss(total),
        "energy_mae": 1000.0 * total["energy_abs"] / max(total["graphs"], 1.0),
        "force_mae": 1000.0 * total["force_abs"] / max(total["atoms"], 1.0),
    }
