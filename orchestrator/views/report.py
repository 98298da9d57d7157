"""`gfm-hpo report RUN_DIR`: the search's figures (figures.py) as PNG files, its best trials and a summary.

Also the run-directory checks and table loading that the notebook
(notebooks/inspect_trials.ipynb) shares with it.
"""
from __future__ import annotations

import io
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from trainer.contract.atomicio import atomic_write_bytes, atomic_write_json, atomic_write_text
from trainer.contract import locations
from trainer.contract.errors import UserError

from orchestrator.trials import runconfig
from orchestrator.trials.schema import DB_NAME, STATUSES, database_path
from orchestrator.views.figures import (best_trials, plot_by_mpnn, plot_learning_curves, plot_slice_timeline,
                                        plot_trajectory, timeline_size)
from orchestrator.views.rungs import rung_summary
from orchestrator.views.status import planned_slices, slice_count, utilisation

if TYPE_CHECKING:
    import pandas


# -- the run and its tables ------------------------------------------------------------

def check_run(run_dir: str | Path) -> Path:
    """`run_dir` if it holds a trial database; otherwise a one-line UserError saying what it is."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise UserError(f"{run_dir}: no such run directory")
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: not a run directory (a file; expected the directory gfm-hpo launch made)")
    if not database_path(run_dir).exists():
        if (run_dir / runconfig.RUN_FILE).exists():
            raise UserError(f"{run_dir}: no trial database yet (the manager has not started)")
        raise UserError(f"{run_dir}: not a run directory (no {runconfig.RUN_FILE} or trial database); "
                        "start one with gfm-hpo launch")
    return run_dir


def find_run(path: str | Path | None = None) -> Path:
    """A run directory; the most recently launched run inside a folder of runs (e.g. runs/); or, for None,
    the most recently launched run wherever the product puts them (trainer/contract/locations.py)."""
    if path is None:
        found = locations.newest(DB_NAME, age=_launched_at)
        if found is None:
            raise UserError(f"no run directory given and none found in {locations.searched()}; "
                            "start one with gfm-hpo launch, or name one")
        return found
    path = Path(path)
    if path.is_dir() and not database_path(path).exists():
        runs = [p for p in path.iterdir() if p.is_dir() and database_path(p).exists()]
        if runs:
            return max(runs, key=lambda p: _launched_at(p))
    return check_run(path)


def load_run(run_dir: str | Path) -> tuple["pandas.DataFrame", "pandas.DataFrame", "pandas.DataFrame"]:
    """(trials, curves, events) of a run; a damaged or foreign database is a UserError."""
    import pandas as pd

    from orchestrator.trials.frames import load_curves, load_events, load_trials

    run_dir = check_run(run_dir)
    try:
        return load_trials(run_dir), load_curves(run_dir), load_events(run_dir)
    except (sqlite3.DatabaseError, pd.errors.DatabaseError, KeyError) as err:  # not SQLite, or not our tables
        raise UserError(f"{database_path(run_dir)}: not a readable trial database ({err})") from None


def write_report(run_dir: str | Path, out_dir: str | Path, top: int = 10) -> list[Path]:
    """The four figures as PNGs, the best trials as CSV and a summary as JSON, written atomically
    into `out_dir`; returns the paths written."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    import pandas as pd

    run_dir, out_dir = check_run(run_dir), Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is not a directory")
    trials, curves, events = load_run(run_dir)
    slices = planned_slices(run_dir)
    now = pd.Timestamp.now(tz="UTC")
    figures: dict[str, tuple[tuple[float, float], Callable[[Any], Any]]] = {
        "trajectory.png": ((8, 5), lambda ax: plot_trajectory(trials, ax)),
        "learning_curves.png": ((8, 5), lambda ax: plot_learning_curves(trials, curves, ax, top=min(top, 5))),
        "objective_by_mpnn.png": ((7, 5), lambda ax: plot_by_mpnn(trials, ax)),
        "slice_timeline.png": (timeline_size(trials, slices),
                               lambda ax: plot_slice_timeline(trials, events, ax, slices=slices, now=now)),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (size, draw) in figures.items():
        figure = Figure(figsize=size, layout="constrained")
        FigureCanvasAgg(figure)  # Agg whatever MPLBACKEND says; no pyplot, no global state
        draw(figure.add_subplot())
        png = io.BytesIO()
        figure.savefig(png, format="png", dpi=110)
        atomic_write_bytes(out_dir / name, png.getvalue())
        written.append(out_dir / name)
    atomic_write_text(out_dir / "best_trials.csv", best_trials(trials, top).to_csv())
    atomic_write_json(out_dir / "summary.json", summary(run_dir, trials, slices, now, curves))
    return written + [out_dir / "best_trials.csv", out_dir / "summary.json"]


def summary(run_dir: Path, trials: "pandas.DataFrame", slices: int | None, now: "pandas.Timestamp",
            curves: "pandas.DataFrame | None" = None) -> dict:
    """Per phase: trial counts by status, the best trial, slice utilisation; the HPO phase's rungs."""

    phases = {}
    for phase, group in trials.groupby("phase", sort=False):
        top = best_trials(group, 1, phase)
        rows = slice_count(group, slices)
        phases[phase] = {
            "counts": {status: int((group["status"] == status).sum()) for status in STATUSES},
            "best": None if top.empty else {"trial_id": int(top["trial_id"].iloc[0]),
                                            "objective": float(top["objective"].iloc[0])},
            "utilisation": utilisation(group, rows, now.timestamp()),
        }
    if "hpo" in phases and curves is not None:
        phases["hpo"]["fidelity"] = hpo_fidelity(run_dir, trials, curves)
    return {"run_dir": str(Path(run_dir).resolve()), "written_at": now.isoformat(), "phases": phases}


def hpo_fidelity(run_dir: Path, trials: "pandas.DataFrame", curves: "pandas.DataFrame") -> dict | None:
    """The rungs and what they saved (views/rungs.py), for the run's space and epoch budget."""
    from search_spaces import load_space

    from orchestrator.search.fidelity import rungs_for
    from orchestrator.trials.frames import load_rungs

    if not (run_dir / runconfig.RUN_FILE).exists():
        return None
    settings = runconfig.load(run_dir)
    space = load_space(settings.space)
    rungs = rungs_for(space.fidelity, settings.epochs, space.origin)
    return rung_summary(trials, curves, load_rungs(run_dir), settings.epochs, rungs, space.fidelity.reduction_factor,
                        space.fidelity.kind)


# -- helpers --------------------------------------------------------------------------------

def _launched_at(run_dir: Path) -> float:
    marker = run_dir / runconfig.RUN_FILE
    return (marker if marker.exists() else database_path(run_dir)).stat().st_mtime
