"""Starting a trial on its slice: the srun / mpiexec command, run through Parsl, and killing it.

A trial is a directory (ARCHITECTURE.md, contract 1). `Launcher.submit` starts
the site's launcher on one slice with that directory as the trainer's last
argument and returns a `TrialHandle`. The launcher process leaves these files
in the trial directory:

    launcher.pid   its pid (written before it execs srun/mpiexec; kill() needs it)
    launcher.out   stdout of srun/mpiexec, which includes every rank's stdout
    launcher.err   stderr likewise; node_failure() reads srun's own lines from it
    launch.json    argv, nodes, and once it ended its exit status (see node_failure)

Why a Parsl ThreadPoolExecutor: a Parsl app here only starts srun (or mpiexec)
and waits for it; the computation runs on the slice's nodes, not in the
worker. A thread per running trial costs nothing, starts at once and needs no
worker processes, interchange or block scaling (HTEX's first task took ~9 s
here). Parsl's MPIExecutor is no fit: it chooses the hosts of a task itself
(no fixed slices) and hung when more tasks were queued than fitted; owning the
slices and passing `srun --nodelist` avoids both.
"""
from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Mapping

from trainer.atomicio import atomic_write_json

from orchestrator import hostlist
from orchestrator.allocation import Slice
from orchestrator.sites import SiteConfig

log = logging.getLogger(__name__)

PID_FILE = "launcher.pid"
OUT_FILE = "launcher.out"
ERR_FILE = "launcher.err"
RECORD_FILE = "launch.json"
# How long kill() waits for srun to end the step after the forced stop, before SIGKILL.
FORCE_WAIT = 10.0


def step_name(trial_dir: str | Path) -> str:
    """The Slurm job/step name of a trial: trial-<directory name>."""
    name = Path(trial_dir).name
    return name if name.startswith("trial") else f"trial-{name}"


