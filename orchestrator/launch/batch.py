"""The manager as a batch job: its sbatch script, and its submission outside an allocation."""
from __future__ import annotations

import dataclasses
import shlex
import sys
from pathlib import Path

from trainer.contract.atomicio import atomic_write_text
from trainer.contract.typed import ConfigError

from orchestrator.launch import slurm
from orchestrator.sites import REQUIRABLE, SiteConfig


def batch_script(site: SiteConfig, nodes: int, command: list[str], job_name: str, output: str) -> str:
    """The sbatch script that runs `command` (the manager) as the job's main process.

    The manager is the batch script itself, not an srun step, so the trial
    steps it starts get the whole allocation and need no --overlap. --exclusive
    gives the job whole nodes (otherwise Slurm grants one core per node and the
    steps are refused), and --no-kill keeps the job alive when a node fails so
    the manager can exclude it and carry on.
    """
    for key in site.requires:
        site.require(key)
    if site.scheduler != "slurm":
        raise ConfigError(f"{site.origin}: scheduler: {site.name} has no batch scheduler; run the manager directly")
    options = [f"--job-name={job_name}", f"--nodes={nodes}", f"--time={site.walltime}",
               f"--output={output}", "--exclusive", "--no-kill"]
    options += [f"--{key}={getattr(site, key)}" for key in REQUIRABLE if getattr(site, key)]
    lines = ["#!/bin/bash"] + [f"#SBATCH {opt}" for opt in options + site.batch_directives]
    lines += ["set -eo pipefail"] + [f"module load {shlex.quote(m)}" for m in site.modules] + site.setup
    lines.append("exec " + shlex.join(command))
    return "\n".join(lines) + "\n"


def submit_manager(site: SiteConfig, run_dir: Path, nodes: int, walltime: str | None,
                   command: list[str] | None = None, phase: str = "hpo",
                   env: dict[str, str] | None = None) -> str:
    """Write RUN_DIR/<phase>.sbatch running `command` (default `gfm-hpo run RUN_DIR`); sbatch it; the job id."""
    if walltime:
        site = dataclasses.replace(site, walltime=walltime)
    command = command or [sys.executable, "-m", "orchestrator", "run", str(run_dir)]
    script = batch_script(site, nodes, command, job_name=f"gfm-{phase}-{run_dir.name}",
                          output=str(run_dir / f"{phase}-%j.out"))
    path = run_dir / f"{phase}.sbatch"
    atomic_write_text(path, script)
    return slurm.sbatch(path, env, where=site.origin)
