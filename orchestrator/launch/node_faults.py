"""Was it the node's fault? Telling a broken node from a failing trainer after a trial ended.

The trainer's exit codes are its own (2: bad trial.yaml, 1: a crash, ...) and
say nothing about nodes. What does is srun's own stderr: the lines it prints
when it cannot create the step, cannot start tasks on a node, or loses a node.
Only lines written by srun or slurmstepd are read, never the ranks' output,
which srun forwards into the same file.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from orchestrator import hostlist
from orchestrator.launch.records import ERR_FILE, read_record
from orchestrator.launch.slurm import unhealthy_nodes

# (pattern, what it means). A `nodes` group names the culprit; without one the slice's
# nodes are looked up in Slurm and the unhealthy ones are blamed.
NODE_FAULTS: list[tuple[re.Pattern[str], str]] = [
    # A node stopped answering while the step ran; slurmctld names it.
    (re.compile(r"^srun: error: Node failure on (?P<nodes>\S+)"), "node failure"),
    # slurmd on that node could not start the tasks (e.g. "Communication connection failure").
    (re.compile(r"^srun: error: Task launch for \S+ failed on node (?P<nodes>[^:\s]+): (?P<why>.+)"),
     "task launch failed"),
    # Inside an allocation: a node of the slice is DOWN or DRAINED, or was dropped from the job (--no-kill).
    (re.compile(r"^srun: error: Unable to create step for job \d+: (?P<why>Requested node configuration is not available)"),
     "step refused"),
    # Outside an allocation: the trial's own job asked for a node that is down or drained (printed
    # while it waits, and after "Unable to allocate resources: " when --immediate gives up).
    (re.compile(r"^srun: .*?(?P<why>Required node not available \(down, drained or reserved\))"),
     "node not available"),
    # Nodes that never became ready (boot or power-up failed).
    (re.compile(r"^srun: error: Nodes (?P<nodes>\S+) are still not ready"), "node not ready"),
    # Slurm ended the job because one of its nodes failed (the node in the line is the reporter).
    (re.compile(r"^slurmstepd\S*: error: \*\*\* \S+ \S+ ON \S+ CANCELLED AT \S+ DUE TO NODE FAILURE"),
     "job cancelled after a node failure"),
]

@dataclass(frozen=True)
class NodeFault:
    """A trial ended by its nodes: `nodes` to blame (empty when Slurm could not tell) and why."""

    nodes: tuple[str, ...]
    reason: str

    def __str__(self) -> str:
        return self.reason


def node_failure(trial_dir: str | Path, exit_code: int | None,
                 env: Mapping[str, str] | None = None) -> NodeFault | None:
    """The node fault that ended this trial's launcher (exit status `exit_code`), or None when it
    was not the nodes. `env` is the environment for asking Slurm about the slice's nodes
    (SLURM_CONF). A trial that the manager killed, or that exited 0, is never a node fault.
    """
    trial_dir = Path(trial_dir)
    record = read_record(trial_dir)
    if record is None:
        return None  # never launched
    if record.get("launcher") != "srun" or exit_code in (None, 0) or record.get("killed"):
        return None
    try:
        lines = (trial_dir / ERR_FILE).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return None
    slice_nodes = tuple(record.get("nodes", ()))
    for line in lines:
        for pattern, meaning in NODE_FAULTS:
            match = pattern.search(line)
            if match is None:
                continue
            named = match.groupdict().get("nodes")
            nodes = tuple(hostlist.expand(named)) if named else unhealthy_nodes(slice_nodes, env)
            where = hostlist.compress(nodes) if nodes else f"one of {hostlist.compress(slice_nodes)}"
            return NodeFault(nodes, f"{meaning} on {where}: {line.strip()}")
    return None

