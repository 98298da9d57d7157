"""Shared fixtures: the test data (generated, and real where ../shared/data exists), and a real local Slurm.

The data fixtures live in datasets.py and are registered here, once for the
whole session.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from datasets import (crystals_bp, crystals_file, crystals_test_file, molecules_bp,  # noqa: F401  (fixtures)
                      molecules_file, molecules_test_file, report_header, session_data, slabs_file, variant)

REPO = Path(__file__).resolve().parent.parent


def pytest_report_header(config) -> str:
    return report_header()


def pytest_terminal_summary(terminalreporter) -> None:
    """Repeat the header's line where the real-data variants are missing: -q hides the header."""
    if "not collected" in report_header() and terminalreporter.verbosity < 0:
        terminalreporter.write_line(report_header())


# -- a real Slurm on this machine (scripts/slurm-cluster.sh) -------------------

SLURM_SCRIPT = REPO / "scripts" / "slurm-cluster.sh"
SLURM_DIR = Path("/tmp/gfm-slurm")
SLURM_NODES = 4


@dataclasses.dataclass(frozen=True)
class SlurmCluster:
    """The running test cluster: its node names and the environment that reaches it."""

    nodes: list[str]
    env: dict[str, str]  # this process's environment with SLURM_CONF set and no outer SLURM_* job variables

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=60, check=check)

    def node_state(self, node: str) -> str:
        return self.run("sinfo", "--noheader", "--Node", f"--nodes={node}", "--format=%T").stdout.strip()

    def wait_idle(self, node: str, timeout: float = 60.0) -> None:
        """Poll until `node` is idle and responding (after a test changed its state)."""
        deadline = time.monotonic() + timeout
        while self.node_state(node) != "idle":
            if time.monotonic() > deadline:
                raise AssertionError(f"{node} is {self.node_state(node)!r}, not idle, after {timeout} s")
            time.sleep(0.1)


@pytest.fixture(scope="session")
def slurm_cluster():
    """Start the local Slurm (installing it if missing and root), yield it, stop what was started.

    A cluster that was already running (another session, or started by hand) is
    used and left running. Skips only where Slurm truly cannot run: not installed
    and not root, or not root to start the daemons.
    """
    root = os.geteuid() == 0
    if shutil.which("slurmctld") is None or shutil.which("srun") is None:
        if not root:
            pytest.skip("Slurm is not installed and installing it needs root (scripts/slurm-cluster.sh install)")
        done = subprocess.run([str(SLURM_SCRIPT), "install"], capture_output=True, text=True)
        assert done.returncode == 0, f"installing Slurm failed:\n{done.stdout}{done.stderr}"
    if not root:
        pytest.skip("starting the Slurm daemons (slurmctld, slurmd) needs root")
    where = ["--dir", str(SLURM_DIR)]
    was_running = subprocess.run([str(SLURM_SCRIPT), "status", *where], capture_output=True).returncode == 0
    done = subprocess.run([str(SLURM_SCRIPT), "start", "--nodes", str(SLURM_NODES), *where],
                          capture_output=True, text=True)
    assert done.returncode == 0, f"starting the local Slurm failed:\n{done.stdout}{done.stderr}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["SLURM_CONF"] = str(SLURM_DIR / "slurm.conf")
    try:
        yield SlurmCluster(nodes=[f"n{i}" for i in range(1, SLURM_NODES + 1)], env=env)
    finally:
        if not was_running:
            subprocess.run([str(SLURM_SCRIPT), "stop", *where], capture_output=True, text=True)


@pytest.fixture
def readonly_dir(tmp_path):
    """A directory nothing can be created in, root included (tests here often run as root, where a
    mode of 0o555 stops nobody): the immutable attribute for root, the mode bits otherwise."""
    path = tmp_path / "readonly"
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        yield path
        path.chmod(0o755)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)]).returncode != 0:
        pytest.skip("as root, a read-only directory needs chattr +i (e2fsprogs) on a file system that has it")
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)
