"""Checks of DistributedStore and EpochLoader under real MPI; run by tests/test_store_mpi.py as

    mpiexec -n 2 python tests/mpi_store_check.py --sampler balanced A.bp B.bp

Prints `OK ...` on rank 0 and exits 0 when every check holds; a failed check on
any rank prints its traceback and aborts the whole job (exit non-zero), so no
rank is left waiting in a collective.

Also home of the data helpers the store and sampler tests share (pytest-free so
that this script can use them): structures from an extxyz file (generated, or
../shared/data's .xz), labelled graphs, and a dataset file written with the
project's own writer.
"""
from __future__ import annotations

import argparse
import io
import lzma
import sys
import traceback
from pathlib import Path

import numpy as np

from trainer.data.adiosfile import DatasetInfo, DatasetReader, write_dataset
from trainer.data.graphs import GraphArrays

RADIUS, MAX_NEIGHBOURS = 5.0, 50


# ---- data helpers (shared with datasets.py, test_store.py, test_sampler.py, test_store_mpi.py) ----
def read_structures(path: Path, count: int | None = None) -> list:
    """The first `count` (default all) structures of an extxyz file, plain or .xz.

    Decompressing to memory first: ase.io.read on the .xz itself seeks through
    the compressed stream and took minutes for the 1085 OC20 frames here.
    """
    from trainer import aseio

    with (lzma.open(path, "rt") if Path(path).suffix == ".xz" else open(path)) as handle:
        text = handle.read()
    return aseio.read(io.StringIO(text), ":" if count is None else f":{count}", format="extxyz")


def labelled_graphs(structures: list) -> GraphArrays:
    return GraphArrays.from_atoms(
        structures, RADIUS, MAX_NEIGHBOURS,
        energies=[a.get_potential_energy() for a in structures],
        forces=[a.get_forces() for a in structures])


def write_dataset_of(path: Path, structures: list, name: str, num_val: int) -> Path:
    """A dataset file with the last `num_val` structures as valset, the rest as trainset."""
    graphs = labelled_graphs(structures)
    train = graphs.select(np.arange(len(graphs) - num_val))
    val = graphs.select(np.arange(len(graphs) - num_val, len(graphs)))
    val.sample_id[:] = np.arange(num_val)
    elements = sorted({int(z) for z in graphs.atomic_numbers})
    info = DatasetInfo(name=name, radius=RADIUS, max_neighbours=MAX_NEIGHBOURS, elements=elements,
                       reference_energies={z: 0.0 for z in elements},
                       counts={"trainset": len(train), "valset": num_val, "testset": 0})
    write_dataset(path, {"trainset": train, "valset": val}, info)
    return path


def read_direct(paths: list[Path], split: str) -> GraphArrays:
    """Whole split of every file, read plainly, with `source` set to the file's position."""
    parts = []
    for source, path in enumerate(paths):
        with DatasetReader(path) as reader:
            part = reader.read(split)
        part.source[:] = source
        parts.append(part)
    return GraphArrays.concat(parts)


def assert_same(got: GraphArrays, expected: GraphArrays, what: str) -> None:
    for name in vars(expected):
        a, b = getattr(got, name), getattr(expected, name)
        assert a.dtype == b.dtype and a.shape == b.shape, f"{what}: {name} {a.dtype}{a.shape} != {b.dtype}{b.shape}"
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), f"{what}: {name} differs"


def nbytes(graphs: GraphArrays) -> int:
    return sum(getattr(graphs, name).nbytes for name in vars(graphs))


class Identifier:
    """Global index of each graph of a batch, found from its content (source and exact
    positions, so the loader must run in float64): independent of the epoch plan."""

    def __init__(self, direct: GraphArrays):
        bounds = np.concatenate([[0], np.cumsum(direct.num_atoms)])
        self.where = {(int(direct.source[k]), direct.positions[bounds[k]:bounds[k + 1]].tobytes()): k
                      for k in range(len(direct))}
        assert len(self.where) == len(direct), "the test data holds duplicate structures"

    def __call__(self, batch) -> np.ndarray:
        positions = batch.positions.numpy()
        bounds = np.concatenate([[0], np.cumsum(batch.num_atoms.numpy())])
        return np.array([self.where[(int(batch.source[g]), positions[bounds[g]:bounds[g + 1]].tobytes())]
                         for g in range(batch.num_graphs)], np.int64)


def check_batch(batch, direct: GraphArrays, identify: Identifier, source_weights=None) -> np.ndarray:
    """Assert that a float64 batch holds exactly the file's samples; returns their global indices."""
    import torch

    from trainer.data.batch import Batch

    index = identify(batch)
    expected = Batch.from_arrays(direct.select(index), torch.float64, source_weights)
    for name, value in vars(expected).items():
        got = getattr(batch, name)
        assert got.dtype == value.dtype and torch.equal(got.nan_to_num(), value.nan_to_num()), name
    return index


# ---- the MPI checks ------------------------------------------------------------------------------
def _forbid_file_reads() -> None:
    """From here on any dataset read is a failure: the store must live on its memory."""
    def refuse(*args, **kwargs):
        raise AssertionError("a dataset file was read after DistributedStore.__init__")
    DatasetReader.__init__ = refuse
    DatasetReader.read = refuse
    DatasetReader.sizes = refuse


