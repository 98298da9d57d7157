"""Real datasets for tests, converted once per session with the real `gfm-data convert`."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import ase.io
import pytest

from conftest import shared_file
from trainer.data.structures import read_structures

BIN = Path(sys.executable).parent


def convert(frames_file: Path, output: Path, name: str, count: int, val: float = 0.1,
            test: float = 0.1) -> Path:
    """Convert the first `count` frames of a real dataset (through the console script)."""
    subset = output.with_suffix(".extxyz")
    ase.io.write(subset, read_structures(frames_file)[:count])
    subprocess.run([BIN / "gfm-data", "convert", "--name", name, "--output", str(output),
                    "--val", str(val), "--test", str(test), "--seed", "0", "--radius", "5.0",
                    "--max-neighbours", "50", str(subset)], check=True, capture_output=True)
    return output


@pytest.fixture(scope="session")
def ethanol_bp(tmp_path_factory) -> Path:
    """300 ethanol frames: 240 train / 30 val / 30 test."""
    source = shared_file("molecules/ethanol_train.xyz.xz")
    return convert(source, tmp_path_factory.mktemp("data") / "ethanol.bp", "ethanol", 300)


@pytest.fixture(scope="session")
def silicon_bp(tmp_path_factory) -> Path:
    """60 periodic silicon cells of the mlearn set."""
    source = shared_file("crystals/mlearn_Si_training.extxyz.xz")
    return convert(source, tmp_path_factory.mktemp("data") / "silicon.bp", "mlearn_Si", 60, 0.2, 0.1)
