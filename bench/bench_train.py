"""Training throughput, memory and start-up of the real trainer (`gfm-train`), and inference.

    python bench/bench_train.py [--quick] [--epochs N] [--datasets ethanol oc20]
                                [--backbones EGNN PNA SchNet PaiNN MACE] [--sizes SMALL MEDIUM]
                                [--sections throughput memory inference baseline]
                                [--work-dir DIR] [--output FILE]

Workload (issue 3): ethanol, the first 1000 frames of
../shared/data/molecules/ethanol_train.xyz.xz split 800/100/100, and the 1085
OC20 adsorbate+slab frames of surfaces/oc20_debug_sub5.extxyz.xz (5 %
validation, training capped per epoch: see bench/train_runs.py), converted
with `gfm-data convert` (radius 5 Å, at most 50 neighbours) into --work-dir.
Adam lr 1e-3, fp32; 1 rank x 2 threads or `mpiexec -n 2` x 1 thread; batch
32 graphs per rank (ethanol) or 8 slabs (OC20). SMALL = 3 layers, hidden 50,
head 50,50; MEDIUM = 4 layers, hidden 256, head 256,256.

Sections:
  throughput  every backbone x size x force mode x {1, 2} ranks x dataset, each a
              real gfm-train run; steady state = the epochs after the first
  memory      EGNN with activation checkpointing (1 rank) and ZeRO-1 (2 ranks) against
              the plain runs: peak RSS from result.json, that RSS over a TINY-model run
              of the same data and ranks (interpreter + torch + data), step time, and
              the bytes one training step allocates (torch profiler, in-process)
  inference   SMALL models, batch 64, energy + forces, on the loader's batches
  baseline    PyG's SchNet against ours (both conservative, SMALL size), trained
              in-process on the same batches: the ratio is ours / PyG
Start-up (process start to the first training step) comes with every run.

HydraGNN's figures below are the issue author's measurements on these 2-core
machines (HydraGNN is not installed here); they are quoted, not re-measured.
Writes bench/results/train.json (after each section, so a partial run keeps its results).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from benchio import RESULTS, save_result
import train_inprocess as inproc
from train_runs import SIZES, Dataset, Run, convert, execute, ratio
from trainer.contract.trialconfig import ModelConfig

RESULT = RESULTS / "train.json"
BACKBONES = ("EGNN", "PNA", "SchNet", "PaiNN", "MACE")  # MACE at its defaults: max_L 1, correlation 3
FORCE_MODES = ("direct", "conservative")
# (dataset, backbone, size, forces, ranks): (HydraGNN graphs/s, target graphs/s), from the issue
TRAIN_TARGETS = {("ethanol", "EGNN", "SMALL", "direct", 1): (955, 1900),
                 ("ethanol", "EGNN", "SMALL", "conservative", 1): (652, 1300),
                 ("ethanol", "EGNN", "MEDIUM", "direct", 1): (177, 350),
                 ("ethanol", "EGNN", "SMALL", "direct", 2): (1468, 2900)}
INFER_TARGETS = {("EGNN", "direct"): (4166, 2 * 4166), ("EGNN", "conservative"): (2103, 2 * 2103)}
STARTUP_TARGET_S, STARTUP_HYDRAGNN = 4.0, "9-11 s"
PAPER_CHECKPOINTING = "the GFM paper: -58 % peak memory for +10 % time"
# mode: epochs per run, OC20 training samples per epoch, seconds per in-process measurement, repeats
MODES = {"quick": dict(epochs=3, oc20_samples=32, seconds=1.0, repeats=2),
         "full": dict(epochs=5, oc20_samples=96, seconds=2.0, repeats=3)}


def plan(args: argparse.Namespace) -> dict[str, list[Run]]:
    """The gfm-train runs of each section (a run shared by sections runs once)."""
    if args.quick:
        eth = [Run("ethanol", "EGNN", "SMALL", "direct", 1), Run("ethanol", "EGNN", "SMALL", "conservative", 1),
               Run("ethanol", "EGNN", "SMALL", "direct", 2), Run("ethanol", "EGNN", "MEDIUM", "direct", 1)]
        throughput = [r for r in eth if r.dataset in args.datasets]
        throughput += [Run("oc20")] if "oc20" in args.datasets else []
        memory_cells = [(d, "SMALL") for d in args.datasets if d == "ethanol"]
    else:
        throughput = [Run(d, b, s, f, n) for d in args.datasets for b in args.backbones for s in args.sizes
                      for f in FORCE_MODES for n in (1, 2)]
        memory_cells = [(d, s) for d in args.datasets for s in args.sizes]
    memory = []
    for dataset, size in memory_cells:
        memory += [Run(dataset, "EGNN", size), Run(dataset, "EGNN", size, checkpointing=True),
                   Run(dataset, "EGNN", size, ranks=2), Run(dataset, "EGNN", size, ranks=2, zero1=True)]
    for dataset in sorted({d for d, _ in memory_cells}):
        memory += [Run(dataset, "EGNN", "TINY", ranks=n) for n in (1, 2)]
    return {"throughput": throughput if "throughput" in args.sections else [],
            "memory": memory if "memory" in args.sections else []}


class Runner:
    """Runs each distinct configuration once, in order, and remembers its summary."""

    def __init__(self, data: dict[str, Dataset], work: Path, epochs: int):
        self.data, self.work, self.epochs, self.done = data, work, epochs, {}

    def __call__(self, run: Run) -> dict:
        if run not in self.done:
            epochs = 1 if run.size == "TINY" else self.epochs
            print(f"  gfm-train {run.name} ...", end="", flush=True)
            self.done[run] = execute(run, self.data[run.dataset], self.work, epochs)
            s = self.done[run]
            print(f" {s['graphs_per_s']:.0f} graphs/s, start-up {s['startup_s']:.1f} s, "
                  f"peak RSS {s['peak_rss_bytes'] / 2**20:.0f} MiB, cpu use {s['cpu_utilisation']:.2f}", flush=True)
        return self.done[run]


def throughput_rows(runs: list[Run], runner: Runner) -> list[dict]:
    rows = []
    for run in runs:
        row = dict(runner(run))
        reference = TRAIN_TARGETS.get((run.dataset, run.backbone, run.size, run.force_mode, run.ranks))
        if reference:
            row["hydragnn_graphs_per_s"], row["target_graphs_per_s"] = reference
            row["ratio_to_target"] = ratio(row["graphs_per_s"], reference[1])
            row["ratio_to_hydragnn"] = ratio(row["graphs_per_s"], reference[0])
        rows.append(row)
    return rows


def memory_rows(runs: list[Run], runner: Runner, data: dict[str, Dataset], threads: int) -> list[dict]:
    """Each technique against the plain run of the same dataset, size and ranks."""
    rows = []
    profiled: dict[str, tuple] = {}
    for run in runs:
        if run.size == "TINY" or not (run.checkpointing or run.zero1):
            continue
        plain = Run(run.dataset, run.backbone, run.size, run.force_mode, run.ranks)
        tiny = Run(run.dataset, "EGNN", "TINY", ranks=run.ranks)
        ours, base, floor = runner(run), runner(plain), runner(tiny)
        row = {"dataset": run.dataset, "backbone": run.backbone, "size": run.size, "ranks": run.ranks,
               "technique": "activation_checkpointing" if run.checkpointing else "zero1"}
        for label, summary in (("plain", base), ("with", ours)):
            row[f"{label}_peak_rss_mib"] = round(summary["peak_rss_bytes"] / 2**20, 1)
            row[f"{label}_rss_over_tiny_mib"] = round((summary["peak_rss_bytes"] - floor["peak_rss_bytes"]) / 2**20, 1)
            row[f"{label}_step_ms"] = summary["step_ms"]
        row["tiny_peak_rss_mib"] = round(floor["peak_rss_bytes"] / 2**20, 1)
        row["peak_rss_ratio"] = ratio(ours["peak_rss_bytes"], base["peak_rss_bytes"])
        row["rss_over_tiny_ratio"] = ratio(row["with_rss_over_tiny_mib"], row["plain_rss_over_tiny_mib"])
        row["step_time_ratio"] = ratio(ours["step_ms"], base["step_ms"])
        if run.checkpointing:  # the step's own allocations, measured in-process (1 rank)
            if run.dataset not in profiled:
                store, stats, weights = inproc.load(data[run.dataset].path, threads)
                profiled[run.dataset] = (stats, weights, inproc.training_batches(store, data[run.dataset].batch_size)[0])
            stats, weights, item = profiled[run.dataset]
            config = ModelConfig(mpnn_type=run.backbone, **SIZES[run.size])
            without = inproc.step_peak_bytes(config, stats, weights, item, False)
            within = inproc.step_peak_bytes(config, stats, weights, item, True)
            row["plain_step_alloc_peak_mib"] = round(without["step_peak_bytes"] / 2**20, 2)
            row["with_step_alloc_peak_mib"] = round(within["step_peak_bytes"] / 2**20, 2)
            row["step_alloc_peak_ratio"] = ratio(within["step_peak_bytes"], without["step_peak_bytes"])
            row["profiled_batch"] = {"graphs": item[0].num_graphs, "atoms": int(item[0].atomic_numbers.shape[0]),
                                     "edges": int(item[0].edge_index.shape[1])}
        else:  # ZeRO-1 shards Adam's two moments: computed from the parameter count, not measured
            adam = 8 * ours["parameters"]
            row["adam_state_mib_per_rank_plain"] = round(adam / 2**20, 2)
            row["adam_state_mib_per_rank_zero1_approx"] = round(adam / run.ranks / 2**20, 2)
        rows.append(row)
    return rows


def startup_summary(runner: Runner) -> dict:
    out = {"target_s": STARTUP_TARGET_S, "hydragnn": STARTUP_HYDRAGNN}
    for ranks in (1, 2):
        done = [s for r, s in runner.done.items() if r.ranks == ranks]
        if done:
            startup = [s["startup_s"] for s in done]
            ready = [s["launch_to_ready_s"] for s in done if s["launch_to_ready_s"] is not None]
            out[f"{ranks}_rank"] = {
                "runs": len(done), "startup_s_median": round(statistics.median(startup), 2),
                "startup_s_min": min(startup), "startup_s_max": max(startup),
                "launch_to_ready_s_median": round(statistics.median(ready), 2) if ready else None,
                "ratio_median_to_target": ratio(statistics.median(startup), STARTUP_TARGET_S)}
    return out


def inference_rows(data: Dataset, backbones: list[str], mode: dict, threads: int) -> list[dict]:
    store, stats, _ = inproc.load(data.path, threads)
    models = {(b, f): inproc.inference_model(ModelConfig(mpnn_type=b, force_mode=f, **SIZES["SMALL"]), stats)
              for b in backbones for f in FORCE_MODES}
    rates: dict[tuple, list[float]] = {key: [] for key in models}
    for model in models.values():  # warm-up
        inproc.inference_rate(model, store, 64, 0.0)
    for _ in range(mode["repeats"]):  # interleaved: the machine is shared
        for key, model in models.items():
            rates[key].append(inproc.inference_rate(model, store, 64, mode["seconds"]))
    rows = []
    for (backbone, forces), values in rates.items():
        row = {"dataset": data.name, "backbone": backbone, "size": "SMALL", "force_mode": forces,
               "batch_size": 64, "graphs_per_s_best": round(max(values), 1),
               "graphs_per_s_median": round(statistics.median(values), 1),
               "atoms_per_s_best": round(max(values) * data.mean_atoms, 0)}
        reference = INFER_TARGETS.get((backbone, forces))
        if reference:
            row["hydragnn_graphs_per_s"], row["target_graphs_per_s"] = reference
            row["ratio_to_target"] = ratio(row["graphs_per_s_best"], reference[1])
        rows.append(row)
    return rows


def baseline_rows(data: Dataset, mode: dict, threads: int) -> dict:
    store, stats, weights = inproc.load(data.path, threads)
    items = inproc.training_batches(store, data.batch_size)
    size = SIZES["SMALL"]
    pair = inproc.schnet_pair(stats, weights, size["hidden_dim"], size["num_conv_layers"], 16)
    for step, _ in pair.values():  # warm-up
        for item in items[:3]:
            step(item)
    rates: dict[str, list[float]] = {name: [] for name in pair}
    for _ in range(mode["repeats"]):
        for name, (step, _) in pair.items():
            rates[name].append(inproc.steps_rate(step, items, mode["seconds"]))
    out = {"dataset": data.name, "batch_size": data.batch_size, "hidden": size["hidden_dim"],
           "interactions": size["num_conv_layers"], "radial_functions": 16, "cutoff": stats.radius,
           "forces": "conservative (-dE/dx, create_graph)"}
    for name, values in rates.items():
        out[name] = {"graphs_per_s_best": round(max(values), 1), "graphs_per_s_median": round(statistics.median(values), 1),
                     "parameters": pair[name][1]}
    out["ratio_ours_to_pyg_best"] = ratio(out["ours"]["graphs_per_s_best"], out["pyg"]["graphs_per_s_best"])
    out["ratio_ours_to_pyg_median"] = ratio(out["ours"]["graphs_per_s_median"], out["pyg"]["graphs_per_s_median"])
    return out


def show(title: str, rows: list[dict], columns: list[tuple[str, str]]) -> None:
    print(f"\n{title}")
    print("  ".join(f"{header:>{max(len(header), 6)}s}" for header, _ in columns))
    for row in rows:
        cells = []
        for header, key in columns:
            value = row.get(key)
            text = "-" if value is None else (f"{value:.0f}" if isinstance(value, float) and abs(value) >= 100
                                              else f"{value:.2f}" if isinstance(value, float) else str(value))
            cells.append(f"{text:>{max(len(header), 6)}s}")
        print("  ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few minutes")
    parser.add_argument("--epochs", type=int, help="epochs per gfm-train run (default 3 quick, 5 full)")
    parser.add_argument("--datasets", nargs="+", default=["ethanol", "oc20"], choices=["ethanol", "oc20"])
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=BACKBONES)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--sections", nargs="+", default=["throughput", "memory", "inference", "baseline"],
                        choices=["throughput", "memory", "inference", "baseline"])
    parser.add_argument("--work-dir", type=Path, default=RESULTS / "work",
                        help="converted datasets and trial directories (outside git)")
    parser.add_argument("--output", type=Path, default=RESULT)
    args = parser.parse_args()
    mode = dict(MODES["quick" if args.quick else "full"])
    mode["epochs"] = args.epochs or mode["epochs"]
    threads = 2
    torch.set_num_threads(threads)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    report = {"what": "the real trainer (gfm-train) on real data: throughput, memory, start-up; inference; "
                      "PyG SchNet baseline",
              "machine": {"node": platform.node(), "cpus": os.cpu_count(), "torch": torch.__version__,
                          "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
                          "note": "shared machine: other jobs ran at the same time (see each run's "
                                  "load_average_before and cpu_utilisation, ~2.0 when it had both cores)"},
              "settings": {"mode": "quick" if args.quick else "full", **mode,
                           **{k: v for k, v in vars(args).items() if k not in ("work_dir", "output", "quick")},
                           "sizes": SIZES, "optimizer": "adam", "learning_rate": 1e-3, "precision": "fp32"},
              "hydragnn_reference": "quoted from issue 3 (measured by its author on these machines), not measured here"}

    def save() -> None:
        report["elapsed_s"] = round(time.time() - started, 1)
        save_result(args.output, report, announce=False)

    print(f"converting datasets into {args.work_dir} ...", flush=True)
    data = {"ethanol": convert("ethanol", args.work_dir, None),
            "oc20": convert("oc20", args.work_dir, mode["oc20_samples"])}
    report["datasets"] = {name: {"path": str(d.path), "counts": d.counts, "train_samples_per_epoch": d.train_samples,
                                 "batch_size_per_rank": d.batch_size, "mean_atoms": round(d.mean_atoms, 2),
                                 "mean_edges": round(d.mean_edges, 1)} for name, d in data.items()}
    runs = plan(args)
    runner = Runner(data, args.work_dir, mode["epochs"])
    if runs["throughput"]:
        print(f"throughput: {len(runs['throughput'])} gfm-train runs", flush=True)
        report["throughput"] = throughput_rows(runs["throughput"], runner)
        show("TRAINING THROUGHPUT (steady state; target and HydraGNN: issue 3, ethanol)", report["throughput"],
             [("dataset", "dataset"), ("backbone", "backbone"), ("size", "size"), ("forces", "force_mode"),
              ("ranks", "ranks"), ("graphs/s", "graphs_per_s"), ("atoms/s", "atoms_per_s"), ("step ms", "step_ms"),
              ("epoch s", "epoch_s"), ("start s", "startup_s"), ("cpu use", "cpu_utilisation"),
              ("HydraGNN", "hydragnn_graphs_per_s"), ("target", "target_graphs_per_s"), ("x target", "ratio_to_target")])
        save()
    if runs["memory"]:
        print(f"\nmemory: {len(runs['memory'])} gfm-train runs (some shared with throughput)", flush=True)
        report["memory"] = memory_rows(runs["memory"], runner, data, threads)
        report["memory_note"] = ("peak RSS: result.json's peak_memory_bytes (max over ranks of ru_maxrss); "
                                 "over tiny: minus a TINY-model run's peak RSS with the same data and ranks; "
                                 "step alloc: torch-profiler peak of the bytes one training step allocates "
                                 "(first batch of epoch 0); reference: " + PAPER_CHECKPOINTING)
        show(f"MEMORY TECHNIQUES (EGNN; ratio = with / plain; {PAPER_CHECKPOINTING})", report["memory"],
             [("dataset", "dataset"), ("size", "size"), ("ranks", "ranks"), ("technique", "technique"),
              ("RSS MiB", "plain_peak_rss_mib"), ("with", "with_peak_rss_mib"), ("ratio", "peak_rss_ratio"),
              ("over tiny", "plain_rss_over_tiny_mib"), ("with", "with_rss_over_tiny_mib"),
              ("ratio", "rss_over_tiny_ratio"), ("step alloc MiB", "plain_step_alloc_peak_mib"),
              ("with", "with_step_alloc_peak_mib"), ("ratio", "step_alloc_peak_ratio"),
              ("step ms", "plain_step_ms"), ("with", "with_step_ms"), ("time ratio", "step_time_ratio")])
        save()
    if runner.done:
        report["startup"] = startup_summary(runner)
        print(f"\nSTART-UP (process start -> first training step; target <= {STARTUP_TARGET_S} s, "
              f"HydraGNN {STARTUP_HYDRAGNN}): {report['startup']}")
        save()
    if "inference" in args.sections and "ethanol" in args.datasets:
        report["inference"] = inference_rows(data["ethanol"], args.backbones, mode, threads)
        report["inference_note"] = ("model(batch) in eval mode without parameter gradients, as trainer.predict "
                                    "runs a member; batches from EpochLoader.local_batches(64), assembled "
                                    "inside the timed loop; neighbour lists from the converted file")
        show("INFERENCE (SMALL, batch 64, energy + forces, 2 threads; target = 2 x HydraGNN)", report["inference"],
             [("backbone", "backbone"), ("forces", "force_mode"), ("graphs/s best", "graphs_per_s_best"),
              ("median", "graphs_per_s_median"), ("HydraGNN", "hydragnn_graphs_per_s"),
              ("target", "target_graphs_per_s"), ("x target", "ratio_to_target")])
        save()
    if "baseline" in args.sections and "ethanol" in args.datasets:
        report["baseline"] = baseline_rows(data["ethanol"], mode, threads)
        b = report["baseline"]
        print(f"\nBASELINE (training step, SchNet SMALL conservative, ethanol batches of {b['batch_size']}): "
              f"ours {b['ours']['graphs_per_s_best']:.0f} graphs/s, PyG SchNet {b['pyg']['graphs_per_s_best']:.0f} "
              f"graphs/s: ours/PyG x{b['ratio_ours_to_pyg_best']} (median x{b['ratio_ours_to_pyg_median']})")
        save()
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    save()
    print(f"\nwrote {args.output} ({report['elapsed_s']:.0f} s)")


if __name__ == "__main__":
    main()
