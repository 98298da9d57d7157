"""Running a phase: a run directory -> slices, database, trial executor, proposer -> a running Manager.

Also the rules around it: one manager per run directory (a lock); datasets
opened and checked as a trial would before anything starts (through the
torch-free trainer/data/header.py: the rest of trainer/data imports torch);
and a phase whose every trial failed for one reason ends with that reason and
a non-zero exit status instead of 0.
"""
from __future__ import annotations

import fcntl
import logging
import os
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from trainer.contract.atomicio import atomic_output
from trainer.contract.errors import UserError

from orchestrator.allocation import Allocation, discover_nodes
from orchestrator.launch.executor import TrialExecutor
from orchestrator.manager import Manager
from orchestrator.search.fidelity import Asha
from orchestrator.search.proposers import Proposer
from orchestrator.sites import SiteConfig
from orchestrator.trials import runconfig
from orchestrator.trials.db import TrialDB
from orchestrator.trials.runconfig import RunSettings
from orchestrator.views.display import LiveStatus

LOCK_FILE = "manager.lock"


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold RUN_DIR/manager.lock; a second manager on the same run directory is refused."""
    path = run_dir / LOCK_FILE
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise UserError(f"{run_dir}: another manager (pid {holder}) is running on this run directory") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield


class PhaseFailed(UserError):
    """Every trial of a phase failed for the same reason: the run is misconfigured, not unlucky."""

    exit_code = 1


def check_datasets(paths: list[str]) -> None:
    from trainer.data.header import check_dataset

    for path in paths:
        check_dataset(path)


def check_outcome(db: TrialDB, phase: str) -> None:
    """A PhaseFailed when the phase ran trials and every one failed: its reason, said once."""
    trials = db.trials(phase)
    if not trials or any(t.status != "failed" for t in trials):
        return
    reasons = Counter(t.error or "no reason recorded" for t in trials)
    (reason, count), = reasons.most_common(1)
    if len(reasons) == 1:
        raise PhaseFailed(f"all {len(trials)} {phase} trials failed: {reason}")
    raise PhaseFailed(f"all {len(trials)} {phase} trials failed, for {len(reasons)} different reasons "
                      f"(see gfm-hpo status); the most common ({count}): {reason}")


def check_run_dir(run_dir: Path) -> None:
    """Refuse a --run-dir that cannot become a new run directory, before anything is written."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{run_dir}: not a directory (--run-dir names the run directory to create)")
    if (run_dir / runconfig.RUN_FILE).exists():
        raise UserError(f"{run_dir}: already holds a run; continue it with gfm-hpo resume {run_dir}")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        raise UserError(f"{run_dir}: not empty and holds no run; give a new --run-dir")
    parent = run_dir.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{run_dir}: cannot be created: {parent} is not a directory")


@contextmanager
def new_run_dir(run_dir: Path) -> Iterator[Path]:
    """Yield a temporary sibling of RUN_DIR to build the run in; rename it to RUN_DIR on success.

    A launch that fails half-way (a setting only the optimiser checks, a batch
    system that refuses the job) leaves no directory that would block both a
    second launch (it "holds a run") and a resume (its files are incomplete).
    """
    check_run_dir(run_dir)
    given_empty = run_dir.is_dir()
    try:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        if given_empty:
            run_dir.rmdir()  # empty (checked above): rename cannot publish over it otherwise
        with atomic_output(run_dir, overwrite=False) as tmp:
            tmp.mkdir()
            yield tmp
    except OSError as err:
        raise UserError(f"{run_dir}: cannot create the run directory ({err.strerror or err})") from None
    finally:
        if given_empty and not run_dir.exists():
            run_dir.mkdir()  # a refused launch leaves the user's empty directory as it was


def _log_to(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / runconfig.LOG_FILE)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler


def run_phase(run_dir: Path, settings: RunSettings, site: SiteConfig,
              make_proposer: Callable[[TrialDB], Proposer], trial_root: Path,
              env: dict[str, str] | None = None, display: LiveStatus | None = None,
              make_fidelity: Callable[[TrialDB], Asha | None] | None = None) -> int:
    """Run one phase's trials on the allocation until its proposer is exhausted; the exit status.
    `make_fidelity`: the phase's rung judge (ASHA), None for a constant fidelity."""
    allocation = Allocation(discover_nodes(site, settings.nodes),
                            settings.nodes_per_trial or site.nodes_per_trial)
    handler = _log_to(run_dir)
    try:
        with run_lock(run_dir), TrialDB(run_dir) as db:
            proposer = make_proposer(db)
            fidelity = make_fidelity(db) if make_fidelity else None
            with TrialExecutor(site, run_dir, max_trials=len(allocation.slices), env=env) as executor:
                manager = Manager(settings, db, allocation, executor, proposer, trial_root, display, fidelity)
                try:
                    status = manager.run()
                finally:
                    if display is not None:
                        display.close(manager)
            if status == 0:
                check_outcome(db, proposer.phase)
            return status
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
