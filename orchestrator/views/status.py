"""`gfm-hpo status RUN_DIR`: where a search stands, read safely while the manager writes."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from search_spaces import load_space
from trainer.contract.errors import UserError

from orchestrator import hostlist
from orchestrator.trials import runconfig
from orchestrator.trials.frames import load_trials
from orchestrator.trials.schema import STATUSES, database_path


def planned_slices(run_dir: Path) -> int | None:
    """Slices the run was planned with, where run.yaml says (nodes and nodes per trial both given)."""
    if not (Path(run_dir) / runconfig.RUN_FILE).exists():
        return None
    settings = runconfig.load(Path(run_dir))
    if settings.nodes and settings.nodes_per_trial:
        return settings.nodes // settings.nodes_per_trial
    return None


def slice_count(trials, planned: int | None = None) -> int:
    """Slices of a run: as planned, or as many as trials were seen on (an allocation's size is not on record)."""
    used = int(trials["slice_index"].max()) + 1 if trials["slice_index"].notna().any() else 0
    return max(planned or 0, used)


def utilisation(trials, slices: int, now: float) -> float | None:
    """Busy slice-time / (slices x time since the first trial started)."""
    started = trials["started_at"].dropna()
    if started.empty or slices < 1:
        return None
    begin = started.min().timestamp()
    finish = trials["finished_at"].map(lambda t: t.timestamp() if t is not None and t == t else now)
    busy = sum(max(0.0, end - start.timestamp())
               for start, end in zip(trials["started_at"], finish) if start == start and start is not None)
    span = max(finish.max(), now if (trials["status"] == "running").any() else 0.0) - begin
    return busy / (slices * span) if span > 0 else None


def status_report(run_dir: Path, top: int = 5) -> dict[str, Any]:
    run_dir = Path(run_dir)
    settings = runconfig.load(run_dir)
    if not database_path(run_dir).exists():
        raise UserError(f"{run_dir}: no trial database yet (the manager has not started)")
    trials = load_trials(run_dir)
    names = load_space(settings.space).names
    report: dict[str, Any] = {"run_dir": str(run_dir), "site": settings.site, "phases": {}}
    now = time.time()
    for phase, group in trials.groupby("phase"):
        counts = {status: int((group["status"] == status).sum()) for status in STATUSES}
        completed = group[group["status"] == "completed"].sort_values("objective").head(top)
        running = group[group["status"] == "running"]
        slices = slice_count(group, planned_slices(run_dir))
        report["phases"][phase] = {
            "counts": counts,
            "best": [{"trial_id": int(r.trial_id), "objective": float(r.objective),
                      "epochs_done": _int(r.epochs_done), "num_parameters": _int(r.num_parameters),
                      "params": {n: _plain(getattr(r, n)) for n in names if n in group.columns}}
                     for r in completed.itertuples()],
            "running": [{"trial_id": int(r.trial_id), "slice": _int(r.slice_index),
                         "nodes": hostlist.compress(r.nodes) if r.nodes else None,
                         "seconds": now - r.started_at.timestamp(), "epochs_done": _int(r.epochs_done)}
                        for r in running.itertuples()],
            "failures": [{"trial_id": int(r.trial_id), "error": r.error}
                         for r in group[group["status"] == "failed"].itertuples()][-top:],
            "utilisation": utilisation(group, slices, now),
        }
    return report


def format_status(report: dict[str, Any]) -> str:
    lines = [f"run {report['run_dir']} (site {report['site']})"]
    if not report["phases"]:
        lines.append("  no trials yet")
    for phase, info in report["phases"].items():
        counts = ", ".join(f"{n} {s}" for s, n in info["counts"].items() if n)
        usage = info["utilisation"]
        lines.append(f"{phase}: {counts}" + (f"; slice utilisation {100 * usage:.0f}%" if usage is not None else ""))
        if info["best"]:
            lines.append("  best trials:")
            for row in info["best"]:
                params = " ".join(f"{k}={_short(v)}" for k, v in row["params"].items())
                lines.append(f"    #{row['trial_id']:<5} {row['objective']:.5g}  {params}")
        for row in info["running"]:
            lines.append(f"  slice {row['slice']}: trial {row['trial_id']} on {row['nodes']}, "
                         f"{row['seconds']:.0f} s, {row['epochs_done'] or 0} epochs done")
        for row in info["failures"]:
            lines.append(f"  failed #{row['trial_id']}: {row['error']}")
    return "\n".join(lines)


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):  # None, NaN, pandas.NA
        return None


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def as_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, default=str)
