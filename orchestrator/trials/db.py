"""The trial database: every trial, its state changes, curves and excluded nodes (contract 4).

One SQLite file per run (RUN_DIR/trials.db) in WAL mode: the manager is the
only writer and commits each state change in its own short transaction
(synchronous=FULL, so a commit survives a crash of the manager or the node)
before it acts on it. Readers (`gfm-hpo status`, Jupyter through
`load_trials`/`load_curves` of frames.py) open it read-only and never block the writer.
WAL needs shared memory: readers on another host (a login node over a network
file system) read the snapshot the manager publishes instead (snapshot.py).

A trial moves  queued -> running -> completed | failed | interrupted;
`requeue` sends a running, interrupted or failed trial back to queued (the
next attempt). A completed trial is never run again; every change is an event.
"""
from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from orchestrator.trials import dbfile
from orchestrator.trials.rungs import RungRecords
from orchestrator.trials.schema import (CURVE_COLUMNS, DB_NAME, FINISHED, ORIGINS, PHASES, STATUSES, TRANSITIONS,
                                      Trial, TransitionError, database_path, trial_from_row)
from trainer.contract.errors import UserError

__all__ = ["DB_NAME", "STATUSES", "Trial", "TrialDB", "TransitionError", "database_path"]


class TrialDB(RungRecords):
    """The manager's (single) writing connection. Safe to call from Parsl callback threads."""

    def __init__(self, path: str | Path):
        self.path = database_path(path)
        if not self.path.exists():
            dbfile.create(self.path)
        self._lock = threading.Lock()
        try:
            self._db = dbfile.connect(self.path)
        except sqlite3.DatabaseError as err:
            raise UserError(f"{self.path}: not a trial database ({err})") from None
        try:
            dbfile.upgrade(self._db, self.path)
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def backup(self, target: sqlite3.Connection) -> float:
        """Copy the whole database into `target` in one step, between two transactions (so the
        copy is one committed state); the time it was taken. For trials/snapshot.py."""
        with self._lock:
            self._db.backup(target)
            return time.time()

    def changes(self) -> int:
        """Rows changed through this connection so far: a cheap "anything new?" for snapshots."""
        with self._lock:
            return self._db.total_changes

    def __enter__(self) -> "TrialDB":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- state changes (each one a committed transaction) --------------------------

    def create_trial(self, phase: str, params: dict[str, Any], trial_dir: str | None = None,
                     parent_id: int | None = None, prepare: Callable[[str], None] | None = None,
                     origin: str | None = None) -> int:
        """A new queued trial; `trial_dir` may contain "{trial_id}" (e.g. "trials/{trial_id:05d}");
        `origin` is where an HPO trial's configuration came from (one of schema.ORIGINS).

        `prepare(trial_dir)` (writing the trial's trial.yaml) runs inside the
        transaction: a manager killed between the two would otherwise leave a
        queued trial with nothing to run, while one killed inside it leaves
        no row, and the directory is prepared again under the same id.
        """
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        if origin is not None and origin not in ORIGINS:
            raise ValueError(f"origin must be one of {tuple(ORIGINS)}, got {origin!r}")
        now = time.time()
        with self._transaction() as db:
            cursor = db.execute("INSERT INTO trials (phase, status, params, parent_id, submitted_at, origin) "
                                "VALUES (?, 'queued', ?, ?, ?, ?)", (phase, _json(params), parent_id, now, origin))
            trial_id = cursor.lastrowid
            if trial_dir is not None:
                trial_dir = str(trial_dir).format(trial_id=trial_id)
                db.execute("UPDATE trials SET trial_dir = ? WHERE trial_id = ?", (trial_dir, trial_id))
                if prepare is not None:
                    prepare(trial_dir)
            self._event(db, trial_id, "queued", now, {"phase": phase})
        return trial_id

    def mark_running(self, trial_id: int, slice_index: int | None, nodes: Sequence[str]) -> int:
        """The trial was launched on a slice; returns its attempt number (1 for the first launch)."""
        now = time.time()
        with self._transaction() as db:
            trial = self._move(db, trial_id, "running")
            attempt = trial["attempt"] + 1
            db.execute("UPDATE trials SET status = 'running', slice_index = ?, nodes = ?, attempt = ?, "
                       "started_at = ?, finished_at = NULL WHERE trial_id = ?",
                       (slice_index, _json(list(nodes)), attempt, now, trial_id))
            self._event(db, trial_id, "running", now, {"slice": slice_index, "nodes": list(nodes), "attempt": attempt})
        return attempt

    def mark_finished(self, trial_id: int, status: str, objective: float | None = None,
                      error: str | None = None, result: dict[str, Any] | None = None,
                      discarded_at: int | None = None) -> None:
        """Record the outcome. `result` is the trial's parsed result.json (curves, parameter count,
        wall time); the objective defaults to its best validation loss. A completed trial needs a
        finite objective: a NaN loss is a failure (contract 3), so say so with status="failed".
        Only completed and discarded trials keep an objective; a discarded one's is the value its
        rung judged (best validation loss up to `discarded_at` epochs), given by the caller."""
        if status not in FINISHED:
            raise ValueError(f"status must be one of {FINISHED}, got {status!r}")
        if (status == "discarded") != (discarded_at is not None):
            raise TransitionError(f"trial {trial_id}: discarded_at goes with status discarded, and only with it")
        if status == "discarded" and (objective is None or not math.isfinite(objective)):
            raise TransitionError(f"trial {trial_id}: a discarded trial keeps the finite value its rung judged")
        if status not in ("completed", "discarded"):
            objective = None  # only a completed trial has an objective; its curve shows how far a failure got
        elif objective is None and result is not None:
            objective = result.get("objective", result.get("best_val_loss"))
        if objective is not None and not math.isfinite(objective):
            objective = None
        if status == "completed" and objective is None:
            raise TransitionError(f"trial {trial_id}: completed without a finite objective; record it as failed")
        if status == "failed" and not error:
            raise TransitionError(f"trial {trial_id}: a failure needs its reason (error)")
        now = time.time()
        with self._transaction() as db:
            self._move(db, trial_id, status)
            db.execute("UPDATE trials SET status = ?, objective = ?, error = ?, finished_at = ?, discarded_at = ? "
                       "WHERE trial_id = ?", (status, objective, error, now, discarded_at, trial_id))
            if result is not None:
                self._store_result(db, trial_id, result)
            self._event(db, trial_id, status, now, {"objective": objective, "error": error,
                                                    **({"discarded_at": discarded_at} if discarded_at else {})})

    def update_progress(self, trial_id: int, result: dict[str, Any]) -> None:
        """Store a running trial's latest result.json (curves so far) without changing its status."""
        with self._transaction() as db:
            status = self._row(db, trial_id)["status"]
            if status != "running":
                raise TransitionError(f"trial {trial_id}: progress reported while {status}")
            self._store_result(db, trial_id, result)

    def requeue(self, trial_id: int, reason: str) -> None:
        """Queue a trial again (resume, retry after a node failure); it keeps its id, params and curve."""
        now = time.time()
        with self._transaction() as db:
            previous = self._move(db, trial_id, "queued")
            db.execute("UPDATE trials SET status = 'queued', slice_index = NULL, nodes = NULL, started_at = NULL, "
                       "finished_at = NULL, objective = NULL, error = NULL WHERE trial_id = ?", (trial_id,))
            self._event(db, trial_id, "queued", now, {"requeued_from": previous["status"], "reason": reason,
                                                      "nodes": _unjson(previous["nodes"]), "error": previous["error"]})

    def exclude_node(self, node: str, reason: str) -> None:
        with self._transaction() as db:
            db.execute("INSERT INTO excluded_nodes (node, reason, at) VALUES (?, ?, ?) "
                       "ON CONFLICT (node) DO UPDATE SET reason = excluded.reason, at = excluded.at",
                       (node, reason, time.time()))

    def set_meta(self, key: str, value: Any) -> None:
        with self._transaction() as db:
            db.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                       "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, _json(value)))

    # -- queries ---------------------------------------------------------------------

    def get(self, trial_id: int) -> Trial:
        with self._transaction(write=False) as db:
            return trial_from_row(self._row(db, trial_id))

    def trials(self, phase: str | None = None, statuses: Sequence[str] | None = None) -> list[Trial]:
        """Trials in id order, optionally of one phase and some statuses."""
        clauses, args = [], []
        if phase is not None:
            clauses.append("phase = ?")
            args.append(phase)
        if statuses is not None:
            unknown = set(statuses) - set(STATUSES)
            if unknown:
                raise ValueError(f"unknown status {sorted(unknown)}; statuses are {STATUSES}")
            clauses.append(f"status IN ({', '.join('?' * len(statuses))})")
            args += list(statuses)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._transaction(write=False) as db:
            rows = db.execute(f"SELECT * FROM trials {where} ORDER BY trial_id", args).fetchall()
        return [trial_from_row(row) for row in rows]

    def counts(self, phase: str | None = None) -> dict[str, int]:
        found = {status: 0 for status in STATUSES}
        found.update({status: n for status, n in self._query(
            "SELECT status, COUNT(*) FROM trials WHERE ? IS NULL OR phase = ? GROUP BY status", (phase, phase))})
        return found

    def best(self, phase: str | None = None) -> tuple[int, float] | None:
        """(trial id, objective) of the best completed trial, or None (one indexed query: cheap to poll)."""
        rows = self._query("SELECT trial_id, objective FROM trials WHERE status = 'completed' "
                           "AND (? IS NULL OR phase = ?) ORDER BY objective, trial_id LIMIT 1", (phase, phase))
        return (rows[0][0], rows[0][1]) if rows else None

    def latest_epochs(self, trial_ids: Sequence[int]) -> dict[int, tuple[int, float | None]]:
        """{trial id: (its last recorded epoch, that epoch's validation loss)} for those with a curve."""
        if not trial_ids:
            return {}
        marks = ", ".join("?" * len(trial_ids))
        rows = self._query(f"SELECT trial_id, epoch, val_loss FROM curves WHERE trial_id IN ({marks}) "
                           "AND epoch = (SELECT MAX(epoch) FROM curves AS c WHERE c.trial_id = curves.trial_id)",
                           list(trial_ids))
        return {trial_id: (epoch, val_loss) for trial_id, epoch, val_loss in rows}

    def excluded_nodes(self) -> dict[str, str]:
        return dict(self._query("SELECT node, reason FROM excluded_nodes ORDER BY at, node"))

    def get_meta(self, key: str, default: Any = None) -> Any:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else default

    def events(self, trial_id: int) -> list[tuple[float, str, dict[str, Any]]]:
        rows = self._query("SELECT at, status, detail FROM events WHERE trial_id = ? ORDER BY event_id", (trial_id,))
        return [(at, status, json.loads(detail)) for at, status, detail in rows]

    # -- internals ---------------------------------------------------------------------

    @contextmanager
    def _transaction(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        # BEGIN IMMEDIATE takes the write lock up front, so a transaction never fails half-way on a lock.
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        with self._transaction(write=False) as db:
            return [tuple(row) for row in db.execute(sql, args).fetchall()]

    @staticmethod
    def _row(db: sqlite3.Connection, trial_id: int) -> sqlite3.Row:
        row = db.execute("SELECT * FROM trials WHERE trial_id = ?", (trial_id,)).fetchone()
        if row is None:
            raise KeyError(f"no trial {trial_id}")
        return row

    def _move(self, db: sqlite3.Connection, trial_id: int, status: str) -> sqlite3.Row:
        row = self._row(db, trial_id)
        if status not in TRANSITIONS[row["status"]]:
            raise TransitionError(f"trial {trial_id}: cannot go from {row['status']} to {status}")
        return row

    @staticmethod
    def _event(db: sqlite3.Connection, trial_id: int, status: str, at: float, detail: dict[str, Any]) -> None:
        db.execute("INSERT INTO events (trial_id, at, status, detail) VALUES (?, ?, ?, ?)",
                   (trial_id, at, status, _json(detail)))

    @staticmethod
    def _store_result(db: sqlite3.Connection, trial_id: int, result: dict[str, Any]) -> None:
        epochs = result.get("epochs") or []
        db.executemany(
            f"INSERT OR REPLACE INTO curves (trial_id, epoch, {', '.join(CURVE_COLUMNS)}) "
            f"VALUES (?, ?, {', '.join('?' * len(CURVE_COLUMNS))})",
            [(trial_id, e["epoch"], *(_finite(e.get(c)) for c in CURVE_COLUMNS)) for e in epochs])
        db.execute("UPDATE trials SET epochs_done = ?, num_parameters = ?, wall_time = ? WHERE trial_id = ?",
                   (result.get("epochs_done", len(epochs)), result.get("num_parameters"),
                    _finite(result.get("wall_time")), trial_id))


# -- helpers -------------------------------------------------------------------------

def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=False, allow_nan=False)


def _unjson(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
