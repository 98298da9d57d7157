"""Wiring: a run directory -> site, slices, database, optimiser, launcher -> a running Manager.

Also the two rules around it: one manager per run directory (a lock), and
datasets checked for existence before anything starts (the manager never
opens them: that would import ADIOS2 and with it torch).
"""
from __future__ import annotations

import fcntl
import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from search_spaces import load_space
from trainer import typed
from trainer.errors import UserError

from orchestrator import runconfig
from orchestrator.allocation import Allocation, discover_nodes
from orchestrator.display import LiveStatus
from orchestrator.launch import Launcher
from orchestrator.manager import Manager
from orchestrator.runconfig import RunSettings
from orchestrator.search import make_optimizer
from orchestrator.sites import SiteConfig, load_site
from orchestrator.sources import HpoSource, TrialSource
from orchestrator.trialdb import TrialDB

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
              make_source: Callable[[TrialDB], TrialSource], trial_root: Path,
              env: dict[str, str] | None = None, display: LiveStatus | None = None) -> int:
    """Run one phase's trials on the allocation until its source is exhausted; the exit status."""
    allocation = Allocation(discover_nodes(site, settings.nodes),
                            settings.nodes_per_trial or site.nodes_per_trial)
    handler = _log_to(run_dir)
    try:
        with run_lock(run_dir), TrialDB(run_dir) as db:
            source = make_source(db)
            with Launcher(site, run_dir, max_trials=len(allocation.slices), env=env) as launcher:
                manager = Manager(settings, db, allocation, launcher, source, trial_root, display)
                try:
                    return manager.run()
                finally:
                    if display is not None:
                        display.close(manager)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def run_hpo(run_dir: Path, env: dict[str, str] | None = None, quiet: bool = False) -> int:
    """`gfm-hpo run RUN_DIR`: the HPO phase of a run directory, resuming whatever is on record."""
    run_dir = Path(run_dir).resolve()
    settings = runconfig.load(run_dir)
    site = load_site(settings.site)
    space = load_space(settings.space)
    check_datasets(settings.data)
    base = runconfig.base_trial(settings, threads=site.cpus_per_rank)

    def hpo_source(db: TrialDB) -> TrialSource:
        if db.get_meta("space") is None:
            db.set_meta("space", space.to_mapping())
            db.set_meta("settings", typed.to_dict(settings))
            db.set_meta("command", sys.argv)
        optimizer = make_optimizer(space, settings.seed, run_dir / "optimizer")
        return HpoSource(space, optimizer, base, settings.max_evals)

    return run_phase(run_dir, settings, site, hpo_source, run_dir / runconfig.TRIALS_DIR, env,
                     None if quiet else LiveStatus())
