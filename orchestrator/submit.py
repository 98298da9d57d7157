"""Submitting the manager as a batch job, for `gfm-hpo launch` outside an allocation on a Slurm site."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

from trainer.atomicio import atomic_write_text
from trainer.errors import UserError

from orchestrator.sites import SiteConfig, batch_script

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
    try:
        done = subprocess.run(["sbatch", "--parsable", str(path)], capture_output=True, text=True, env=env,
                              timeout=120)
    except FileNotFoundError:
        raise UserError(f"{site.source}: site {site.name} submits with sbatch, which is not on PATH") from None
    if done.returncode != 0:
        message = " ".join(done.stderr.split()) or f"exit status {done.returncode}"
        raise UserError(f"{path}: sbatch refused the job: {message}")
    return done.stdout.strip().split(";")[0]
