"""The manager: keeps every slice busy with a trial until the phase's proposer is exhausted.

One loop, never blocked by a trial (contract 6): collect finished trials, stop
trials past their wall time (in the background), give every free slice the
next trial (a re-queued one first, else a new proposal), then sleep until a
trial finishes or a second passes. Every state change is committed to the
trial database before the next action (contract 4), so a manager killed at
any moment is resumed by starting it again on the same run directory.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

from trainer.contract.errors import UserError
from trainer.contract.result import EXIT_INTERRUPTED
from trainer.contract.trialconfig import TRIAL_FILE, write_trial

from orchestrator.allocation import Allocation, Slice
from orchestrator.launch.breaker import CircuitBreaker, CircuitOpen, failed_at_startup
from orchestrator.launch.executor import TrialExecutor, TrialHandle
from orchestrator.launch.launchers import FORCE_WAIT
from orchestrator.launch.orphans import stop_orphan
from orchestrator.search.fidelity import Asha
from orchestrator.search.proposers import Proposer
from orchestrator.trials.db import TrialDB
from orchestrator.trials.outcome import (KILLED_AT_RUNG, KILLED_AT_SHUTDOWN, KILLED_AT_WALLTIME, Outcome, classify,
                                         read_result)
from orchestrator.trials.rungs import RungDecision
from orchestrator.trials.runconfig import RunSettings
from orchestrator.trials.schema import Trial
from orchestrator.trials.snapshot import Publisher

log = logging.getLogger(__name__)

POLL_S = 1.0            # longest sleep between two looks at the running trials
PROGRESS_S = 5.0        # how often running trials' curves are copied into the database


@dataclass
class Running:
    trial: Trial
    slice: Slice
    handle: TrialHandle
    launched_at: float
    killed_for: str | None = None
    epochs_seen: int = 0
    discarded: RungDecision | None = None   # the rung decision it is being stopped for


class Manager:
    def __init__(self, settings: RunSettings, db: TrialDB, allocation: Allocation, executor: TrialExecutor,
                 proposer: Proposer, trial_root: Path, on_progress: Callable[["Manager"], None] | None = None,
                 fidelity: Asha | None = None):
        self.settings, self.db, self.allocation, self.executor = settings, db, allocation, executor
        self.fidelity = fidelity   # None: constant fidelity, every trial trains its whole budget
        self.proposer, self.trial_root = proposer, trial_root
        self.phase = proposer.phase
        self.on_progress = on_progress or (lambda manager: None)
        self.running: dict[int, Running] = {}          # slice index -> what runs there
        self.stopping: str | None = None
        self._wakeup = threading.Event()
        self._last_progress = 0.0
        self.started = time.time()
        self.breaker = CircuitBreaker(settings.max_startup_failures)
        self.snapshots = Publisher(db, settings.snapshot_interval)  # for readers on other hosts

    # -- the loop --------------------------------------------------------------

    def run(self) -> int:
        """Run the phase to its end; exit status 0, or EXIT_INTERRUPTED when stopped by a signal."""
        self._recover()
        self.snapshots.start()
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
        try:
            while True:
                self._collect()
                if self.stopping:
                    self._shutdown()
                    return EXIT_INTERRUPTED
                if self.breaker.tripped({s.index for s in self.allocation.slices}):
                    log.error("circuit breaker: %s", self.breaker.message())
                    self.stopping = "the circuit breaker"
                    self._shutdown()  # the trials still running are interrupted: a resume runs them again
                    raise CircuitOpen(self.breaker.message())
                self._enforce_walltimes()
                self._judge_rungs()
                self._launch()
                self._update_progress()
                self.snapshots.tick()
                if not self.running:
                    if not self._more_to_run():
                        return 0
                    if not self._free_slices():
                        raise UserError("no usable slice is left: every slice lost nodes to failures "
                                        f"({len(self.allocation.excluded)} nodes excluded); see gfm-hpo status")
                self._wakeup.wait(POLL_S)
                self._wakeup.clear()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.snapshots.publish()  # the final state, however the loop ended

    def _on_signal(self, signum: int, frame) -> None:
        self.stopping = signal.Signals(signum).name
        self._wakeup.set()

    def timed_out(self) -> bool:
        return self.settings.timeout is not None and time.time() - self.started > self.settings.timeout

    def created(self) -> int:
        return sum(self.db.counts(self.phase).values())

    def _more_to_run(self) -> bool:
        queued = self.db.counts(self.phase)["queued"]
        return queued > 0 or (self.proposer.remaining(self.created()) > 0 and not self.timed_out())

    def _free_slices(self) -> list[Slice]:
        return [s for s in self.allocation.slices if s.index not in self.running]

    # -- start-up after an earlier manager (resume) ---------------------------------

    def _recover(self) -> None:
        for node, reason in self.db.excluded_nodes().items():
            if self.allocation.slice_of(node) is not None or node in self.allocation.spares:
                self.allocation.exclude(node, reason)
        for trial in self.db.trials(self.phase, ["running"]):
            # Its launcher may outlive the manager that started it: stop it before running the trial again.
            stop_orphan(Path(trial.trial_dir), self.executor.launcher, self.executor.env, self.settings.kill_grace)
            verdict = self.fidelity.verdict(trial.trial_id) if self.fidelity else None
            if verdict is not None:  # the last manager discarded it but died before recording the stop
                self._discard(trial, verdict, read_result(Path(trial.trial_dir)))
                continue
            self.db.requeue(trial.trial_id, "the manager restarted while it ran")
        for trial in self.db.trials(self.phase, ["interrupted"]):
            self.db.requeue(trial.trial_id, "resumed")
        self.proposer.restore(self.db)

    # -- launching ------------------------------------------------------------------

    def _launch(self) -> None:
        free = self._free_slices()
        if not free:
            return
        queued = self.db.trials(self.phase, ["queued"])[:len(free)]
        if len(queued) < len(free) and not self.timed_out():
            created = self.created()
            for proposal in self.proposer.propose(len(free) - len(queued), created):
                trial_id = self.db.create_trial(self.phase, proposal.params, str(self.trial_root / "{trial_id:05d}"),
                                                proposal.parent_id, prepare=partial(write_trial, config=proposal.config),
                                                origin=proposal.origin)
                queued.append(self.db.get(trial_id))
        for trial, slice in zip(queued, free):
            self._start(trial, slice)

    def _start(self, trial: Trial, slice: Slice) -> None:
        trial_dir = Path(trial.trial_dir)
        if not (trial_dir / TRIAL_FILE).exists():
            self.db.mark_finished(trial.trial_id, "failed", error=f"{trial_dir / TRIAL_FILE} is missing")
            self.proposer.finished(trial.params, None)
            return
        self.db.mark_running(trial.trial_id, slice.index, slice.nodes)  # committed before the launch
        launched_at = time.time()
        try:
            handle = self.executor.submit(trial_dir, slice)
        except Exception as err:  # the launch machinery itself failed: a failure of this trial
            log.exception("launching trial %d failed", trial.trial_id)
            error = f"launch failed: {type(err).__name__}: {err}"
            self.db.mark_finished(trial.trial_id, "failed", error=error)
            self.proposer.finished(trial.params, None)
            self.breaker.record(True, slice.index, error)
            return
        handle.future.add_done_callback(lambda _: self._wakeup.set())
        self.running[slice.index] = Running(self.db.get(trial.trial_id), slice, handle, launched_at)
        log.info("trial %d started on slice %d (%s)", trial.trial_id, slice.index, slice.hostlist)

    # -- watching -------------------------------------------------------------------

    def _enforce_walltimes(self) -> None:
        limit = self.settings.trial_walltime
        if limit is None:
            return
        for run in self.running.values():
            if run.killed_for is None and time.time() - run.launched_at > limit:
                log.warning("trial %d passed its wall time of %g s: stopping it", run.trial.trial_id, limit)
                self._kill(run, KILLED_AT_WALLTIME)

    def _judge_rungs(self) -> None:
        """ASHA (search/fidelity.py): read each running trial's curve and stop those a rung discards.
        Every pass, not every PROGRESS_S: a trial stopped late trains epochs the rule meant to save."""
        if self.fidelity is None:
            return
        for run in self.running.values():
            result = read_result(Path(run.trial.trial_dir), since=run.launched_at) if run.killed_for is None else None
            if result and result.get("status") == "running":
                decision = self.fidelity.judge(run.trial.trial_id, result.get("epochs", []))
                if decision is not None:
                    log.info("trial %d discarded at rung %d (value %.4g, rank %d of %d): stopping it",
                             run.trial.trial_id, decision.rung, decision.value, decision.rank, decision.judged)
                    run.discarded = decision
                    self._kill(run, KILLED_AT_RUNG)

    def _kill(self, run: Running, reason: str) -> None:
        """Stop a trial in the background: kill() waits out the grace period, the loop must not."""
        run.killed_for = reason
        threading.Thread(target=run.handle.kill, args=(self.settings.kill_grace,), daemon=True,
                         name=f"kill-{run.trial.trial_id}").start()

    def _update_progress(self) -> None:
        if time.time() - self._last_progress < PROGRESS_S:
            return
        self._last_progress = time.time()
        for run in self.running.values():
            result = read_result(Path(run.trial.trial_dir), since=run.launched_at)
            if result and result.get("status") == "running" and len(result.get("epochs", [])) > run.epochs_seen:
                run.epochs_seen = len(result["epochs"])
                self.db.update_progress(run.trial.trial_id, result)
        self.on_progress(self)

    def _collect(self) -> None:
        for index, run in list(self.running.items()):
            if not run.handle.done():
                continue
            try:
                code = run.handle.exit_code()
            except Exception as err:  # Parsl could not run the launcher at all
                code = None
                log.error("trial %d: launcher error %s", run.trial.trial_id, err)
            outcome = classify(Path(run.trial.trial_dir), code, run.launched_at, run.killed_for,
                               self.settings.trial_walltime, self.executor.env)
            del self.running[index]
            self._record(run, outcome)
            self.on_progress(self)

    def _record(self, run: Running, outcome: Outcome) -> None:
        trial = run.trial
        log.info("trial %d %s%s", trial.trial_id, outcome.status, f": {outcome.error}" if outcome.error else "")
        if outcome.status == "discarded" and run.discarded is not None:
            self._discard(trial, run.discarded, outcome.result)
            return
        retry = trial.attempt < self.settings.max_attempts
        if outcome.node_fault is not None:
            for node in outcome.node_fault.nodes:
                for event in self.allocation.exclude(node, outcome.error):
                    log.warning("allocation: %s", event.to_dict())
                self.db.exclude_node(node, outcome.error)
            if retry:
                self.db.requeue(trial.trial_id, outcome.error)
                return
        if outcome.status == "interrupted" and not self.stopping and retry:
            self.db.requeue(trial.trial_id, outcome.error or "interrupted")  # e.g. its step was signalled
            return
        if outcome.status == "completed" and self.fidelity is not None and outcome.result:
            self.fidelity.record_passed(trial.trial_id, outcome.result.get("epochs", []))
        self.db.mark_finished(trial.trial_id, outcome.status, outcome.objective, outcome.error, outcome.result)
        if outcome.status != "interrupted":
            self.proposer.finished(trial.params, outcome.objective)
            self.breaker.record(failed_at_startup(outcome.status, outcome.result), run.slice.index, outcome.error)

    def _discard(self, trial: Trial, decision: RungDecision, result: dict | None) -> None:
        """Record a trial stopped at a rung, with its partial curve, and tell the optimiser the value the
        rule judged (a real measurement at lower fidelity: neither a failure nor a made-up number)."""
        self.db.mark_finished(trial.trial_id, "discarded", decision.value, None, result, discarded_at=decision.rung)
        self.proposer.finished(trial.params, decision.value)

    def _shutdown(self) -> None:
        """Stop every running trial (each checkpoints and reports interrupted), record them, return."""
        log.warning("stopping on %s: interrupting %d running trials", self.stopping, len(self.running))
        for run in self.running.values():
            if run.killed_for is None:
                self._kill(run, KILLED_AT_SHUTDOWN)
        deadline = time.time() + self.settings.kill_grace + 2 * FORCE_WAIT + 5
        while self.running and time.time() < deadline:
            self._collect()
            time.sleep(0.1)
        for run in self.running.values():  # launchers that would not die: the next manager stops them
            log.error("trial %d did not stop; left as running for the next manager", run.trial.trial_id)

