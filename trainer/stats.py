"""Statistics of the training data that models are built with (scales and reference energies).

Computed once at start-up from every rank's share and summed over ranks, so
all ranks build identical models without reading anything twice.
"""
from __future__ import annotations

import math

import numpy as np

from trainer.contract.errors import UserError
from trainer.data.store import DistributedStore
from trainer.distributed import Context, all_sum
from trainer.models.build import DataStats

_MIN_SCALE = 1e-3   # eV/atom and eV/Å: keeps normalisation finite on degenerate data


def reference_table(store: DistributedStore) -> np.ndarray:
    """[sources, max Z + 1] reference energy per atom of each element, per source."""
    max_z = max([max(info.elements, default=0) for info in store.infos] + [1])
    table = np.zeros((len(store.infos), max_z + 1))
    for source, info in enumerate(store.infos):
        for z, energy in info.reference_energies.items():
            table[source, z] = energy
    return table


def data_stats(store: DistributedStore, ctx: Context) -> DataStats:
    radii = {info.radius for info in store.infos}
    if len(radii) > 1:
        names = ", ".join(f"{info.name} ({info.radius} Å)" for info in store.infos)
        raise UserError(f"datasets were converted with different cut-off radii: {names}; "
                        "convert them with the same --radius")
    graphs = store.local
    table = reference_table(store)
    atom_graph = np.repeat(np.arange(len(graphs)), graphs.num_atoms)
    reference = np.bincount(atom_graph, weights=table[graphs.source[atom_graph], graphs.atomic_numbers],
                            minlength=len(graphs))
    residual = (graphs.energy - reference) / np.maximum(graphs.num_atoms, 1)
    n, total, total_sq, force_sq, force_count = all_sum(ctx, [
        float(len(graphs)), float(residual.sum()), float((residual ** 2).sum()),
        float((graphs.forces ** 2).sum()), float(graphs.forces.size)])
    if n == 0:
        raise UserError(f"{store.infos[0].name}: the training split is empty")
    mean = total / n
    std = math.sqrt(max(total_sq / n - mean ** 2, 0.0))
    histogram: list[int] = []
    for info in store.infos:
        histogram = [a + b for a, b in zip(_pad(histogram, len(info.degree_histogram)),
                                           _pad(info.degree_histogram, len(histogram)))]
    return DataStats(
        radius=radii.pop(),
        elements=sorted({z for info in store.infos for z in info.elements}),
        reference_energies=[dict(info.reference_energies) for info in store.infos],
        energy_shift=mean,
        energy_scale=max(std, _MIN_SCALE),
        force_scale=max(math.sqrt(force_sq / max(force_count, 1.0)), _MIN_SCALE),
        degree_histogram=histogram,
    )


def _pad(values: list[int], length: int) -> list[int]:
    return list(values) + [0] * max(0, length - len(values))
