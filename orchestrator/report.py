"""The search's figures: how an HPO run went, drawn from its trial database.

One function per figure, each drawing onto a matplotlib Axes from the pandas
views of the database (`orchestrator.trialdb.load_trials`, `load_curves`,
`load_events`). Both `gfm-hpo report RUN_DIR` (PNG files, `write_report`) and
notebooks/inspect_trials.ipynb call these same functions.

  trajectory       objective of every trial vs wall time, best so far (the paper's Fig. 11)
  learning curves  validation loss per epoch of the best trials (Fig. 14)
  by MPNN type     objective per message-passing backbone (box and points)
  slice timeline   one row per slice, one bar per trial attempt (a Gantt chart)

matplotlib and pandas are imported inside the functions: the manager imports
orchestrator modules and must stay light (and never touch a display).
"""
from __future__ import annotations

import dataclasses
import io
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from trainer.atomicio import atomic_write_bytes, atomic_write_json, atomic_write_text
from trainer.errors import UserError

from orchestrator import runconfig
from orchestrator.status import planned_slices, slice_count, utilisation
from orchestrator.trialschema import STATUSES, Trial, database_path

if TYPE_CHECKING:
    import pandas
    from matplotlib.axes import Axes

COLOURS = {"completed": "tab:green", "failed": "tab:red", "running": "tab:blue",
           "interrupted": "tab:orange", "requeued": "tab:purple"}
# Columns of load_trials that are not searched hyperparameters (the rest are).
RECORD_COLUMNS = frozenset(f.name for f in dataclasses.fields(Trial)) | {"num_nodes"}
DECADE = 10.0  # a value axis spanning at least this ratio is drawn in log scale
LABELLED_BARS = 120  # above this, trial ids inside the timeline's bars are left out (unreadable)


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


def find_run(path: str | Path) -> Path:
    """A run directory, or the most recently launched run inside a folder of runs (e.g. runs/)."""
    path = Path(path)
    if path.is_dir() and not database_path(path).exists():
        runs = [p for p in path.iterdir() if p.is_dir() and database_path(p).exists()]
        if runs:
            return max(runs, key=lambda p: _launched_at(p))
    return check_run(path)


def load_run(run_dir: str | Path) -> tuple["pandas.DataFrame", "pandas.DataFrame", "pandas.DataFrame"]:
    """(trials, curves, events) of a run; a damaged or foreign database is a UserError."""
    import pandas as pd

    from orchestrator.trialdb import load_curves, load_events, load_trials

    run_dir = check_run(run_dir)
    try:
        return load_trials(run_dir), load_curves(run_dir), load_events(run_dir)
    except (sqlite3.DatabaseError, pd.errors.DatabaseError, KeyError) as err:  # not SQLite, or not our tables
        raise UserError(f"{database_path(run_dir)}: not a readable trial database ({err})") from None


def best_trials(trials: "pandas.DataFrame", top: int = 10, phase: str = "hpo") -> "pandas.DataFrame":
    """The `top` completed trials of `phase`, best first: objective, hyperparameters, cost."""
    done = _phase(trials, phase)
    done = done[done["status"] == "completed"].sort_values(["objective", "trial_id"]).head(top)
    params = [c for c in done.columns if c not in RECORD_COLUMNS]
    table = done[["trial_id", "objective", *params, "epochs_done", "num_parameters", "wall_time",
                  "slice_index", "trial_dir"]].reset_index(drop=True)
    table.index = table.index + 1
    table.index.name = "rank"
    return table


