"""The files a launched trial leaves in its directory, and the one rule for its exit status.

    launcher.pid   the launcher's pid (written before it execs srun/mpiexec; stopping needs it)
    launcher.out   stdout of srun/mpiexec, which includes every rank's stdout
    launcher.err   stderr likewise; node_faults reads srun's own lines from it
    launch.json    argv, slice, nodes, and once it ended its exit status and whether we stopped it
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PID_FILE = "launcher.pid"
OUT_FILE = "launcher.out"
ERR_FILE = "launcher.err"
RECORD_FILE = "launch.json"


def step_name(trial_dir: str | Path) -> str:
    """The Slurm job/step name of a trial: trial-<directory name>."""
    name = Path(trial_dir).name
    return name if name.startswith("trial") else f"trial-{name}"


def exit_status(returncode: int) -> int:
    """A Popen return code as a shell reports it: death by signal N (-N) becomes 128+N.

    Ranks killed by signal N: srun exits 128+N (143 for SIGTERM), hydra's
    mpiexec exits N; a launcher itself killed by signal N gives 128+N.
    """
    return 128 - returncode if returncode < 0 else returncode


def read_pid(trial_dir: Path) -> int | None:
    """The launcher's pid, once its shell has written it."""
    try:
        return int((Path(trial_dir) / PID_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None  # not written yet, or being written


def read_record(trial_dir: Path) -> dict[str, Any] | None:
    """launch.json, or None for a trial that was never launched."""
    try:
        return json.loads((Path(trial_dir) / RECORD_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
