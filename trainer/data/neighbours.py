"""Radius neighbour lists with periodic boundaries (vesin), capped at the nearest K.

Edge convention used everywhere: an edge (j -> i) has source j (the neighbour)
and target i (the centre); its vector is
    r_ij = x[j] - x[i] + shift_ij @ cell
with an integer cell shift, so distances (and their gradients, for
conservative forces) can be recomputed from positions at any time.
"""
from __future__ import annotations

import numpy as np
import vesin

_NO_CELL = np.zeros((3, 3))


def neighbour_list(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, radius: float,
                   max_neighbours: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Edges within `radius` of each atom, at most `max_neighbours` nearest per centre.

    Returns `edge_index` [E, 2] int64 as (source j, target i) pairs sorted by
    target then distance, and `shift` [E, 3] int64 cell shifts.
    """
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    box = np.asarray(cell, dtype=np.float64) if pbc.any() else _NO_CELL
    calculator = vesin.NeighborList(cutoff=float(radius), full_list=True)
    centre, neighbour, shift, distance = calculator.compute(
        np.asarray(positions, dtype=np.float64), box, [bool(p) for p in pbc], "ijSd")
    centre = centre.astype(np.int64)
    # Sort by centre, then distance (ties by neighbour index, for determinism).
    order = np.lexsort((neighbour, distance, centre))
    centre, neighbour, shift = centre[order], neighbour[order].astype(np.int64), shift[order]
    if max_neighbours is not None and len(centre):
        first = np.searchsorted(centre, centre, side="left")
        rank_in_centre = np.arange(len(centre)) - first
        keep = rank_in_centre < max_neighbours
        centre, neighbour, shift = centre[keep], neighbour[keep], shift[keep]
    edge_index = np.stack([neighbour, centre], axis=1)
    return edge_index.reshape(-1, 2), np.asarray(shift, dtype=np.int64).reshape(-1, 3)