def trial_command(site: SiteConfig, slice: Slice, trial_dir: str | Path, *,
                  inside_allocation: bool = True) -> list[str]:
    """The exact argv that runs the trainer on `slice` for `trial_dir`.

    Inside an allocation (the manager is the batch script's main process) each
    trial is a job step: `--exclusive` gives the step its own CPUs and srun waits
    for them if the previous step on the slice is still cleaning up, so a slice
    is reused at once. No `--overlap`: the batch script holds no CPUs that a step
    would have to share (it would if the manager itself ran as an srun step).
    Outside an allocation (tests, a small cluster) each trial is its own job, and
    the partition/account/qos and `--immediate` of the site apply.
    """
    trainer = [*site.trainer_command, str(Path(trial_dir))]
    ranks = len(slice.nodes) * site.ranks_per_node
    if site.launcher == "none":
        return trainer
    if site.launcher == "mpiexec":
        # Local "nodes" are shares of this machine: one process group of all the ranks.
        return trainer if ranks == 1 else ["mpiexec", "-n", str(ranks), *trainer]
    argv = ["srun", f"--nodes={len(slice.nodes)}", f"--ntasks={ranks}",
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
    return argv + trainer


def _launch_script(command: str, stdout: str, stderr: str) -> str:
    """The Parsl bash app: returns the command line that Parsl runs with bash."""
    return command


class Launcher:
    """Runs trials through a Parsl DataFlowKernel of its own (start/shutdown or `with`).

    `max_trials` is the number of trials running at once (the number of
    slices); `env` is the environment of every launch (default: this process's).
    """

    def __init__(self, site: SiteConfig, run_dir: str | Path, *, max_trials: int,
                 env: Mapping[str, str] | None = None):
        self.site = site
        self.run_dir = Path(run_dir)
        self.max_trials = max_trials
        self.env = _with_own_bin(dict(os.environ if env is None else env))
        # Reading SLURM_JOB_ID only tells where we run; it switches no behaviour on by itself.
        self.inside_allocation = site.scheduler == "slurm" and "SLURM_JOB_ID" in self.env
        self.handles: list[TrialHandle] = []
        self._dfk: Any = None
        self._app: Any = None

    def start(self) -> Launcher:
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

    def __enter__(self) -> Launcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def submit(self, trial_dir: str | Path, slice: Slice, env: Mapping[str, str] | None = None) -> TrialHandle:
        """Start the trainer for `trial_dir` on `slice`; `env` adds variables for this trial only."""
        if self._app is None:
            raise RuntimeError("Launcher.submit() before start()")
        if sum(not h.done() for h in self.handles) >= self.max_trials:
            # Parsl would queue it silently, and a queued trial is neither running nor killable.
            raise RuntimeError(f"more than max_trials={self.max_trials} trials at once: one per slice")
        trial_dir = Path(trial_dir).resolve()
        trial_dir.mkdir(parents=True, exist_ok=True)
        (trial_dir / PID_FILE).unlink(missing_ok=True)  # a pid from an earlier attempt must never be killed
        argv = trial_command(self.site, slice, trial_dir, inside_allocation=self.inside_allocation)
        trial_env = {**self.env, **(env or {})}
        record = {"site": self.site.name, "launcher": self.site.launcher, "argv": argv, "slice": slice.index,
                  "nodes": list(slice.nodes), "step_name": step_name(trial_dir),
                  "inside_allocation": self.inside_allocation, "submitted": time.time(),
                  "exit_code": None, "killed": False}
        atomic_write_json(trial_dir / RECORD_FILE, record)
        future = self._app(_shell_command(argv, trial_dir, trial_env),
                           stdout=str(trial_dir / OUT_FILE), stderr=str(trial_dir / ERR_FILE))
        handle = TrialHandle(future, trial_dir, slice, self.site, trial_env, record)
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

    def __init__(self, future: Any, trial_dir: Path, slice: Slice, site: SiteConfig,
                 env: Mapping[str, str], record: dict[str, Any]):
        self.future = future
        self.trial_dir = trial_dir
        self.slice = slice
        self.site = site
        self.env = dict(env)
        self.killed = False
        self._record = record
        self._ended = threading.Event()  # set once launch.json holds the exit status

    def done(self) -> bool:
        return self._ended.is_set()

    def exit_code(self) -> int | None:
        """None while running; then the launcher's exit status, as a shell reports it.

        Ranks killed by signal N: srun exits 128+N (143 for SIGTERM), hydra's
        mpiexec exits N; a launcher itself killed by signal N gives 128+N. An
        error of the launch machinery (Parsl could not run bash) is raised, not hidden.
        """
        if not self._ended.is_set():
            return None
        error = self.future.exception()
        if error is None:
            return 0
        if isinstance(error, _bash_exit_failure()):
            return _status(error.exitcode)
        raise error

    def pid(self) -> int | None:
        """The launcher's pid, once its shell has written it."""
        try:
            return int((self.trial_dir / PID_FILE).read_text())
        except (FileNotFoundError, ValueError):
            return None  # not written yet, or being written

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the launcher to end (at most `timeout` s); its exit status, or None if still running."""
        self._ended.wait(timeout)
        return self.exit_code()

    def kill(self, grace_seconds: float = 30.0) -> int:
        """Stop the trial: SIGTERM to every rank, SIGKILL after `grace_seconds`; returns the exit status.

        srun (Slurm 22.05) does not pass SIGTERM on: it answers it by killing
        the step at once. So the gentle signal goes to the step's tasks through
        `scancel --signal=TERM` and the trainer can checkpoint and report
        "interrupted"; the forced stop is SIGTERM to srun, which makes Slurm kill
        every task and end the step. mpiexec (hydra) does pass SIGTERM on.
        """
        self.killed = True
        pid = self._wait_for_pid()
        if pid is None:
            return self.wait()  # ended before it got going
        self._signal_ranks(pid)
        code = self.wait(grace_seconds)
        if code is not None:
            return code
        log.warning("trial %s ignored SIGTERM for %.0f s: forcing it", self.trial_dir, grace_seconds)
        self._force(pid, signal.SIGTERM if self.site.launcher == "srun" else signal.SIGKILL)
        code = self.wait(FORCE_WAIT)
        if code is None:
            self._force(pid, signal.SIGKILL)
            code = self.wait()
        return code

    # -- internals -----------------------------------------------------------

    def _wait_for_pid(self) -> int | None:
        # The pid is written by the very first command of the app; the wait is for Parsl to start it.
        while not self._ended.is_set():
            pid = self.pid()
            if pid is not None:
                return pid
            time.sleep(0.01)
        return None

    def _signal_ranks(self, pid: int) -> None:
        step = self._slurm_step() if self.site.launcher == "srun" else None
        if step is not None:
            # Inside an allocation, Slurm 22.05's scancel delivers the signal and still exits 225
            # ("Invalid job id specified"): its status says nothing, so the grace period decides.
            self._slurm("scancel", "--signal=TERM", step, quiet=True)
        else:
            # mpiexec forwards SIGTERM to its ranks; a lone trainer gets it directly; an srun
            # whose step does not exist yet (still waiting for the nodes) simply gives up.
            _kill(pid, signal.SIGTERM)

    def _force(self, pid: int, sig: signal.Signals) -> None:
        if self.site.launcher == "srun":
            if sig == signal.SIGKILL:
                step = self._slurm_step()
                if step is not None:  # srun dies without ending the step: end it through Slurm
                    self._slurm("scancel", "--signal=KILL", step, quiet=True)
            _kill(pid, sig)
        else:
            _kill(-pid, sig)  # the launcher's process group: mpiexec, its proxies and the ranks

    def _slurm_step(self) -> str | None:
        """The running step of this trial (job.step), found by its name and nodes."""
        args = ["squeue", "--steps", "--me", "--noheader", "--format=%i %j %N"]
        if self._record.get("inside_allocation") and "SLURM_JOB_ID" in self.env:
            args.append(f"--jobs={self.env['SLURM_JOB_ID']}")
        out = self._slurm(*args)
        for line in (out or "").splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] == self._record["step_name"]:
                if set(hostlist.expand(parts[2])) == set(self.slice.nodes):
                    return parts[0]
        return None

    def _slurm(self, *args: str, quiet: bool = False) -> str | None:
        """Run a Slurm command; its output, or None (logged) when it failed."""
        try:
            done = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as err:
            log.warning("%s failed: %s", args[0], err)
            return None
        if done.returncode != 0:
            log.log(logging.DEBUG if quiet else logging.WARNING, "%s exited %d: %s",
                    shlex.join(args), done.returncode, done.stderr.strip())
            return None
        return done.stdout

    def _record_end(self, future: Any) -> None:
        """Parsl's done-callback: write the exit status to launch.json, then mark the handle done."""
        record = dict(self._record, finished=time.time(), killed=self.killed)
        try:
            error = future.exception()
            if error is None:
                record["exit_code"] = 0
            elif isinstance(error, _bash_exit_failure()):
                record["exit_code"] = _status(error.exitcode)
            else:  # recorded here, and raised again to whoever asks exit_code()
                record["error"] = f"{error.__class__.__name__}: {error}"
            atomic_write_json(self.trial_dir / RECORD_FILE, record)
            self._record = record
        finally:
            self._ended.set()


def _bash_exit_failure() -> type:
    from parsl.app.errors import BashExitFailure
    return BashExitFailure


def _status(returncode: int) -> int:
    """A Popen return code as a shell exit status: death by signal N (-N) becomes 128+N."""
    return 128 - returncode if returncode < 0 else returncode


def _kill(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass  # already gone
