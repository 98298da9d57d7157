"""Search quality as a tabular benchmark: trials CBO, skopt-GP and random search need to reach a target.

    python bench/bench_search_quality.py --build [--workers 2] [--limit K] [--build-minutes M]
    python bench/bench_search_quality.py --replay [--trials 50] [--seeds 0 1 2 3 4] [--in-flight 4]
                                         [--backends cbo skopt-gp random]
    python bench/bench_search_quality.py --build-curves --fidelity [--trials 50] [--rungs 1 3 9]
                                         [--reduction-factor 3]

--build-curves / --fidelity: the multi-fidelity benchmark (bench/curve_table.py,
bench/fidelity_replay.py): 144 grid points trained for 10 epochs with every
epoch's validation loss, then constant-fidelity CBO, CBO with ASHA, and
random search constant and with ASHA replayed against it; the epochs
consumed until the best reaches random search's best-of-N at 10 epochs.
Writes bench/results/search_fidelity.json.

--build trains the grid points missing from bench/results/search_table.json
(bench/search_table.py: 360 configurations of search_spaces/small.yaml, real
ethanol data, 2 epochs each; resumable, so it can run in chunks).

--replay runs searches against the table through the project's own
`orchestrator.search.make_optimizer`, with the backends' production settings
and the small space's real ranges (hidden_dim 10..200 and so on), as the
manager would:
  - asynchronous, --in-flight trials at once: the first ask is for all of
    them; then the oldest trial completes (all trials take equal time here),
    its result is told and one new configuration is asked for;
  - every proposal is snapped to its nearest grid point (bench/search_table.py
    `snap`) and the optimiser is told the objective of that point FOR THE
    CONFIGURATION IT ASKED: the table is read as a piecewise-constant function
    of the real space. Telling the snapped point instead would leave the asked
    one pending for ever (skopt-gp lies about every pending point) and show the
    model points it never proposed;
  - a trial is a table point trained: a proposal that snaps onto a point
    already trained in this replay is a free look-up (told at once), one that
    snaps onto a point still "training" is told when that point completes;
    neither costs a trial. Proposals are capped at --max-asks-factor x --trials.
Target: random search's best objective after N = --trials trials, median over
the seeds. Reported per backend: trials until the best-so-far reaches the target
(median over seeds; not reached counts as > N), the median best at N, and the
median best-so-far curve. Random search is the baseline: the ratio is its
median trials-to-target over each backend's. Writes bench/results/search_quality.json.
Trial counts do not depend on the machine's load; only the optimiser seconds do.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import statistics
import sys
import tempfile
import time
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is scripts, not a package

import curve_table  # noqa: E402
import fidelity_replay  # noqa: E402
import search_table  # noqa: E402
import warm_replay  # noqa: E402
from benchio import RESULTS, save_result  # noqa: E402
from orchestrator.search.backends import make_optimizer  # noqa: E402
from trainer.contract.errors import UserError, run_cli  # noqa: E402

RESULT = RESULTS / "search_quality.json"
FIDELITY_RESULT = RESULTS / "search_fidelity.json"
BACKENDS = ("cbo", "skopt-gp", "random")


def replay(points: dict[str, dict], backend: str, seed: int, trials: int, in_flight: int,
           max_asks: int) -> dict[str, Any]:
    """One search of `trials` table points; returns the objectives in completion order and the counts."""
    space = dataclasses.replace(search_table.grid_space(), backend=backend)
    evaluated: dict[str, float | None] = {}
    flight: OrderedDict[str, list[dict]] = OrderedDict()  # table point -> the proposals waiting on it
    history: list[float | None] = []
    asks = lookups = 0
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as log_dir:
        optimizer = make_optimizer(space, seed, log_dir)

        def fill() -> None:
            nonlocal asks, lookups
            while len(flight) < in_flight and len(history) + len(flight) < trials and asks < max_asks:
                wanted = min(in_flight - len(flight), trials - len(history) - len(flight), max_asks - asks)
                proposals = optimizer.ask(wanted)
                if not proposals:  # the space is exhausted (never with the grid's real ranges)
                    break
                asks += len(proposals)
                for params in proposals:
                    point = search_table.key(search_table.snap(params))
                    if point in evaluated:
                        optimizer.tell([(params, evaluated[point])])
                        lookups += 1
                    elif point in flight:
                        flight[point].append(params)
                        lookups += 1
                    else:
                        flight[point] = [params]

        fill()
        while flight:
            point, waiting = flight.popitem(last=False)
            objective = points[point]["objective"]
            evaluated[point] = objective
            history.append(objective)
            optimizer.tell([(params, objective) for params in waiting])
            fill()
    return {"seed": seed, "history": history, "trials": len(history), "asks": asks, "lookups": lookups,
            "asks_exhausted": len(history) < trials, "optimizer_seconds": time.perf_counter() - start,
            "repeats_replaced": optimizer.num_repeats}


def best_so_far(history: Sequence[float | None]) -> list[float | None]:
    curve, best = [], None
    for objective in history:
        if objective is not None and (best is None or objective < best):
            best = objective
        curve.append(best)
    return curve


def trials_to(curve: Sequence[float | None], target: float) -> int | None:
    """Trials until the best-so-far is at or below `target`; None if never."""
    return next((t for t, best in enumerate(curve, 1) if best is not None and best <= target), None)


def median(values: Sequence[float | None]) -> float | None:
    """Median with None as +infinity (not reached / nothing yet): the answer is None when it lands there."""
    value = statistics.median([math.inf if v is None else v for v in values])
    return None if math.isinf(value) else value


def summarise(runs: list[dict], target: float, trials: int, ranked: list[float]) -> dict[str, Any]:
    curves = [best_so_far(run["history"]) + [None] * (trials - run["trials"]) for run in runs]
    needed = [trials_to(curve, target) for curve in curves]
    finals = [curve[-1] for curve in curves]
    for run, curve, reached in zip(runs, curves, needed):
        run.update(best=curve[-1], trials_to_target=reached,
                   best_rank=None if curve[-1] is None else 1 + sum(v < curve[-1] for v in ranked))
    return {"median_trials_to_target": median(needed), "reached": sum(n is not None for n in needed),
            "trials_to_target": needed, "median_best": median(finals),
            "median_best_rank": median([run["best_rank"] for run in runs]),
            "median_asks": statistics.median(run["asks"] for run in runs),
            "median_lookups": statistics.median(run["lookups"] for run in runs),
            "median_optimizer_seconds": statistics.median(run["optimizer_seconds"] for run in runs),
            "median_curve": [median(column) for column in zip(*curves)]}


def run_replay(args: argparse.Namespace) -> dict[str, Any]:
    table = search_table.load_table(args.table)
    missing = [search_table.key(p) for p in search_table.grid_points() if search_table.key(p) not in table["points"]]
    if missing:
        raise UserError(f"{args.table}: {len(missing)} of {len(search_table.grid_points())} grid points are not "
                        f"trained yet (e.g. {missing[0]}); run with --build first")
    points = table["points"]
    digests = sorted({row["trainer_source_sha256"] for row in points.values()})
    if len(digests) > 1:
        print(f"warning: the table mixes points trained by {len(digests)} versions of trainer/ ({', '.join(digests)})")
    ranked = sorted(row["objective"] for row in points.values() if row["objective"] is not None)
    if args.trials > len(points):
        raise UserError(f"--trials {args.trials}: the table has only {len(points)} points")
    max_asks = args.max_asks_factor * args.trials
    runs: dict[str, list[dict]] = {}
    for backend in ["random", *[b for b in args.backends if b != "random"]]:  # random first: it sets the target
        runs[backend] = []
        for seed in args.seeds:
            run = replay(points, backend, seed, args.trials, args.in_flight, max_asks)
            runs[backend].append(run)
            best = min((v for v in run["history"] if v is not None), default=None)
            print(f"{backend:9s} seed {seed}: {run['trials']} trials, {run['asks']} asks, "
                  f"best {best if best is None else round(best, 4)}, {run['optimizer_seconds']:.1f} s", flush=True)
    target = median([best_so_far(run["history"])[-1] for run in runs["random"]])
    if target is None:
        raise UserError(f"{args.table}: random search found no successful trial in {args.trials}; nothing to reach")
    summary = {backend: summarise(backend_runs, target, args.trials, ranked) for backend, backend_runs in runs.items()}
    baseline = summary["random"]["median_trials_to_target"]
    for backend, row in summary.items():
        mine = row["median_trials_to_target"]
        row["random_trials_over_these"] = None if mine is None or baseline is None else baseline / mine
    failed = sum(row["objective"] is None for row in points.values())
    return {
        "what": "trials (table points trained) until the best-so-far reaches random search's median best-of-N",
        "settings": {"trials": args.trials, "seeds": args.seeds, "in_flight": args.in_flight,
                     "max_asks": max_asks, "backends": list(runs), "table": str(args.table)},
        "table": {"points": len(points), "failed": failed, "best": ranked[0], "median": statistics.median(ranked),
                  "worst": ranked[-1], "best_point": min((r["objective"], k) for k, r in points.items()
                                                         if r["objective"] is not None)[1],
                  "metadata": table.get("metadata", {})},
        "target": target, "target_rank": 1 + sum(v < target for v in ranked),
        "summary": summary, "runs": runs}


def print_summary(result: dict[str, Any]) -> None:
    n = result["settings"]["trials"]
    table = result["table"]
    print(f"\ntable: {table['points']} points ({table['failed']} failed), best {table['best']:.4f} "
          f"({table['best_point']}), median {table['median']:.4f}")
    print(f"target: random search's median best of {n} = {result['target']:.4f} "
          f"(rank {result['target_rank']} of {table['points'] - table['failed']})")
    print(f"{'backend':9s} {'trials to target (median)':>26s} {'reached':>8s} {'best@N':>8s} {'rank@N':>7s} "
          f"{'asks':>5s} {'random/this':>11s}")
    for backend, row in result["summary"].items():
        needed = row["median_trials_to_target"]
        needed_text = f"> {n}" if needed is None else f"{needed:g}"
        best = "-" if row["median_best"] is None else f"{row['median_best']:.4f}"
        ratio = "-" if row["random_trials_over_these"] is None else f"{row['random_trials_over_these']:.2f}x"
        print(f"{backend:9s} {needed_text:>26s} {row['reached']:>4d}/{len(row['trials_to_target'])} {best:>8s} "
              f"{row['median_best_rank'] or '-':>7} {row['median_asks']:>5g} {ratio:>11s}")
        print(f"{'':9s} per seed: {['>' + str(n) if t is None else t for t in row['trials_to_target']]}")
    marks = [t for t in (5, 10, 20, 30, 50, 75, 100, 150, 200) if t <= n]
    print("median best-so-far after t trials:")
    print(f"{'t':>9s} " + " ".join(f"{t:>7d}" for t in marks))
    for backend, row in result["summary"].items():
        curve = row["median_curve"]
        print(f"{backend:>9s} " + " ".join("      -" if curve[t - 1] is None else f"{curve[t - 1]:7.4f}" for t in marks))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_search_quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", action="store_true", help="train the grid points missing from the table")
    parser.add_argument("--replay", action="store_true", help="replay the searches against the table")
    parser.add_argument("--table", type=Path, default=search_table.TABLE)
    parser.add_argument("--work-dir", type=Path, default=search_table.WORK, help="converted data and trial dirs")
    parser.add_argument("--workers", type=int, default=2, help="trials trained at once (one thread each)")
    parser.add_argument("--limit", type=int, help="train at most this many missing points")
    parser.add_argument("--build-minutes", type=float, help="start no new point after this many minutes")
    parser.add_argument("--trials", type=int, default=50, help="N: trials per search")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--in-flight", type=int, default=4, help="trials running at once in a replayed search")
    parser.add_argument("--max-asks-factor", type=int, default=20, help="proposals allowed per trial, at most")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--output", type=Path, help=f"default {RESULT} ({FIDELITY_RESULT} with --fidelity)")
    parser.add_argument("--build-curves", action="store_true", help="train the missing points of the 10-epoch curve table")
    parser.add_argument("--fidelity", action="store_true", help="replay constant fidelity against ASHA on the curves")
    parser.add_argument("--curve-table", type=Path, default=curve_table.TABLE)
    parser.add_argument("--rungs", type=int, nargs="+", default=[1, 3, 9], help="ASHA's rungs (epochs)")
    parser.add_argument("--reduction-factor", type=float, default=3.0)
    parser.add_argument("--warm", action="store_true",
                        help="with --fidelity: also CBO cold against warm-started from the 3BPA campaign")
    parser.add_argument("--build-warm", type=int, metavar="K",
                        help="train K points of the grid on 3BPA: the warm start's earlier campaign")
    args = parser.parse_args(argv)
    if not (args.build or args.replay or args.build_curves or args.fidelity or args.build_warm):
        parser.error("nothing to do: give --build, --replay, --build-curves or --fidelity")
    for flag in ("workers", "limit", "trials", "in_flight", "max_asks_factor"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    if args.build:
        search_table.build(args.table, args.work_dir, args.workers, args.limit, args.build_minutes)
    if args.build_curves:
        curve_table.build(args.curve_table, args.work_dir, args.workers, args.limit, args.build_minutes)
    if args.build_warm:
        curve_table.build(curve_table.WARM_TABLE, args.work_dir, args.workers, args.build_warm, args.build_minutes,
                          warm=True)
    logging.getLogger("deephyper").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="(deephyper|skopt|sklearn)")
    if args.replay:
        result = run_replay(args)
        print_summary(result)
        save_result(args.output or RESULT, result)
    if args.fidelity:
        table = curve_table.load_complete(args.curve_table)
        result = fidelity_replay.run_fidelity(table, args.seeds, args.trials, args.in_flight, args.rungs,
                                              args.reduction_factor, args.max_asks_factor)
        fidelity_replay.print_fidelity(result)
        save_result(args.output or FIDELITY_RESULT, result)
        if args.warm:
            warm_table = search_table.load_table(curve_table.WARM_TABLE)
            if not warm_table["points"]:
                raise UserError(f"{curve_table.WARM_TABLE}: no points; run with --build-warm 30 first")
            result["warm_start"] = warm_replay.run_warm(table, warm_table, result["target"], args.seeds, args.trials,
                                                        args.in_flight, args.max_asks_factor)
            warm_replay.print_warm(result["warm_start"])
            save_result(args.output or FIDELITY_RESULT, result)
    return 0


if __name__ == "__main__":
    run_cli(main, "bench_search_quality")
