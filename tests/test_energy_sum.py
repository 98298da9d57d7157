"""The energy formula's precision and its per-element scale and shift.

Totals are float64 whatever the model's precision, so a float32 model resolves a
10^4 eV structure to far better than the meV it is trained to; per-element scales and
shifts start as the identity, and checkpoints written before they existed load as the
models they were.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk

from test_models import BACKBONES, randomised, small
from trainer.data.graphs import GraphArrays
from trainer.data.batch import Batch
from trainer.data.reference import degree_histogram
from trainer.loss import LossWeights, batch_loss
from trainer.models import DataStats, build_model

# References far from zero, with digits float32 cannot hold (ulp at 10^4 eV is ~1 meV).
REFERENCE = {29: -1234.567891234, 47: -4321.987654321}


def crystal():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))   # 32 atoms
    atoms.numbers[::4] = 47
    atoms.rattle(0.05, seed=1)
    energies = [float(sum(REFERENCE[z] for z in atoms.numbers)) + 0.123456]
    forces = [np.random.default_rng(0).normal(size=(len(atoms), 3))]
    return GraphArrays.from_atoms([atoms], radius=5.0, max_neighbours=50, energies=energies, forces=forces)


def stats(graphs) -> DataStats:
    return DataStats(radius=5.0, elements=sorted(REFERENCE), reference_energies=[dict(REFERENCE)],
                     energy_shift=0.0123456, energy_scale=0.05, force_scale=1.0,
                     degree_histogram=degree_histogram(graphs))


@pytest.mark.parametrize("mpnn_type", [b for b in BACKBONES if b != "MACE"])
def test_float32_model_sums_references_in_float64(mpnn_type):
    graphs = crystal()
    model = build_model(small(mpnn_type), stats(graphs), dtype=torch.float32).eval()
    model = model.to(torch.float32).to("cpu")         # casts must not round the table either
    assert model.reference_energies.dtype == torch.float64
    batch = Batch.from_arrays(graphs, dtype=torch.float32)
    assert batch.to("cpu", torch.float32).energy.dtype == torch.float64
    energy, forces = model(batch)
    assert energy.dtype == torch.float64 and forces.dtype == torch.float32
    # A fresh model's energy head is zero, so the total is exactly references + shift per atom.
    expected = sum(REFERENCE[int(z)] + 0.0123456 for z in graphs.atomic_numbers)
    assert abs(energy.item() - expected) < 1e-9
    float32_sum = float(np.float32(expected))
    assert abs(float32_sum - expected) > 1e-5, "the check needs totals float32 cannot hold"
    # The loss sees the per-atom error of the float64 totals: 0.123456 - 32 * 0.0123456 eV.
    _, sums = batch_loss(energy, forces, batch, LossWeights(1.0, 1.0, 0.05, 1.0), 1, 1)
    per_atom = (0.123456 - 32 * 0.0123456) / 32
    assert sums[4].item() == pytest.approx(abs(per_atom), rel=1e-6)


def test_element_scale_and_shift_act_per_element_and_old_checkpoints_load_as_identity():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    atoms.numbers[::3] = 47
    graphs = GraphArrays.from_atoms([atoms], radius=5.0, max_neighbours=50, energies=[-1000.0],
                                    forces=[np.zeros((len(atoms), 3))])
    model = randomised(build_model(small("SchNet"), stats(graphs), dtype=torch.float64)).eval()
    batch = Batch.from_arrays(graphs, dtype=torch.float64)
    energy, _ = model(batch)
    with torch.no_grad():  # a shift on silver alone moves the total by its count of silver atoms
        model.element_shift[47] += 1.0
    shifted, _ = model(batch)
    silver = int((graphs.atomic_numbers == 47).sum())
    assert shifted.item() - energy.item() == pytest.approx(silver * 0.05, rel=1e-9)

    plain = build_model(small("SchNet", element_scale_shift=False), stats(graphs), dtype=torch.float64).eval()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("element_")}
    plain.load_state_dict(state)
    old = build_model(small("SchNet"), stats(graphs), dtype=torch.float64).eval()
    old.load_state_dict(state)                       # as a checkpoint from before: no element_* keys
    assert torch.equal(old.element_scale, torch.zeros_like(old.element_scale))
    assert old(batch)[0].item() == plain(batch)[0].item()

