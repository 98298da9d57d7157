"""`gfm-hpo status RUN_DIR`: where a search stands, read safely while the manager writes."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from search_spaces import load_space
from trainer.contract import text
from trainer.contract.errors import UserError
from trainer.contract.trialconfig import load_trial

from orchestrator import hostlist
from orchestrator.trials import runconfig
from orchestrator.trials.frames import load_trials
from orchestrator.trials.snapshot import describe
from orchestrator.trials.schema import ORIGINS, PHASES, STATUSES, database_path
from orchestrator.views.rungs import format_rungs, rung_summary


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


def status_report(run_dir: Path, top: int = 5, source: str = "auto") -> dict[str, Any]:
    from orchestrator.search.fidelity import rungs_for
    from orchestrator.search.warmstart import META as WARM_START
    from orchestrator.trials.frames import load_curves, load_meta, load_rungs

    run_dir = Path(run_dir)
    settings = runconfig.load(run_dir)
    if not database_path(run_dir).exists():
        raise UserError(f"{run_dir}: no trial database yet (the manager has not started)")
    trials, curves = load_trials(run_dir, source), load_curves(run_dir, source)
    latest = curves.sort_values("epoch").groupby("trial_id").last()
    space = load_space(settings.space)
    names = space.names
    report: dict[str, Any] = {"run_dir": str(run_dir), "site": settings.site, "phases": {},
                              "snapshot_age_s": trials.attrs.get("snapshot_age_s"), "read": describe(trials.attrs)}
    now = time.time()
    for phase in [p for p in PHASES if p in set(trials["phase"])]:  # in campaign order: the search first
        group = trials[trials["phase"] == phase]
        counts = {status: int((group["status"] == status).sum()) for status in STATUSES}
        completed = group[group["status"] == "completed"].sort_values(["objective", "trial_id"]).head(top)
        running = group[group["status"] == "running"]
        slices = slice_count(group, planned_slices(run_dir))
        report["phases"][phase] = info = {
            "counts": counts,
            "best": [{"trial_id": int(r.trial_id), "hpo_trial_id": _int(r.parent_id), "objective": float(r.objective),
                      "origin": _text(r.origin), "epochs_done": _int(r.epochs_done),
                      "num_parameters": _int(r.num_parameters),
                      "params": {n: _plain(getattr(r, n)) for n in names if n in group.columns}}
                     for r in completed.itertuples()],
            "running": [{"trial_id": int(r.trial_id), "hpo_trial_id": _int(r.parent_id), "slice": _int(r.slice_index),
                         "nodes": hostlist.compress(r.nodes) if r.nodes else None,
                         "seconds": now - r.started_at.timestamp(), "epochs_done": _int(r.epochs_done),
                         "epochs": planned_epochs(r.trial_dir),
                         "val_loss": _float(latest["val_loss"].get(r.trial_id))}
                        for r in running.itertuples()],
            "failures": [{"trial_id": int(r.trial_id), "error": r.error}
                         for r in group[group["status"] == "failed"].itertuples()][-top:],
            "utilisation": utilisation(group, slices, now),
        }
        if phase == "hpo":
            info["fidelity"] = rung_summary(group, curves, load_rungs(run_dir, source), settings.epochs,
                                            rungs_for(space.fidelity, settings.epochs, space.origin),
                                            space.fidelity.reduction_factor, space.fidelity.kind)
            info["warm_start"] = load_meta(run_dir, WARM_START, source=source)
            # where each configuration came from (None: a database from before origins)
            info["origins"] = {origin: [int(t) for t in ids] for origin, ids in
                               group.groupby(group["origin"].fillna("unknown"), sort=False)["trial_id"]}
    return report


def format_status(report: dict[str, Any]) -> str:
    lines = [f"run {report['run_dir']} (site {report['site']})"]
    if report.get("read"):
        lines.append(f"  {report['read']}")
    if not report["phases"]:
        lines.append("  no trials yet")
    for phase, info in report["phases"].items():
        counts = ", ".join(f"{n} {s}" for s, n in info["counts"].items() if n)
        usage = info["utilisation"]
        lines.append(f"{phase}: {counts}" + (f"; slice utilisation {100 * usage:.0f}%" if usage is not None else ""))
        if info.get("warm_start"):
            warm = info["warm_start"]
            lines.append(f"  warm start: {warm['imported']} trials imported from {warm['from']} "
                         f"({warm['failures']} of them failures; {warm['dropped']} outside this space dropped)")
        if info.get("fidelity"):
            lines += format_rungs(info["fidelity"])
        if info.get("origins"):
            lines.append("  proposed by: " + "; ".join(
                f"{origin} ({ORIGINS.get(origin, 'not recorded')}) {id_ranges(ids)}"
                for origin, ids in info["origins"].items()))
        member = phase == "ensemble"
        trial_columns = ["member trial", "HPO trial"] if member else ["trial"]
        if info["best"]:
            lines.append("  best trials:")
            names = list(info["best"][0]["params"])
            header = [*trial_columns, "objective", *([] if member else ["origin"]), "epochs", *names]
            rows = [[row["trial_id"], *([row["hpo_trial_id"]] if member else []), row["objective"],
                     *([] if member else [row["origin"] or "-"]), row["epochs_done"],
                     *(row["params"].get(n) for n in names)] for row in info["best"]]
            lines += text.table(header, rows, indent="    ")
        if info["running"]:
            lines.append("  running:")
            header = ["slice", *trial_columns, "nodes", "time", "epoch", "val loss"]
            rows = [[row["slice"], row["trial_id"], *([row["hpo_trial_id"]] if member else []), row["nodes"] or "-",
                     f"{row['seconds']:.0f} s", f"{row['epochs_done'] or 0}/{row['epochs'] or '?'}", row["val_loss"]]
                    for row in info["running"]]
            lines += text.table(header, rows, "rr" + "r" * member + "lrrr", indent="    ")
        for row in info["failures"]:
            lines.append(f"  failed #{row['trial_id']}: {row['error']}")
    return "\n".join(lines)


def planned_epochs(trial_dir: str | None) -> int | None:
    """The epochs a trial's trial.yaml asks for (an ensemble member may stop earlier); None if unreadable."""
    try:
        return load_trial(trial_dir).training.epochs if trial_dir else None
    except (OSError, UserError):
        return None


def id_ranges(ids: list[int]) -> str:
    """[1, 2, 3, 5, 7, 8] -> "#1-3, #5, #7-8"."""
    spans: list[list[int]] = []
    for i in sorted(ids):
        if spans and i == spans[-1][1] + 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    return ", ".join(f"#{a}" if a == b else f"#{a}-{b}" for a, b in spans)


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):  # None, NaN, pandas.NA
        return None


def _float(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _text(value) -> str | None:
    return value if isinstance(value, str) else None


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def as_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, default=str)
