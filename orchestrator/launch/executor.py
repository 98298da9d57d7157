"""The trial executor: runs a trial on its slice through Parsl and hands back a handle to it.

A trial is a directory (trial.yaml in, result.json out). `TrialExecutor.submit`
starts the site's launcher (launchers.py) on one slice with that directory as
the trainer's last argument and returns a `TrialHandle`; the launcher process
leaves the files of records.py in the trial directory.

Why a Parsl ThreadPoolExecutor: a Parsl app here only starts srun (or mpiexec)
and waits for it; the computation runs on the slice's nodes, not in the
worker. A thread per running trial costs nothing, starts at once and needs no
worker processes, interchange or block scaling (HTEX's first task took ~9 s
here). Parsl's MPIExecutor is no fit: it chooses the hosts of a task itself
(no fixed slices) and hung when more tasks were queued than fitted; owning the
slices and passing `srun --nodelist` avoids both.
"""
from __future__ import annotations

import os
import shlex
import sys
import threading
import time
from pathlib import Path
from typing import Any, Mapping

from trainer.contract.atomicio import atomic_write_json

from orchestrator.allocation import Slice
from orchestrator.launch import slurm
from orchestrator.launch.launchers import Launched, Launcher, launcher_for
from orchestrator.launch.records import ERR_FILE, OUT_FILE, PID_FILE, RECORD_FILE, exit_status, read_pid, step_name
from orchestrator.sites import SiteConfig


def _launch_script(command: str, stdout: str, stderr: str) -> str:
    """The Parsl bash app: returns the command line that Parsl runs with bash."""
    return command


class TrialExecutor:
    """Runs trials through a Parsl DataFlowKernel of its own (start/shutdown or `with`).

    `max_trials` is the number of trials running at once (the number of
    slices); `env` is the environment of every launch (default: this process's).
    """

    def __init__(self, site: SiteConfig, run_dir: str | Path, *, max_trials: int,
                 env: Mapping[str, str] | None = None):
        self.site = site
        self.launcher: Launcher = launcher_for(site)
        self.run_dir = Path(run_dir)
        self.max_trials = max_trials
        self.env = _with_own_bin(dict(os.environ if env is None else env))
        self.inside_allocation = site.scheduler == "slurm" and slurm.inside_allocation(self.env)
        self.handles: list[TrialHandle] = []
        self._dfk: Any = None
        self._app: Any = None

    def start(self) -> TrialExecutor:
        from parsl.app.app import bash_app  # imported here: parsl takes a while to import
        from parsl.config import Config
        from parsl.dataflow.dflow import DataFlowKernel
        from parsl.executors.threads import ThreadPoolExecutor

        executor = ThreadPoolExecutor(label="trials", max_threads=self.max_trials, thread_name_prefix="trial")
        config = Config(executors=[executor], run_dir=str(self.run_dir), strategy="none", retries=0)
        self._dfk = DataFlowKernel(config)
        self._app = bash_app(_launch_script, data_flow_kernel=self._dfk, executors=["trials"])
        return self

    def shutdown(self, grace_seconds: float = 30.0) -> None:
        """Kill the trials still running (they are ours), then stop Parsl."""
        for handle in self.handles:
            if not handle.done():
                handle.kill(grace_seconds)
        if self._dfk is not None:
            self._dfk.cleanup()
            self._dfk = self._app = None

    def __enter__(self) -> TrialExecutor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def submit(self, trial_dir: str | Path, slice: Slice, env: Mapping[str, str] | None = None) -> TrialHandle:
        """Start the trainer for `trial_dir` on `slice`; `env` adds variables for this trial only."""
        if self._app is None:
            raise RuntimeError("TrialExecutor.submit() before start()")
        if sum(not h.done() for h in self.handles) >= self.max_trials:
            # Parsl would queue it silently, and a queued trial is neither running nor killable.
            raise RuntimeError(f"more than max_trials={self.max_trials} trials at once: one per slice")
        trial_dir = Path(trial_dir).resolve()
        trial_dir.mkdir(parents=True, exist_ok=True)
        (trial_dir / PID_FILE).unlink(missing_ok=True)  # a pid from an earlier attempt must never be killed
        argv = self.launcher.argv(slice, trial_dir, self.inside_allocation)
        launched = Launched(trial_dir, slice, {**self.env, **(env or {})}, self.inside_allocation)
        record = {"site": self.site.name, "launcher": self.site.launcher, "argv": argv, "slice": slice.index,
                  "nodes": list(slice.nodes), "step_name": step_name(trial_dir),
                  "inside_allocation": self.inside_allocation, "submitted": time.time(),
                  "exit_code": None, "killed": False}
        atomic_write_json(trial_dir / RECORD_FILE, record)
        future = self._app(_shell_command(argv, trial_dir, launched.env),
                           stdout=str(trial_dir / OUT_FILE), stderr=str(trial_dir / ERR_FILE))
        handle = TrialHandle(future, launched, self.launcher, record)
        future.add_done_callback(handle._record_end)
        self.handles.append(handle)
        return handle


