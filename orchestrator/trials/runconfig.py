"""A run directory and its settings: everything `gfm-hpo run` and `resume` need, in RUN_DIR/run.yaml.

    RUN_DIR/run.yaml        these settings (typed; written once by launch)
    RUN_DIR/trials.db       the trial database (the truth, contract 4)
    RUN_DIR/trials.snapshot.db  its read-only copy for other hosts; manager.json: the manager's host, pid
    RUN_DIR/trials/NNNNN/   one directory per HPO trial (contract 1)
    RUN_DIR/ensemble/...    the ensemble phase's members
    RUN_DIR/manager.log     the manager's log
    RUN_DIR/optimizer/      the optimiser's own files
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trainer.contract import typed
from trainer.contract.atomicio import atomic_write_text
from trainer.contract.errors import UserError
from trainer.contract.trialconfig import DataConfig, SourceConfig, TrialConfig
from trainer.contract.typed import Invalid, bounded

RUN_FILE = "run.yaml"
LOG_FILE = "manager.log"
TRIALS_DIR = "trials"


@dataclass(frozen=True)
class RunSettings:
    site: str = field(metadata={"doc": "site name (site_configs/) or path to a site YAML"})
    data: list[str] = field(metadata={"doc": "datasets (.bp) every trial trains on"})
    nodes: int | None = bounded(None, low=1, doc="nodes to use; null: the whole allocation")
    nodes_per_trial: int | None = bounded(None, low=1, doc="slice size; null: the site's default")
    max_evals: int = bounded(100, low=1, doc="HPO trials to run (failed ones count)")
    epochs: int | None = bounded(10, low=1, doc="constant fidelity: epochs every HPO trial trains; null: steps")
    steps: int | None = bounded(None, low=1, doc="constant fidelity in optimiser steps instead of epochs")
    space: str | None = field(default=None, metadata={"doc": "search space file or packaged name; null: Table IV"})
    seed: int = bounded(0, low=0, doc="seed of the optimiser and of every trial")
    trial_walltime: float | None = bounded(None, low=0.0, low_exclusive=True,
                                           doc="seconds a trial may run before the manager kills it (a failure)")
    kill_grace: float = bounded(30.0, low=0.0, doc="seconds between SIGTERM and SIGKILL when stopping a trial")
    timeout: float | None = bounded(None, low=0.0, low_exclusive=True,
                                    doc="seconds after which no new trial starts (running ones finish)")
    max_attempts: int = bounded(3, low=1, doc="launches of one trial (retries after node failures)")
    max_startup_failures: int = bounded(
        5, low=1, doc="stop the phase after this many consecutive trials failed before the trainer reported "
                      "(no result.json), at least one on every slice (a misconfigured site or trainer command)")
    snapshot_interval: float = bounded(5.0, low=0.0, low_exclusive=True,
                                       doc="seconds between the trial database snapshots the manager publishes "
                                           "for readers on other hosts (trials.snapshot.db)")
    walltime: str | None = field(default=None, metadata={"doc": "batch job wall time; null: the site's"})
    warm_start: str | None = field(default=None, metadata={"doc": "an earlier run directory whose finished "
                                                                  "trials the optimiser is told first"})
    warm_start_any_fidelity: bool = field(default=False, metadata={"doc": "warm start from a run of another "
                                                                          "epoch or step budget"})
    trial: dict[str, Any] = field(default_factory=dict,
                                  metadata={"doc": "dotted trial.yaml overrides, e.g. training.batch_size: 64"})

    def check(self) -> None:
        if not self.data:
            raise Invalid("data", "at least one dataset is needed (--data FILE.bp)")
        if (self.epochs is None) == (self.steps is None):
            raise Invalid("steps", "the fidelity is either epochs or steps: give one of them")


def save(run_dir: Path, settings: RunSettings) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / RUN_FILE, yaml.safe_dump(typed.to_dict(settings), sort_keys=False))


def load(run_dir: Path) -> RunSettings:
    path = Path(run_dir) / RUN_FILE
    if not path.exists():
        raise UserError(f"{run_dir}: not a run directory (no {RUN_FILE}); start one with gfm-hpo launch")
    return typed.load(RunSettings, path)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`--set training.batch_size=64` pairs as a mapping; values are read as YAML scalars."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or "." not in key:
            raise UserError(f"--set {pair}: expected SECTION.KEY=VALUE, e.g. training.batch_size=64")
        overrides[key] = yaml.safe_load(value)
    return overrides


def base_trial(settings: RunSettings, threads: int | None) -> TrialConfig:
    """The trial every proposal is written into: data, budget (the fidelity), seed, threads, overrides."""
    config = TrialConfig(data=DataConfig(sources=[SourceConfig(path=str(Path(p).resolve())) for p in settings.data]))
    data = typed.to_dict(config)
    # The same budget for every trial: so many epochs, or exactly so many steps whatever the data.
    data["training"].update(epochs=settings.epochs, max_steps=settings.steps, seed=settings.seed, threads=threads)
    for dotted, value in settings.trial.items():
        typed.set_dotted(data, dotted, value, where="trial override", create=False)
    return typed.build(TrialConfig, data, origin=f"{RUN_FILE}: trial")
