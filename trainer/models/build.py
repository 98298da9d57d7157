"""An energy-and-force model from a `ModelConfig` and the statistics of its training data.

    E = sum_atoms (energy_scale * ((1 + a[Z_i]) e_i + b[Z_i]) + energy_shift + reference[source, Z_i])
    F = force_scale * direct head            (force_mode "direct")
      = -dE/dx by autograd                   (force_mode "conservative")

The network predicts normalised quantities; `DataStats` turns them into eV and
eV/Å, and the per-source reference table is a buffer, so a checkpoint (state
dict + config + stats dict) is self-contained. a and b are learned per element
(`model.element_scale_shift`), starting at 0. The references, the shift and the sum
over atoms are float64 whatever the model's precision: totals of 10^4 eV in float32
are resolved to ~1 meV, the size of the energy errors we aim at.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from trainer.contract.trialconfig import ModelConfig
from trainer.data.batch import Batch
from trainer.models.egnn import EGNNLayer
from trainer.models.heads import DirectForceHead, EnergyHead
from trainer.models.layers import BesselBasis, Graph, build_graph, init_weights, scatter_sum
from trainer.models.painn import PaiNNForceHead, PaiNNLayer
from trainer.models.pna import PNALayer, average_log_degree
from trainer.models.schnet import SchNetInteraction

NUM_ELEMENTS = 119  # atomic numbers 0..118: one embedding row and reference column per element


@dataclass
class DataStats:
    """What a model needs to know about its training data; saved with every checkpoint (as a dict)."""
    radius: float                               # neighbour cut-off of the dataset (Å)
    elements: list[int]                         # atomic numbers seen in training
    reference_energies: list[dict[int, float]]  # per source (dataset) index: eV per atom of element Z
    energy_shift: float                         # mean per-atom residual energy (eV/atom) after references
    energy_scale: float                         # std of the per-atom residual energy (eV/atom), > 0
    force_scale: float                          # RMS force component (eV/Å), > 0
    degree_histogram: list[int]                 # in-degree histogram over the training graphs (PNA)

    def __post_init__(self) -> None:
        for name in ("radius", "energy_scale", "force_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"DataStats.{name} must be > 0, got {getattr(self, name)}")
        if not self.reference_energies:
            raise ValueError("DataStats.reference_energies needs one table per source")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "DataStats":
        # JSON turns the integer keys of the reference tables into strings.
        tables = [{int(z): float(e) for z, e in table.items()} for table in d["reference_energies"]]
        return DataStats(radius=float(d["radius"]), elements=[int(z) for z in d["elements"]],
                         reference_energies=tables, energy_shift=float(d["energy_shift"]),
                         energy_scale=float(d["energy_scale"]), force_scale=float(d["force_scale"]),
                         degree_histogram=[int(c) for c in d["degree_histogram"]])

    @property
    def average_degree(self) -> float:
        counts = self.degree_histogram
        total = sum(counts)
        return sum(k * c for k, c in enumerate(counts)) / total if total else 1.0


class EnergyForceModel(nn.Module):
    """What every backbone shares: the energy formula above, direct or conservative forces.

    A subclass provides `_energy(batch, positions)`: the graphs' energies (via
    `_total_energy`), the features the direct force head reads, and the batch's `Graph`.
    """

    def __init__(self, config: ModelConfig, stats: DataStats, activation_checkpointing: bool = False):
        super().__init__()
        self.config, self.stats = config, stats
        self.activation_checkpointing = activation_checkpointing
        reference = torch.zeros(len(stats.reference_energies), NUM_ELEMENTS, dtype=torch.float64)
        for source, table in enumerate(stats.reference_energies):
            for z, energy in table.items():
                reference[source, z] = energy
        self.register_buffer("reference_energies", reference)
        if config.element_scale_shift:
            # The scale is kept as its difference from 1, so both its start and weight
            # decay pull it towards the identity.
            self.element_scale = nn.Parameter(torch.zeros(NUM_ELEMENTS))
            self.element_shift = nn.Parameter(torch.zeros(NUM_ELEMENTS))
            self._register_load_state_dict_pre_hook(_identity_if_absent)
        else:
            self.element_scale = self.element_shift = None
        # Subclasses set these (after their own modules: the order of construction decides
        # which random numbers each Linear's initialisation draws).
        self.basis: BesselBasis
        self.force_head: nn.Module | None

    def _apply(self, fn, recurse=True):  # type: ignore[override]
        # model.to(dtype) would round the reference table to the model's precision:
        # follow fn's device only, from the float64 table as it was.
        table = self.reference_energies
        super()._apply(fn, recurse)
        self.reference_energies = table.to(self.reference_energies.device)
        return self

    def forward(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """(energy [G] in eV, float64; forces [A,3] in eV/Å) for every graph/atom of the batch."""
        if self.force_head is None:
            return self._conservative(batch)
        energy, h, graph = self._energy(batch, batch.positions)
        return energy, self.force_head(h, graph) * self.stats.force_scale

    def _conservative(self, batch: Batch) -> tuple[Tensor, Tensor]:
        # Training backpropagates the force loss through the gradient, which
        # needs create_graph; inference keeps no graph at all.
        create_graph = self.training and torch.is_grad_enabled()
        with torch.enable_grad():
            positions = batch.positions
            if not positions.requires_grad:
                positions = positions.detach().requires_grad_(True)
            energy, _, _ = self._energy(batch, positions)
            (gradient,) = torch.autograd.grad(energy.sum(), positions, create_graph=create_graph)
        if create_graph:
            return energy, -gradient
        return energy.detach(), -gradient.detach()

    def _energy(self, batch: Batch, positions: Tensor) -> tuple[Tensor, Any, Graph]:
        raise NotImplementedError

    def _graph(self, batch: Batch, positions: Tensor) -> Graph:
        vectors = dataclasses.replace(batch, positions=positions).edge_vectors()
        return build_graph(vectors, batch.edge_index, len(batch.atomic_numbers), self.basis)

    def _total_energy(self, batch: Batch, normalised: Tensor) -> Tensor:
        """The energy formula above: float64 totals [G] from the normalised per-atom e_i [A]."""
        stats, z = self.stats, batch.atomic_numbers
        if self.element_scale is not None:
            normalised = normalised * (1.0 + self.element_scale[z]) + self.element_shift[z]
        reference = self.reference_energies[batch.source[batch.graph_index], z]
        per_atom = (normalised * stats.energy_scale).double() + (stats.energy_shift + reference)
        return scatter_sum(per_atom, batch.graph_index, batch.num_graphs)


def _identity_if_absent(state: dict, prefix: str, *args) -> None:
    """Checkpoints from before per-element scales and shifts load as the model they were."""
    for name in ("element_scale", "element_shift"):
        state.setdefault(prefix + name, torch.zeros(NUM_ELEMENTS))


class MessagePassingModel(EnergyForceModel):
    """Our own backbones: an element embedding, `layers` of message passing, an energy head.

    A layer maps (state, Graph) to the next state: the features h [A, F], or for PaiNN the
    pair (s, v) of scalar and vector features (the embedding is its first s).
    """

    def __init__(self, config: ModelConfig, stats: DataStats, layers: list[nn.Module],
                 activation_checkpointing: bool = False):
        super().__init__(config, stats, activation_checkpointing)
        self.embedding = nn.Embedding(NUM_ELEMENTS, config.hidden_dim)
        self.basis = BesselBasis(stats.radius, config.num_radial)
        self.layers = nn.ModuleList(layers)
        self.energy_head = EnergyHead(config.hidden_dim, config.fc_dim, config.num_fc_layers)
        self.force_head = direct_force_head(config)
        init_weights(self, zero=[self.energy_head.output] + ([] if self.force_head is None else [self.force_head.output]))

    def _energy(self, batch: Batch, positions: Tensor) -> tuple[Tensor, Any, Graph]:
        graph = self._graph(batch, positions)
        state = self.embedding(batch.atomic_numbers)
        for layer in self.layers:
            if self.activation_checkpointing and torch.is_grad_enabled():
                state = checkpoint(layer, state, graph, use_reentrant=False)
            else:
                state = layer(state, graph)
        scalars = state[0] if isinstance(state, tuple) else state
        return self._total_energy(batch, self.energy_head(scalars)), state, graph


def direct_force_head(config: ModelConfig) -> nn.Module | None:
    """None for conservative forces; PaiNN's reads its vector features (gated equivariant
    blocks); every other backbone has the edge head."""
    if config.force_mode == "conservative":
        return None
    if config.mpnn_type == "PaiNN":
        return PaiNNForceHead(config.hidden_dim, config.fc_dim, config.num_fc_layers)
    return DirectForceHead(config.hidden_dim, config.num_radial, config.fc_dim, config.num_fc_layers)


def conv_layers(config: ModelConfig, stats: DataStats) -> list[nn.Module]:
    """The message-passing layers of `config.mpnn_type` (Table IV's search space)."""
    hidden, radial, depth = config.hidden_dim, config.num_radial, config.num_conv_layers
    if config.mpnn_type == "EGNN":
        return [EGNNLayer(hidden, radial, max(stats.average_degree, 1.0)) for _ in range(depth)]
    if config.mpnn_type == "PNA":
        log_degree = average_log_degree(stats.degree_histogram)
        return [PNALayer(hidden, radial, log_degree) for _ in range(depth)]
    if config.mpnn_type == "SchNet":
        return [SchNetInteraction(hidden, radial, hidden) for _ in range(depth)]
    if config.mpnn_type == "PaiNN":
        return [PaiNNLayer(hidden, radial, max(stats.average_degree, 1.0)) for _ in range(depth)]
    raise ValueError(f"unknown mpnn_type {config.mpnn_type!r}")


def build_model(config: ModelConfig, stats: DataStats, activation_checkpointing: bool = False,
                dtype: torch.dtype | None = None) -> EnergyForceModel:
    """The model of `config`, its floating-point tensors in `dtype` (default: torch's default dtype).

    Give the dtype here rather than casting afterwards: MACE computes its Clebsch-Gordan
    tables when it is built, and tables built in float32 then cast to float64 stay
    equivariant only to ~1e-7.
    """
    if config.mpnn_type == "MACE":
        # Imported here: mace-torch is an optional extra, and importing it costs seconds.
        from trainer.models.mace_backbone import MACEModel

        return MACEModel(config, stats, activation_checkpointing, dtype)
    model = MessagePassingModel(config, stats, conv_layers(config, stats), activation_checkpointing)
    return model if dtype is None else model.to(dtype)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
