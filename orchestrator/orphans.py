"""Launchers that outlived the manager that started them (it was killed): find and stop them.

A resumed manager runs such a trial again from its checkpoint, so the old
launcher must be gone first, or two trainers would write one trial directory.
An orphan is stopped like any trial (TrialHandle.kill: SIGTERM to the ranks,
then force); only its liveness comes from its pid instead of a Parsl future.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from orchestrator.allocation import Slice
from orchestrator.launch import PID_FILE, RECORD_FILE, Launcher, TrialHandle

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


class OrphanHandle(TrialHandle):
    def __init__(self, pid: int, trial_dir: Path, launcher: Launcher, record: dict):
        nodes = tuple(record.get("nodes", ()))
        super().__init__(None, trial_dir, Slice(record.get("slice", -1), nodes), launcher.site,
                         launcher.env, record)
        self._pid = pid

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
        return self.exit_code()

    def exit_code(self) -> int | None:
        return None if not self.done() else -1  # not our child: its status is not ours to read


def stop_orphan(trial_dir: Path, launcher: Launcher, grace_seconds: float) -> bool:
    """Stop the launcher an earlier manager left running for `trial_dir`; True if there was one."""
    trial_dir = Path(trial_dir).resolve()
    try:
        pid = int((trial_dir / PID_FILE).read_text())
        record = json.loads((trial_dir / RECORD_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return False
    if not _alive(pid) or not _is_launcher_of(pid, trial_dir):
        return False
    log.warning("trial %s: its launcher (pid %d) outlived the previous manager; stopping it", trial_dir, pid)
    OrphanHandle(pid, trial_dir, launcher, record).kill(grace_seconds)
    return True
