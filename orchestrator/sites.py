"""Sites: what a machine looks like to the manager (site_configs/<name>.yaml).

A site says how trials are started (srun inside Slurm, or mpiexec on a
workstation), how many ranks run on a node and what each rank gets, how big a
slice is by default, and what a batch job needs (account, partition, modules,
setup lines). Fields that only a batch submission needs (the account on
Frontier) are checked when the batch script is written (launch/batch.py), not
when the file is read, so a dry run works without them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import site_configs
from trainer.contract import packaged, typed
from trainer.contract.errors import UserError
from trainer.contract.typed import ConfigError, Invalid, bounded

from orchestrator import hostlist

PACKAGED = Path(site_configs.__file__).parent
_WALLTIME = re.compile(r"(\d+-)?\d{1,2}:\d{2}:\d{2}|\d+")
# Flags that trial_command() derives from the fields above; a site must not repeat them in launch_flags.
_DERIVED_FLAGS = ("--nodes", "-N", "--ntasks", "-n", "--ntasks-per-node", "--nodelist", "-w",
                  "--cpus-per-task", "-c", "--gpus-per-task", "--job-name", "-J", "--mpi",
                  "--exclusive", "--kill-on-bad-exit", "--immediate", "-I")
# Optional fields that a site can declare necessary for a batch submission.
REQUIRABLE = ("account", "partition", "qos")


@dataclass(frozen=True)
class SiteConfig:
    name: str = field(metadata={"doc": "the site's name, used in logs and job names"})
    scheduler: Literal["slurm", "local"] = field(
        metadata={"doc": "slurm: trials are srun steps inside the manager's allocation; local: processes on this machine"})
    launcher: Literal["srun", "mpiexec", "none"] = field(
        metadata={"doc": "the program that starts a trial's ranks; none: run the trainer command once per trial "
                         "(a command that starts its own ranks, or a stand-in for simulations)"})
    ranks_per_node: int = bounded(1, low=1, doc="ranks (DDP processes) per node: usually one per GPU")
    cpus_per_rank: int = bounded(1, low=1, doc="cores given to each rank (srun --cpus-per-task)")
    gpus_per_rank: int = bounded(0, low=0, doc="GPUs per rank (srun --gpus-per-task); 0: none requested")
    launch_flags: list[str] = field(default_factory=list, metadata={"doc": "extra launcher flags, e.g. --gpu-bind=closest"})
    mpi: str | None = field(default=None, metadata={"doc": "srun --mpi plugin (pmi2, pmix, cray_shasta); null: the site's default"})
    immediate: int | None = bounded(
        None, low=1, doc="outside an allocation, fail a trial whose nodes are not free within this many seconds "
                         "(srun --immediate) instead of queueing; a DOWN node then fails fast")
    nodes_per_trial: int = bounded(1, low=1, doc="default slice size (nodes per trial)")
    node_pattern: str = field(
        default="node[0001-9999]", metadata={"doc": "hostlist of the machine's nodes; the first N make a synthetic "
                                                    "node list for dry runs and the local site"})
    account: str | None = field(default=None, metadata={"doc": "batch account (sbatch -A); required by some sites"})
    partition: str | None = None
    qos: str | None = None
    walltime: str = field(default="02:00:00", metadata={"doc": "batch job wall time, [D-]HH:MM:SS or minutes"})
    batch_directives: list[str] = field(
        default_factory=list, metadata={"doc": "extra sbatch options, e.g. --no-kill, -C nvme"})
    modules: list[str] = field(default_factory=list, metadata={"doc": "module load'ed before the manager starts"})
    setup: list[str] = field(default_factory=list, metadata={"doc": "shell lines run after the modules (conda activate ...)"})
    trainer_command: list[str] = field(
        default_factory=lambda: ["gfm-train"], metadata={"doc": "argv of the trainer; the trial directory is appended"})
    requires: list[str] = field(
        default_factory=list, metadata={"doc": "fields a batch submission needs on this site, e.g. [account]"})

    def check(self) -> None:
        if self.launcher == "srun" and self.scheduler != "slurm":
            raise Invalid("launcher", "srun needs scheduler: slurm")
        if self.scheduler == "local" and self.launcher == "srun":
            raise Invalid("launcher", "a local site starts trials with mpiexec (or none)")
        if not self.trainer_command:
            raise Invalid("trainer_command", "must name a program")
        for i, flag in enumerate(self.launch_flags):
            name = flag.split("=", 1)[0]
            if name in _DERIVED_FLAGS:
                raise Invalid(f"launch_flags[{i}]", f"{name} is set from the site's other fields; remove it here")
        if not _WALLTIME.fullmatch(self.walltime):
            raise Invalid("walltime", f"expected [D-]HH:MM:SS or minutes, got {self.walltime!r}")
        try:
            hostlist.expand(self.node_pattern)
        except UserError as err:
            raise Invalid("node_pattern", str(err)) from None
        for i, key in enumerate(self.requires):
            if key not in REQUIRABLE:
                raise Invalid(f"requires[{i}]", f"must be one of {', '.join(REQUIRABLE)}; got {key!r}")

    @property
    def origin(self) -> str:
        """The file this site was read from (for error messages)."""
        return getattr(self, "_origin", f"site {self.name}")

    def require(self, key: str) -> str:
        """The value of an optional field that is needed now; a UserError naming file and key if unset."""
        value = getattr(self, key)
        if not value:
            raise ConfigError(f"{self.origin}: {key}: required to submit a batch job on {self.name}; "
                              f"set it in the site file")
        return value


def known_sites() -> list[str]:
    return packaged.packaged_names(PACKAGED)


def load_site(name_or_path: str | Path) -> SiteConfig:
    """A packaged site by name ("frontier") or a user's site file by path."""
    path = packaged.packaged_or_path(name_or_path, PACKAGED, "site")
    site = typed.load(SiteConfig, path)
    object.__setattr__(site, "_origin", str(path))  # not a field: to_dict/build must not see it
    return site

