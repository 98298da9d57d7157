"""DistributedStore and EpochLoader in one process, on dataset files of molecules and slabs (generated and real).

The multi-rank behaviour (shares, exchange, shuffling across ranks) is checked
under real MPI in test_store_mpi.py.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mpi_store_check import (Identifier, assert_same, check_batch, labelled_graphs, nbytes, read_direct,
                             write_dataset_of)
from trainer import distributed
from trainer.contract.errors import UserError
from trainer.data.adiosfile import DatasetFileError, DatasetInfo, write_dataset
from trainer.data.loader import EpochLoader
from trainer.data.sampler import plan_epoch
from trainer.data.store import DistributedStore, sample_bytes, share_bounds


@pytest.fixture(scope="module")
def sources(tmp_path_factory, session_data, variant):
    """Molecules: 30 train + 10 val; slabs: 15 train + 5 val."""
    directory = tmp_path_factory.mktemp("store")
    molecules = session_data.frames(variant, "molecules", 40)
    slabs = session_data.frames(variant, "slabs", 20)
    return [write_dataset_of(directory / "molecules.bp", molecules, "molecules", num_val=10),
            write_dataset_of(directory / "slabs.bp", slabs, "slabs", num_val=5)]


def test_shares_tile_the_split_with_near_equal_bytes(sources):
    direct = read_direct(sources, "trainset")
    size = sample_bytes(direct.num_atoms, direct.num_edges)
    assert size.sum() == nbytes(direct)
    for world in range(1, 8):
        bounds = share_bounds(direct.num_atoms, direct.num_edges, world)
        assert bounds[0] == 0 and bounds[-1] == len(direct) and np.all(np.diff(bounds) >= 0)
        held = np.array([size[a:b].sum() for a, b in zip(bounds, bounds[1:])])
        assert np.all(np.abs(held - size.sum() / world) <= size.max()), (world, held)
    # Equal-sized samples: shares by bytes are shares by count.
    counts = np.diff(share_bounds(np.full(10, 9), np.full(10, 72), 4))
    assert sorted(counts) == [2, 2, 3, 3]


@pytest.mark.parametrize("comm", ["none", "self"])
def test_one_process_holds_all_sources_in_order(sources, comm):
    if comm == "self":
        comm = distributed.mpi().COMM_SELF  # a real communicator of size 1
    store = DistributedStore(sources, "trainset", None if comm == "none" else comm)
    assert [info.name for info in store.infos] == ["molecules", "slabs"]
    assert store.num_samples == 45 and store.owned == range(45)
    assert_same(store.local, read_direct(sources, "trainset"), "local")
    assert store.local.source.tolist() == [0] * 30 + [1] * 15
    assert store.local.sample_id.tolist() == list(range(30)) + list(range(15))
    assert np.array_equal(store.num_atoms, store.local.num_atoms)
    assert np.array_equal(store.num_edges, store.local.num_edges)
    assert store.num_atoms.dtype == store.num_edges.dtype == np.int64


@pytest.mark.parametrize("limit, per_source", [(35, [30, 5]), (12, [12, 0]), (1000, [30, 15])])
def test_max_samples_keeps_the_first_samples(sources, limit, per_source):
    store = DistributedStore(sources, "trainset", max_samples=limit)
    assert store.num_samples == sum(per_source) == len(store.num_atoms) == len(store.local)
    assert np.bincount(store.local.source, minlength=2).tolist() == per_source
    assert_same(store.local, read_direct(sources, "trainset").select(np.arange(sum(per_source))), "truncated")


def test_fetch_returns_the_files_samples_in_the_asked_order(sources):
    store = DistributedStore(sources, "valset")
    direct = read_direct(sources, "valset")
    wanted = np.random.default_rng(0).integers(0, store.num_samples, 40)  # with repeats
    assert_same(store.fetch(wanted), direct.select(wanted), "fetch")
    assert len(store.fetch(np.zeros(0, np.int64))) == 0
    with pytest.raises(IndexError):
        store.fetch(np.array([store.num_samples]))


@pytest.mark.parametrize("balanced", [True, False])
def test_epochs_cover_the_split_once_with_global_counts(sources, balanced):
    store = DistributedStore(sources, "trainset")
    direct = read_direct(sources, "trainset")
    identify = Identifier(direct)
    weights = [1.0, 2.5]
    loader = EpochLoader(store, batch_size=8, seed=3, balanced=balanced, source_weights=weights,
                         dtype=torch.float64)
    orders = []
    for epoch in range(2):
        seen = []
        for batch, graphs, atoms in loader.epoch(epoch):
            seen.append(check_batch(batch, direct, identify, weights))
            assert (graphs, atoms) == (batch.num_graphs, int(batch.num_atoms.sum()))
        assert len(seen) == len(loader) == 6  # 45 samples in steps of 8; the short last step holds 5
        order = np.concatenate(seen)
        assert np.array_equal(np.sort(order), np.arange(45))
        assert np.array_equal(order, np.concatenate(
            [step[0] for step in plan_epoch(store.num_atoms, store.num_edges, 1, 8, 3, epoch, balanced)]))
        orders.append(order)
    assert not np.array_equal(orders[0], orders[1])


def test_local_batches_are_the_rank_share_in_order(sources):
    store = DistributedStore(sources, "trainset")
    direct = read_direct(sources, "trainset")
    loader = EpochLoader(store, batch_size=8, seed=0, dtype=torch.float64)
    identify = Identifier(direct)
    batches = list(loader.local_batches(batch_size=10))
    assert [b.num_graphs for b in batches] == [10, 10, 10, 10, 5]
    assert np.array_equal(np.concatenate([check_batch(b, direct, identify) for b in batches]), np.arange(45))
    assert [b.num_graphs for b in loader.local_batches()] == [8] * 5 + [5]


def test_bad_sources_are_user_errors(sources, tmp_path, session_data, variant):
    missing = tmp_path / "nowhere.bp"
    with pytest.raises(DatasetFileError, match="nowhere.bp: no such dataset"):
        DistributedStore([sources[0], missing], "trainset")
    text = tmp_path / "notes.bp"
    text.write_text("not a dataset\n")
    with pytest.raises(DatasetFileError, match="notes.bp"):
        DistributedStore([text], "trainset")

    graphs = labelled_graphs(session_data.frames(variant, "molecules", 3))
    info = DatasetInfo(name="wide", radius=6.0, max_neighbours=50, elements=sorted(set(graphs.atomic_numbers.tolist())),
                       reference_energies={}, counts={})
    write_dataset(tmp_path / "wide.bp", {"trainset": graphs}, info)
    with pytest.raises(DatasetFileError, match="wide.bp: built with radius 6.0 .* radius 5.0"):
        DistributedStore([sources[0], tmp_path / "wide.bp"], "trainset")


def test_an_empty_split_cannot_be_trained_on(sources):
    store = DistributedStore(sources, "testset")
    assert store.num_samples == 0 and len(store.local) == 0
    loader = EpochLoader(store, batch_size=4, seed=0)
    assert len(loader) == 0 and list(loader.local_batches()) == []
    with pytest.raises(UserError, match="molecules.bp, .*slabs.bp: the testset split has no samples"):
        next(loader.epoch(0))
    with pytest.raises(ValueError, match="2 source weights for 1 sources"):
        EpochLoader(DistributedStore(sources[:1], "trainset"), 4, 0, source_weights=[1, 2])
