"""The real trainer, run as a user runs it, for bench/bench_train.py.

Datasets are converted with the real `gfm-data convert`, each configuration
is a trial directory run by the real `gfm-train` (or `mpiexec -n 2 gfm-train`),
and every figure comes from the result.json it writes, plus what only the
caller can see: the time from launch until result.json first appears (it is
written just before the first training step) and the CPU seconds the job used.
"""
from __future__ import annotations

import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import ase.io
import numpy as np

from trainer.contract import typed
from trainer.contract.trialconfig import RESULT_FILE, TrialConfig, write_trial
from trainer.data.adiosfile import DatasetReader
from trainer.data.sampler import num_steps
from trainer.data.structures import read_structures

BIN = Path(sys.executable).parent
SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
SIZES = {"SMALL": dict(num_conv_layers=3, hidden_dim=50, fc_dim=50, num_fc_layers=2),
         "MEDIUM": dict(num_conv_layers=4, hidden_dim=256, fc_dim=256, num_fc_layers=2)}
# The smallest model the schema allows: its peak RSS is what a run costs before any model or activation.
TINY = dict(num_conv_layers=1, hidden_dim=1, fc_dim=1, num_fc_layers=1, num_radial=1)
THREADS_PER_NODE = 2   # the machines: 1 rank x 2 threads or 2 ranks x 1 thread


@dataclass(frozen=True)
class Dataset:
    name: str
    path: Path
    batch_size: int               # graphs per rank per step
    max_train_samples: int | None
    train_samples: int            # what the trainer will train on per epoch
    mean_atoms: float             # over those samples, for atoms/s
    mean_edges: float
    counts: dict


# name: (source file under ../shared/data, frames taken (None: all), val, test, batch size)
SOURCES = {
    # The workload: the first 1000 frames, 800/100/100.
    "ethanol": ("molecules/ethanol_train.xyz.xz", 1000, 0.1, 0.1, 32),
    # All 1085 OC20 frames; a 5 % validation split and a cap on training samples (per mode) keep
    # an epoch of 33-185-atom slabs short; 8 slabs per step is ~630 atoms and ~14k edges.
    "oc20": ("surfaces/oc20_debug_sub5.extxyz.xz", None, 0.05, 0.05, 8),
}


def convert(name: str, work: Path, max_train_samples: int | None) -> Dataset:
    """`gfm-data convert` once into `work` (reused when already there)."""
    source, frames, val, test, batch = SOURCES[name]
    output = work / f"{name}.bp"
    if not output.exists():
        inputs = SHARED / source
        if frames is not None:  # a subset: written as extxyz beside the dataset, outside the repository
            inputs = work / f"{name}_first{frames}.extxyz"
            ase.io.write(inputs, read_structures(SHARED / source)[:frames])
        subprocess.run([str(BIN / "gfm-data"), "convert", "--name", name, "--output", str(output),
                        "--val", str(val), "--test", str(test), "--seed", "0", "--radius", "5.0",
                        "--max-neighbours", "50", str(inputs)], check=True, capture_output=True, text=True)
    with DatasetReader(output) as reader:
        atoms, edges = reader.sizes("trainset")
        counts = dict(reader.info.counts)
    used = len(atoms) if max_train_samples is None else min(max_train_samples, len(atoms))
    return Dataset(name, output, batch, max_train_samples, used, float(atoms[:used].mean()),
                   float(edges[:used].mean()), counts)


