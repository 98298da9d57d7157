"""Multi-fidelity replay for bench/bench_search_quality.py --fidelity: searches against the learning-curve table.

Every point of bench/curve_table.py trained once for 10 epochs with every
epoch's validation loss kept, so a replayed search can stop a trial at any
epoch and read what a rung would have read. A replay is the manager's loop
in simulated time, one step = one epoch of every running trial:
  - `in_flight` slices; a free slice gets the optimiser's next proposal at
    once (asked through the project's `make_optimizer`, as the manager does);
  - with rungs (ASHA), a trial that has trained `rung` epochs is judged by the
    manager's own rule (`orchestrator.search.fidelity.keeps`) against the
    values earlier trials had there; discarded, it is told its value at the
    rung and its slice is free for the next step; otherwise it trains on to 10;
  - proposals snap to the table's grid; one that lands on a point already
    evaluated is a free look-up (told that point's value, at the fidelity it
    reached), one on a point still training waits for it, as in the constant
    replay.
Epochs consumed (the node-hour proxy: every epoch of every trial, discarded
ones included) are counted as they are trained. New trials start while fewer
than `epoch_budget` epochs are consumed (running ones then finish).
The quality of a search is the best objective among trials that completed
the full 10 epochs (a value at a lower fidelity does not compare with it).
In this replay a discarded trial consumes exactly its rung's epochs; the real
manager sees a finished epoch up to a second late (its poll), a fraction of an
epoch at the paper's scale.
"""
from __future__ import annotations

import dataclasses
import math
import statistics
import tempfile
import time
from typing import Any, Sequence

import curve_table
import search_table
from orchestrator.search.backends import make_optimizer
from orchestrator.search.fidelity import keeps, predict_final

EPOCHS = curve_table.EPOCHS


def full_value(row: dict) -> float | None:
    return row["objective"]


def replay(points: dict[str, dict], backend: str, seed: int, rungs: Sequence[int], reduction_factor: float,
           epoch_budget: int, in_flight: int, max_asks: int,
           prior: Sequence[tuple[dict, float | None]] = (), rule: str = "asha") -> dict[str, Any]:
    """One search; returns the best-so-far (full fidelity) against epochs consumed and trials completed,
    and the counts. `prior`: results of an earlier campaign told before the first ask (a warm start)."""
    space = dataclasses.replace(search_table.grid_space(), backend=backend)
    at_rung: dict[int, list[float]] = {r: [] for r in rungs}
    known: dict[str, float | None] = {}              # point -> the value told for it (its fidelity's)
    training: dict[str, dict] = {}                   # point -> its running trial
    history: list[tuple[int, float, int]] = []       # (epochs consumed, best full-fidelity objective, completed)
    consumed = asks = lookups = started = completed = discarded = 0
    best: float | None = None
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as log_dir:
        optimizer = make_optimizer(space, seed, log_dir)
        if prior:
            optimizer.tell(list(prior))

        def fill(now: int) -> None:
            nonlocal asks, lookups, started
            while len(training) < in_flight and consumed < epoch_budget and asks < max_asks:
                proposals = optimizer.ask(min(in_flight - len(training), max_asks - asks))
                if not proposals:  # the space is exhausted
                    break
                asks += len(proposals)
                for params in proposals:
                    point = curve_table.key(curve_table.snap(params))
                    if point in known:
                        optimizer.tell([(params, known[point])])
                        lookups += 1
                    elif point in training:
                        training[point]["waiting"].append(params)
                        lookups += 1
                    else:  # at most as many new points as free slices were asked for
                        training[point] = {"start": now, "waiting": [params]}
                        started += 1

        now = 0
        fill(now)
        while training:
            now += 1
            consumed += len(training)
            for point, trial in sorted(training.items(), key=lambda item: item[1]["start"]):
                epoch = now - trial["start"]
                row = points[point]
                value: float | None
                if epoch >= EPOCHS:
                    value = full_value(row)
                    completed += 1
                    if value is not None and (best is None or value < best):
                        best = value
                        history.append((consumed, best, completed))
                elif epoch in at_rung:
                    value = _value(row, epoch)
                    if rule == "learning_curve":  # the manager's CurveRule: the fitted curve against the best
                        fitted = predict_final([_value(row, t) for t in range(1, epoch + 1)], EPOCHS)
                        kept = best is None or fitted <= best
                    else:
                        kept, _, _ = keeps(value, at_rung[epoch], reduction_factor)
                    at_rung[epoch].append(value)
                    if kept:
                        continue
                    discarded += 1
                else:
                    continue
                known[point] = value
                optimizer.tell([(params, value) for params in training.pop(point)["waiting"]])
            fill(now)
    return {"seed": seed, "history": history, "epochs": consumed, "trials": started, "completed": completed,
            "discarded": discarded, "asks": asks, "lookups": lookups, "best": best,
            "optimizer_seconds": time.perf_counter() - start}


def _value(row: dict, epochs: int) -> float:
    """Best validation loss over the first `epochs` epochs (what a rung at `epochs` reads)."""
    finite = [v for v in row["val_loss"][:epochs] if v is not None and math.isfinite(v)]
    return min(finite)


