"""Many atomistic graphs concatenated into flat arrays: the on-disk and in-memory layout.

Per-graph arrays have one row per graph; per-atom and per-edge arrays are the
graphs' rows concatenated, located by per-graph counts (offsets are their
cumulative sums). Edge indices are local to their graph (0..n_atoms-1) so a
graph can be moved, selected or exchanged between ranks without rewriting them.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence

import numpy as np

from trainer.data.neighbours import neighbour_list

PER_GRAPH = ("num_atoms", "num_edges", "energy", "cell", "pbc", "stress", "source", "sample_id")
PER_ATOM = ("atomic_numbers", "positions", "forces", "fixed")
PER_EDGE = ("edge_index", "edge_shift")


@dataclass
class GraphArrays:
    num_atoms: np.ndarray       # [G] int64
    num_edges: np.ndarray       # [G] int64
    energy: np.ndarray          # [G] float64, total energy in eV (NaN: unlabelled)
    cell: np.ndarray            # [G, 3, 3] float64, Å (zeros for molecules)
    pbc: np.ndarray             # [G, 3] bool
    stress: np.ndarray          # [G, 3, 3] float64, eV/Å^3 (NaN when absent)
    source: np.ndarray          # [G] int64, index of the dataset the graph came from
    sample_id: np.ndarray       # [G] int64, position of the structure in its source
    atomic_numbers: np.ndarray  # [A] int64
    positions: np.ndarray       # [A, 3] float64, Å
    forces: np.ndarray          # [A, 3] float64, eV/Å (NaN: unlabelled)
    fixed: np.ndarray           # [A] bool, True where a FixAtoms constraint holds the atom
    edge_index: np.ndarray      # [E, 2] int64, (source j, target i), local to the graph
    edge_shift: np.ndarray      # [E, 3] int64, cell shift of the neighbour

    def __len__(self) -> int:
        return len(self.num_atoms)

    @property
    def atom_offsets(self) -> np.ndarray:
        return offsets(self.num_atoms)

    @property
    def edge_offsets(self) -> np.ndarray:
        return offsets(self.num_edges)

    def select(self, indices: Sequence[int] | np.ndarray) -> "GraphArrays":
        """The graphs at `indices`, in that order (a copy)."""
        indices = np.asarray(indices, dtype=np.int64)
        atoms = ranges(self.atom_offsets[indices], self.num_atoms[indices])
        edges = ranges(self.edge_offsets[indices], self.num_edges[indices])
        parts = {name: getattr(self, name)[indices] for name in PER_GRAPH}
        parts.update({name: getattr(self, name)[atoms] for name in PER_ATOM})
        parts.update({name: getattr(self, name)[edges] for name in PER_EDGE})
        return GraphArrays(**parts)

    @staticmethod
    def concat(parts: Sequence["GraphArrays"]) -> "GraphArrays":
        if not parts:
            return GraphArrays.empty()
        return GraphArrays(**{f.name: np.concatenate([getattr(p, f.name) for p in parts])
                              for f in fields(GraphArrays)})

    @staticmethod
    def empty() -> "GraphArrays":
        return GraphArrays(
            num_atoms=np.zeros(0, np.int64), num_edges=np.zeros(0, np.int64),
            energy=np.zeros(0), cell=np.zeros((0, 3, 3)), pbc=np.zeros((0, 3), bool),
            stress=np.zeros((0, 3, 3)), source=np.zeros(0, np.int64), sample_id=np.zeros(0, np.int64),
            atomic_numbers=np.zeros(0, np.int64), positions=np.zeros((0, 3)), forces=np.zeros((0, 3)),
            fixed=np.zeros(0, bool), edge_index=np.zeros((0, 2), np.int64), edge_shift=np.zeros((0, 3), np.int64))

    @staticmethod
    def from_atoms(structures: Sequence, radius: float, max_neighbours: int | None = None,
                   energies: Sequence[float] | None = None, forces: Sequence[np.ndarray] | None = None,
                   stresses: Sequence[np.ndarray | None] | None = None, source: int = 0,
                   sample_ids: Sequence[int] | None = None) -> "GraphArrays":
        """Build graphs from ASE Atoms; labels are given explicitly (NaN where absent).

        Reading labels from files, cleaning and unit handling belong to the
        conversion step; this only assembles arrays and neighbour lists.
        """
        parts = []
        for k, atoms in enumerate(structures):
            n = len(atoms)
            cell = np.asarray(atoms.cell.array, dtype=np.float64)
            pbc = np.asarray(atoms.pbc, dtype=bool)
            edge_index, shift = neighbour_list(atoms.positions, cell, pbc, radius, max_neighbours)
            fixed = np.zeros(n, dtype=bool)
            for constraint in getattr(atoms, "constraints", []):
                if type(constraint).__name__ == "FixAtoms":
                    fixed[constraint.get_indices()] = True
            stress = np.full((3, 3), np.nan)
            if stresses is not None and stresses[k] is not None:
                stress = np.asarray(stresses[k], dtype=np.float64).reshape(3, 3)
            parts.append(GraphArrays(
                num_atoms=np.array([n], np.int64), num_edges=np.array([len(edge_index)], np.int64),
                energy=np.array([np.nan if energies is None else energies[k]], np.float64),
                cell=cell[None], pbc=pbc[None], stress=stress[None],
                source=np.array([source], np.int64),
                sample_id=np.array([k if sample_ids is None else sample_ids[k]], np.int64),
                atomic_numbers=np.asarray(atoms.numbers, np.int64),
                positions=np.asarray(atoms.positions, np.float64),
                forces=(np.full((n, 3), np.nan) if forces is None
                        else np.asarray(forces[k], np.float64).reshape(n, 3)),
                fixed=fixed, edge_index=edge_index, edge_shift=shift))
        return GraphArrays.concat(parts)


def offsets(counts: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(counts), dtype=np.int64)
    np.cumsum(counts[:-1], out=offsets[1:])
    return offsets


def ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of arange(start, start + count) for each pair, without a Python loop."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(counts)
    index = np.arange(total, dtype=np.int64)
    return index - np.repeat(ends - counts, counts) + np.repeat(starts, counts)
