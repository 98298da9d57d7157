"""One search by the real manager on the simulated Frontier, with every call of the manager timed.

The parts are the library's own (TrialDB, HpoProposer, TrialExecutor, Manager), wired
as orchestrator/runner.py wires them; timed subclasses record each call in a
`Probe` without changing what the call does. Used by bench_manager_scale.py.

The proposer tells outcomes as the library does, held and told in one call
before the next proposal; `per_trial_tells=True` is the baseline it replaced,
one tell (one surrogate refit) per finished trial.
"""
from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from orchestrator.allocation import Allocation, discover_nodes
from orchestrator.launch.executor import TrialExecutor
from orchestrator.manager import Manager
from orchestrator.phases.run import run_lock
from orchestrator.search.backends import make_optimizer
from orchestrator.search.proposers import HpoProposer
from orchestrator.sites import SiteConfig, load_site
from orchestrator.trials import runconfig
from orchestrator.trials.db import TrialDB
from orchestrator.trials.runconfig import RunSettings
from search_spaces import load_space
from trainer.contract import typed

SITE_FILE = Path(__file__).resolve().parent / "sites" / "simulated-frontier.yaml"
NODES = 8192


class Probe:
    """Every timed call of one search, and the time of each tell (the evaluations so far).

    A call is a dict: kind (ask, tell, db, dispatch, loop), name, seconds (wall),
    cpu_seconds (the manager thread's), at (unix time), told (evaluations told before it), and the trial it served: `trial`, or
    `trials` when one call served several (a propose, a batched tell).
    """

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.tells: list[float] = []
        self.recording: int | None = None       # the trial whose outcome the manager is handling
        self.last_ask: dict[str, Any] | None = None
        self.started = self.ended = 0.0

    @contextmanager
    def timed(self, kind: str, name: str, trial: int | None = None) -> Iterator[dict[str, Any]]:
        call = {"kind": kind, "name": name, "trial": trial, "told": len(self.tells), "at": time.time()}
        start, cpu = time.perf_counter(), time.thread_time()
        try:
            yield call
        finally:
            # CPU time of the manager's thread: the call's cost without the waits for the other
            # processes on this shared two-core machine (and without its fsync waits).
            call["cpu_seconds"] = time.thread_time() - cpu
            call["seconds"] = time.perf_counter() - start
            self.calls.append(call)


def _timed_db(name: str, per_trial: bool) -> Callable[..., Any]:
    def method(self: "TimedDB", *args: Any, **kwargs: Any) -> Any:
        with self.probe.timed("db", name, args[0] if per_trial else None):
            return getattr(TrialDB, name)(self, *args, **kwargs)
    return method


class TimedDB(TrialDB):
    def __init__(self, path: Path, probe: Probe):
        super().__init__(path)
        self.probe = probe

    def create_trial(self, *args: Any, **kwargs: Any) -> int:
        with self.probe.timed("db", "create_trial") as call:
            call["trial"] = super().create_trial(*args, **kwargs)
        if self.probe.last_ask is not None:
            self.probe.last_ask["trials"].append(call["trial"])  # the proposal this trial came from
        return call["trial"]

    get = _timed_db("get", True)
    mark_running = _timed_db("mark_running", True)
    mark_finished = _timed_db("mark_finished", True)
    update_progress = _timed_db("update_progress", True)
    requeue = _timed_db("requeue", True)
    trials = _timed_db("trials", False)
    counts = _timed_db("counts", False)


class TimedProposer(HpoProposer):
    def __init__(self, *args: Any, probe: Probe, per_trial_tells: bool = False):
        super().__init__(*args)
        self.probe, self.per_trial_tells = probe, per_trial_tells
        self.held_trials: list[int | None] = []   # the trial of each held outcome

    def propose(self, n: int, created: int) -> list:
        self.tell_outcomes()  # timed as a tell; the library's propose then finds nothing held
        with self.probe.timed("ask", "propose") as call:
            call["trials"] = []
            proposals = super().propose(n, created)
        self.probe.last_ask = call
        return proposals

    def finished(self, params: dict, objective: float | None) -> None:
        super().finished(params, objective)
        self.held_trials.append(self.probe.recording)
        if self.per_trial_tells:
            self.tell_outcomes()

    def tell_outcomes(self) -> None:
        if not self.outcomes:
            return
        with self.probe.timed("tell", "tell_outcomes") as call:
            call["trials"] = [trial for trial in self.held_trials if trial is not None]
            told = len(self.outcomes)
            super().tell_outcomes()
        self.probe.tells += [time.time()] * told
        self.held_trials = []


