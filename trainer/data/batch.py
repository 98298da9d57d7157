"""A batch of graphs as torch tensors: what every model consumes.

Built from `GraphArrays` with one vectorised pass (no per-graph Python loop).
Edge vectors are recomputed from positions in `edge_vectors()`, so autograd
reaches positions for conservative forces.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from trainer.data.graphs import GraphArrays

# Total energies reach 10^4-10^5 eV: float32 would resolve them to meV, the size of the
# errors we train to. The models' totals are float64 too (models/build.py).
FLOAT64_FIELDS = ("energy",)


@dataclass
class Batch:
    atomic_numbers: torch.Tensor  # [A] long
    positions: torch.Tensor       # [A, 3]
    edge_index: torch.Tensor      # [2, E] long, rows (source j, target i), indices into the batch's atoms
    edge_offset: torch.Tensor     # [E, 3] Cartesian periodic shift of the neighbour (shift @ cell)
    graph_index: torch.Tensor     # [A] long, graph of each atom
    num_atoms: torch.Tensor       # [G] long
    energy: torch.Tensor          # [G] eV, float64 whatever the dtype (NaN: unlabelled)
    forces: torch.Tensor          # [A, 3] eV/Å (NaN: unlabelled)
    weight: torch.Tensor          # [G] loss weight of each graph (its source's weight)
    source: torch.Tensor          # [G] long, dataset index

    @property
    def num_graphs(self) -> int:
        return self.num_atoms.shape[0]

    def edge_vectors(self) -> torch.Tensor:
        """r_ij = x_j - x_i + offset_ij for every edge (j -> i)."""
        source, target = self.edge_index
        return self.positions[source] - self.positions[target] + self.edge_offset

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "Batch":
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if dtype is not None and value.is_floating_point() and f.name not in FLOAT64_FIELDS:
                value = value.to(dtype)
            moved[f.name] = value.to(device, non_blocking=True)
        return Batch(**moved)

    @staticmethod
    def from_arrays(graphs: GraphArrays, dtype: torch.dtype = torch.float32,
                    source_weights: np.ndarray | None = None) -> "Batch":
        atom_start = graphs.atom_offsets
        edge_graph = np.repeat(np.arange(len(graphs)), graphs.num_edges)
        edge_index = graphs.edge_index + atom_start[edge_graph][:, None]
        offset = np.einsum("ek,ekl->el", graphs.edge_shift.astype(np.float64), graphs.cell[edge_graph])
        weight = (np.ones(len(graphs)) if source_weights is None
                  else np.asarray(source_weights, dtype=np.float64)[graphs.source])

        def real(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(array)).to(dtype)

        def index(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64))

        return Batch(
            atomic_numbers=index(graphs.atomic_numbers),
            positions=real(graphs.positions),
            edge_index=index(edge_index.T),
            edge_offset=real(offset),
            graph_index=index(np.repeat(np.arange(len(graphs)), graphs.num_atoms)),
            num_atoms=index(graphs.num_atoms),
            energy=torch.from_numpy(np.ascontiguousarray(graphs.energy, dtype=np.float64)),
            forces=real(graphs.forces),
            weight=real(weight),
            source=index(graphs.source),
        )
