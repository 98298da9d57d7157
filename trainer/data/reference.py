"""Statistics of the training split stored with a dataset: per-element reference energies and degrees."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from trainer.data.graphs import GraphArrays


def composition_matrix(graphs: GraphArrays, elements: list[int]) -> np.ndarray:
    """[G, len(elements)] counts of each element in each graph."""
    column = np.searchsorted(elements, graphs.atomic_numbers)
    graph = np.repeat(np.arange(len(graphs)), graphs.num_atoms)
    counts = np.zeros((len(graphs), len(elements)), dtype=np.float64)
    np.add.at(counts, (graph, column), 1.0)
    return counts


def fit_reference_energies(graphs: GraphArrays) -> dict[int, float]:
    """Per-element energies e_Z with E_total ~= sum_Z n_Z e_Z, by least squares over `graphs`.

    Fitted on the training split only, so validation and test data never leak
    into what the model subtracts. `lstsq` returns the minimum-norm solution
    (the zero-ridge limit): when compositions are collinear (every ethanol
    frame is C2H6O; a one-element set with a fixed atom count) the split of
    the energy between elements is not determined by the data, and the
    minimum-norm choice still reproduces the totals of those compositions.
    """
    if len(graphs) == 0:
        return {}
    elements = sorted(int(z) for z in np.unique(graphs.atomic_numbers))
    counts = composition_matrix(graphs, elements)
    solution, *_ = np.linalg.lstsq(counts, graphs.energy, rcond=None)
    return {z: float(e) for z, e in zip(elements, solution)}


def degree_histogram(graphs: GraphArrays) -> list[int]:
    """histogram[d] = number of atoms with in-degree d (edges targeting them), as PNA's `deg` expects."""
    if graphs.num_atoms.sum() == 0:
        return [0]
    edge_graph = np.repeat(np.arange(len(graphs)), graphs.num_edges)
    target = graphs.edge_index[:, 1] + graphs.atom_offsets[edge_graph]
    degree = np.bincount(target, minlength=int(graphs.num_atoms.sum()))
    return [int(count) for count in np.bincount(degree)]
