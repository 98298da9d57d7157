"""Deterministic train/validation/test assignment of the structures of one dataset."""
from __future__ import annotations

import numpy as np

from trainer.contract.errors import UserError

# Command-line names of the splits -> group names in the dataset file.
SPLIT_NAMES = {"train": "trainset", "val": "valset", "test": "testset"}


class SplitError(UserError):
    """Fractions that do not fit, or a split that would be empty."""


def check_fractions(val: float, test: float) -> None:
    for flag, value in (("--val", val), ("--test", test)):
        if not 0.0 <= value < 1.0:
            raise SplitError(f"{flag} {value}: a fraction must be in [0, 1)")
    if val + test >= 1.0:
        raise SplitError(f"--val {val} + --test {test} = {val + test:g} leaves no training structures "
                         "(the sum must be below 1)")


def fraction_sizes(n: int, val: float, test: float) -> tuple[int, int, int]:
    """(train, val, test) sizes: rounded, but a requested (non-zero) split gets at least one structure."""
    sizes = []
    for fraction in (val, test):
        size = int(round(fraction * n))
        sizes.append(max(size, 1) if fraction > 0 else 0)
    n_val, n_test = sizes
    return n - n_val - n_test, n_val, n_test


def random_split(n: int, val: float, test: float, seed: int, where: str) -> dict[str, np.ndarray]:
    """Indices 0..n-1 split by fractions with a seeded permutation; each split's indices sorted.

    Sorted order keeps a split's samples in input order on disk (traceable and
    reproducible); shuffling for training happens in the loader every epoch.
    """
    check_fractions(val, test)
    n_train, n_val, n_test = fraction_sizes(n, val, test)
    if n_train < 1:
        raise SplitError(f"{where}: {n} structures after cleaning are too few for --val {val} --test {test} "
                         f"(would leave {n_train} for training)")
    order = np.random.default_rng(seed).permutation(n)
    parts = {"testset": order[:n_test], "valset": order[n_test:n_test + n_val], "trainset": order[n_test + n_val:]}
    return {split: np.sort(indices) for split, indices in parts.items()}
