"""Does the ensemble's std rank its errors, grow under distribution shift, and calibrate?

    python bench/bench_ensemble_uq.py [--epochs 30] [--parallel 2] [--work-dir DIR] [--only ethanol 3bpa]
                                      [--reuse]

Two workloads of ../shared/data, converted with the real `gfm-data convert`
(radius 5, at most 50 neighbours, seed 0):
  ethanol  the first 1000 frames of ethanol_train, split 800/100/100; evaluated
           on the first 500 frames of ethanol_test (held-out MD);
  3bpa     3bpa_train_300K, split 350/50/100; evaluated on its 100 held-out
           300 K frames against the frames of 3bpa_train_mixedT that are not
           in the 300 K file (300-1200 K: the distribution-shift check).
Members: 3 configurations (EGNN, SchNet, PNA; 3 layers, hidden 50, head 50,50,
direct forces, batch 32, `epochs` epochs, patience 10), trained with the real
`gfm-train`, `parallel` at a time with one thread each. Three ensembles per
workload, as `gfm-ensemble train` makes them:
  shared seed  3 members, all seed 0 (the phase before --seeds: only the
               architectures differ);
  seeds        --top-k 3 --seeds 2: 6 members, member m with seed m;
  bootstrap    --top-k 3 --seeds 2 --bootstrap.
Each is calibrated on its validation split by trainer.ensemble.build (the
code behind `gfm-ensemble train`), then evaluated (trainer.ensemble.evaluate,
the code behind `gfm-ensemble evaluate`). Also recorded: the area the old
calibration (one NLL factor s^2 = mean(z^2) per quantity) would give.
The same-run baseline of the members' energy offsets (removed from the spread
since 2026-12-01): each ensemble's raw energy figures with the offsets kept too.
--reuse keeps the members already trained in --work-dir (the same members, so
the comparison isolates what the ensemble code does with them).
Writes bench/results/ensemble_uq.json.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from benchio import RESULTS, save_result
from trainer import aseio
from trainer.contract import typed
from trainer.contract.trialconfig import TrialConfig, write_trial
from trainer.data.structures import read_structures
from trainer.ensemble import uncertainty
from trainer.ensemble.build import build_ensemble
from trainer.ensemble.evaluate import evaluate, read_labelled, shift
from trainer.ensemble.manifest import TrainedMember, read_manifest
from trainer.ensemble.predict import Ensemble

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data" / "molecules"
RESULT = RESULTS / "ensemble_uq.json"
BIN = Path(sys.executable).parent
CONFIGS = {"egnn": "EGNN", "schnet": "SchNet", "pna": "PNA"}
SMALL = {"num_conv_layers": 3, "hidden_dim": 50, "num_fc_layers": 2, "fc_dim": 50}
VARIANTS = {"shared seed": ([0, 0, 0], False), "seeds": ([0, 1, 2, 3, 4, 5], False),
            "bootstrap": ([0, 1, 2, 3, 4, 5], True)}


def convert(frames, work: Path, name: str, val: float, test: float) -> Path:
    source, output = work / f"{name}.extxyz", work / f"{name}.bp"
    if output.exists():  # a reused work directory: the members were trained on this very file
        return output
    aseio.write(str(source), frames)
    subprocess.run([str(BIN / "gfm-data"), "convert", "--name", name, "--output", str(output), "--val", str(val),
                    "--test", str(test), "--seed", "0", "--radius", "5.0", "--max-neighbours", "50", str(source)],
                   check=True, capture_output=True)
    return output


def workloads(work: Path) -> dict[str, dict]:
    ethanol = read_structures(SHARED / "ethanol_train.xyz.xz")[:1000]
    test = work / "ethanol_test500.extxyz"
    aseio.write(str(test), read_structures(SHARED / "ethanol_test.xyz.xz")[:500])
    room = read_structures(SHARED / "3bpa_train_300K.xyz.xz")
    known = {np.round(a.positions, 4).tobytes() for a in room}
    mixed = [a for a in read_structures(SHARED / "3bpa_train_mixedT.xyz.xz")
             if np.round(a.positions, 4).tobytes() not in known]
    shifted = work / "3bpa_mixedT_not_300K.extxyz"
    aseio.write(str(shifted), mixed)
    return {"ethanol": {"data": convert(ethanol, work, "ethanol", 0.1, 0.1), "test": (test, None), "against": None},
            "3bpa": {"data": convert(room, work, "3bpa", 0.1, 0.2), "test": (None, "testset"),
                     "against": shifted}}


def train(jobs: list[tuple[Path, Path, str, int, bool]], epochs: int, parallel: int) -> dict[tuple, float]:
    """Train every (dir, data, config, seed, bootstrap) once; wall seconds of each."""
    def one(job):
        trial, data, config, seed, bootstrap = job
        write_trial(trial, typed.build(TrialConfig, {
            "name": trial.name, "data": {"sources": [{"path": str(data)}], "bootstrap": bootstrap},
            "model": {"mpnn_type": CONFIGS[config], **SMALL},
            "training": {"epochs": epochs, "patience": 10, "batch_size": 32, "threads": 1, "seed": seed,
                         "optimizer": "adam", "lr_schedule": "constant"}}, "bench"))
        started = time.time()
        done = subprocess.run([str(BIN / "gfm-train"), str(trial)], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"gfm-train {trial} failed:\n{done.stderr[-2000:]}")
        return time.time() - started

    with ThreadPoolExecutor(parallel) as pool:
        return dict(zip([j[0] for j in jobs], pool.map(one, jobs)))


def nll_area(ensemble: Ensemble, val, test_metrics: dict, test_pred, test) -> dict:
    """The old calibration: s^2 = mean(z^2) on the validation split, applied to the test set."""
    pred = ensemble.predict(val.structures)
    out = {}
    for name, error, raw, t_error, t_raw in (
            ("energy", pred.energy_mean - val.energy, pred.energy_std_raw,
             test_pred.energy_mean - test.energy, test_pred.energy_std_raw),
            ("forces", pred.forces_mean - val.forces, pred.forces_std_raw,
             test_pred.forces_mean - test.forces, test_pred.forces_std_raw)):
        s = uncertainty.fit_scale(error, raw)
        out[name] = {"factor": s, "test_area": uncertainty.miscalibration_area(t_error, s * t_raw)}
    return out


def offsets_kept(ensemble: Ensemble, test, against) -> dict:
    """The raw energy figures of the spread with each member's energy offset left in (as before)."""
    manifest = copy.copy(ensemble.manifest)
    manifest.calibration = dataclasses.replace(manifest.calibration, energy_offsets=None)
    plain = Ensemble(manifest, ensemble.models, ensemble.device)
    metrics, _ = evaluate(plain, test)
    raw = metrics["uncertainty"]["raw"]["energy"]
    out = {"spearman_energy": raw["spearman_std_vs_abs_error"], "mean_energy_std": raw["mean_std"]}
    if against is not None:
        shifted, _ = evaluate(plain, read_labelled(against, None, "testset"))
        out["shift_energy_std_ratio_raw"] = shift(metrics, shifted)["mean_std_ratio"]["raw"]["energy"]
        out["shifted_spearman_energy"] = shifted["uncertainty"]["raw"]["energy"]["spearman_std_vs_abs_error"]
    return out


