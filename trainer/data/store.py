"""One split of the training data, spread over the ranks (the DDStore idea of the HydraGNN GFM paper).

At start-up every rank reads one contiguous ~1/W share of the data (by bytes) into
memory, taking only that byte range of each file; afterwards no file is read.
Global shuffling works by exchange: each epoch every rank asks the owners for
the samples the epoch plan gives it (`fetch`, one collective). Memory per rank
is its share plus the samples it fetched.

Only the per-sample sizes are global (two int64 per sample): the epoch plan
needs them on every rank to balance the batches. Rank 0 reads them and
broadcasts, so the file system sees one metadata read, not one per rank.
"""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from trainer.contract.errors import UserError
from trainer.data.adiosfile import SPLITS, DatasetFileError, DatasetInfo, DatasetReader
from trainer.data.graphs import PER_ATOM, PER_EDGE, PER_GRAPH, GraphArrays, offsets, ranges


def share_bounds(num_atoms: np.ndarray, num_edges: np.ndarray, world_size: int) -> np.ndarray:
    """Where each rank's share starts (and, last, the end): contiguous runs of near-equal bytes.

    Sources differ widely in graph size (9-atom molecules, 180-atom slabs), so
    equal sample counts would leave one rank holding most of the bytes. A
    sample belongs to the rank whose 1/W slice of the cumulative bytes holds
    its midpoint; each share is then within one sample of total/W.
    """
    size = sample_bytes(num_atoms, num_edges)
    middle = np.cumsum(size) - size / 2
    return np.searchsorted(middle, size.sum() * np.arange(world_size + 1) / world_size).astype(np.int64)


def sample_bytes(num_atoms: np.ndarray, num_edges: np.ndarray) -> np.ndarray:
    """Bytes each sample takes in memory as GraphArrays."""
    empty = GraphArrays.empty()

    def row_bytes(names: tuple[str, ...]) -> int:
        return sum(getattr(empty, n).itemsize * int(np.prod(getattr(empty, n).shape[1:])) for n in names)

    return (row_bytes(PER_GRAPH) + row_bytes(PER_ATOM) * np.asarray(num_atoms, np.float64)
            + row_bytes(PER_EDGE) * np.asarray(num_edges, np.float64))