def slice_intervals(trials: "pandas.DataFrame", events: "pandas.DataFrame",
                    now: "pandas.Timestamp | None" = None) -> "pandas.DataFrame":
    """Every launch of every trial: trial_id, phase, slice, attempt, start, end, status.

    Built from the events, not the trials table, so that an attempt that was
    requeued (a node failure) still shows where it ran. A trial still running
    ends at `now` (default: the current time)."""
    import pandas as pd

    now = pd.Timestamp.now(tz="UTC") if now is None else now
    phase_of = dict(zip(trials["trial_id"], trials["phase"]))
    opened: dict[int, tuple[Any, Any, Any]] = {}
    rows = []
    for event in events.itertuples():
        if event.trial_id not in phase_of:  # written after the trials table was read
            continue
        if event.status == "running":
            opened[event.trial_id] = (event.at, event.detail.get("slice"), event.detail.get("attempt"))
        elif event.trial_id in opened:
            start, where, attempt = opened.pop(event.trial_id)
            status = "requeued" if event.status == "queued" else event.status
            rows.append((event.trial_id, phase_of[event.trial_id], where, attempt, start, event.at, status))
    for trial_id, (start, where, attempt) in opened.items():
        rows.append((trial_id, phase_of[trial_id], where, attempt, start, max(now, start), "running"))
    table = pd.DataFrame(rows, columns=["trial_id", "phase", "slice", "attempt", "start", "end", "status"])
    return table.dropna(subset=["slice"]).astype({"slice": "int64"}).sort_values(["start", "trial_id"])


# -- the figures ----------------------------------------------------------------------------

def plot_trajectory(trials: "pandas.DataFrame", ax: "Axes", phase: str = "hpo") -> "Axes":
    """Objective of every completed trial at its finish time, the best-so-far step line, and
    failed / interrupted trials as marks along the time axis (they have no objective)."""
    import numpy as np

    trials = _phase(trials, phase)
    ax.set_title(f"{phase} trajectory")
    ax.set_ylabel("objective (best validation loss)")
    if trials.empty:
        return _empty(ax, f"no {phase} trials yet")
    start = trials["submitted_at"].min()
    finished = trials[trials["finished_at"].notna()]
    scale, unit = _time_unit(_seconds(finished["finished_at"], start).max() if len(finished) else 0.0)
    ax.set_xlabel(f"wall time since the search started ({unit})")
    for status, marker in (("failed", "x"), ("interrupted", "|")):
        lost = finished[finished["status"] == status]
        if len(lost):
            # y in axes coordinates: a row of marks on the time axis whatever the objective's scale
            ax.plot(_seconds(lost["finished_at"], start) / scale, np.full(len(lost), 0.03), linestyle="none",
                    marker=marker, markersize=9, color=COLOURS[status], clip_on=False,
                    transform=ax.get_xaxis_transform(), label=f"{status} ({len(lost)})", gid=status)
    done = finished[finished["status"] == "completed"].sort_values(["finished_at", "trial_id"])
    running = int((trials["status"] == "running").sum())
    if done.empty:
        _empty(ax, f"no completed trial yet ({len(finished)} finished without an objective, {running} running)")
        if len(finished):
            ax.legend(loc="upper right")
            ax.set_xlim(left=0)
        return ax
    x = (_seconds(done["finished_at"], start) / scale).to_numpy()
    y = done["objective"].to_numpy()
    best = np.minimum.accumulate(y)
    end = _seconds(finished["finished_at"], start).max() / scale
    ax.scatter(x, y, s=22, color=COLOURS["completed"], zorder=3, label=f"completed ({len(done)})", gid="completed")
    ax.step(np.append(x, end), np.append(best, best[-1]), where="post", color="black", linewidth=1.5,
            label="best so far", gid="best")
    _log_if_wide(ax, y)
    winner = done.loc[done["objective"].idxmin()]
    ax.set_title(f"{phase} trajectory: best {winner['objective']:.4g} (trial #{winner['trial_id']}) "
                 f"of {len(done)} completed" + (f", {running} running" if running else ""))
    ax.legend(loc="best")
    ax.set_xlim(left=0)  # after plotting: it freezes the autoscaled right end
    return ax


