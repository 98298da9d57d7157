"""DistributedStore and EpochLoader on two real MPI ranks (mpiexec -n 2), on real structures.

The checks themselves live in tests/mpi_store_check.py (run under mpiexec);
this test builds the dataset files and judges the job's exit status and output.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import shared_file
from mpi_store_check import read_structures, write_real_dataset

CHECK = Path(__file__).with_name("mpi_store_check.py")
pytestmark = pytest.mark.mpi


def _mpiexec() -> str:
    beside_python = Path(sys.executable).with_name("mpiexec")
    found = str(beside_python) if beside_python.exists() else shutil.which("mpiexec")
    if found is None:
        pytest.skip("mpiexec is not installed (pip install mpich, or a system MPI)")
    return found


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory) -> list[Path]:
    """Ethanol (9 atoms) then OC20 slabs (33-185 atoms): 50 + 30 training samples, so the
    byte-balanced share boundary falls inside the first file and rank 1 reads from both."""
    directory = tmp_path_factory.mktemp("mpi_store")
    ethanol = read_structures(shared_file("molecules/ethanol_train.xyz.xz"), 60)
    slabs = read_structures(shared_file("surfaces/oc20_debug_sub5.extxyz.xz"), 40)
    return [write_real_dataset(directory / "ethanol.bp", ethanol, "ethanol", num_val=10),
            write_real_dataset(directory / "oc20.bp", slabs, "oc20", num_val=10)]


def _run_check(*args: str) -> str:
    command = [_mpiexec(), "-n", "2", sys.executable, str(CHECK), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.parametrize("sampler", ["balanced", "fixed"])
def test_two_ranks_share_fetch_and_shuffle(two_sources, sampler):
    out = _run_check("--sampler", sampler, "--batch-size", "4", *map(str, two_sources))
    assert out.startswith(f"OK world=2 samples=80 steps=10 sampler={sampler}"), out


def test_a_bad_source_fails_on_every_rank(two_sources, tmp_path):
    out = _run_check("--expect-bad-source", str(two_sources[0]), str(tmp_path / "missing.bp"))
    assert out.startswith("OK world=2 every rank: ") and "missing.bp: no such dataset" in out, out
