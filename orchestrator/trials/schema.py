"""What the trial database stores: tables, statuses and their allowed moves, the Trial record.

Kept apart from orchestrator.trialdb (which changes and reads it) so that the
layout can be read in one place. Times are unix seconds (UTC); params, nodes
and event details are JSON text.
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DB_NAME = "trials.db"
SCHEMA_VERSION = 3
PHASES = ("hpo", "ensemble")
STATUSES = ("queued", "running", "completed", "failed", "interrupted", "discarded")
FINISHED = ("completed", "failed", "interrupted", "discarded")
# Allowed moves; requeue() is the only way back to "queued".
TRANSITIONS = {
    "queued": {"running", "failed", "interrupted"},  # failed/interrupted: never started (launch error, shutdown)
    "running": {"completed", "failed", "interrupted", "queued", "discarded"},
    "interrupted": {"queued"},
    "failed": {"queued"},
    "completed": set(),
    "discarded": set(),   # stopped at a rung (ASHA): never resumed, see orchestrator/search/fidelity.py
}
CURVE_COLUMNS = ("train_loss", "val_loss", "val_energy_mae", "val_force_mae", "seconds",
                 "learning_rate", "graphs_per_second")
BUSY_TIMEOUT_MS = 60_000

TRIALS_TABLE = f"""
CREATE TABLE IF NOT EXISTS {{name}} (
    trial_id       INTEGER PRIMARY KEY AUTOINCREMENT,
    phase          TEXT NOT NULL CHECK (phase IN {PHASES}),
    status         TEXT NOT NULL CHECK (status IN {STATUSES}),
    params         TEXT NOT NULL,             -- JSON: the searched hyperparameters
    trial_dir      TEXT,
    parent_id      INTEGER REFERENCES trials(trial_id),  -- ensemble member: the HPO trial it retrains
    slice_index    INTEGER,
    nodes          TEXT,                      -- JSON list of host names
    attempt        INTEGER NOT NULL DEFAULT 0,
    submitted_at   REAL NOT NULL,             -- unix seconds
    started_at     REAL,
    finished_at    REAL,
    objective      REAL,                      -- best validation loss (lower is better)
    epochs_done    INTEGER,
    num_parameters INTEGER,
    wall_time      REAL,
    error          TEXT,
    origin         TEXT,                      -- HPO: where its configuration came from (ORIGINS)
    discarded_at   INTEGER                    -- ASHA: the rung (epoch) at which it was discarded
)"""
RUNGS_TABLE = """
CREATE TABLE IF NOT EXISTS rungs (
    trial_id INTEGER NOT NULL REFERENCES trials(trial_id),
    rung     INTEGER NOT NULL,                -- epochs
    value    REAL NOT NULL,                   -- best validation loss up to the rung: what the rule compared
    kept     INTEGER NOT NULL,                -- 1: continued past the rung, 0: discarded there
    rank     INTEGER NOT NULL,                -- its place among the values at the rung when judged (1 = best)
    judged   INTEGER NOT NULL,                -- how many values the rung held then, its own included
    at       REAL NOT NULL,
    PRIMARY KEY (trial_id, rung)
)"""
SCHEMA = TRIALS_TABLE.format(name="trials") + ";" + RUNGS_TABLE + ";" + f"""
CREATE INDEX IF NOT EXISTS trials_by_status ON trials (phase, status);
CREATE TABLE IF NOT EXISTS events (
    event_id INTEGER PRIMARY KEY AUTOINCREMENT,
    trial_id INTEGER NOT NULL REFERENCES trials(trial_id),
    at       REAL NOT NULL,
    status   TEXT NOT NULL,
    detail   TEXT                             -- JSON
);
CREATE TABLE IF NOT EXISTS curves (
    trial_id INTEGER NOT NULL REFERENCES trials(trial_id),
    epoch    INTEGER NOT NULL,
    {", ".join(f"{c} REAL" for c in CURVE_COLUMNS)},
    PRIMARY KEY (trial_id, epoch)
);
CREATE TABLE IF NOT EXISTS excluded_nodes (
    node   TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    at     REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL                        -- JSON
);
"""


# Version 1 -> 2 added trials.origin; a version-1 database gets the column (NULL: not recorded) when
# a manager opens it, and readers of one that no manager has opened yet show the origin as unknown.
# Version 2 -> 3 added the status "discarded" (its CHECK constraint can only change by rebuilding the
# table: SQLite's create-copy-drop-rename, run with foreign keys off by dbfile.upgrade), trials.discarded_at
# and the rungs table.
_V2_COLUMNS = ("trial_id, phase, status, params, trial_dir, parent_id, slice_index, nodes, attempt, submitted_at, "
               "started_at, finished_at, objective, epochs_done, num_parameters, wall_time, error, origin")
MIGRATIONS = {1: ["ALTER TABLE trials ADD COLUMN origin TEXT"],
              2: [TRIALS_TABLE.format(name="trials_v3"),
                  f"INSERT INTO trials_v3 ({_V2_COLUMNS}) SELECT {_V2_COLUMNS} FROM trials",
                  "DROP TABLE trials", "ALTER TABLE trials_v3 RENAME TO trials",
                  "CREATE INDEX IF NOT EXISTS trials_by_status ON trials (phase, status)", RUNGS_TABLE]}

# Where an HPO trial's configuration came from, decided when it is proposed (search/base.py):
ORIGINS = {
    "initial_points": "the space file's initial_points",
    "initial_design": "the optimiser's random initial design",   # before its surrogate is fitted
    "surrogate": "the optimiser's surrogate model",
    "random": "random",                                          # random search, or a repeat replaced
}


class TransitionError(ValueError):
    """A state change that the trial's current status does not allow (a bug in the caller)."""


@dataclass(frozen=True)
class Trial:
    trial_id: int
    phase: str
    status: str
    params: dict[str, Any]
    trial_dir: str | None
    parent_id: int | None
    slice_index: int | None
    nodes: list[str] | None
    attempt: int
    submitted_at: float
    started_at: float | None
    finished_at: float | None
    objective: float | None
    epochs_done: int | None
    num_parameters: int | None
    wall_time: float | None
    error: str | None
    origin: str | None = None
    discarded_at: int | None = None


def database_path(run_dir: str | Path) -> Path:
    """RUN_DIR/trials.db; a path that already names a .db file is taken as is."""
    run_dir = Path(run_dir)
    return run_dir if run_dir.suffix == ".db" else run_dir / DB_NAME


def trial_from_row(row: sqlite3.Row) -> Trial:
    data = dict(row)
    data["params"] = json.loads(data["params"])
    data["nodes"] = None if data["nodes"] is None else json.loads(data["nodes"])
    return Trial(**data)
