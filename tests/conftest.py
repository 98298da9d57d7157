"""Shared fixtures: the real datasets in ../shared/data and a scratch directory per test."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_file(relative: str) -> Path:
    """A file of ../shared/data; the test is skipped, with the reason printed, when it is absent."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"real dataset {path} is not present on this machine")
    return path


@pytest.fixture
def ethanol_file() -> Path:
    return shared_file("molecules/ethanol_train.xyz.xz")


@pytest.fixture
def oc20_file() -> Path:
    return shared_file("surfaces/oc20_debug_sub5.extxyz.xz")


@pytest.fixture
def silicon_file() -> Path:
    return shared_file("crystals/mlearn_Si_training.extxyz.xz")
