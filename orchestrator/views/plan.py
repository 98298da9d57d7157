"""`gfm-hpo launch --dry-run`: the slice plan and the exact launch commands, without running anything.

Works on a laptop for any site: outside an allocation the node list is the
first N names of the site's node pattern (e.g. frontier[00001-08192]).
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from orchestrator import hostlist
from orchestrator.allocation import Allocation
from orchestrator.launch.launchers import trial_command
from orchestrator.sites import SiteConfig


def slice_plan(site: SiteConfig, allocation: Allocation, trial_root: Path) -> dict[str, Any]:
    """The slices, spare nodes and the command of each slice's first trial (trial ids 1, 2, ...)."""
    # On a Slurm site the manager runs inside its batch job, so the commands are those of a step.
    inside = site.scheduler == "slurm"
    commands = [shlex.join(trial_command(site, s, trial_root / f"{i + 1:05d}", inside_allocation=inside))
                for i, s in enumerate(allocation.slices)]
    return {
        "site": site.name,
        "nodes": sum(len(s.nodes) for s in allocation.slices) + len(allocation.spares),
        "nodes_per_trial": allocation.nodes_per_trial,
        "ranks_per_trial": allocation.nodes_per_trial * site.ranks_per_node,
        "slices": [{"index": s.index, "nodes": list(s.nodes), "hostlist": s.hostlist} for s in allocation.slices],
        "spare": allocation.spares,
        "commands": commands,
    }


def format_plan(plan: dict[str, Any], shown: int = 3) -> str:
    spare = plan["spare"]
    lines = [f"site {plan['site']}: {plan['nodes']} nodes -> {len(plan['slices'])} slices of "
             f"{plan['nodes_per_trial']} nodes ({plan['ranks_per_trial']} ranks per trial), "
             f"{len(spare)} spare" + (f" ({hostlist.compress(spare)})" if spare else "")]
    for item in plan["slices"][:shown]:
        lines.append(f"  slice {item['index']}: {item['hostlist']}")
    if len(plan["slices"]) > shown:
        lines.append(f"  ... {len(plan['slices']) - shown} more slices")
    lines.append("first trials:")
    lines += [f"  {command}" for command in plan["commands"][:shown]]
    if len(plan["commands"]) > shown:
        lines.append(f"  ... {len(plan['commands']) - shown} more (one per slice; --json lists all)")
    return "\n".join(lines)