class TimedExecutor(TrialExecutor):
    def __init__(self, *args: Any, probe: Probe, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.probe = probe

    def submit(self, trial_dir, slice, env=None):
        with self.probe.timed("dispatch", "submit", int(Path(trial_dir).name)):
            return super().submit(trial_dir, slice, env)


class TimedManager(Manager):
    """The real loop; each of its steps is timed (their sum is the manager's busy time)."""

    proposer: TimedProposer

    def __init__(self, *args: Any, probe: Probe):
        super().__init__(*args)
        self.probe = probe

    def run(self) -> int:
        self.probe.started = time.time()
        try:
            return super().run()
        finally:
            self.probe.ended = time.time()

    def _step(self, name: str, step: Callable[[], None]) -> None:
        with self.probe.timed("loop", name):
            step()

    def _collect(self) -> None:
        self._step("collect", super()._collect)

    def _enforce_walltimes(self) -> None:
        self._step("walltimes", super()._enforce_walltimes)

    def _launch(self) -> None:
        self._step("launch", super()._launch)   # a trial that fails to launch is told here

    def _update_progress(self) -> None:
        self._step("progress", super()._update_progress)

    def _start(self, trial, slice) -> None:
        self.probe.recording = trial.trial_id
        super()._start(trial, slice)

    def _record(self, run, outcome) -> None:
        self.probe.recording = run.trial.trial_id
        super()._record(run, outcome)


# -- one search ------------------------------------------------------------------------------

def bench_site(median_seconds: float) -> SiteConfig:
    """The simulated site, its stand-in path made absolute: the trainer runs in its trial directory,
    so words with a "/" are taken from the site file's directory."""
    site = load_site(SITE_FILE)
    command = [str((SITE_FILE.parent / word).resolve()) if "/" in word and not Path(word).is_absolute() else word
               for word in site.trainer_command]
    return dataclasses.replace(site, trainer_command=[*command, "--median-seconds", str(median_seconds)])


def space_file(optimizer: str, work: Path) -> str:
    """ours: the packaged Table IV space as is; deephyper: the same with deephyper.hpo.CBO's own
    signature defaults restored (a space file, as a user would write it); random: backend random."""
    if optimizer == "ours":
        return "table_iv"
    mapping = load_space("table_iv").to_mapping()
    if optimizer == "random":
        mapping.update(backend="random", optimizer={})
    else:
        from deephyper.hpo import CBO

        defaults = inspect.signature(CBO.__init__).parameters
        mapping["optimizer"] = {k: defaults[k].default for k in
                                ("surrogate_model", "acq_func", "acq_optimizer", "multi_point_strategy")}
        mapping["optimizer"]["acq_optimizer_kwargs"] = {"max_total_failures": 100}  # its own quota; ours: none
    path = work / f"space-{optimizer}.yaml"
    path.write_text(yaml.safe_dump(mapping, sort_keys=False))
    return str(path)


def run_search(name: str, optimizer: str, trials: int, *, timeout: float | None, median_seconds: float,
               seed: int, work: Path, per_trial_tells: bool = False) -> tuple[Probe, Path, dict[str, float]]:
    """Run one search to its end in WORK/NAME; the probe, the run directory, and CPU seconds used."""
    run_dir = work / name
    dummy = work / "dummy.bp"  # the stand-in reads no data, and the probe starts the manager past launch's dataset check
    dummy.touch()
    site = bench_site(median_seconds)
    settings = typed.build(RunSettings, {
        "site": str(SITE_FILE), "data": [str(dummy)], "nodes": NODES, "max_evals": trials, "epochs": 10,
        "space": space_file(optimizer, work), "seed": seed, "timeout": timeout, "kill_grace": 5.0}, "bench")
    runconfig.save(run_dir, settings)
    space = load_space(settings.space)
    base = runconfig.base_trial(settings, threads=site.cpus_per_rank)
    allocation = Allocation(discover_nodes(site, settings.nodes), settings.nodes_per_trial or site.nodes_per_trial)
    probe = Probe()
    handler = logging.FileHandler(run_dir / runconfig.LOG_FILE)  # as runner.py: the manager logs every trial
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    before = os.times()
    try:
        with run_lock(run_dir), TimedDB(run_dir, probe) as db:
            db.set_meta("space", space.to_mapping())
            db.set_meta("settings", typed.to_dict(settings))
            proposer = TimedProposer(space, make_optimizer(space, settings.seed, run_dir / "optimizer"), base,
                                 settings.max_evals, probe=probe, per_trial_tells=per_trial_tells)
            with TimedExecutor(site, run_dir, max_trials=len(allocation.slices), probe=probe) as executor:
                code = TimedManager(settings, db, allocation, executor, proposer, run_dir / runconfig.TRIALS_DIR,
                                    probe=probe).run()
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    if code != 0:
        raise RuntimeError(f"{name}: the manager exited {code}; see {run_dir / runconfig.LOG_FILE}")
    after = os.times()
    return probe, run_dir, {"manager_cpu_s": after.user + after.system - before.user - before.system,
                            "trainers_cpu_s": (after.children_user + after.children_system
                                               - before.children_user - before.children_system)}