def summarise(metrics: dict) -> dict:
    raw, cal = metrics["uncertainty"]["raw"], metrics["uncertainty"]["calibrated"]
    mean = metrics["accuracy"]["ensemble_mean"]
    return {"energy_mae_meV_per_atom": mean["energy_mae_meV_per_atom"], "forces_mae": mean["forces_mae_eV_per_A"],
            "spearman_energy": raw["energy"]["spearman_std_vs_abs_error"],
            "spearman_forces_per_atom": raw["forces"]["spearman_per_atom_norm"],
            "area_energy": {"raw": raw["energy"]["miscalibration_area"],
                            "calibrated": cal["energy"]["miscalibration_area"]},
            "area_forces": {"raw": raw["forces"]["miscalibration_area"],
                            "calibrated": cal["forces"]["miscalibration_area"]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--work-dir", type=Path)
    parser.add_argument("--only", nargs="+", choices=("ethanol", "3bpa"), default=["ethanol", "3bpa"])
    parser.add_argument("--reuse", action="store_true", help="keep members already trained in --work-dir")
    args = parser.parse_args()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench-uq-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    loads = {k: v for k, v in workloads(work).items() if k in args.only}
    jobs = sorted({(work / name / "trials" / f"{config}-s{seed}{'-boot' if boot else ''}", load["data"],
                    config, seed, boot)
                   for name, load in loads.items() for seeds, boot in VARIANTS.values()
                   for config, seed in zip(list(CONFIGS) * 2, seeds)})
    todo = [job for job in jobs if not (args.reuse and (job[0] / "best.pt").exists())]
    seconds = train(todo, args.epochs, args.parallel)
    print(f"trained {len(jobs)} members in {time.time() - started:.0f} s", flush=True)
    results = {"workloads": {}, "epochs": args.epochs, "members_trained": len(jobs),
               "train_seconds": sum(seconds.values()),
               "note": "shared 2-core machine; figures are from one run"}
    for name, load in loads.items():
        rows = results["workloads"].setdefault(name, {})
        for variant, (seeds, boot) in VARIANTS.items():
            members = [TrainedMember(f"{config}-s{seed}", work / name / "trials" /
                                     f"{config}-s{seed}{'-boot' if boot else ''}" / "best.pt", {"config": config})
                       for config, seed in zip(list(CONFIGS) * 2, seeds)]
            directory = build_ensemble(work / name / variant.replace(" ", "-"), members, str(work), str(load["data"]))
            ensemble = Ensemble.load(directory)
            path, split = load["test"]
            test = read_labelled(path or load["data"], split, "testset")
            metrics, pred = evaluate(ensemble, test)
            row = summarise(metrics)
            calibration = read_manifest(directory).calibration
            row["calibration"] = {q: {"map": getattr(calibration, q).describe(),
                                      "held_out_area": getattr(calibration, q).fit.get("held_out_area"),
                                      "note": getattr(calibration, q).fit.get("note")} for q in ("energy", "forces")}
            row["offsets_kept"] = offsets_kept(ensemble, test, load["against"])
            row["old_nll_scalar"] = nll_area(ensemble, read_labelled(load["data"], "valset", "valset"), metrics,
                                             pred, test)
            if load["against"] is not None:
                shifted, _ = evaluate(ensemble, read_labelled(load["against"], None, "testset"))
                check = shift(metrics, shifted)
                row["shift"] = {"mean_std_ratio_raw": check["mean_std_ratio"]["raw"],
                                "mean_std_ratio_calibrated": check["mean_std_ratio"]["calibrated"],
                                "error_ratio": check["error_ratio"], "shifted": summarise(shifted)}
            rows[variant] = row
            print(f"{name} / {variant}: {row}", flush=True)
            save_result(RESULT, results, announce=False)   # a run cut short keeps what it measured
    results["wall_seconds"] = time.time() - started
    save_result(RESULT, results)


if __name__ == "__main__":
    main()
