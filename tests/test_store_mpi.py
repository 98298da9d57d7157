"""DistributedStore and EpochLoader on two real MPI ranks (mpiexec -n 2), on molecules and slabs.

The checks themselves live in tests/mpi_store_check.py (run under mpiexec);
this test builds the dataset files and judges the job's exit status and output.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mpi_store_check import write_dataset_of

CHECK = Path(__file__).with_name("mpi_store_check.py")
pytestmark = pytest.mark.mpi


def _mpiexec() -> str:
    beside_python = Path(sys.executable).with_name("mpiexec")
    found = str(beside_python) if beside_python.exists() else shutil.which("mpiexec")
    if found is None:
        pytest.skip("mpiexec is not installed (pip install mpich, or a system MPI)")
    return found


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory, session_data, variant) -> list[Path]:
    """Molecules (3-11 atoms; real: ethanol, 9) then slabs (13-52; OC20: 33-185): 50 + 30 training
    samples, so the byte-balanced share boundary falls inside the second file and rank 0 reads from both."""
    directory = tmp_path_factory.mktemp("mpi_store")
    molecules = session_data.frames(variant, "molecules", 60)
    slabs = session_data.frames(variant, "slabs", 40)
    return [write_dataset_of(directory / "molecules.bp", molecules, "molecules", num_val=10),
            write_dataset_of(directory / "slabs.bp", slabs, "slabs", num_val=10)]


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
