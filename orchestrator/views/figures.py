"""The search's figures, one function per figure, each drawing onto a matplotlib Axes.

They read the pandas views of the database (`orchestrator.trialdb.load_trials`,
`load_curves`, `load_events`). Both `gfm-hpo report RUN_DIR` (report.py,
PNG files) and notebooks/inspect_trials.ipynb call these same functions.

  trajectory       objective of every trial vs wall time, best so far (the paper's Fig. 11)
  learning curves  validation loss per epoch of the best trials (Fig. 14)
  by MPNN type     objective per message-passing backbone (box and points)
  slice timeline   one row per slice, one bar per trial attempt (a Gantt chart)

matplotlib and pandas are imported inside the functions: the manager imports
orchestrator modules and must stay light (and never touch a display).
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from orchestrator.trials.schema import Trial
from orchestrator.views.status import slice_count, utilisation

if TYPE_CHECKING:
    import pandas
    from matplotlib.axes import Axes

COLOURS = {"completed": "tab:green", "failed": "tab:red", "running": "tab:blue",
           "interrupted": "tab:orange", "requeued": "tab:purple", "discarded": "tab:gray"}
# Columns of load_trials that are not searched hyperparameters (the rest are).
RECORD_COLUMNS = frozenset(f.name for f in dataclasses.fields(Trial)) | {"num_nodes"}
DECADE = 10.0  # a value axis spanning at least this ratio is drawn in log scale
LABELLED_BARS = 120  # above this, trial ids inside the timeline's bars are left out (unreadable)


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
    # Discarded trials (ASHA) have a value at a lower fidelity only: marked, not mixed with the objectives.
    for status, marker in (("failed", "x"), ("interrupted", "|"), ("discarded", "v")):
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



def timeline_size(trials: "pandas.DataFrame", slices: int | None) -> tuple[float, float]:
    """A figure size (inches) for the slice timeline: a few tenths of an inch per slice."""
    rows = slice_count(trials, slices)
    return 10.0, min(2.5 + 0.3 * rows, 30.0)


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