def epochs_to(history: Sequence[Sequence[float]], target: float, column: int = 0) -> int | None:
    """Epochs consumed (column 0) or trials completed (column 2) when the best first reached `target`."""
    return next((int(h[column]) for h in history if h[1] <= target), None)


def _median(values: Sequence[float | None]) -> float | None:
    value = statistics.median([math.inf if v is None else v for v in values])
    return None if math.isinf(value) else value


METHODS = {  # name: (backend, early-discarding rule or None)
    "random, constant 10 epochs": ("random", None),
    "CBO, constant 10 epochs": ("cbo", None),
    "CBO + ASHA": ("cbo", "asha"),
    "CBO + learning curve": ("cbo", "learning_curve"),
    "random + ASHA": ("random", "asha"),
}


def run_fidelity(table: dict[str, Any], seeds: Sequence[int], trials: int, in_flight: int, rungs: Sequence[int],
                 reduction_factor: float, max_asks_factor: int, report=print) -> dict[str, Any]:
    points = table["points"]
    budget = trials * EPOCHS
    runs: dict[str, list[dict]] = {}
    for name, (backend, rule) in METHODS.items():
        runs[name] = []
        judged = {None: [], "asha": rungs, "learning_curve": list(range(2, EPOCHS))}[rule]
        for seed in seeds:
            run = replay(points, backend, seed, judged, reduction_factor, budget, in_flight,
                         max_asks_factor * trials, rule=rule or "asha")
            runs[name].append(run)
            report(f"{name:27s} seed {seed}: {run['trials']} trials ({run['discarded']} discarded), "
                   f"{run['epochs']} epochs, best {run['best'] if run['best'] is None else round(run['best'], 4)}")
    target = _median([run["best"] for run in runs["random, constant 10 epochs"]])
    ranked = sorted(r["objective"] for r in points.values() if r["objective"] is not None)
    summary = {}
    for name, method_runs in runs.items():
        needed = [epochs_to(run["history"], target) for run in method_runs]
        for run, need in zip(method_runs, needed):
            run["epochs_to_target"] = need
        summary[name] = {"median_epochs_to_target": _median(needed), "reached": sum(n is not None for n in needed),
                         "epochs_to_target": needed, "median_best": _median([run["best"] for run in method_runs]),
                         "median_best_rank": _median([None if run["best"] is None else
                                                      1 + sum(v < run["best"] for v in ranked) for run in method_runs]),
                         "median_trials": statistics.median(run["trials"] for run in method_runs),
                         "median_discarded": statistics.median(run["discarded"] for run in method_runs),
                         "median_epochs": statistics.median(run["epochs"] for run in method_runs)}
    constant = summary["CBO, constant 10 epochs"]["median_epochs_to_target"]
    for row in summary.values():
        mine = row["median_epochs_to_target"]
        row["constant_cbo_epochs_over_these"] = None if not mine or constant is None else constant / mine
    return {"what": "epochs consumed (every epoch of every trial, the node-hour proxy) until the best trial "
                    "completed at 10 epochs reaches random search's median best-of-N at constant fidelity",
            "settings": {"trials_N": trials, "epoch_budget": budget, "seeds": list(seeds), "in_flight": in_flight,
                         "rungs": list(rungs), "reduction_factor": reduction_factor,
                         "max_asks": max_asks_factor * trials},
            "table": {"points": len(points), "epochs": EPOCHS, "best": ranked[0], "median": statistics.median(ranked),
                      "metadata": table.get("metadata", {})},
            "target": target, "target_rank": 1 + sum(v < target for v in ranked), "summary": summary, "runs": runs}


def print_fidelity(result: dict[str, Any]) -> None:
    s = result["settings"]
    print(f"\ntable: {result['table']['points']} points x {result['table']['epochs']} epochs, best "
          f"{result['table']['best']:.4f}, median {result['table']['median']:.4f}")
    print(f"target: random search's median best of {s['trials_N']} trials at 10 epochs = {result['target']:.4f} "
          f"(rank {result['target_rank']}); budget {s['epoch_budget']} epochs, rungs {s['rungs']}, "
          f"reduction factor {s['reduction_factor']:g}, {s['in_flight']} in flight")
    print(f"{'method':27s} {'epochs to target':>16s} {'reached':>8s} {'best':>8s} {'rank':>5s} {'trials':>7s} "
          f"{'discarded':>9s} {'constant/this':>13s}")
    for name, row in result["summary"].items():
        need = "-" if row["median_epochs_to_target"] is None else f"{row['median_epochs_to_target']:g}"
        best = "-" if row["median_best"] is None else f"{row['median_best']:.4f}"
        ratio = "-" if row["constant_cbo_epochs_over_these"] is None else f"{row['constant_cbo_epochs_over_these']:.2f}x"
        print(f"{name:27s} {need:>16s} {row['reached']:>4d}/{len(row['epochs_to_target'])} {best:>8s} "
              f"{row['median_best_rank'] or '-':>5} {row['median_trials']:>7g} {row['median_discarded']:>9g} {ratio:>13s}")
        print(f"{'':27s} per seed: {row['epochs_to_target']}")
