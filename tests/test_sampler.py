"""The epoch plan: exact-once coverage, reproducibility, and balance on slab sizes (generated, and OC20's)."""
from __future__ import annotations

import numpy as np
import pytest

from mpi_store_check import MAX_NEIGHBOURS, RADIUS
from trainer.data.graphs import GraphArrays
from trainer.data.sampler import ATOM_COST, cost, load_imbalance, num_steps, plan_epoch


@pytest.fixture(scope="module")
def slab_sizes(session_data, variant) -> tuple[np.ndarray, np.ndarray]:
    """Atoms and edges (radius 5 Å, at most 50 neighbours) of 200 adsorbate+slab structures
    (OC20's: 33 to 185 atoms; generated: 13 to 52)."""
    graphs = GraphArrays.from_atoms(session_data.frames(variant, "slabs", 200), RADIUS, MAX_NEIGHBOURS)
    return graphs.num_atoms, graphs.num_edges


def _resample(sizes, n: int, seed: int = 0):
    pick = np.random.default_rng(seed).integers(0, len(sizes[0]), n)
    return sizes[0][pick], sizes[1][pick]


CASES = [(200, 4, 8), (200, 3, 7), (37, 8, 1), (41, 8, 5), (5, 8, 3), (1, 1, 1), (64, 1, 64), (1000, 16, 4)]


@pytest.mark.parametrize("balanced", [True, False])
@pytest.mark.parametrize("n, world, batch", CASES)
def test_every_sample_once_and_equal_steps(slab_sizes, n, world, batch, balanced):
    atoms, edges = _resample(slab_sizes, n)
    plan = plan_epoch(atoms, edges, world, batch, seed=1, epoch=0, balanced=balanced)
    assert len(plan) == num_steps(n, world, batch) >= 1
    assert all(len(step) == world for step in plan)
    everything = np.concatenate([np.concatenate(step) for step in plan])
    assert np.array_equal(np.sort(everything), np.arange(n))
    sizes = np.array([[len(b) for b in step] for step in plan])
    if n >= world:
        assert sizes.min() >= 1, "a rank got an empty batch though there are enough samples"
    else:
        assert sorted(sizes[0]) == [0] * (world - n) + [1] * n
    per_step = sizes.sum(axis=1)
    assert np.all(per_step[:-1] == world * batch)  # only the last step may differ
    assert min(n, world) <= per_step[-1] < world * batch + world  # a remainder < W joins the step before
    if not balanced:
        assert np.all(sizes[:-1] == batch)
        assert sizes[-1].max() - sizes[-1].min() <= 1


def test_both_samplers_take_the_same_samples_in_each_step(slab_sizes):
    atoms, edges = _resample(slab_sizes, 100)
    fixed = plan_epoch(atoms, edges, 4, 5, seed=2, epoch=3, balanced=False)
    balanced = plan_epoch(atoms, edges, 4, 5, seed=2, epoch=3, balanced=True)
    # They differ only in how a step's samples are split across ranks.
    for f, b in zip(fixed, balanced):
        assert np.array_equal(np.sort(np.concatenate(f)), np.sort(np.concatenate(b)))


def test_reproducible_per_seed_and_epoch_and_different_across_epochs(slab_sizes):
    atoms, edges = slab_sizes

    def order(seed: int, epoch: int, balanced: bool) -> np.ndarray:
        return np.concatenate([np.concatenate(step) for step in plan_epoch(atoms, edges, 4, 8, seed, epoch, balanced)])

    for balanced in (True, False):
        assert np.array_equal(order(5, 2, balanced), order(5, 2, balanced))
        assert not np.array_equal(order(5, 2, balanced), order(5, 3, balanced))
        assert not np.array_equal(order(5, 2, balanced), order(6, 2, balanced))


@pytest.mark.parametrize("world, batch", [(2, 8), (4, 8), (8, 4), (8, 16)])
def test_balanced_beats_fixed_on_slab_sizes(slab_sizes, world, batch):
    atoms, edges = slab_sizes
    lif = {}
    for balanced in (True, False):
        plans = [plan_epoch(atoms, edges, world, batch, seed=0, epoch=e, balanced=balanced) for e in range(5)]
        lif[balanced] = np.mean([load_imbalance(p, edges) for p in plans])
        if balanced:
            for step in (s for p in plans for s in p):
                loads = [cost(atoms, edges)[b].sum() for b in step]
                largest = cost(atoms, edges)[np.concatenate(step)].max()
                assert max(loads) - min(loads) <= largest  # the greedy (LPT) bound
    print(f"W={world} B={batch}: LIF fixed {lif[False]:.3f}, balanced {lif[True]:.3f}")
    assert lif[True] < lif[False]


def test_load_imbalance_and_cost_by_hand():
    assert load_imbalance([[np.array([0]), np.array([1, 2])]], np.array([1.0, 1.0, 2.0])) == pytest.approx(1.5)
    assert load_imbalance([[np.array([0, 1])], [np.array([2])]], np.array([1.0, 5.0, 2.0])) == 1.0
    assert cost(np.array([10]), np.array([200])).tolist() == [200 + ATOM_COST * 10]


def test_single_rank_takes_whole_batches(slab_sizes):
    atoms, edges = _resample(slab_sizes, 50)
    plan = plan_epoch(atoms, edges, 1, 16, seed=0, epoch=0)
    assert [len(step[0]) for step in plan] == [16, 16, 16, 2]
    assert load_imbalance(plan, edges) == 1.0


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="world_size and batch_size"):
        plan_epoch(np.ones(4), np.ones(4), 0, 1, 0, 0)
    with pytest.raises(ValueError, match="equal-length"):
        plan_epoch(np.ones(4), np.ones(3), 2, 1, 0, 0)
    assert plan_epoch(np.zeros(0), np.zeros(0), 4, 2, 0, 0) == []
