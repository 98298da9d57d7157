"""Bagging: bootstrap resamples of the training split, deterministic per seed, different per member.

The two-rank check (every rank draws the same resample, an epoch covers exactly
it) is in tests/mpi_store_check.py, run by tests/test_store_mpi.py.
"""
from __future__ import annotations

import subprocess

import numpy as np
import pytest
import torch

from datasets import BIN
from trainer.contract import typed
from trainer.contract.trialconfig import TrialConfig, load_trial, write_trial
from trainer.data.loader import EpochLoader
from trainer.data.sampler import bootstrap_sample, plan_epoch
from trainer.data.store import DistributedStore


def test_a_resample_is_a_function_of_its_seed():
    first, again, other = bootstrap_sample(500, 3), bootstrap_sample(500, 3), bootstrap_sample(500, 4)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert len(first) == 500 and first.min() >= 0 and first.max() < 500
    # With replacement: repeats, and about 1 - 1/e of the samples drawn at least once.
    assert len(np.unique(first)) < 500
    assert 0.58 < len(np.unique(first)) / 500 < 0.68
    # Not the epoch shuffle's stream: the resample does not follow the permutation of [seed, epoch].
    assert not np.array_equal(np.sort(np.random.default_rng([3, 0]).integers(0, 500, 500)), first)


@pytest.mark.parametrize("world, batch", [(1, 7), (4, 5)])
def test_an_epoch_covers_exactly_the_resample(world, batch):
    population = bootstrap_sample(101, 0)
    sizes = np.arange(1, 102)
    for epoch in range(3):
        plan = plan_epoch(sizes, 3 * sizes, world, batch, seed=0, epoch=epoch, population=population)
        assert all(len(step) == world for step in plan)
        everything = np.concatenate([np.concatenate(step) for step in plan])
        assert np.array_equal(np.sort(everything), population)
    with pytest.raises(ValueError, match="population indices"):
        plan_epoch(sizes, sizes, 1, 4, 0, 0, population=np.array([0, 101]))


def test_loader_bootstrap_on_real_data(molecules_bp):
    store = DistributedStore([molecules_bp], "trainset")
    plain = EpochLoader(store, 16, seed=0)
    bagged = [EpochLoader(store, 16, seed=s, bootstrap=True) for s in (0, 0, 1)]
    assert plain.population is None
    assert np.array_equal(bagged[0].population, bagged[1].population)
    assert not np.array_equal(bagged[0].population, bagged[2].population)
    # Batches hold the resample's structures, repeats included (identified by their energies).
    energies = store.local.energy
    expected = np.sort(energies[bagged[0].population])
    got = np.sort(np.concatenate([b.energy.double().numpy() for b, _, _ in bagged[0].epoch(0)]))
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert len(np.unique(energies)) == len(energies)
    assert len(plain) == len(bagged[0])


def _trial(root, data, seed: int, bootstrap: bool):
    write_trial(root, typed.build(TrialConfig, {
        "data": {"sources": [{"path": str(data)}], "bootstrap": bootstrap},
        "model": {"num_conv_layers": 1, "hidden_dim": 8, "fc_dim": 8},
        "training": {"epochs": 1, "batch_size": 16, "threads": 1, "seed": seed}}, "test"))
    return root


def test_gfm_train_with_bootstrap_records_it_in_best_pt(molecules_bp, tmp_path):
    trials = [_trial(tmp_path / name, molecules_bp, seed, True) for name, seed in (("a", 0), ("b", 1))]
    assert load_trial(trials[0]).data.bootstrap is True   # load_trial keeps the field (paths resolved)
    running = [subprocess.Popen([str(BIN / "gfm-train"), str(t)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for t in trials]
    for process in running:
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, out + err
    states = [torch.load(t / "best.pt", weights_only=True) for t in trials]
    for seed, state in enumerate(states):
        trained = state["training"]
        assert trained["seed"] == seed and trained["bootstrap"] is True and trained["train_samples"] == 240
        expected = len(np.unique(bootstrap_sample(240, seed)))
        assert trained["distinct_train_samples"] == expected < 240
        assert trained["max_neighbours"] == 50
    # Different seeds and data: different weights.
    assert any(not torch.equal(states[0]["model"][k], states[1]["model"][k]) for k in states[0]["model"])
