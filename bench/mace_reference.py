"""MACE small trained by mace-torch's own `mace_run_train`, on the split of a converted dataset.

The reference contender of bench_accuracy.py: the same train/validation frames
(taken from the dataset by sample id, so the split is the one our trainer sees),
mace-torch's settings for a small model (2 interactions, 32 channels, max_L 0,
correlation 3, EMA 0.99, stage two over the last ~20 % of the epochs, AMSGrad and
its other defaults), E0s averaged over the training set, and its own
`mace_eval_configs` on the held-out file. Needs the [mace] extra.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import numpy as np

from trainer.data.adiosfile import DatasetReader

BIN = Path(sys.executable).parent
SETTINGS = ["--model", "MACE", "--num_interactions", "2", "--num_channels", "32", "--max_L", "0",
            "--correlation", "3", "--r_max", "5.0", "--batch_size", "32", "--E0s", "average",
            "--ema", "--ema_decay", "0.99", "--swa", "--device", "cpu", "--default_dtype", "float32"]


def write_split(dataset: Path, frames: list, work: Path) -> tuple[Path, Path]:
    """train.xyz and valid.xyz: the frames of the dataset's trainset and valset, in its order."""
    paths = []
    with DatasetReader(dataset) as reader:
        for split, name in (("trainset", "train"), ("valset", "valid")):
            ids = reader.read(split).sample_id
            path = work / f"mace_{name}.xyz"
            chosen = [frames[int(i)] for i in ids]
            for atoms in chosen:  # mace reads REF_-style keys; ours are the calculator's
                atoms.info["REF_energy"] = atoms.get_potential_energy()
                atoms.arrays["REF_forces"] = atoms.get_forces()
            ase.io.write(path, chosen, format="extxyz")
            paths.append(path)
    return paths[0], paths[1]


def train_mace(work: Path, train: Path, valid: Path, epochs: int, threads: int, seed: int = 0) -> dict:
    """Train; returns the model's path and the wall time of mace_run_train (start-up included)."""
    start_stage_two = max(1, round(0.8 * epochs))
    command = [str(BIN / "mace_run_train"), "--name", "mace_small", "--train_file", str(train),
               "--valid_file", str(valid), "--energy_key", "REF_energy", "--forces_key", "REF_forces",
               "--max_num_epochs", str(epochs), "--start_swa", str(start_stage_two), "--seed", str(seed),
               *SETTINGS]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    run = subprocess.run(command, cwd=work, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if run.returncode != 0:
        raise SystemExit(f"mace_run_train failed:\n{run.stderr[-3000:]}")
    candidates = sorted(work.glob("mace_small*stagetwo.model")) or sorted(work.glob("mace_small*.model"))
    if not candidates:
        raise SystemExit(f"mace_run_train wrote no model in {work}")
    return {"model": candidates[0], "wall_seconds": wall, "epochs": epochs, "start_stage_two": start_stage_two}


def evaluate_mace(model: Path, test: Path, work: Path, threads: int) -> dict[str, float]:
    """Errors of mace_eval_configs' predictions on `test`, with bench_accuracy's definitions."""
    output = work / "mace_test_predictions.xyz"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    run = subprocess.run([str(BIN / "mace_eval_configs"), "--configs", str(test), "--model", str(model),
                          "--output", str(output), "--default_dtype", "float32"],
                         capture_output=True, text=True, env=env)
    if run.returncode != 0:
        raise SystemExit(f"mace_eval_configs failed:\n{run.stderr[-3000:]}")
    labelled, predicted = ase.io.read(test, ":"), ase.io.read(output, ":")
    atoms = np.array([len(a) for a in labelled], dtype=np.float64)
    energy_error = np.array([p.info["MACE_energy"] - t.get_potential_energy() for p, t in zip(predicted, labelled)])
    force_error = np.concatenate([p.arrays["MACE_forces"] - t.get_forces() for p, t in zip(predicted, labelled)])
    return {"test_frames": len(labelled), "energy_mae_meV_per_atom": 1000 * float(np.abs(energy_error / atoms).mean()),
            "force_mae_meV_per_A": 1000 * float(np.abs(force_error).mean())}