class DistributedStore:
    """One split of one or more dataset files, spread over the ranks of an mpi4py communicator.

    Sources are concatenated in the order given; a sample's `GraphArrays.source`
    is the index of its file in `paths` (and in `infos`), its `sample_id` the
    position in its file's split. `comm=None` (or a communicator of size 1)
    means a single process that holds everything.
    """

    def __init__(self, paths: Sequence[str | Path], split: str, comm: Any = None,
                 max_samples: int | None = None):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if max_samples is not None and max_samples < 0:
            raise ValueError(f"max_samples must be >= 0, got {max_samples}")
        self.paths = [Path(p) for p in paths]
        self.split = split
        self.comm = comm if comm is not None and comm.Get_size() > 1 else None
        self.rank = 0 if self.comm is None else self.comm.Get_rank()
        self.world_size = 1 if self.comm is None else self.comm.Get_size()

        self.infos, num_atoms, num_edges = self._global_sizes()
        full = np.array([info.counts[split] for info in self.infos], np.int64)
        self.num_samples = len(num_atoms) if max_samples is None else min(max_samples, len(num_atoms))
        self.num_atoms = num_atoms[:self.num_samples]
        self.num_edges = num_edges[:self.num_samples]
        # Global index where each source starts (after max_samples), and each rank's share.
        used = np.clip(self.num_samples - np.concatenate([[0], np.cumsum(full)[:-1]]), 0, full)
        self._source_start = np.concatenate([[0], np.cumsum(used)]).astype(np.int64)
        self._rank_start = share_bounds(self.num_atoms, self.num_edges, self.world_size)
        self.owned = range(int(self._rank_start[self.rank]), int(self._rank_start[self.rank + 1]))
        self.local = self._everywhere(self._read_share)

    # ---- start-up -------------------------------------------------------------------------------
    def _global_sizes(self) -> tuple[list[DatasetInfo], np.ndarray, np.ndarray]:
        """Infos and per-sample atoms and edges of the whole split: read by rank 0, broadcast."""
        if self.comm is None:
            return _read_sizes(self.paths, self.split)
        outcome = _Outcome(lambda: _read_sizes(self.paths, self.split) if self.rank == 0 else None, self.rank)
        found = outcome.result
        infos, total, failure = self.comm.bcast(
            (found[0], len(found[1]), None) if found else (None, 0, outcome.failure), root=0)
        outcome.settle(failure)
        num_atoms, num_edges = found[1:] if found else (np.empty(total, np.int64), np.empty(total, np.int64))
        # Buffer broadcasts: 16 bytes per sample, not worth pickling.
        self.comm.Bcast(num_atoms, root=0)
        self.comm.Bcast(num_edges, root=0)
        return infos, num_atoms, num_edges

    def _read_share(self) -> GraphArrays:
        """This rank's samples: the overlap of its share with each source, one range read per file."""
        parts = []
        for source, path in enumerate(self.paths):
            lo = max(self.owned.start, self._source_start[source])
            hi = min(self.owned.stop, self._source_start[source + 1])
            if lo >= hi:
                continue  # a file holding none of this rank's samples is not opened
            offset = int(self._source_start[source])
            with DatasetReader(path) as reader:
                part = reader.read(self.split, int(lo) - offset, int(hi) - offset)
            part.source[:] = source
            parts.append(part)
        return parts[0] if len(parts) == 1 else GraphArrays.concat(parts)

    def _everywhere(self, work):
        """Run `work` on every rank; if it fails on any, every rank raises (none is left
        waiting forever in the next collective)."""
        if self.comm is None:
            return work()
        outcome = _Outcome(work, self.rank)
        failures = [f for f in self.comm.allgather(outcome.failure) if f is not None]
        return outcome.settle(failures[0] if failures else None)

    # ---- exchange -------------------------------------------------------------------------------
    def fetch(self, wanted: np.ndarray) -> GraphArrays:
        """COLLECTIVE: the samples at global indices `wanted`, in that order (repeats allowed).

        Every rank calls it with its own `wanted`; samples owned elsewhere come
        from their owners: one Alltoall of request counts, one Alltoallv of the
        requested indices, then one Alltoallv per array of `GraphArrays`. The
        receiver knows every reply's size from the global sizes, so no further
        counts are exchanged. Each array is gathered, exchanged and scattered
        into place one at a time, to keep the transient memory to one array.
        """
        wanted = np.asarray(wanted, dtype=np.int64).reshape(-1)
        if len(wanted) and (wanted.min() < 0 or wanted.max() >= self.num_samples):
            raise IndexError(f"sample indices must lie in [0, {self.num_samples})")
        if self.comm is None:
            return self.local.select(wanted)
        from mpi4py import MPI

        world = self.world_size
        owner = np.searchsorted(self._rank_start, wanted, side="right") - 1
        by_owner = np.argsort(owner, kind="stable")
        asked = wanted[by_owner]
        ask_counts = np.bincount(owner, minlength=world).astype(np.int64)
        give_counts = np.empty(world, np.int64)
        self.comm.Alltoall([ask_counts, MPI.INT64_T], [give_counts, MPI.INT64_T])
        requested = _exchange(self.comm, asked, ask_counts, give_counts)

        # What this rank sends (rows of self.local), and where received rows go in the result.
        mine = requested - self.owned.start
        send_rows = _row_index(self.local.num_atoms, self.local.num_edges, mine)
        destination = np.repeat(np.arange(world), give_counts)
        send_counts = {"graph": give_counts,
                       "atom": np.bincount(destination, self.local.num_atoms[mine], world).astype(np.int64),
                       "edge": np.bincount(destination, self.local.num_edges[mine], world).astype(np.int64)}
        out_atoms, out_edges = self.num_atoms[wanted], self.num_edges[wanted]
        place_rows = _row_index(out_atoms, out_edges, by_owner)
        recv_counts = {"graph": ask_counts,
                       "atom": np.bincount(owner, out_atoms, world).astype(np.int64),
                       "edge": np.bincount(owner, out_edges, world).astype(np.int64)}

        arrays = {}
        for f in fields(GraphArrays):
            kind = _KIND[f.name]
            column = getattr(self.local, f.name)
            received = _exchange(self.comm, column[send_rows[kind]], send_counts[kind], recv_counts[kind])
            result = np.empty_like(received)
            result[place_rows[kind]] = received
            arrays[f.name] = result
        return GraphArrays(**arrays)


