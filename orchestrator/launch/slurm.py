"""Slurm control: every squeue, scancel, sinfo and sbatch call of the manager, in one place.

Each call takes the environment to run in (tests point SLURM_CONF at the local
cluster) and fails soft where the caller can carry on (a warning in the log
and None), except sbatch, whose refusal the user must see.
"""
from __future__ import annotations

import logging
import os
import shlex
import subprocess
from pathlib import Path
from typing import Mapping

from trainer.contract.errors import UserError, one_line

from orchestrator import hostlist

log = logging.getLogger(__name__)

# sinfo %T states of a node that can run work; anything else, or a trailing "*" (not responding), is a fault.
_HEALTHY = {"idle", "allocated", "mixed", "completing", "reserved", "planned"}


def inside_allocation(env: Mapping[str, str] | None = None) -> bool:
    """True inside a Slurm job (the manager is its batch script). It tells where we run; it switches
    no behaviour on by itself: the site's scheduler decides whether that matters."""
    return "SLURM_JOB_ID" in (os.environ if env is None else env)


def run(*args: str, env: Mapping[str, str] | None = None, quiet: bool = False) -> str | None:
    """Run a Slurm command; its stdout, or None (logged) when it failed."""
    try:
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        log.warning("%s failed: %s", args[0], err)
        return None
    if done.returncode != 0:
        log.log(logging.DEBUG if quiet else logging.WARNING, "%s exited %d: %s",
                shlex.join(args), done.returncode, done.stderr.strip())
        return None
    return done.stdout


def find_step(name: str, nodes: tuple[str, ...], env: Mapping[str, str], job_id: str | None = None) -> str | None:
    """The running step (JOB.STEP) called `name` on exactly `nodes`, if there is one."""
    args = ["squeue", "--steps", "--me", "--noheader", "--format=%i %j %N"]
    if job_id:
        args.append(f"--jobs={job_id}")
    for line in (run(*args, env=env) or "").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == name and set(hostlist.expand(parts[2])) == set(nodes):
            return parts[0]
    return None


def signal_step(step: str, signal_name: str, env: Mapping[str, str]) -> None:
    """Send a signal to every task of a step.

    Inside an allocation, Slurm 22.05's scancel delivers the signal and still exits 225
    ("Invalid job id specified"): its status says nothing, so the caller's grace period decides.
    """
    run("scancel", f"--signal={signal_name}", step, env=env, quiet=True)


def unhealthy_nodes(nodes: tuple[str, ...], env: Mapping[str, str] | None) -> tuple[str, ...]:
    """The nodes among `nodes` that Slurm reports down, drained, failing or not responding."""
    if not nodes:
        return ()
    out = run("sinfo", "--noheader", "--Node", f"--nodes={hostlist.compress(nodes)}", "--format=%N %T", env=env)
    bad = set()
    for line in (out or "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            state = parts[1].lower()
            if "*" in state or state.rstrip("~#!%$@^-") not in _HEALTHY:
                bad.add(parts[0])
    return tuple(n for n in nodes if n in bad)


def sbatch(script: Path, env: Mapping[str, str] | None = None, where: str = "sbatch") -> str:
    """Submit a batch script; its job id. `where` names the site file in the error when sbatch is missing."""
    try:
        done = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, env=env,
                              timeout=120)
    except FileNotFoundError:
        raise UserError(f"{where}: this site submits with sbatch, which is not on PATH") from None
    if done.returncode != 0:
        raise UserError(f"{script}: sbatch refused the job: {one_line(done.stderr) or f'exit status {done.returncode}'}")
    return done.stdout.strip().split(";")[0]