def check(paths: list[Path], balanced: bool, batch_size: int, seed: int) -> str:
    import torch
    from mpi4py import MPI

    from trainer.data.loader import EpochLoader
    from trainer.data.store import DistributedStore

    comm = MPI.COMM_WORLD
    rank, world = comm.Get_rank(), comm.Get_size()
    direct = read_direct(paths, "trainset")
    store = DistributedStore(paths, "trainset", comm)
    _forbid_file_reads()

    # Each rank holds exactly its contiguous share (~1/W of the bytes), and the shares tile the split.
    n = store.num_samples
    assert n == len(direct) and np.array_equal(store.num_atoms, direct.num_atoms)
    shares = comm.allgather((store.owned.start, store.owned.stop))
    assert shares[0][0] == 0 and shares[-1][1] == n and all(a[1] == b[0] for a, b in zip(shares, shares[1:]))
    assert_same(store.local, direct.select(np.arange(store.owned.start, store.owned.stop)), f"rank {rank} share")
    held, total = nbytes(store.local), nbytes(direct)
    largest = max(nbytes(direct.select([k])) for k in range(n))
    assert comm.allreduce(held) == total
    assert held <= total / world + largest, f"rank {rank} holds {held} of {total} bytes"

    # fetch: arbitrary, uneven requests (repeats, an empty one) return exactly the file's samples.
    rng = np.random.default_rng(rank)
    wanted = rng.integers(0, n, size=0 if rank == world - 1 else 3 * n // 2)
    assert_same(store.fetch(wanted), direct.select(wanted), f"rank {rank} fetch")

    identify = Identifier(direct)

    def run_epoch(loader: EpochLoader, epoch: int) -> list[np.ndarray]:
        seen = []
        for step, (batch, graphs, atoms) in enumerate(loader.epoch(epoch)):
            index = check_batch(batch, direct, identify)
            totals = comm.allreduce(np.array([batch.num_graphs, int(batch.num_atoms.sum())]))
            assert (graphs, atoms) == tuple(totals), f"step {step}: global counts {graphs, atoms} != {tuple(totals)}"
            if not balanced and step < len(loader) - 1:
                assert batch.num_graphs == batch_size
            assert batch.num_graphs > 0
            seen.append(index)
        assert len(seen) == len(loader)
        everything = comm.gather(np.concatenate(seen), root=0)
        if rank == 0:
            assert np.array_equal(np.sort(np.concatenate(everything)), np.arange(n)), f"epoch {epoch} coverage"
        return seen

    loader = EpochLoader(store, batch_size, seed, balanced=balanced, dtype=torch.float64)
    first, second = run_epoch(loader, 0), run_epoch(loader, 1)
    orders = comm.gather((first, second), root=0)
    again = run_epoch(EpochLoader(store, batch_size, seed, balanced=balanced, dtype=torch.float64), 0)
    assert all(np.array_equal(a, b) for a, b in zip(first, again)), "same seed and epoch, different batches"
    if rank == 0:
        flat = [np.concatenate([np.concatenate(steps) for steps in epoch]) for epoch in zip(*orders)]
        assert not np.array_equal(flat[0], flat[1]), "two epochs in the same order"

    # Bagging: every rank draws the same resample, and an epoch trains on exactly that multiset.
    bagged = EpochLoader(store, batch_size, seed, balanced=balanced, dtype=torch.float64, bootstrap=True)
    assert all(np.array_equal(p, bagged.population) for p in comm.allgather(bagged.population)), \
        "ranks drew different bootstrap resamples"
    seen = [check_batch(batch, direct, identify) for batch, _, _ in bagged.epoch(0)]
    everything = comm.gather(np.concatenate(seen), root=0)
    if rank == 0:
        assert np.array_equal(np.sort(np.concatenate(everything)), bagged.population), "bootstrap epoch coverage"
    return (f"OK world={world} samples={n} steps={len(loader)} sampler={'balanced' if balanced else 'fixed'} "
            f"held_bytes_rank0={held} of {total}")


def check_bad_source(paths: list[Path]) -> str:
    """A bad file among the sources raises the same one-line error on every rank (no hang)."""
    from mpi4py import MPI

    from trainer.contract.errors import UserError
    from trainer.data.store import DistributedStore

    comm = MPI.COMM_WORLD
    try:
        DistributedStore(paths, "trainset", comm)
    except UserError as err:
        messages = comm.allgather(str(err))
    else:
        raise AssertionError("no error for a bad source")
    assert len(set(messages)) == 1 and "\n" not in messages[0], messages
    return f"OK world={comm.Get_size()} every rank: {messages[0]}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--sampler", choices=("balanced", "fixed"), default="balanced")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--expect-bad-source", action="store_true", help="check the error path instead")
    args = parser.parse_args()
    from mpi4py import MPI

    try:
        message = (check_bad_source(args.paths) if args.expect_bad_source
                   else check(args.paths, args.sampler == "balanced", args.batch_size, args.seed))
    except BaseException:
        print(f"rank {MPI.COMM_WORLD.Get_rank()} failed:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
        MPI.COMM_WORLD.Abort(1)
        return 1
    if MPI.COMM_WORLD.Get_rank() == 0:
        print(message, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
