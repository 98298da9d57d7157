"""TRIAL_DIR/result.json: everything the manager learns about a trial (contract 2).

Rank 0 rewrites it atomically after every epoch and at every change of
status. The manager never parses logs: this file is the whole interface.
Objective for the optimiser: the best validation loss over the epochs run.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from trainer.contract.atomicio import atomic_write_json
from trainer.contract.trialconfig import RESULT_FILE

# Exit codes of `gfm-train`, distinct so the manager can tell what happened
# even when result.json could not be written (e.g. a bad trial directory).
EXIT_COMPLETED = 0
EXIT_FAILED = 1
EXIT_BAD_CONFIG = 2
EXIT_INTERRUPTED = 75   # sysexits' EX_TEMPFAIL: stopped by a signal, resumable from its checkpoint

STATUSES = ("running", "completed", "failed", "interrupted")
STOP_REASONS = ("epoch budget", "step budget", "wall time", "early stopping")


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_loss: float
    val_energy_mae: float     # meV/atom
    val_force_mae: float      # meV/Å
    seconds: float
    graphs_per_second: float
    learning_rate: float      # of the epoch's last step
    steps: int = 0            # optimiser steps of the trial by the end of this epoch (the last may be partial)


@dataclass
class Result:
    name: str
    status: str = "running"
    error: str | None = None
    epochs: list[EpochRecord] = field(default_factory=list)
    best_val_loss: float | None = None
    best_epoch: int | None = None
    num_parameters: int | None = None
    world_size: int = 1
    hostnames: list[str] = field(default_factory=list)
    device: str = "cpu"
    seconds_per_epoch: float | None = None
    startup_seconds: float | None = None
    wall_time: float = 0.0
    peak_memory_bytes: int | None = None
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    resumed_from_epoch: int | None = None
    stop_reason: str | None = None     # one of STOP_REASONS when completed
    steps_done: int = 0                # optimiser steps
    steps_per_epoch: int | None = None
    planned_steps: int | None = None   # the budget in steps (null: only the wall time ends training)

    @property
    def objective(self) -> float | None:
        return self.best_val_loss

    def add_epoch(self, record: EpochRecord) -> bool:
        """Append an epoch; True when it is the best so far."""
        self.epochs.append(record)
        self.seconds_per_epoch = sum(e.seconds for e in self.epochs) / len(self.epochs)
        if self.best_val_loss is None or record.val_loss < self.best_val_loss:
            self.best_val_loss, self.best_epoch = record.val_loss, record.epoch
            return True
        return False

    def to_json(self) -> dict:
        data = asdict(self)
        data["objective"] = self.objective
        data["epochs_done"] = len(self.epochs)
        return data

    @staticmethod
    def from_json(data: dict) -> "Result":
        data = {k: v for k, v in data.items() if k not in ("objective", "epochs_done")}
        data["epochs"] = [EpochRecord(**e) for e in data.get("epochs", [])]
        return Result(**data)

    def write(self, trial_dir: Path) -> None:
        if self.status not in ("running",):
            self.finished_at = time.time()
        self.wall_time = (self.finished_at or time.time()) - self.started_at
        atomic_write_json(Path(trial_dir) / RESULT_FILE, self.to_json())
