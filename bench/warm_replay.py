"""Warm start in the tabular benchmark (bench_search_quality.py --fidelity --warm): CBO at constant fidelity on
the ethanol curve table, cold or told first what an earlier campaign on another dataset found.

The earlier campaign is curve_table.WARM_TABLE: the same grid trained for 10 epochs on 3BPA (300 K), as many
points as a random campaign there trained (the first points of the build's shuffled order: a random sample).
Its results are told as they are, objectives on another dataset (what `gfm-hpo launch --warm-start` does with
a run of the same epoch budget); the cold and the warm search then replay the same way against ethanol.
Reported: trials (completed, 10 epochs each) until the best reaches the target, the same target as the
fidelity replay (random search's median best-of-N), median over the seeds.
"""
from __future__ import annotations

import statistics
from typing import Any, Sequence

import fidelity_replay


def run_warm(table: dict[str, Any], warm_table: dict[str, Any], target: float, seeds: Sequence[int], trials: int,
             in_flight: int, max_asks_factor: int, report=print) -> dict[str, Any]:
    prior = [(row["params"], row["objective"]) for row in warm_table["points"].values()]
    runs: dict[str, list[dict]] = {"cold": [], "warm": []}
    for seed in seeds:
        for name, told in (("cold", []), ("warm", prior)):
            run = fidelity_replay.replay(table["points"], "cbo", seed, [], 3.0, trials * fidelity_replay.EPOCHS,
                                         in_flight, max_asks_factor * trials, prior=told)
            run["trials_to_target"] = fidelity_replay.epochs_to(run["history"], target, column=2)
            runs[name].append(run)
            report(f"CBO {name:4s} seed {seed}: best {run['best']:.4f}, trials to target {run['trials_to_target']}")
    summary = {name: {"median_trials_to_target": fidelity_replay._median([r["trials_to_target"] for r in rs]),
                      "trials_to_target": [r["trials_to_target"] for r in rs],
                      "reached": sum(r["trials_to_target"] is not None for r in rs),
                      "median_best": statistics.median(r["best"] for r in rs)} for name, rs in runs.items()}
    return {"what": "trials completed (10 epochs each) until CBO's best reaches the target, cold against warm-started "
                    "from a campaign on another dataset",
            "prior": {"points": len(prior), "data": warm_table.get("metadata", {}).get("data")},
            "target": target, "summary": summary, "runs": runs}


def print_warm(result: dict[str, Any]) -> None:
    print(f"\nwarm start: {result['prior']['points']} trials of a campaign on {result['prior']['data']}, "
          f"target {result['target']:.4f}")
    for name, row in result["summary"].items():
        need = "-" if row["median_trials_to_target"] is None else f"{row['median_trials_to_target']:g}"
        print(f"  CBO {name:4s}: trials to target (median) {need}, reached {row['reached']}/"
              f"{len(row['trials_to_target'])}, per seed {row['trials_to_target']}, best {row['median_best']:.4f}")
