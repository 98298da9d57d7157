"""Test-set accuracy after training, as a fraction of the trivial predictors' error, per recipe.

    python bench/bench_accuracy.py [--backbones EGNN PNA SchNet] [--recipes old new] [--seeds 0]
                                   [--epochs 30 | --seconds T|mace] [--min-steps N] [--new KEY=VALUE ...]
                                   [--force-modes direct] [--threads 2] [--work-dir DIR] [--mace]

The reference workload, run with the REAL console scripts: the first 1000
frames of ../shared/data/molecules/ethanol_train.xyz.xz, `gfm-data convert
--val 0.1 --test 0.1 --seed 0 --radius 5.0 --max-neighbours 50` (800/100/100),
then `gfm-train` on trial.yaml with a SMALL model (3 conv layers, hidden 50,
head 50,50), direct forces, batch 32, fp32, 2 threads, and one of two recipes:
  - old: Adam at a constant 1e-3, no weight average, no stage two (this
    benchmark's settings before the recipe, and the trainer's old schedule-free
    choice);
  - new: the trainer's defaults (AdamW, cosine over the budget, weight average
    0.999, stage two), plus any --new KEY=VALUE overrides (training keys).
The budget is the same for both: --epochs E (default 30), or --seconds T,
each trial's wall-time budget (training.max_seconds, with no epoch limit):
the recipes at equal wall time. --min-steps N adds training.min_steps.
--mace first trains MACE small with mace-torch's own `mace_run_train` for --epochs
epochs on the same split (bench/mace_reference.py) and evaluates it on the same test
frames; `--seconds mace` then gives each of our trials MACE's wall time. The summary
gives our MAE / MACE's, against the targets <= 0.5 (forces) and <= 0.2 (energy).
(On a machine whose cores other processes keep busy, two OpenMP threads can
crawl; --threads 1 then gives the same accuracy, but not the throughput.)

best.pt (the best validation epoch; the weight average where there is one)
is then evaluated on the held-out ethanol_test.xyz.xz (1000 frames, never
seen in training or validation), rebuilt with trainer.models.build from the
checkpoint's model_config and stats. Baselines on the same test frames:
  - zero forces: MAE = mean |F| component;
  - the mean energy: what the model predicts before training (its output
    layer starts at zero), i.e. the reference energies plus the mean
    per-atom residual of the training set.
Targets: force MAE <= 0.25 x zero-force MAE, energy MAE clearly below the
mean predictor's. The same-run baseline is the old recipe: the summary gives
new / old MAE per backbone. The training loop's throughput (graphs/s, median
over epochs, from result.json) is recorded too (target SMALL direct >= 1900).
Writes bench/results/accuracy.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ase.io
import numpy as np
import torch
import yaml

from benchio import RESULTS, save_result
from mace_reference import evaluate_mace, train_mace, write_split
from trainer.contract import typed
from trainer.contract.trialconfig import ModelConfig
from trainer.data.batch import Batch
from trainer.data.graphs import GraphArrays
from trainer.data.structures import read_structures
from trainer.models.build import DataStats, build_model

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "molecules" / "ethanol_train.xyz.xz"
TEST = ROOT.parent / "shared" / "data" / "molecules" / "ethanol_test.xyz.xz"
RESULT = RESULTS / "accuracy.json"
BIN = Path(sys.executable).parent
FRAMES = 1000
SMALL = {"num_conv_layers": 3, "hidden_dim": 50, "num_fc_layers": 2, "fc_dim": 50}
FORCE_TARGET = 0.25          # test force MAE / zero-force MAE
RECIPES = {"old": {"optimizer": "adam", "learning_rate": 1.0e-3, "lr_schedule": "constant", "ema_decay": None,
                   "stage_two": None},
           "new": {}}
THROUGHPUT_TARGETS = {"direct": 1900, "conservative": 1300}   # SMALL EGNN, graphs/s, 2 cores
MACE_TARGETS = {"force": 0.5, "energy": 0.2}                     # our MAE / MACE small's at its wall time


def convert(work: Path) -> tuple[Path, list]:
    frames = work / "ethanol_1000.extxyz"
    structures = read_structures(DATA)[:FRAMES]
    ase.io.write(frames, structures)
    output = work / "ethanol.bp"
    run = subprocess.run([str(BIN / "gfm-data"), "convert", "--name", "ethanol", "--output", str(output),
                          "--val", "0.1", "--test", "0.1", "--seed", "0", "--radius", "5.0",
                          "--max-neighbours", "50", "--overwrite", str(frames)], capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"gfm-data convert failed:\n{run.stderr[-2000:]}")
    return output, structures


def train(trial: Path, data: Path, backbone: str, force_mode: str, seed: int, training: dict,
          model: dict | None = None) -> dict:
    trial.mkdir(parents=True)
    (trial / "trial.yaml").write_text(yaml.safe_dump({
        "data": {"sources": [{"path": str(data)}]},
        "model": {"mpnn_type": backbone, "force_mode": force_mode, **SMALL, **(model or {})},
        "training": {**training, "seed": seed}}))
    start = time.perf_counter()
    run = subprocess.run([str(BIN / "gfm-train"), str(trial)], capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"gfm-train failed for {trial}:\n{run.stderr[-2000:]}")
    result = json.loads((trial / "result.json").read_text())
    result["wall_seconds"] = time.perf_counter() - start
    return result


def held_out() -> GraphArrays:
    frames = read_structures(TEST)
    return GraphArrays.from_atoms(frames, radius=5.0, max_neighbours=50,
                                  energies=[atoms.get_potential_energy() for atoms in frames],
                                  forces=[atoms.get_forces() for atoms in frames])


def test_errors(best: Path, graphs: GraphArrays) -> dict[str, float]:
    """Model and baseline errors on the held-out frames, from best.pt."""
    state = torch.load(best, weights_only=True)
    stats = DataStats.from_dict(state["stats"])
    model = build_model(typed.build(ModelConfig, state["model_config"], origin=f"{best}: model_config"), stats)
    model.load_state_dict(state["model"])
    model.eval()
    batch = Batch.from_arrays(graphs, dtype=torch.float64)
    model.double()
    with torch.enable_grad() if model.config.force_mode == "conservative" else torch.no_grad():
        energy, forces = model(batch)
        # The untrained model's energy: references plus the mean residual per atom.
        reference = model.reference_energies[batch.source[batch.graph_index], batch.atomic_numbers]
        baseline = torch.zeros_like(energy).index_add_(0, batch.graph_index, reference + stats.energy_shift)
    labels, true_forces = batch.energy, batch.forces
    energy_mae = (energy.detach() - labels).abs().mean().item()
    per_atom_mae = ((energy.detach() - labels) / batch.num_atoms.double()).abs().mean().item()
    force_mae = (forces.detach() - true_forces).abs().mean().item()
    mean_energy_mae = (baseline - labels).abs().mean().item()
    zero_force_mae = true_forces.abs().mean().item()
    return {"test_frames": len(graphs), "energy_mae_eV": energy_mae, "force_mae_eV_per_A": force_mae,
            "energy_mae_meV_per_atom": 1000 * per_atom_mae, "force_mae_meV_per_A": 1000 * force_mae,
            "mean_energy_mae_eV": mean_energy_mae, "zero_force_mae_eV_per_A": zero_force_mae,
            "energy_ratio": energy_mae / mean_energy_mae, "force_ratio": force_mae / zero_force_mae,
            "best_epoch": int(state["epoch"])}


def mace_row(work: Path, data: Path, structures: list, args: argparse.Namespace) -> dict:
    train_file, valid_file = write_split(data, structures, work)
    trained = train_mace(work, train_file, valid_file, args.epochs, args.threads)
    row = {"backbone": "MACE (mace_run_train)", "epochs_done": args.epochs,
           "start_stage_two": trained["start_stage_two"], "wall_seconds": round(trained["wall_seconds"], 1),
           **evaluate_mace(trained["model"], TEST, work, args.threads)}
    print(f"MACE small via mace_run_train, {args.epochs} epochs: force MAE {row['force_mae_meV_per_A']:.1f} meV/Å, "
          f"energy MAE {row['energy_mae_meV_per_atom']:.2f} meV/atom, {row['wall_seconds']:.0f} s", flush=True)
    return row


def against_mace(summary: dict, mace: dict) -> dict:
    """Each contender's MAE over MACE's, and whether it meets the targets."""
    out = {}
    for key, entry in summary.items():
        force = entry["force_mae_meV_per_A"] / mace["force_mae_meV_per_A"]
        energy = entry["energy_mae_meV_per_atom"] / mace["energy_mae_meV_per_atom"]
        out[key] = {"force_over_mace": round(force, 3), "energy_over_mace": round(energy, 3),
                    "meets_targets": force <= MACE_TARGETS["force"] and energy <= MACE_TARGETS["energy"]}
    return out


def budget(args: argparse.Namespace) -> dict:
    limits = {"epochs": None, "max_seconds": args.seconds} if args.seconds else {"epochs": args.epochs}
    return {**limits, **({"min_steps": args.min_steps} if args.min_steps else {})}


def recipe(name: str, args: argparse.Namespace) -> dict:
    overrides = dict(RECIPES[name])
    if name == "new":
        for pair in args.new:
            key, _, value = pair.partition("=")
            overrides[key] = yaml.safe_load(value)
    return {"batch_size": 32, "precision": "fp32", "threads": args.threads, **budget(args), **overrides}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["EGNN", "PNA", "SchNet"],
                        choices=["EGNN", "PNA", "SchNet", "PaiNN", "MACE"])
    parser.add_argument("--recipes", nargs="+", default=["old", "new"], choices=list(RECIPES))
    parser.add_argument("--force-modes", nargs="+", default=["direct"], choices=["direct", "conservative"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds (the split stays seed 0)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seconds", help="wall-time budget of every trial, instead of --epochs; "
                                          "'mace': the wall time of --mace's training")
    parser.add_argument("--mace", action="store_true", help="train MACE small with mace_run_train first")
    parser.add_argument("--min-steps", type=int, help="training.min_steps of every trial")
    parser.add_argument("--new", action="append", default=[], metavar="KEY=VALUE",
                        help="training override of the new recipe, e.g. learning_rate=3e-3")
    parser.add_argument("--model", action="append", default=[], metavar="KEY=VALUE",
                        help="model override of every trial, e.g. element_scale_shift=false")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of gfm-train")
    parser.add_argument("--work-dir", type=Path, help="keep trials here (default: a temporary directory)")
    parser.add_argument("--output", type=Path, default=RESULT)
    args = parser.parse_args()
    for path in (DATA, TEST):
        if not path.exists():
            raise SystemExit(f"{path}: not found (the shared data lives beside the repository)")
    work = Path(tempfile.mkdtemp(prefix="bench_accuracy_")) if args.work_dir is None else args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    if args.seconds == "mace" and not args.mace:
        parser.error("--seconds mace needs --mace")
    test_graphs = held_out()
    mace = None
    try:
        data, structures = convert(work)
        if args.mace:
            mace = mace_row(work, data, structures, args)
        if args.seconds == "mace":
            args.seconds = mace["wall_seconds"]
        elif args.seconds is not None:
            args.seconds = float(args.seconds)
        rows = []
        for backbone in args.backbones:
            for force_mode in args.force_modes:
                for name in args.recipes:
                    for seed in args.seeds:
                        rows.append(run_one(work, data, test_graphs, backbone, force_mode, name, seed, args))
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    summary = summarise(rows, args)
    comparison = {} if mace is None else {"mace": mace, "over_mace": against_mace(summary, mace),
                                          "mace_targets": MACE_TARGETS}
    save_result(args.output, {
        "what": "held-out ethanol MAE after gfm-train on 800 ethanol frames, per recipe, as a fraction of "
                "trivial predictors' MAE and of the old recipe's (same run)",
        "workload": {"data": str(DATA.relative_to(ROOT.parent)), "frames": FRAMES, "split": "800/100/100 seed 0",
                     "test": str(TEST.relative_to(ROOT.parent)), "model": SMALL,
                     "recipes": {name: recipe(name, args) for name in args.recipes}, "model_overrides": args.model,
                     "force_target_ratio": FORCE_TARGET},
        "machine": {"node": platform.node(), "torch": torch.__version__,
                    "note": "shared machine: throughput and steps within a wall-time budget are noisy"},
        "summary": summary, **comparison, "results": rows})
    for key, values in summary.items():
        line = (f"{key}: force ratio mean {values['force_ratio_mean']:.3f} (max {values['force_ratio_max']:.3f}, "
                f"target <= {FORCE_TARGET}); energy ratio mean {values['energy_ratio_mean']:.2f}")
        if "force_mae_over_old" in values:
            line += (f"; over the old recipe: force {values['force_mae_over_old']:.2f}, "
                     f"energy {values['energy_mae_over_old']:.2f}")
        if mace is not None:
            versus = comparison["over_mace"][key]
            line += (f"; over MACE: force {versus['force_over_mace']:.2f} (target <= {MACE_TARGETS['force']}), "
                     f"energy {versus['energy_over_mace']:.2f} (target <= {MACE_TARGETS['energy']})")
        print(line)


def run_one(work: Path, data: Path, test_graphs: GraphArrays, backbone: str, force_mode: str, name: str,
            seed: int, args: argparse.Namespace) -> dict:
    trial = work / f"{backbone}-{force_mode}-{name}-seed{seed}"
    if trial.exists():
        shutil.rmtree(trial)
    model = {key: yaml.safe_load(value) for key, _, value in (pair.partition("=") for pair in args.model)}
    result = train(trial, data, backbone, force_mode, seed, recipe(name, args), model)
    rates = [epoch["graphs_per_second"] for epoch in result["epochs"]]
    row = {"backbone": backbone, "force_mode": force_mode, "recipe": name, "seed": seed,
           "parameters": result["num_parameters"], **test_errors(trial / "best.pt", test_graphs),
           "steps_done": result["steps_done"], "epochs_done": result["epochs_done"],
           "stop_reason": result["stop_reason"], "train_graphs_per_s_median": round(statistics.median(rates), 1),
           "wall_seconds": round(result["wall_seconds"], 1)}
    if backbone == "EGNN" and args.threads == 2:
        row["throughput_target"] = THROUGHPUT_TARGETS[force_mode]
    print(f"{backbone:6s} {force_mode:12s} {name:4s} seed {seed}: force MAE {row['force_mae_meV_per_A']:.1f} "
          f"meV/Å = {row['force_ratio']:.3f} x zero forces; energy MAE "
          f"{row['energy_mae_meV_per_atom']:.2f} meV/atom = {row['energy_ratio']:.2f} x mean; "
          f"{row['steps_done']} steps ({row['stop_reason']}), best epoch {row['best_epoch']}, "
          f"{row['train_graphs_per_s_median']:.0f} graphs/s, {row['wall_seconds']:.0f} s", flush=True)
    return row


def summarise(rows: list[dict], args: argparse.Namespace) -> dict:
    summary = {}
    for backbone in args.backbones:
        for force_mode in args.force_modes:
            for name in args.recipes:
                mine = [r for r in rows if (r["backbone"], r["force_mode"], r["recipe"]) == (backbone, force_mode,
                                                                                             name)]
                entry = {
                    "force_ratio_mean": round(float(np.mean([r["force_ratio"] for r in mine])), 4),
                    "force_ratio_max": round(max(r["force_ratio"] for r in mine), 4),
                    "energy_ratio_mean": round(float(np.mean([r["energy_ratio"] for r in mine])), 4),
                    "force_mae_meV_per_A": round(float(np.mean([r["force_mae_meV_per_A"] for r in mine])), 1),
                    "energy_mae_meV_per_atom": round(float(np.mean([r["energy_mae_meV_per_atom"] for r in mine])), 2),
                    "steps_done_mean": round(float(np.mean([r["steps_done"] for r in mine]))),
                    "meets_force_target": all(r["force_ratio"] <= FORCE_TARGET for r in mine)}
                old = summary.get(f"{backbone}/{force_mode}/old")
                if name != "old" and old is not None:  # the same-run baseline
                    entry["force_mae_over_old"] = round(entry["force_mae_meV_per_A"] / old["force_mae_meV_per_A"], 3)
                    entry["energy_mae_over_old"] = round(entry["energy_mae_meV_per_atom"]
                                                         / old["energy_mae_meV_per_atom"], 3)
                summary[f"{backbone}/{force_mode}/{name}"] = entry
    return summary


if __name__ == "__main__":
    main()
