"""Rungs in `gfm-hpo status` and `report`: how many trials reached each rung, and what ASHA saved.

"Saved" is against a constant fidelity: every trial that ran to the end or
was discarded would otherwise have trained the whole epoch budget, so a
discarded trial saved (budget - epochs it trained), in epochs and in
node-hours (those epochs at the trial's own mean seconds per epoch, times
its nodes). Failed trials are left out: they would have failed either way.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    import pandas


def rung_summary(trials: "pandas.DataFrame", curves: "pandas.DataFrame", rungs_table: "pandas.DataFrame",
                 budget: int | None, rungs: Sequence[int], reduction_factor: float | None,
                 rule: str = "asha") -> dict[str, Any] | None:
    """The HPO phase's rungs and savings; None for a constant-fidelity run with nothing discarded."""
    hpo = trials[trials["phase"] == "hpo"]
    discarded = hpo[hpo["status"] == "discarded"]
    if not rungs and discarded.empty:
        return None
    table = rungs_table[rungs_table["trial_id"].isin(set(hpo["trial_id"]))]
    levels = sorted(set(rungs) | set(int(r) for r in table["rung"]))
    rows = [{"epochs": rung, "reached": int((table["rung"] == rung).sum()),
             "discarded": int(((table["rung"] == rung) & ~table["kept"]).sum())} for rung in levels]
    completed = hpo[hpo["status"] == "completed"]
    seconds = curves.groupby("trial_id")["seconds"].mean() if not curves.empty else {}
    saved_epochs, saved_node_hours = 0.0, 0.0
    for row in discarded.itertuples():
        left = max(0.0, (budget or 0) - _number(row.epochs_done))
        saved_epochs += left
        per_epoch = _number(seconds.get(row.trial_id)) if len(seconds) else 0.0
        saved_node_hours += left * per_epoch * max(1, int(row.num_nodes)) / 3600
    finished = hpo[hpo["status"].isin(["completed", "discarded"])]
    trained = float(sum(_number(e) for e in finished["epochs_done"]))
    return {"rule": rule, "reduction_factor": reduction_factor, "budget_epochs": budget, "rungs": rows,
            "completed_at_budget": int(len(completed)), "discarded": int(len(discarded)),
            "epochs_trained": trained, "epochs_constant": trained + saved_epochs,
            "epochs_saved": saved_epochs, "node_hours_saved": saved_node_hours}


def format_rungs(info: dict[str, Any]) -> list[str]:
    rungs = "; ".join(f"epoch {r['epochs']}: {r['reached']} reached, {r['discarded']} discarded" for r in info["rungs"])
    rule = ("learning-curve extrapolation" if info["rule"] == "learning_curve"
            else f"ASHA, reduction factor {info['reduction_factor']:g}")
    lines = [f"  rungs ({rule}): {rungs}; "
             f"{info['budget_epochs']} epochs (the budget): {info['completed_at_budget']} completed"]
    constant = info["epochs_constant"]
    share = f" ({100 * info['epochs_saved'] / constant:.0f}%)" if constant else ""
    lines.append(f"  saved {info['epochs_saved']:g} of {constant:g} epochs against constant fidelity{share}, "
                 f"{info['node_hours_saved']:.3g} node-hours")
    return lines


def _number(value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return 0.0
    return value if math.isfinite(value) else 0.0
