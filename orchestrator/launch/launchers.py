"""Launchers: the program that starts a trial's ranks on its slice, and how to stop them again.

One class per `launcher:` of a site file, each with the command it builds and
its stop strategy:
  srun     a Slurm step on the slice's nodes. Slurm 22.05's srun does not pass
           SIGTERM on (it kills the step at once), so the gentle stop goes to the
           step's tasks through `scancel --signal=TERM`, and the trainer
           checkpoints and exits 75; the forced stop is SIGTERM to srun (Slurm
           then kills every task), and last `scancel --signal=KILL` and SIGKILL.
  mpiexec  local "nodes" are shares of this machine: one process group of all the
           ranks; hydra's mpiexec forwards SIGTERM, the forced stop is SIGKILL to
           the whole group.
  none     the trainer command once per trial (a command that starts its own
           ranks, or the scale benchmark's stand-in); stopped like mpiexec.
The stop sequence itself (gentle, wait out the grace period, force) is the same
for all and for any process: a trial this manager started, or an orphan an
earlier manager left (see orphans.py).
"""
from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Mapping, Protocol

from orchestrator.allocation import Slice
from orchestrator.launch import slurm
from orchestrator.launch.records import step_name
from orchestrator.sites import SiteConfig

log = logging.getLogger(__name__)

# How long a stop waits for the launcher to end after a forced signal, before the final one.
FORCE_WAIT = 10.0


@dataclass(frozen=True)
class Launched:
    """What identifies a launched trial to whoever stops it."""

    trial_dir: Path
    slice: Slice
    env: Mapping[str, str]
    inside_allocation: bool

    @property
    def step_name(self) -> str:
        return step_name(self.trial_dir)


class TrialProcess(Protocol):
    """A launcher process that can be waited for: a running trial, or an orphan."""

    launched: Launched

    def pid(self) -> int | None: ...

    def done(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> int | None: ...


class Launcher:
    name: ClassVar[str]

    def __init__(self, site: SiteConfig):
        self.site = site

    def argv(self, slice: Slice, trial_dir: Path, inside_allocation: bool) -> list[str]:
        raise NotImplementedError

    def stop(self, process: TrialProcess, grace_seconds: float) -> int | None:
        """SIGTERM to every rank, the forced stop after `grace_seconds`; the exit status."""
        pid = _wait_for_pid(process)
        if pid is None:
            return process.wait()  # ended before it got going
        self._stop_gently(process, pid)
        code = process.wait(grace_seconds)
        if code is not None:
            return code
        log.warning("trial %s ignored SIGTERM for %.0f s: forcing it", process.launched.trial_dir, grace_seconds)
        self._force(process, pid, final=False)
        code = process.wait(FORCE_WAIT)
        if code is None:
            self._force(process, pid, final=True)
            code = process.wait()
        return code

    def _trainer(self, trial_dir: Path) -> list[str]:
        return [*self.site.trainer_command, str(trial_dir)]

    def _stop_gently(self, process: TrialProcess, pid: int) -> None:
        _kill(pid, signal.SIGTERM)

    def _force(self, process: TrialProcess, pid: int, final: bool) -> None:
        _kill(-pid, signal.SIGKILL)  # the launcher's process group: mpiexec, its proxies and the ranks


class Direct(Launcher):
    name = "none"

    def argv(self, slice: Slice, trial_dir: Path, inside_allocation: bool) -> list[str]:
        return self._trainer(trial_dir)


class Mpiexec(Launcher):
    name = "mpiexec"

    def argv(self, slice: Slice, trial_dir: Path, inside_allocation: bool) -> list[str]:
        ranks = len(slice.nodes) * self.site.ranks_per_node
        return self._trainer(trial_dir) if ranks == 1 else ["mpiexec", "-n", str(ranks), *self._trainer(trial_dir)]


class Srun(Launcher):
    name = "srun"

    def argv(self, slice: Slice, trial_dir: Path, inside_allocation: bool) -> list[str]:
        """Inside an allocation (the manager is the batch script's main process) each trial is a
        job step: `--exclusive` gives the step its own CPUs and srun waits for them if the previous
        step on the slice is still cleaning up, so a slice is reused at once. No `--overlap`: the
        batch script holds no CPUs that a step would have to share. Outside an allocation (tests,
        a small cluster) each trial is its own job, and the partition/account/qos and
        `--immediate` of the site apply."""
        site = self.site
        argv = ["srun", f"--nodes={len(slice.nodes)}", f"--ntasks={len(slice.nodes) * site.ranks_per_node}",
                f"--ntasks-per-node={site.ranks_per_node}", f"--nodelist={slice.hostlist}", "--exclusive",
                f"--cpus-per-task={site.cpus_per_rank}"]
        if site.gpus_per_rank:
            argv.append(f"--gpus-per-task={site.gpus_per_rank}")
        argv += site.launch_flags
        argv.append(f"--job-name={step_name(trial_dir)}")
        if site.mpi:
            argv.append(f"--mpi={site.mpi}")
        # One rank dying must end the others: DDP ranks would otherwise wait forever in a collective.
        argv.append("--kill-on-bad-exit=1")
        if not inside_allocation:
            argv += [f"--{key}={getattr(site, key)}" for key in ("partition", "account", "qos") if getattr(site, key)]
            if site.immediate:
                argv.append(f"--immediate={site.immediate}")
        return argv + self._trainer(trial_dir)

    def _step(self, process: TrialProcess) -> str | None:
        launched = process.launched
        job = launched.env.get("SLURM_JOB_ID") if launched.inside_allocation else None
        return slurm.find_step(launched.step_name, launched.slice.nodes, launched.env, job)

    def _stop_gently(self, process: TrialProcess, pid: int) -> None:
        step = self._step(process)
        if step is not None:
            slurm.signal_step(step, "TERM", process.launched.env)
        else:  # an srun whose step does not exist yet (still waiting for its nodes) simply gives up
            _kill(pid, signal.SIGTERM)

    def _force(self, process: TrialProcess, pid: int, final: bool) -> None:
        if final:
            step = self._step(process)
            if step is not None:  # srun dies without ending the step: end it through Slurm
                slurm.signal_step(step, "KILL", process.launched.env)
        _kill(pid, signal.SIGKILL if final else signal.SIGTERM)


LAUNCHERS: dict[str, type[Launcher]] = {cls.name: cls for cls in (Srun, Mpiexec, Direct)}


def launcher_for(site: SiteConfig) -> Launcher:
    return LAUNCHERS[site.launcher](site)


def trial_command(site: SiteConfig, slice: Slice, trial_dir: str | Path, *,
                  inside_allocation: bool = True) -> list[str]:
    """The exact argv that runs the trainer on `slice` for `trial_dir`."""
    return launcher_for(site).argv(slice, Path(trial_dir), inside_allocation)


def _wait_for_pid(process: TrialProcess) -> int | None:
    # The pid is written by the very first command of the launch; the wait is for it to start.
    while not process.done():
        pid = process.pid()
        if pid is not None:
            return pid
        time.sleep(0.01)
    return None


def _kill(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass  # already gone
