"""A read-only copy of the trial database for readers on other hosts (RUN_DIR/trials.snapshot.db).

The live database is in WAL mode, whose readers share memory (the -shm file) with the writer:
that works only for processes on one host. The manager runs on a compute node and users read
from login nodes over Lustre/GPFS, so the manager publishes a consistent copy (SQLite's backup
API, taken under the writer's lock, into a temporary file in the run directory, fsync, rename)
every `snapshot_interval` seconds and after each batch of state changes, and a final one when it
ends. A reader opens the snapshot `immutable`: the file it opened is never written again (the
next snapshot replaces it by rename), so no locking, shared memory or journal is involved.

The manager also records its host and pid (RUN_DIR/manager.json). Readers choose (`source`):
"auto" reads the snapshot where that record names another host and the live database otherwise
(on the manager's host it is exact and always current, and a database no manager has owned has
no snapshot); "snapshot" and "live" force one.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from trainer.contract.atomicio import atomic_output, atomic_write_text
from trainer.contract.errors import UserError

from orchestrator.trials.schema import database_path

if TYPE_CHECKING:
    from orchestrator.trials.db import TrialDB

log = logging.getLogger(__name__)

SNAPSHOT_NAME = "trials.snapshot.db"
OWNER_FILE = "manager.json"
SNAPSHOT_AT = "snapshot_at"        # the snapshot's own meta key: when it was taken (the manager's clock)
SOURCES = ("auto", "live", "snapshot")
# After a state change the loop publishes at once, but not more often than this: at the paper's
# scale trials end every ~0.1 s, and a copy per change would cost the loop more than the trials.
MIN_GAP_S = 1.0


def snapshot_path(run_dir: str | Path) -> Path:
    return database_path(run_dir).with_name(SNAPSHOT_NAME)


def this_host() -> str:
    return socket.gethostname()


def record_owner(run_dir: str | Path) -> None:
    """Say which host and process own the live database (written by the manager when it starts)."""
    owner = {"host": this_host(), "pid": os.getpid(), "started_at": time.time()}
    atomic_write_text(database_path(run_dir).with_name(OWNER_FILE), json.dumps(owner) + "\n")


def owner(run_dir: str | Path) -> dict | None:
    """The last manager's {host, pid, started_at}, or None where none has recorded itself."""
    try:
        return json.loads(database_path(run_dir).with_name(OWNER_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None  # unreadable: treat as unowned, the live database is still the truth


def publish(db: "TrialDB", run_dir: str | Path | None = None) -> float:
    """Publish a consistent copy of `db` as the run's snapshot; returns the time it was taken."""
    target = snapshot_path(run_dir if run_dir is not None else db.path.parent)
    with atomic_output(target) as tmp:
        copy = sqlite3.connect(tmp, isolation_level=None)
        try:
            taken = db.backup(copy)
            # The copy inherits WAL mode from the page header; readers of a file that never changes
            # need no WAL (and on another host must not use one).
            copy.execute("PRAGMA journal_mode = DELETE")
            copy.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (SNAPSHOT_AT, json.dumps(taken)))
        finally:
            copy.close()
    return taken


class Publisher:
    """The manager loop's side: publish at most every MIN_GAP_S after a change, at least every
    `interval` seconds (a fresh age tells readers the manager is alive), and once at the end."""

    def __init__(self, db: "TrialDB", interval: float):
        self.db, self.interval = db, interval
        self.last = 0.0
        self._changes = -1

    def start(self) -> None:
        record_owner(self.db.path.parent)
        self.publish()

    def tick(self) -> None:
        since = time.time() - self.last
        if since >= self.interval or (since >= min(MIN_GAP_S, self.interval) and self.db.changes() != self._changes):
            self.publish()

    def publish(self) -> None:
        self._changes = self.db.changes()
        self.last = time.time()
        try:
            publish(self.db)
        except (OSError, sqlite3.Error) as err:  # e.g. a full quota: the live database is still the truth
            log.warning("could not publish the trial database snapshot: %s", err)


@dataclass(frozen=True)
class Source:
    """Which file a reader opened: the live database, or a snapshot taken at `taken_at`."""
    path: Path
    snapshot: bool
    owner: dict | None

    def uri(self) -> str:
        # immutable: the snapshot is never modified in place, so SQLite may skip locks entirely
        return f"{self.path.resolve().as_uri()}?mode=ro" + ("&immutable=1" if self.snapshot else "")


def choose(run_dir: str | Path, source: str = "auto") -> Source:
    if source not in SOURCES:
        raise UserError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    live, copy = database_path(run_dir), snapshot_path(run_dir)
    manager = owner(run_dir)
    if source == "snapshot" and not copy.exists():
        raise FileNotFoundError(f"{copy}: no snapshot of the trial database (no manager has published one)")
    if source == "auto":
        elsewhere = manager is not None and manager.get("host") != this_host()
        source = "snapshot" if elsewhere and copy.exists() else "live"
    return Source(copy if source == "snapshot" else live, source == "snapshot", manager)


def taken_at(db: sqlite3.Connection) -> float | None:
    """When the snapshot open on `db` was taken (None for the live database)."""
    row = db.execute("SELECT value FROM meta WHERE key = ?", (SNAPSHOT_AT,)).fetchone()
    return float(json.loads(row[0])) if row else None


def describe(attrs: dict) -> str | None:
    """"snapshot from N s ago (manager on HOST)" for a table read from a snapshot, else None."""
    if not attrs.get("snapshot"):
        return None
    host = (attrs.get("owner") or {}).get("host", "?")
    return f"snapshot from {attrs['snapshot_age_s']:.0f} s ago (manager on {host})"
