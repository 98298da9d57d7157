"""What happened to a trial, decided from its files and its launcher's exit status (contract 3).

Every way a trial can end maps to one outcome:
  completed      result.json says so, with a finite objective
  failed         the trainer said so (exception, NaN, bad config), the manager killed it
                 at its wall time, or the launcher died without a word from the trainer
  interrupted    stopped on purpose and resumable (manager shutdown, allocation ending)
  discarded      stopped on purpose at a rung (ASHA, search/fidelity.py) unless it completed first
  node fault     the nodes, not the trial, failed: exclude them, run the trial again
The trainer writes result.json; nothing here reads log lines (contract 2),
except node_failure's reading of srun's own complaints about nodes.
"""
from __future__ import annotations

import json
import math
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from trainer.contract.trialconfig import RESULT_FILE

from orchestrator.launch.node_faults import NodeFault, node_failure

# Why the manager itself stopped a trial.
KILLED_AT_WALLTIME = "walltime"
KILLED_AT_SHUTDOWN = "shutdown"
KILLED_AT_RUNG = "rung"


@dataclass(frozen=True)
class Outcome:
    status: str                            # completed | failed | interrupted | discarded
    objective: float | None = None
    error: str | None = None
    result: dict[str, Any] | None = None   # the trial's result.json, when it wrote one this attempt
    node_fault: NodeFault | None = None    # set: run the trial again elsewhere


def read_result(trial_dir: Path, since: float = 0.0) -> dict[str, Any] | None:
    """The trial's result.json if it was written at or after `since` (an earlier attempt's is stale)."""
    path = Path(trial_dir) / RESULT_FILE
    try:
        if path.stat().st_mtime < since:
            return None
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def describe_exit(code: int | None) -> str:
    if code is None:
        return "the launcher did not report an exit status"
    if code > 128 and code - 128 in signal.Signals._value2member_map_:
        return f"the launcher exited with status {code} ({signal.Signals(code - 128).name})"
    return f"the launcher exited with status {code}"


def classify(trial_dir: Path, exit_code: int | None, launched_at: float, killed_for: str | None = None,
             walltime: float | None = None, env: Mapping[str, str] | None = None) -> Outcome:
    result = read_result(trial_dir, since=launched_at)
    status = result.get("status") if result else None
    objective = result.get("objective") if result else None
    if status == "completed":
        if objective is not None and math.isfinite(objective):
            return Outcome("completed", objective, None, result)
        return Outcome("failed", None, "completed without a finite validation loss", result)
    if killed_for == KILLED_AT_WALLTIME:
        return Outcome("failed", None, f"exceeded the trial wall time of {walltime:g} s", result)
    if killed_for == KILLED_AT_SHUTDOWN:
        return Outcome("interrupted", None, "the manager stopped", result)
    if killed_for == KILLED_AT_RUNG:
        # Decided before the stop: whatever the trainer said while stopping, the rung's verdict stands.
        return Outcome("discarded", None, None, result)
    if status == "failed":
        return Outcome("failed", None, result.get("error") or "the trainer reported a failure", result)
    if status == "interrupted":
        return Outcome("interrupted", None, result.get("error") or "interrupted", result)
    # No word from the trainer in this attempt: the launch or the nodes failed, or the step was killed.
    fault = node_failure(trial_dir, exit_code, env)
    if fault is not None:
        return Outcome("failed", None, f"node failure: {fault}", result, fault)
    words = describe_exit(exit_code)
    stderr = _last_line(Path(trial_dir) / "launcher.err")
    return Outcome("failed", None, f"{words} before the trainer reported a result"
                   + (f"; last error line: {stderr}" if stderr else ""), result)


def _last_line(path: Path) -> str | None:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except FileNotFoundError:
        return None
    lines = [line for line in lines if not line.startswith("--> ")]  # Parsl's own banner lines
    return lines[-1][:300] if lines else None