_KIND = {**{n: "graph" for n in PER_GRAPH}, **{n: "atom" for n in PER_ATOM}, **{n: "edge" for n in PER_EDGE}}


def _row_index(num_atoms: np.ndarray, num_edges: np.ndarray, graphs: np.ndarray) -> dict[str, np.ndarray]:
    """Graph, atom and edge rows of `graphs` (in that order) in arrays laid out by these sizes."""
    return {"graph": graphs,
            "atom": ranges(offsets(num_atoms)[graphs], num_atoms[graphs]),
            "edge": ranges(offsets(num_edges)[graphs], num_edges[graphs])}


def _exchange(comm: Any, send: np.ndarray, send_rows: np.ndarray, recv_rows: np.ndarray) -> np.ndarray:
    """Alltoallv of the rows of `send` (grouped by destination rank) -> rows grouped by source rank."""
    width = int(np.prod(send.shape[1:], dtype=np.int64))
    received = np.empty((int(recv_rows.sum()), *send.shape[1:]), send.dtype)
    # MPI has no bool type that numpy agrees with on every platform: move bools as bytes.
    flat_send = np.ascontiguousarray(send).reshape(-1)
    flat_recv = received.reshape(-1)
    if send.dtype == bool:
        flat_send, flat_recv = flat_send.view(np.uint8), flat_recv.view(np.uint8)
    send_counts, recv_counts = send_rows * width, recv_rows * width
    comm.Alltoallv([flat_send, (send_counts, _displacements(send_counts))],
                   [flat_recv, (recv_counts, _displacements(recv_counts))])
    return received


def _displacements(counts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)


def _read_sizes(paths: Sequence[Path], split: str) -> tuple[list[DatasetInfo], np.ndarray, np.ndarray]:
    infos, atoms, edges = [], [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for path in paths:
        with DatasetReader(path) as reader:
            infos.append(reader.info)
            a, e = reader.sizes(split)
        atoms.append(a.astype(np.int64))
        edges.append(e.astype(np.int64))
    _check_compatible(paths, infos)
    return infos, np.concatenate(atoms), np.concatenate(edges)


class _Outcome:
    """What `work` did on this rank: its result, or the exception and a picklable summary
    (is it a UserError, message) to tell the other ranks."""

    def __init__(self, work, rank: int):
        self.result, self.error, self.failure = None, None, None
        try:
            self.result = work()
        except Exception as err:  # raised again by settle(), once every rank knows
            self.error = err
            self.failure = (True, str(err)) if isinstance(err, UserError) else (
                False, f"rank {rank}: {type(err).__name__}: {err}")

    def settle(self, failure: tuple[bool, str] | None):
        """Raise the first failure of any rank (the original exception where it happened)."""
        if self.error is not None:
            raise self.error
        if failure is not None:
            user_error, message = failure
            raise DatasetFileError(message) if user_error else RuntimeError(f"reading the dataset failed on {message}")
        return self.result


def _check_compatible(paths: Sequence[Path], infos: Sequence[DatasetInfo]) -> None:
    """Sources trained together must share the graph construction, or one model would see two."""
    first = infos[0] if infos else None
    for path, info in zip(paths[1:], infos[1:]):
        if (info.radius, info.max_neighbours) != (first.radius, first.max_neighbours):
            raise DatasetFileError(
                f"{path}: built with radius {info.radius} and max_neighbours {info.max_neighbours}, "
                f"but {paths[0]} with radius {first.radius} and max_neighbours {first.max_neighbours}; "
                "convert the sources with the same settings")
