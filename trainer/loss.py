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
global batch, whatever the size-balanced sampler gave each rank. The Huber
option keeps that: it is a per-component penalty summed the same way,
2·δ·|x| − δ² beyond δ and x² within, so it equals the squared error for
small errors and only large ones count linearly.

The error sums (and so the validation loss, the HPO objective) are always
squared errors with the trial's base weights, whatever the training loss and
stage two do, so objectives stay comparable across trials and stages.
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
    kind: str = "mse"     # of the loss to train on: "mse" or "huber"
    delta: float = 1.0    # huber: in units of the scales

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
    # Totals differ in float64 (both are); errors per atom are small enough for the forces' dtype.
    energy_error = ((energy - batch.energy) / batch.num_atoms.to(energy.dtype)).to(forces.dtype)   # eV/atom
    force_error = forces - batch.forces                                         # eV/Å
    energy_normal, force_normal = energy_error / weights.energy_scale, force_error / weights.force_scale
    atom_weight = batch.weight[batch.graph_index]
    energy_sq = (batch.weight * energy_normal ** 2).sum()
    force_sq = (atom_weight * (force_normal ** 2).mean(dim=1)).sum()
    if weights.kind == "huber":
        energy_term = (batch.weight * _huber(energy_normal, weights.delta)).sum()
        force_term = (atom_weight * _huber(force_normal, weights.delta).mean(dim=1)).sum()
    else:
        energy_term, force_term = energy_sq, force_sq
    energy_share, force_share = weights.shares
    loss = energy_share * energy_term / max(global_graphs, 1) + force_share * force_term / max(global_atoms, 1)
    with torch.no_grad():
        sums = torch.stack([
            energy_sq, force_sq,
            forces.new_tensor(float(batch.num_graphs)), forces.new_tensor(float(forces.shape[0])),
            energy_error.abs().sum(), force_error.abs().mean(dim=1).sum(),
        ]).to(torch.float64)
    return loss, sums


def _huber(x: torch.Tensor, delta: float) -> torch.Tensor:
    """x² within delta, 2·delta·|x| − delta² beyond: continuous with a continuous slope at delta."""
    size = x.abs()
    return torch.where(size <= delta, x * x, 2.0 * delta * size - delta * delta)


def summarise(sums: list[float], weights: LossWeights) -> dict[str, float]:
    """Loss, energy MAE (meV/atom) and force MAE (meV/Å) from error sums."""
    total = dict(zip(SUM_FIELDS, sums))
    return {
        "loss": weights.loss(total),
        "energy_mae": 1000.0 * total["energy_abs"] / max(total["graphs"], 1.0),
        "force_mae": 1000.0 * total["force_abs"] / max(total["atoms"], 1.0),
    }