def _with_own_bin(env: dict[str, str]) -> dict[str, str]:
    """Put the manager's own environment first on the trials' PATH if it is not there.

    The venv need not be activated (scripts/test.sh runs .venv/bin/python): its
    gfm-train, and its mpiexec that matches mpi4py's MPI, must still be the ones found.
    """
    own = str(Path(sys.executable).parent)
    path = env.get("PATH", "")
    if own not in path.split(os.pathsep):
        env["PATH"] = os.pathsep.join([own, path]) if path else own
    return env


def _shell_command(argv: list[str], trial_dir: Path, env: Mapping[str, str]) -> str:
    """cd to the trial, set its environment, record the pid, and exec the launcher.

    setsid puts the launcher in a process group of its own: a Ctrl-C at the
    manager's terminal does not reach it (the manager decides), and the local
    launcher's whole group can be killed at once. Without a fork, the pid that
    sh writes is the pid of srun/mpiexec after the exec.
    """
    changes = [f"{k}={v}" for k, v in env.items() if os.environ.get(k) != v]
    unset = [arg for k in os.environ if k not in env for arg in ("-u", k)]
    prefix = ["env", *unset, *changes] if changes or unset else []
    record_pid = 'echo $$ > "$0" && exec "$@"'
    words = [*prefix, "setsid", "-w", "/bin/sh", "-c", record_pid, str(trial_dir / PID_FILE), *argv]
    return f"cd {shlex.quote(str(trial_dir))} && exec {shlex.join(words)} </dev/null"


class TrialHandle:
    """A running (or finished) trial: its Parsl future, exit status and kill()."""

    def __init__(self, future: Any, launched: Launched, launcher: Launcher, record: dict[str, Any]):
        self.future = future
        self.launched = launched
        self.launcher = launcher
        self.killed = False
        self._record = record
        self._exit_code: int | None = None
        self._error: BaseException | None = None
        self._ended = threading.Event()  # set once launch.json holds the exit status

    @property
    def trial_dir(self) -> Path:
        return self.launched.trial_dir

    @property
    def slice(self) -> Slice:
        return self.launched.slice

    @property
    def env(self) -> Mapping[str, str]:
        return self.launched.env

    def done(self) -> bool:
        return self._ended.is_set()

    def exit_code(self) -> int | None:
        """None while running; then the launcher's exit status (records.exit_status). An error
        of the launch machinery itself (Parsl could not run bash) is raised, not hidden."""
        if not self._ended.is_set():
            return None
        if self._error is not None:
            raise self._error
        return self._exit_code

    def pid(self) -> int | None:
        return read_pid(self.trial_dir)

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the launcher to end (at most `timeout` s); its exit status, or None if still running."""
        self._ended.wait(timeout)
        return self.exit_code()

    def kill(self, grace_seconds: float = 30.0) -> int | None:
        """Stop the trial (the launcher's stop strategy); returns the exit status."""
        self.killed = True
        return self.launcher.stop(self, grace_seconds)

    def _record_end(self, future: Any) -> None:
        """Parsl's done-callback, the one place that decides the exit status: it goes to launch.json,
        then the handle is marked done."""
        from parsl.app.errors import BashExitFailure

        record = dict(self._record, finished=time.time(), killed=self.killed)
        try:
            error = future.exception()
            if error is None:
                self._exit_code = 0
            elif isinstance(error, BashExitFailure):
                self._exit_code = exit_status(error.exitcode)
            else:  # recorded here, and raised again to whoever asks exit_code()
                self._error = error
                record["error"] = f"{error.__class__.__name__}: {error}"
            record["exit_code"] = self._exit_code
            atomic_write_json(self.trial_dir / RECORD_FILE, record)
            self._record = record
        finally:
            self._ended.set()
