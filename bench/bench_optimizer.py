"""Cost of one ask and one tell as the history grows, per optimiser backend.

    python bench/bench_optimizer.py [--evals 25 100 500 1000 2000] [--calls 20]
                                    [--slow-max-evals 200] [--in-flight 32]

The space has 8 hyperparameters: Table IV plus learning rate, batch size and
weight decay. For each history size N the optimiser is first told N results
at once (configurations it did not ask for, like a resume: "bulk tell"), then
asks for --in-flight points, then runs --calls steady-state cycles of the
asynchronous manager: tell the oldest running trial, ask one new point. Per-call
p50/p99 of those asks and tells are reported (p99 of a few calls is their max).
The objective is an analytic function of the hyperparameters (no failures, so
DeepHyper's default stop at 100 failures never triggers).

Backends: `cbo` (our defaults, orchestrator/optimizers.py), `cbo-deephyper`
(CBO's own signature defaults: mixedga acquisition optimiser, cl_max), `skopt-gp`
and `random`. cbo-deephyper and skopt-gp take seconds per call at a few hundred
evaluations, so they stop at --slow-max-evals. The baseline is cbo-deephyper:
ratios are its ask+tell cycle p50 over each other backend's at the same N.
Writes bench/results/optimizer.json. The machine is shared: timings are noisy.
"""
from __future__ import annotations

import argparse
import inspect
import math
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

import threadpoolctl

from benchio import RESULTS, save_result
from orchestrator.search.backends import make_optimizer
from search_spaces import SearchSpace, load_space, parse_space

RESULT = RESULTS / "optimizer.json"
EXTRA = {"learning_rate": {"low": 1e-4, "high": 1e-2, "prior": "log-uniform"},
         "batch_size": {"low": 8, "high": 64, "prior": "log-uniform"},
         "weight_decay": {"low": 0.0, "high": 0.1}}
SLOW = ("cbo-deephyper", "skopt-gp")


def bench_space(backend: str) -> SearchSpace:
    table = load_space("table_iv").to_mapping()
    parameters = {**table["parameters"], **EXTRA}
    optimizer = {}
    if backend == "cbo-deephyper":
        from deephyper.hpo import CBO

        signature = inspect.signature(CBO.__init__).parameters
        optimizer = {k: signature[k].default for k in ("surrogate_model", "acq_func", "acq_optimizer",
                                                      "multi_point_strategy")}
        optimizer["acq_optimizer_kwargs"] = {"max_total_failures": 100}  # DeepHyper's default
    return parse_space({"backend": backend.split("-deephyper")[0], "parameters": parameters,
                        "optimizer": optimizer}, f"<bench {backend}>")


def objective(p: dict) -> float:
    width = math.log(p["hidden_dim"] / 600) ** 2 + math.log(p["fc_dim"] / 500) ** 2
    return ({"PNA": 0.0, "EGNN": 0.2, "SchNet": 0.4, "PaiNN": 0.3, "MACE": 0.1 + 0.1 * p["max_L"]}[p["mpnn_type"]]
            + 0.3 * (p["num_conv_layers"] - 4) ** 2
            + width + math.log10(p["learning_rate"] / 1e-3) ** 2 + 0.1 * math.log2(p["batch_size"] / 16) ** 2
            + 2 * p["weight_decay"] + 0.1 * (p["num_fc_layers"] - 2))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def measure(backend: str, evals: int, calls: int, in_flight: int, seed: int) -> dict:
    space = bench_space(backend)
    history_rng = random.Random(seed)
    history = [space.sample(history_rng) for _ in range(evals)]
    with tempfile.TemporaryDirectory() as log_dir:
        optimizer = make_optimizer(space, seed, log_dir)
        start = time.perf_counter()
        optimizer.tell([(p, objective(p)) for p in history])
        bulk_tell = time.perf_counter() - start
        start = time.perf_counter()
        running = optimizer.ask(in_flight)
        first_ask = time.perf_counter() - start
        asks, tells = [], []
        for _ in range(calls):
            params = running.pop(0)
            start = time.perf_counter()
            optimizer.tell([(params, objective(params))])
            tells.append(time.perf_counter() - start)
            start = time.perf_counter()
            running += optimizer.ask(1)
            asks.append(time.perf_counter() - start)
    cycles = [a + t for a, t in zip(asks, tells)]
    return {"evals": evals, "calls": calls, "bulk_tell_s": bulk_tell, f"ask_{in_flight}_s": first_ask,
            "ask_p50_s": statistics.median(asks), "ask_p99_s": percentile(asks, 0.99),
            "tell_p50_s": statistics.median(tells), "tell_p99_s": percentile(tells, 0.99),
            "cycle_p50_s": statistics.median(cycles), "repeats_replaced": optimizer.num_repeats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--evals", type=int, nargs="+", default=[25, 100, 500, 1000, 2000])
    parser.add_argument("--calls", type=int, default=20, help="steady-state ask+tell cycles timed per size")
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--slow-max-evals", type=int, default=200,
                        help=f"largest history measured for the slow backends {', '.join(SLOW)}")
    parser.add_argument("--backends", nargs="+", default=["cbo", "cbo-deephyper", "skopt-gp", "random"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULT)
    args = parser.parse_args()

    results: dict[str, list[dict]] = {}
    skipped: dict[str, list[int]] = {}
    for backend in args.backends:
        results[backend], skipped[backend] = [], []
        for evals in args.evals:
            if backend in SLOW and evals > args.slow_max_evals:
                skipped[backend].append(evals)
                continue
            row = measure(backend, evals, args.calls, args.in_flight, args.seed)
            results[backend].append(row)
            print(f"{backend:14s} N={evals:5d}  ask p50 {row['ask_p50_s']:7.3f} s  p99 {row['ask_p99_s']:7.3f} s"
                  f"  tell p50 {row['tell_p50_s']:7.3f} s  p99 {row['tell_p99_s']:7.3f} s"
                  f"  bulk tell {row['bulk_tell_s']:7.3f} s  ask({args.in_flight}) {row[f'ask_{args.in_flight}_s']:7.3f} s",
                  flush=True)
    baseline = {r["evals"]: r["cycle_p50_s"] for r in results.get("cbo-deephyper", [])}
    ratios = {backend: {str(r["evals"]): baseline[r["evals"]] / r["cycle_p50_s"]
                        for r in rows if r["evals"] in baseline and r["cycle_p50_s"] > 0}
              for backend, rows in results.items() if backend != "cbo-deephyper"}
    for backend, by_size in ratios.items():
        print(f"cbo-deephyper / {backend} (ask+tell p50): "
              + ", ".join(f"N={n}: {ratio:.1f}x" for n, ratio in by_size.items()))
    save_result(args.output, {
        "what": "seconds per ask(1) and tell(1) with --in-flight pending, after N told evaluations",
        "machine": {"node": platform.node(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "blas_threads": {i["internal_api"]: i["num_threads"] for i in threadpoolctl.threadpool_info()}},
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "space": bench_space("random").names, "results": results, "skipped_evals": skipped,
        "ratios_vs_cbo_deephyper_defaults": ratios})


if __name__ == "__main__":
    main()
