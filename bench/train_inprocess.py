"""In-process measurements for bench/bench_train.py, on batches made by the trainer's own loader.

  - inference: the project's models (eval mode, no parameter gradients, as
    trainer.predict runs its members) on `EpochLoader.local_batches(64)`;
    the batch assembly (`Batch.from_arrays`) is inside the timed loop;
  - the baseline: PyG's SchNet (its own submodules, driven with our edge
    list: its forward would call radius_graph, which needs torch-cluster)
    against our SchNet, both conservative, trained on the same Batch objects
    with the trainer's loss and Adam;
  - the memory a training step allocates, from torch's profiler (CPU
    allocations and frees in order; the running total's maximum).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from trainer import distributed
from trainer.contract.trialconfig import ModelConfig
from trainer.data.batch import Batch
from trainer.data.loader import EpochLoader
from trainer.data.store import DistributedStore
from trainer.loss import LossWeights, batch_loss
from trainer.models.build import NUM_ELEMENTS, DataStats, build_model, count_parameters
from trainer.stats import data_stats

Step = Callable[[Batch], None]


def load(path, threads: int) -> tuple[DistributedStore, DataStats, LossWeights]:
    """The training split in one process and the statistics the trainer would build its model with."""
    ctx = distributed.init("cpu", threads)
    store = DistributedStore([path], "trainset")
    stats = data_stats(store, ctx)
    return store, stats, LossWeights(1.0, 10.0, stats.energy_scale, stats.force_scale)


def training_batches(store: DistributedStore, batch_size: int) -> list[tuple[Batch, int, int]]:
    """Epoch 0 of the trainer's loader: (batch, graphs, atoms) per step."""
    return list(EpochLoader(store, batch_size, seed=0).epoch(0))


# ---- inference ----------------------------------------------------------------------------------
def inference_model(config: ModelConfig, stats: DataStats) -> nn.Module:
    torch.manual_seed(0)
    return build_model(config, stats).eval().requires_grad_(False)


def inference_rate(model: nn.Module, store: DistributedStore, batch_size: int, seconds: float) -> float:
    """Graphs/s of energy + forces over passes through the split (at least `seconds`)."""
    loader = EpochLoader(store, batch_size, seed=0)
    graphs, start = 0, time.perf_counter()
    while True:
        with torch.no_grad():  # conservative models switch gradients on for dE/dx themselves
            for batch in loader.local_batches():
                model(batch)
                graphs += batch.num_graphs
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return graphs / elapsed


# ---- PyG's SchNet baseline -----------------------------------------------------------------------
class PygSchNetEnergy(nn.Module):
    """torch_geometric.nn.models.SchNet's layers on our edge list, with our energy normalisation.

    Per atom: SchNet's lin1 -> act -> lin2 output, times the energy scale, plus
    the shift and the per-element reference energies (as our model does, so
    both fit the same targets); summed per graph by its own readout. Forces
    are -dE/dx by autograd (conservative).
    """

    def __init__(self, hidden: int, interactions: int, gaussians: int, stats: DataStats):
        super().__init__()
        from torch_geometric.nn.models import SchNet

        self.net = SchNet(hidden_channels=hidden, num_filters=hidden, num_interactions=interactions,
                          num_gaussians=gaussians, cutoff=stats.radius, max_num_neighbors=50)
        self.stats = stats
        reference = torch.zeros(NUM_ELEMENTS)
        for z, energy in stats.reference_energies[0].items():
            reference[z] = energy
        self.register_buffer("reference", reference)

    def forward(self, batch: Batch) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            positions = batch.positions.detach().requires_grad_(True)
            distance = dataclasses.replace(batch, positions=positions).edge_vectors().norm(dim=-1)
            net = self.net
            h = net.embedding(batch.atomic_numbers)
            edge_attr = net.distance_expansion(distance)
            for interaction in net.interactions:
                h = h + interaction(h, batch.edge_index, distance, edge_attr)
            per_atom = net.lin2(net.act(net.lin1(h))) * self.stats.energy_scale
            per_atom = per_atom + (self.stats.energy_shift + self.reference[batch.atomic_numbers]).unsqueeze(-1)
            energy = net.readout(per_atom, batch.graph_index, dim=0, dim_size=batch.num_graphs).squeeze(-1)
            (gradient,) = torch.autograd.grad(energy.sum(), positions, create_graph=self.training)
        return energy, -gradient


def training_step(model: nn.Module, weights: LossWeights) -> Callable[[tuple[Batch, int, int]], None]:
    """The trainer's step without DDP: forward, its loss, zero_grad, backward, fused Adam."""
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)

    def step(item: tuple[Batch, int, int]) -> None:
        batch, graphs, atoms = item
        energy, forces = model(batch)
        loss, _ = batch_loss(energy, forces, batch, weights, graphs, atoms)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def schnet_pair(stats: DataStats, weights: LossWeights, hidden: int, layers: int,
                radial: int) -> dict[str, tuple[Callable, int]]:
    """Ours (SchNet, conservative) and PyG's, same width/depth/basis size: step and parameter count."""
    torch.manual_seed(0)
    ours = build_model(ModelConfig(mpnn_type="SchNet", num_conv_layers=layers, hidden_dim=hidden,
                                   fc_dim=hidden, num_fc_layers=2, num_radial=radial,
                                   force_mode="conservative"), stats)
    torch.manual_seed(0)
    pyg = PygSchNetEnergy(hidden, layers, radial, stats)
    return {"ours": (training_step(ours, weights), count_parameters(ours)),
            "pyg": (training_step(pyg, weights), count_parameters(pyg))}


def steps_rate(step: Callable, items: list, seconds: float) -> float:
    """Graphs/s of `step` cycling over `items` for at least `seconds`."""
    graphs, start, index = 0, time.perf_counter(), 0
    while True:
        item = items[index % len(items)]
        step(item)
        graphs += item[0].num_graphs
        index += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and index >= len(items):
            return graphs / elapsed


# ---- memory of one training step -----------------------------------------------------------------
def step_peak_bytes(config: ModelConfig, stats: DataStats, weights: LossWeights,
                    item: tuple[Batch, int, int], checkpointing: bool) -> dict[str, int]:
    """Peak bytes that one training step allocates on top of what existed before it.

    After two warm-up steps (Adam's state exists), a third runs under torch's
    profiler with profile_memory: its CPU allocation and free events, in time
    order, give the live bytes allocated during the step; the maximum is the
    step's peak (activations, gradients, temporaries). Parameters, optimizer
    state and the batch were allocated before and are reported apart.
    """
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    model = build_model(config, stats, checkpointing)
    step = training_step(model, weights)
    step(item)
    step(item)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step(item)
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    live = np.cumsum([nbytes for _, nbytes in events]) if events else np.zeros(1)
    parameters = count_parameters(model)
    return {"step_peak_bytes": int(live.max()), "parameter_bytes": 4 * parameters,
            "adam_state_bytes": 8 * parameters}