def plot_learning_curves(trials: "pandas.DataFrame", curves: "pandas.DataFrame", ax: "Axes", top: int = 5,
                         phase: str = "hpo", metric: str = "val_loss") -> "Axes":
    """`metric` per epoch of the `top` best completed trials, one line each (best first)."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    ax.set_ylabel(metric.replace("_", " "))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    values, best = [], best_trials(trials, top, phase)
    ax.set_title(f"learning curves of the {len(best) or ''} best {phase} trials".replace("  ", " "))
    for row in best.itertuples():
        curve = curves[curves["trial_id"] == row.trial_id].sort_values("epoch")
        if curve.empty:
            continue
        kind = f" {row.mpnn_type}" if "mpnn_type" in trials.columns else ""
        ax.plot(curve["epoch"], curve[metric], marker="o", markersize=3,
                label=f"#{row.trial_id}{kind} ({row.objective:.4g})", gid=f"trial-{row.trial_id}")
        values.extend(curve[metric].dropna())
    if not values:
        return _empty(ax, f"no completed {phase} trial with a learning curve yet")
    _log_if_wide(ax, values)
    ax.legend(title="trial (objective)", fontsize="small")
    return ax


def plot_by_mpnn(trials: "pandas.DataFrame", ax: "Axes", phase: str = "hpo", column: str = "mpnn_type") -> "Axes":
    """Objective of the completed trials per MPNN type: a box per type, every trial as a point,
    and under each type how many trials completed and failed."""
    import numpy as np

    trials = _phase(trials, phase)
    ax.set_title(f"{phase} objective by {column}")
    ax.set_ylabel("objective (best validation loss)")
    if trials.empty:
        return _empty(ax, f"no {phase} trials yet")
    if column not in trials.columns or trials[column].isna().all():
        return _empty(ax, f"{column} was not searched in this run")
    kinds = sorted(trials[column].dropna().unique())
    done = trials[trials["status"] == "completed"]
    groups = [done.loc[done[column] == kind, "objective"].to_numpy() for kind in kinds]
    filled = [i for i, g in enumerate(groups) if len(g)]
    if filled:
        ax.boxplot([groups[i] for i in filled], positions=filled, widths=0.5, showfliers=False,
                   manage_ticks=False, medianprops={"color": "black"})
        # points spread evenly across the box (a strip plot), so coincident values stay visible
        x = np.concatenate([i + np.linspace(-0.15, 0.15, len(groups[i])) * (len(groups[i]) > 1) for i in filled])
        y = np.concatenate([groups[i] for i in filled])
        ax.scatter(x, y, s=18, zorder=3, color=COLOURS["completed"], alpha=0.8, gid="completed")
        _log_if_wide(ax, y)
    else:
        _empty(ax, f"no completed {phase} trial yet")
    counts = trials.groupby([column, "status"]).size()
    ax.set_xticks(range(len(kinds)), [f"{kind}\n{counts.get((kind, 'completed'), 0)} done"
                                      + (f", {counts[(kind, 'failed')]} failed" if (kind, "failed") in counts else "")
                                      for kind in kinds])
    ax.set_xlim(-0.6, len(kinds) - 0.4)
    return ax


def plot_slice_timeline(trials: "pandas.DataFrame", events: "pandas.DataFrame", ax: "Axes",
                        slices: int | None = None, phases: tuple[str, ...] | None = None,
                        now: "pandas.Timestamp | None" = None) -> "Axes":
    """A Gantt chart: one row per slice, a bar per trial attempt from launch to end, coloured by
    outcome; ensemble members hatched. `slices` (the planned count) shows idle slices too;
    default: those that ran something. The title gives the slice utilisation (as gfm-hpo status)."""
    import pandas as pd
    from matplotlib.patches import Patch


    now = pd.Timestamp.now(tz="UTC") if now is None else now
    if phases is not None:
        trials = trials[trials["phase"].isin(phases)]
    intervals = slice_intervals(trials, events, now)
    ax.set_ylabel("slice")
    if intervals.empty:
        ax.set_title("slice timeline")
        return _empty(ax, "no trial has started yet")
    rows = max(slices or 0, int(intervals["slice"].max()) + 1)
    start = intervals["start"].min()
    scale, unit = _time_unit(_seconds(intervals["end"], start).max())
    ax.set_xlabel(f"wall time since the first launch ({unit})")
    total = _seconds(intervals["end"], start).max() / scale
    legend = []
    for (phase, status), group in intervals.groupby(["phase", "status"], sort=False):
        left = _seconds(group["start"], start) / scale
        width = _seconds(group["end"], start) / scale - left
        bars = ax.barh(group["slice"], width, left=left, height=0.8, color=COLOURS[status], edgecolor="black",
                       linewidth=0.4, hatch="///" if phase == "ensemble" else None)
        for bar, y, x, w, trial_id in zip(bars, group["slice"], left, width, group["trial_id"]):
            bar.set_gid(f"{phase}:{status}:{trial_id}")  # names the bar (also in an SVG export)
            if len(intervals) <= LABELLED_BARS and w >= 0.04 * total:  # room for the label
                ax.text(x + w / 2, y, f"#{trial_id}", ha="center", va="center", fontsize="x-small")
    for status in COLOURS:
        if (intervals["status"] == status).any():
            legend.append(Patch(facecolor=COLOURS[status], edgecolor="black", label=status))
    if (intervals["phase"] == "ensemble").any():
        legend.append(Patch(facecolor="white", edgecolor="black", hatch="///", label="ensemble member"))
    ax.legend(handles=legend, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    ax.set_ylim(rows - 0.5, -0.5)  # slice 0 on top
    if rows <= 40:
        ax.set_yticks(range(rows), [str(i) for i in range(rows)])
    used = utilisation(trials, rows, now.timestamp())
    shown = "+".join(sorted(intervals["phase"].unique(), key=["hpo", "ensemble"].index))
    ax.set_title(f"{shown} on {rows} slices: utilisation "
                 + (f"{100 * used:.0f}%" if used is not None else "n/a"))
    return ax


# -- gfm-hpo report ----------------------------------------------------------------------

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
    atomic_write_json(out_dir / "summary.json", summary(run_dir, trials, slices, now))
    return written + [out_dir / "best_trials.csv", out_dir / "summary.json"]


def timeline_size(trials: "pandas.DataFrame", slices: int | None) -> tuple[float, float]:
    """A figure size (inches) for the slice timeline: a few tenths of an inch per slice."""
    rows = slice_count(trials, slices)
    return 10.0, min(2.5 + 0.3 * rows, 30.0)


def summary(run_dir: Path, trials: "pandas.DataFrame", slices: int | None, now: "pandas.Timestamp") -> dict:
    """Per phase: trial counts by status, the best trial, slice utilisation."""

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
    return {"run_dir": str(Path(run_dir).resolve()), "written_at": now.isoformat(), "phases": phases}


# -- helpers --------------------------------------------------------------------------------

def _phase(trials: "pandas.DataFrame", phase: str | None) -> "pandas.DataFrame":
    return trials if phase is None else trials[trials["phase"] == phase]


def _seconds(times: "pandas.Series", start: "pandas.Timestamp") -> "pandas.Series":
    return (times - start).dt.total_seconds()


def _time_unit(span_seconds: float) -> tuple[float, str]:
    """Seconds for a few minutes of run, minutes up to a few hours, hours beyond."""
    if span_seconds < 300:
        return 1.0, "s"
    if span_seconds < 5 * 3600:
        return 60.0, "min"
    return 3600.0, "h"


def _log_if_wide(ax: "Axes", values: Any) -> None:
    """Objectives of a search often span decades (a diverging trial next to good ones)."""
    import numpy as np

    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) and values.min() > 0 and values.max() / values.min() >= DECADE:
        ax.set_yscale("log")


def _empty(ax: "Axes", message: str) -> "Axes":
    """Say why a figure has nothing to show (instead of failing, or an empty frame)."""
    if not ax.has_data():  # meaningless ticks otherwise; keep them around marks already drawn
        ax.set_xticks([])
        ax.set_yticks([])
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", wrap=True,
            color="dimgray", gid="empty")
    return ax


def _launched_at(run_dir: Path) -> float:
    marker = run_dir / runconfig.RUN_FILE
    return (marker if marker.exists() else database_path(run_dir)).stat().st_mtime
