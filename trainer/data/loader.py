"""Batches for one rank, epoch after epoch, from a DistributedStore.

Each epoch: the plan (same on every rank) says which samples this rank trains
on in every step; they are fetched in one collective at the start of the epoch,
then each step's batch is a contiguous slice of them (views, no copy) turned
into tensors by `Batch.from_arrays`.

With the balanced sampler ranks get different numbers of graphs per step. The
step's global graph and atom counts come with every batch so that the trainer
can normalise its loss by them: the summed gradients are then exactly those of
one process training on the whole global batch.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from trainer.contract.errors import UserError
from trainer.data.batch import Batch
from trainer.data.graphs import PER_ATOM, PER_EDGE, PER_GRAPH, GraphArrays
from trainer.data.sampler import Plan, bootstrap_sample, num_steps, plan_epoch
from trainer.data.store import DistributedStore


class EpochLoader:
    """`bootstrap=True`: every epoch shuffles one resample with replacement of the split, drawn from
    `seed` (`sampler.bootstrap_sample`), instead of the split itself."""

    def __init__(self, store: DistributedStore, batch_size: int, seed: int, balanced: bool = True,
                 source_weights: Sequence[float] | None = None, dtype: torch.dtype = torch.float32,
                 bootstrap: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if source_weights is not None and len(source_weights) != len(store.infos):
            raise ValueError(f"{len(source_weights)} source weights for {len(store.infos)} sources")
        self.store = store
        self.batch_size = batch_size
        self.seed = seed
        self.balanced = balanced
        self.source_weights = None if source_weights is None else np.asarray(source_weights, np.float64)
        self.dtype = dtype
        self.population = bootstrap_sample(store.num_samples, seed) if bootstrap else None

    def __len__(self) -> int:
        """Steps per epoch, the same on every rank."""
        return num_steps(self.store.num_samples, self.store.world_size, self.batch_size)

    def plan(self, epoch: int) -> Plan:
        return plan_epoch(self.store.num_atoms, self.store.num_edges, self.store.world_size,
                          self.batch_size, self.seed, epoch, self.balanced, self.population)

    def epoch(self, epoch: int) -> Iterator[tuple[Batch, int, int]]:
        """(this rank's batch, global graphs in the step, global atoms in the step), per step.

        COLLECTIVE: the fetch happens at the first `next()`, so every rank must
        start iterating. A rank's batch is empty only when the split has fewer
        samples than there are ranks.
        """
        if self.store.num_samples == 0:
            names = ", ".join(str(p) for p in self.store.paths)
            raise UserError(f"{names}: the {self.store.split} split has no samples to train on")
        plan = self.plan(epoch)
        mine = [step[self.store.rank] for step in plan]
        fetched = self.store.fetch(np.concatenate(mine) if mine else np.zeros(0, np.int64))
        bounds = np.concatenate([[0], np.cumsum([len(batch) for batch in mine])])
        cut = _Slicer(fetched)
        for s, step in enumerate(plan):
            everyone = np.concatenate(step)
            graphs = cut(int(bounds[s]), int(bounds[s + 1]))
            yield (Batch.from_arrays(graphs, self.dtype, self.source_weights),
                   len(everyone), int(self.store.num_atoms[everyone].sum()))

    def local_batches(self, batch_size: int | None = None) -> Iterator[Batch]:
        """This rank's own samples in file order, no exchange (validation and test evaluation).

        Not collective; ranks may get different numbers of batches (their shares
        differ by up to one sample), so reduce metrics after the loop.
        """
        size = batch_size or self.batch_size
        cut = _Slicer(self.store.local)
        for start in range(0, len(self.store.local), size):
            yield Batch.from_arrays(cut(start, min(start + size, len(self.store.local))),
                                    self.dtype, self.source_weights)


class _Slicer:
    """Contiguous runs of graphs of one GraphArrays as views (select() would copy)."""

    def __init__(self, graphs: GraphArrays):
        self.graphs = graphs
        self.atoms = np.concatenate([[0], np.cumsum(graphs.num_atoms)])
        self.edges = np.concatenate([[0], np.cumsum(graphs.num_edges)])

    def __call__(self, start: int, stop: int) -> GraphArrays:
        rows = {name: slice(start, stop) for name in PER_GRAPH}
        rows.update({name: slice(self.atoms[start], self.atoms[stop]) for name in PER_ATOM})
        rows.update({name: slice(self.edges[start], self.edges[stop]) for name in PER_EDGE})
        return GraphArrays(**{name: getattr(self.graphs, name)[row] for name, row in rows.items()})
