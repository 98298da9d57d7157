"""Launchers that outlived the manager that started them (it was killed): find and stop them.

A resumed manager runs such a trial again from its checkpoint, so the old
launcher must be gone first, or two trainers would write one trial directory.
An orphan is stopped by its launcher's own stop strategy like any trial; only
its liveness comes from /proc instead of a Parsl future (`OrphanProcess`).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Mapping

from orchestrator.allocation import Slice
from orchestrator.launch.launchers import Launched, Launcher
from orchestrator.launch.records import read_pid, read_record

log = logging.getLogger(__name__)


def _state(pid: int) -> str | None:
    """The process state letter (R, S, Z, ...), or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return None


def _alive(pid: int) -> bool:
    # A zombie has exited; where pid 1 does not reap, orphans linger as zombies.
    return _state(pid) not in (None, "Z", "X")


def _is_launcher_of(pid: int, trial_dir: Path) -> bool:
    """Guard against pid reuse: the process must name this trial directory on its command line."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return str(trial_dir).encode() in cmdline.read()
    except (FileNotFoundError, ProcessLookupError):
        return False


class OrphanProcess:
    """A launcher process that is not our child: alive while /proc says so; its status is not ours to read."""

    def __init__(self, pid: int, launched: Launched):
        self._pid = pid
        self.launched = launched

    def pid(self) -> int | None:
        return self._pid

    def done(self) -> bool:
        return not _alive(self._pid)

    def wait(self, timeout: float | None = None) -> int | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.done():
            if deadline is not None and time.monotonic() > deadline:
                return None
            time.sleep(0.05)
        return -1


def stop_orphan(trial_dir: Path, launcher: Launcher, env: Mapping[str, str], grace_seconds: float) -> bool:
    """Stop the launcher an earlier manager left running for `trial_dir`; True if there was one."""
    trial_dir = Path(trial_dir).resolve()
    pid, record = read_pid(trial_dir), read_record(trial_dir)
    if pid is None or record is None or not _alive(pid) or not _is_launcher_of(pid, trial_dir):
        return False
    log.warning("trial %s: its launcher (pid %d) outlived the previous manager; stopping it", trial_dir, pid)
    launched = Launched(trial_dir, Slice(record.get("slice", -1), tuple(record.get("nodes", ()))), env,
                        bool(record.get("inside_allocation")))
    launcher.stop(OrphanProcess(pid, launched), grace_seconds)
    return True
