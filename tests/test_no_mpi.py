"""Without an MPI library (`pip install -e .` without the mpich extra): one rank trains, several
ranks fail with one line that says how to get one.

mpi4py's wheels carry no MPI: `import mpi4py.MPI` looks for libmpi.so at run
time. MPI4PY_LIBMPI pointing at an empty directory makes that search fail
exactly as on a machine without one ("libmpi.so: cannot open shared object file").
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from test_train import MPIEXEC, gfm_train, make_trial, result_of
from trainer.contract.result import EXIT_BAD_CONFIG


@pytest.fixture
def no_mpi(tmp_path) -> dict[str, str]:
    """This environment, with an mpi4py that finds no MPI library."""
    empty = tmp_path / "no-libmpi"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "SLURM_"))}
    env["MPI4PY_LIBMPI"] = str(empty)
    probe = subprocess.run([sys.executable, "-c", "from mpi4py import MPI"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "cannot open shared object file" in probe.stderr, probe.stderr
    return env


def test_training_and_prediction_modules_do_not_load_mpi(no_mpi):
    code = ("import sys, trainer.train, trainer.ensemble.predict, trainer.calculator, trainer.ensemble.evaluate, "
            "trainer.data.cli\n"
            "assert 'mpi4py.MPI' not in sys.modules, 'mpi4py.MPI imported'")
    subprocess.run([sys.executable, "-c", code], env=no_mpi, check=True, capture_output=True)


def test_one_rank_trains_without_an_mpi_library(tmp_path, molecules_bp, no_mpi):
    trial = make_trial(tmp_path / "t", molecules_bp, training={"epochs": 1})
    run = gfm_train(trial, env=no_mpi)
    assert run.returncode == 0, run.stderr
    assert result_of(trial)["status"] == "completed" and "Traceback" not in run.stderr


def assert_one_line_mpi_error(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == EXIT_BAD_CONFIG, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert "cannot load an MPI library" in lines[0] and "pip install mpich" in lines[0]
    assert "libmpi.so" in lines[0] and "cannot open shared object file" in lines[0]
    return lines[0]


def test_several_ranks_without_an_mpi_library_fail_in_one_line(tmp_path, molecules_bp, no_mpi):
    trial = make_trial(tmp_path / "t", molecules_bp, training={"epochs": 1})
    # The environment mpiexec gives its ranks, without mpiexec: rank 0 tells, rank 1 stays quiet.
    line = assert_one_line_mpi_error(gfm_train(trial, env={**no_mpi, "PMI_RANK": "0", "PMI_SIZE": "2"}))
    assert "mpiexec started 2 ranks" in line
    result = result_of(trial)
    assert result["status"] == "failed" and "pip install mpich" in result["error"]
    (trial / "result.json").unlink()
    quiet = gfm_train(trial, env={**no_mpi, "PMI_RANK": "1", "PMI_SIZE": "2"})
    assert quiet.returncode == EXIT_BAD_CONFIG and quiet.stderr == ""
    assert not (trial / "result.json").exists()
    if MPIEXEC is not None:  # and the real thing: two ranks under mpiexec, one line in all
        assert_one_line_mpi_error(gfm_train(trial, ranks=2, env=no_mpi))
