"""The trial database file: opening it (WAL, synchronous commits), creating it whole, upgrading old ones."""
from __future__ import annotations

import sqlite3
from pathlib import Path

from trainer.contract.atomicio import atomic_output
from trainer.contract.errors import UserError

from orchestrator.trials.schema import BUSY_TIMEOUT_MS, MIGRATIONS, SCHEMA, SCHEMA_VERSION


def connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
    db.row_factory = sqlite3.Row
    db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        raise OSError(f"{path}: SQLite could not switch to WAL mode (got {mode})")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("PRAGMA foreign_keys = ON")
    return db


def create(path: Path) -> None:
    """Build an empty database under a temporary name and publish it whole, so that a reader
    polling the run directory never opens a file without tables."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_output(path, overwrite=False) as tmp:
            db = connect(tmp)
            try:
                db.execute("BEGIN IMMEDIATE")
                for statement in _statements(SCHEMA):  # executescript() would commit on its own
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                db.execute("COMMIT")
            finally:
                db.close()  # the last connection folds the WAL into the file and removes it
    except FileExistsError:
        pass  # another process created it first; opening it is all that was wanted


def upgrade(db: sqlite3.Connection, path: Path) -> None:
    """Bring a database of an earlier schema version up to this one, in one transaction; anything
    else that is not this version is refused."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version == SCHEMA_VERSION:
        return
    if version not in MIGRATIONS:
        raise UserError(f"{path}: not a trial database of this version "
                        f"(schema version {version}, this program reads {SCHEMA_VERSION})")
    # A table rebuild drops the table that other tables reference: foreign keys must be off (which
    # cannot change inside a transaction) and are checked before the commit instead.
    db.execute("PRAGMA foreign_keys = OFF")
    db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]  # another writer may have done it
        while version in MIGRATIONS:
            for statement in MIGRATIONS[version]:
                db.execute(statement)
            version += 1
        broken = db.execute("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise sqlite3.DatabaseError(f"upgrading would break {len(broken)} references, e.g. {tuple(broken[0])}")
        db.execute(f"PRAGMA user_version = {version}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    finally:
        db.execute("PRAGMA foreign_keys = ON")


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
