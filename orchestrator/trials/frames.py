"""The trial database as pandas tables, for Jupyter, status and report (pandas imported here only).

Safe while the manager writes: each call reads through one read-only
connection, so it sees one consistent snapshot and never blocks the writer.
`source` (snapshot.py): "auto" reads the manager's published snapshot where the manager runs on
another host, the live database otherwise; "live" and "snapshot" force one.
"""
from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from orchestrator.trials import snapshot
from orchestrator.trials.schema import BUSY_TIMEOUT_MS, CURVE_COLUMNS
from trainer.contract.errors import UserError

if TYPE_CHECKING:
    import pandas


def load_trials(run_dir: str | Path, source: str = "auto") -> "pandas.DataFrame":
    """One row per trial, hyperparameters as columns, timestamps as UTC datetimes; `origin` says where
    an HPO trial's configuration came from (schema.ORIGINS; None where not recorded).
    Safe while the manager writes: a read-only connection, one consistent snapshot.
    `df.attrs` says what was read: "snapshot" (bool), "snapshot_at" and "snapshot_age_s" (seconds;
    None for the live database), "owner" (the manager's host and pid, or None)."""
    import pandas as pd

    attrs: dict = {}
    with _read_only(run_dir, source, attrs) as db:
        table = pd.read_sql_query("SELECT * FROM trials ORDER BY trial_id", db)
    if "origin" not in table.columns:  # a schema-1 database that no manager of this version has opened yet
        table["origin"] = None
    table["origin"] = table["origin"].astype(object).where(table["origin"].notna(), None)  # None, never NaN
    if "discarded_at" not in table.columns:  # a database from before ASHA (schema 2) not yet upgraded
        table["discarded_at"] = None
    params = pd.DataFrame([json.loads(p) for p in table.pop("params")], index=table.index)
    params = params.drop(columns=[c for c in params.columns if c in table.columns])
    nodes = table["nodes"].map(lambda text: json.loads(text) if isinstance(text, str) else None)
    table["nodes"] = nodes
    table["num_nodes"] = nodes.map(lambda n: len(n) if n is not None else 0)
    for column in ("submitted_at", "started_at", "finished_at"):
        table[column] = pd.to_datetime(table[column], unit="s", utc=True)
    for column in ("objective", "wall_time"):
        table[column] = table[column].astype("float64")
    for column in ("epochs_done", "num_parameters", "slice_index", "parent_id", "discarded_at"):
        table[column] = table[column].astype("Int64")
    first = ["trial_id", "phase", "status", "objective", "origin"]
    rest = [c for c in table.columns if c not in first]
    frame = pd.concat([table[first], params, table[rest]], axis=1)
    frame.attrs.update(attrs)
    return frame


def load_curves(run_dir: str | Path, source: str = "auto") -> "pandas.DataFrame":
    """Per-epoch curves of every trial: trial_id, epoch, losses, MAEs, seconds."""
    import pandas as pd

    with _read_only(run_dir, source) as db:
        curves = pd.read_sql_query("SELECT * FROM curves ORDER BY trial_id, epoch", db)
    return curves.astype({"trial_id": "int64", "epoch": "int64", **{c: "float64" for c in CURVE_COLUMNS}})


def load_rungs(run_dir: str | Path, source: str = "auto") -> "pandas.DataFrame":
    """Every ASHA rung decision (search/fidelity.py): trial_id, rung (epochs), value, kept, rank, judged, at."""
    import pandas as pd

    with _read_only(run_dir, source) as db:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'rungs'").fetchone():  # schema 2: no rungs
            return pd.DataFrame(columns=["trial_id", "rung", "value", "kept", "rank", "judged", "at"])
        rungs = pd.read_sql_query("SELECT * FROM rungs ORDER BY at, trial_id, rung", db)
    rungs["kept"] = rungs["kept"].astype(bool)
    return rungs


def load_meta(run_dir: str | Path, key: str, default=None, source: str = "auto"):
    """One value of the run's meta table (e.g. "warm_start"), or `default`."""
    with _read_only(run_dir, source) as db:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return json.loads(row[0]) if row else default


def load_events(run_dir: str | Path, source: str = "auto") -> "pandas.DataFrame":
    """Every state change: trial_id, at (UTC datetime), status, detail (dict)."""
    import pandas as pd

    with _read_only(run_dir, source) as db:
        events = pd.read_sql_query("SELECT trial_id, at, status, detail FROM events ORDER BY event_id", db)
    events["at"] = pd.to_datetime(events["at"], unit="s", utc=True)
    events["detail"] = events["detail"].map(json.loads)
    return events


@contextmanager
def _read_only(run_dir: str | Path, source: str = "auto", attrs: dict | None = None) -> Iterator[sqlite3.Connection]:
    """A read-only connection in one transaction; `attrs`, if given, gets what was read (load_trials)."""
    chosen = snapshot.choose(run_dir, source)
    path = chosen.path
    if not path.exists():
        raise FileNotFoundError(f"{path}: no trial database (is this a run directory?)")
    # mode=ro: this connection cannot write, whatever pandas or the user does with it.
    db = sqlite3.connect(chosen.uri(), uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        db.execute("BEGIN")  # one snapshot for everything read through this connection
        if attrs is not None:
            taken = snapshot.taken_at(db) if chosen.snapshot else None
            attrs.update(snapshot=chosen.snapshot, snapshot_at=taken, owner=chosen.owner,
                         snapshot_age_s=None if taken is None else max(0.0, time.time() - taken))
        yield db
        db.execute("COMMIT")
    except Exception as err:
        # A damaged or foreign file: sqlite3 says so at the first read, pandas wraps that in its own
        # DatabaseError ("Execution failed on sql ...: file is not a database"); keep the last words.
        import pandas as pd

        if isinstance(err, (sqlite3.DatabaseError, pd.errors.DatabaseError)):
            reason = str(err).split("': ", 1)[-1]  # after pandas' "Execution failed on sql '...'"
            raise UserError(f"{path}: not a readable trial database ({reason})") from None
        raise
    finally:
        db.close()