@dataclass(frozen=True)
class Run:
    """One gfm-train configuration."""
    dataset: str
    backbone: str = "EGNN"
    size: str = "SMALL"           # SMALL, MEDIUM or TINY (the memory baseline)
    force_mode: str = "direct"
    ranks: int = 1
    checkpointing: bool = False
    zero1: bool = False

    @property
    def name(self) -> str:
        parts = [self.dataset, self.backbone, self.size, self.force_mode, f"{self.ranks}r"]
        parts += ["ckpt"] if self.checkpointing else []
        parts += ["zero1"] if self.zero1 else []
        return "-".join(parts)

    @property
    def threads(self) -> int:
        return max(1, THREADS_PER_NODE // self.ranks)


def trial_config(run: Run, data: Dataset, epochs: int) -> TrialConfig:
    """The issue's workload: Adam, lr 1e-3, fp32; nothing is saved that a benchmark does not need."""
    model = {"mpnn_type": run.backbone, "force_mode": run.force_mode,
             **(TINY if run.size == "TINY" else SIZES[run.size])}
    raw = {"name": run.name,
           "data": {"sources": [{"path": str(data.path)}], "max_train_samples": data.max_train_samples},
           "model": model,
           "training": {"epochs": epochs, "batch_size": data.batch_size, "optimizer": "adam",
                        "learning_rate": 1e-3, "lr_schedule": "constant", "precision": "fp32",
                        "device": "cpu", "threads": run.threads, "seed": 0,
                        "activation_checkpointing": run.checkpointing, "zero1": run.zero1},
           # A checkpoint only at the end (the trainer always writes one then): not timed per epoch.
           "output": {"checkpoint_every": epochs, "keep_best": False}}
    return typed.build(TrialConfig, raw, f"bench run {run.name}")


def execute(run: Run, data: Dataset, work: Path, epochs: int, timeout_s: float = 3600.0) -> dict:
    """Run the trial through the real console script; a summary of what result.json says."""
    trial = work / "trials" / run.name
    shutil.rmtree(trial, ignore_errors=True)
    write_trial(trial, trial_config(run, data, epochs))
    command = [str(BIN / "gfm-train"), str(trial)]
    if run.ranks > 1:
        command = [str(BIN / "mpiexec"), "-n", str(run.ranks)] + command
    result_file = trial / RESULT_FILE
    load_before = os.getloadavg()[0]
    cpu_before = _children_cpu_seconds()
    launched = time.perf_counter()
    ready = None
    with open(trial / "log.txt", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        while process.poll() is None:
            if ready is None and result_file.exists():
                ready = time.perf_counter() - launched
            if time.perf_counter() - launched > timeout_s:
                process.kill()
                process.wait()
                raise RuntimeError(f"{run.name}: no result after {timeout_s:.0f} s (see {trial / 'log.txt'})")
            time.sleep(0.02)
    wall = time.perf_counter() - launched
    cpu = _children_cpu_seconds() - cpu_before
    if process.returncode != 0:
        tail = (trial / "log.txt").read_text()[-2000:]
        raise RuntimeError(f"{run.name}: gfm-train exited {process.returncode}:\n{tail}")
    result = json.loads(result_file.read_text())
    summary = summarise(result, run, data, skip=1 if epochs > 1 else 0)
    summary.update(launch_to_ready_s=None if ready is None else round(ready, 2), wall_s=round(wall, 2),
                   cpu_s=round(cpu, 2), cpu_utilisation=round(cpu / wall, 2),
                   load_average_before=round(load_before, 2), command=" ".join(command[:-1] + ["TRIAL"]))
    return summary


def summarise(result: dict, run: Run, data: Dataset, skip: int) -> dict:
    """Steady-state throughput: the epochs after the first `skip` (allocator and caches warm).

    result.json's graphs_per_second is training samples / training time of the
    epoch (validation excluded), so the steady rate is the total samples over
    the total training time of those epochs.
    """
    epochs = result["epochs"][skip:] or result["epochs"]
    train_seconds = [data.train_samples / e["graphs_per_second"] for e in epochs]
    rate = data.train_samples * len(epochs) / sum(train_seconds)
    steps = num_steps(data.train_samples, run.ranks, data.batch_size)
    return {
        "name": run.name, "dataset": run.dataset, "backbone": run.backbone, "size": run.size,
        "force_mode": run.force_mode, "ranks": run.ranks, "threads_per_rank": run.threads,
        "activation_checkpointing": run.checkpointing, "zero1": run.zero1,
        "batch_size_per_rank": data.batch_size, "train_samples": data.train_samples,
        "steps_per_epoch": steps, "epochs_run": len(result["epochs"]), "steady_epochs": len(epochs),
        "graphs_per_s": round(rate, 1),
        "graphs_per_s_best_epoch": round(max(e["graphs_per_second"] for e in epochs), 1),
        "graphs_per_s_per_epoch": [round(e["graphs_per_second"], 1) for e in result["epochs"]],
        "atoms_per_s": round(rate * data.mean_atoms, 0),
        "step_ms": round(1e3 * float(np.mean(train_seconds)) / steps, 2),
        "epoch_s": round(float(np.mean([e["seconds"] for e in epochs])), 3),
        "startup_s": round(result["startup_seconds"], 2),
        "peak_rss_bytes": result["peak_memory_bytes"],
        "parameters": result["num_parameters"],
        "final_val_loss": result["epochs"][-1]["val_loss"],
    }


def _children_cpu_seconds() -> float:
    """User + system CPU of waited-for child processes (mpiexec's ranks included: each parent waits)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or not reference or not math.isfinite(reference):
        return None
    return round(value / reference, 2)
