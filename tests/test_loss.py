"""The loss: a weighted mean of normalised energy and force errors, and the metrics' error sums."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.data.batch import Batch
from trainer.data.graphs import GraphArrays
from trainer.loss import SUM_FIELDS, LossWeights, batch_loss, summarise

ENERGY_SCALE, FORCE_SCALE = 0.02, 1.2


@pytest.fixture(scope="module")
def labelled_graphs(session_data, variant) -> GraphArrays:
    frames = session_data.frames(variant, "molecules", 6)
    return GraphArrays.from_atoms(frames, radius=5.0, max_neighbours=50,
                                  energies=[a.get_potential_energy() for a in frames],
                                  forces=[a.get_forces() for a in frames])


@pytest.fixture(scope="module")
def labelled_batch(labelled_graphs) -> Batch:
    return Batch.from_arrays(labelled_graphs, dtype=torch.float64)


def predictions(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    energy = batch.energy + 0.1 * torch.randn(batch.num_graphs, generator=generator, dtype=torch.float64)
    forces = batch.forces + 0.5 * torch.randn(batch.forces.shape, generator=generator, dtype=torch.float64)
    return energy, forces


def loss_of(batch: Batch, energy_weight: float, force_weight: float) -> tuple[float, torch.Tensor]:
    weights = LossWeights(energy_weight, force_weight, ENERGY_SCALE, FORCE_SCALE)
    loss, sums = batch_loss(*predictions(batch), batch, weights, batch.num_graphs, len(batch.atomic_numbers))
    return loss.item(), sums


def test_loss_is_the_weighted_mean_of_the_normalised_errors(labelled_batch):
    energy_only, _ = loss_of(labelled_batch, 1.0, 0.0)
    force_only, _ = loss_of(labelled_batch, 0.0, 1.0)
    energy, forces = predictions(labelled_batch)
    atoms = labelled_batch.num_atoms.double()
    expected_energy = (((energy - labelled_batch.energy) / atoms / ENERGY_SCALE) ** 2).mean().item()
    expected_force = (((forces - labelled_batch.forces) / FORCE_SCALE) ** 2).mean().item()
    assert energy_only == pytest.approx(expected_energy, rel=1e-12)
    assert force_only == pytest.approx(expected_force, rel=1e-12)
    assert loss_of(labelled_batch, 1.0, 10.0)[0] == pytest.approx((energy_only + 10 * force_only) / 11, rel=1e-12)
    # Only the ratio of the weights counts, so gradient norms do not grow with them.
    assert loss_of(labelled_batch, 3.0, 30.0)[0] == pytest.approx(loss_of(labelled_batch, 1.0, 10.0)[0], rel=1e-12)


def test_summarised_sums_give_the_batch_loss_and_maes(labelled_batch):
    weights = LossWeights(1.0, 10.0, ENERGY_SCALE, FORCE_SCALE)
    loss, sums = loss_of(labelled_batch, 1.0, 10.0)
    assert len(sums) == len(SUM_FIELDS)
    metrics = summarise(sums.tolist(), weights)
    energy, forces = predictions(labelled_batch)
    assert metrics["loss"] == pytest.approx(loss, rel=1e-12)
    per_atom = ((energy - labelled_batch.energy) / labelled_batch.num_atoms.double()).abs().mean().item()
    assert metrics["energy_mae"] == pytest.approx(1000 * per_atom, rel=1e-12)
    assert metrics["force_mae"] == pytest.approx(1000 * (forces - labelled_batch.forces).abs().mean().item(), rel=1e-12)


def test_zero_weights_are_refused():
    with pytest.raises(ValueError, match="cannot both be 0"):
        LossWeights(0.0, 0.0, ENERGY_SCALE, FORCE_SCALE).shares
    assert np.allclose(LossWeights(0.0, 2.0, ENERGY_SCALE, FORCE_SCALE).shares, (0.0, 1.0))


def test_huber_is_the_squared_error_within_delta_and_linear_beyond(labelled_batch):
    energy, forces = predictions(labelled_batch)
    counts = (labelled_batch.num_graphs, len(labelled_batch.atomic_numbers))
    mse = LossWeights(1.0, 10.0, ENERGY_SCALE, FORCE_SCALE)
    wide = LossWeights(1.0, 10.0, ENERGY_SCALE, FORCE_SCALE, "huber", delta=1e6)
    narrow = LossWeights(0.0, 1.0, ENERGY_SCALE, FORCE_SCALE, "huber", delta=0.05)
    loss_mse, sums_mse = batch_loss(energy, forces, labelled_batch, mse, *counts)
    loss_wide, sums_wide = batch_loss(energy, forces, labelled_batch, wide, *counts)
    assert loss_wide.item() == pytest.approx(loss_mse.item(), rel=1e-12)
    loss_narrow, sums_narrow = batch_loss(energy, forces, labelled_batch, narrow, *counts)
    x = ((forces - labelled_batch.forces) / FORCE_SCALE).abs()
    expected = torch.where(x <= 0.05, x * x, 0.1 * x - 0.0025).mean().item()
    assert loss_narrow.item() == pytest.approx(expected, rel=1e-12)
    assert loss_narrow.item() < loss_of(labelled_batch, 0.0, 1.0)[0]
    # The error sums, and so every metric and the validation loss, stay squared errors.
    assert torch.equal(sums_mse, sums_wide) and torch.equal(sums_mse, sums_narrow)


@pytest.mark.parametrize("kind", ["mse", "huber"])
def test_shares_with_global_counts_add_up_to_the_whole_batch(labelled_graphs, labelled_batch, kind):
    """What W ranks rely on: each rank's loss over the GLOBAL counts sums to one process's loss."""
    weights = LossWeights(1.0, 10.0, ENERGY_SCALE, FORCE_SCALE, kind, delta=0.3)
    energy, forces = predictions(labelled_batch)
    graphs, atoms = labelled_batch.num_graphs, len(labelled_batch.atomic_numbers)
    whole, _ = batch_loss(energy, forces, labelled_batch, weights, graphs, atoms)
    first_atoms = int(labelled_batch.num_atoms[:2].sum())
    halves = [(Batch.from_arrays(labelled_graphs.select(np.arange(2)), dtype=torch.float64),
               energy[:2], forces[:first_atoms]),
              (Batch.from_arrays(labelled_graphs.select(np.arange(2, graphs)), dtype=torch.float64),
               energy[2:], forces[first_atoms:])]
    parts = sum(batch_loss(e, f, b, weights, graphs, atoms)[0] for b, e, f in halves)
    assert parts.item() == pytest.approx(whole.item(), rel=1e-12)
