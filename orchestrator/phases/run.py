"""Running a phase: a run directory -> slices, database, trial executor, proposer -> a running Manager.

Also the two rules around it: one manager per run directory (a lock), and
datasets checked for existence before anything starts (the manager never
opens them: that would import ADIOS2 and with it torch).
"""
from __future__ import annotations

import fcntl
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

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


def check_datasets(paths: list[str]) -> None:
    for path in paths:
        if not Path(path).exists():
            raise UserError(f"{path}: no such dataset (make one with gfm-data convert)")


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
                    return manager.run()
                finally:
                    if display is not None:
                        display.close(manager)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
