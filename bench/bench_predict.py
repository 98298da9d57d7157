"""Deep-ensemble inference throughput: structures/s and atoms/s of `Ensemble.predict`.

    python bench/bench_predict.py [--members 10] [--threads 2] [--repeats 2]
                                  [--force-mode direct|conservative]

Workload: K members (EGNN, 3 layers, hidden 50, head 50,50 — the project's
SMALL size), built from random init with the real DataStats of the data they
predict, saved as best.pt files and loaded through a real manifest; the
throughput does not depend on training. Inputs are real structures:
ethanol frames (9 atoms, ../shared/data/molecules/ethanol_test.xyz.xz) and
OC20 adsorbate+slab frames (33-185 atoms, surfaces/oc20_debug_sub5.extxyz.xz).
Each case runs from ase.Atoms to mean ± std (neighbour lists included).

Compared in the same run (interleaved repeats, best repeat counts: the machine
is shared):
  batched  Ensemble.predict: many structures per forward pass, a loop over members
  loop     a plain loop over structures and, for each, over members (one graph per forward)
  vmap     torch.func: members stacked (stack_module_state) and evaluated with vmap on
           the same batches as `batched` (direct forces only: autograd.grad does not run under vmap)
Ratios are batched / other (> 1: batched is faster). Writes bench/results/predict.json.
"""
from __future__ import annotations

import argparse
import copy
import platform
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.func import functional_call, stack_module_state, vmap

from benchio import RESULTS, save_result
from trainer.checkpoint import save
from trainer.contract.trialconfig import ModelConfig
from trainer.contract.typed import to_dict
from trainer.data.batch import Batch
from trainer.data.graphs import GraphArrays
from trainer.data.reference import degree_histogram, fit_reference_energies
from trainer.data.structures import read_structures
from trainer.ensemble.manifest import TrainedMember, write_manifest
from trainer.ensemble.predict import Ensemble
from trainer.models import DataStats, build_model

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
RESULT = RESULTS / "predict.json"
RADIUS, MAX_NEIGHBOURS = 5.0, 50
# name: (file, structures, batch size of the batched path)
WORKLOADS = {"ethanol": ("molecules/ethanol_test.xyz.xz", 128, 128),
             "oc20": ("surfaces/oc20_debug_sub5.extxyz.xz", 16, 8)}


def real_stats(frames) -> DataStats:
    """The statistics a model trained on these frames would be built with (as trainer.stats computes them)."""
    graphs = GraphArrays.from_atoms(frames, RADIUS, MAX_NEIGHBOURS,
                                    energies=[a.get_potential_energy() for a in frames],
                                    forces=[a.get_forces() for a in frames])
    references = fit_reference_energies(graphs)
    per_atom = np.array([(e - sum(references[z] for z in a.numbers)) / len(a)
                         for e, a in zip(graphs.energy, frames)])
    return DataStats(radius=RADIUS, elements=sorted(references), reference_energies=[references],
                     energy_shift=float(per_atom.mean()), energy_scale=max(float(per_atom.std()), 1e-3),
                     force_scale=float(np.sqrt(np.mean(graphs.forces ** 2))),
                     degree_histogram=degree_histogram(graphs))


def make_ensemble(frames, members: int, force_mode: str, where: Path) -> Ensemble:
    stats = real_stats(frames)
    config = ModelConfig(mpnn_type="EGNN", num_conv_layers=3, hidden_dim=50, fc_dim=50, num_fc_layers=2,
                         force_mode=force_mode)
    sources = []
    for k in range(members):
        torch.manual_seed(k)
        model = build_model(config, stats)
        with torch.no_grad():   # output layers start at zero; give members distinct, non-trivial outputs
            for parameter in model.parameters():
                parameter.add_(0.05 * torch.randn_like(parameter))
        path = where / f"m{k}" / "best.pt"
        path.parent.mkdir(parents=True)
        save(path, {"model": model.state_dict(), "model_config": to_dict(config), "stats": stats.to_dict(),
                    "epoch": 1, "val_loss": float(k)})
        sources.append(TrainedMember(f"m{k}", path, to_dict(config), k))
    write_manifest(where / "ensemble", sources, None, MAX_NEIGHBOURS)
    return Ensemble.load(where / "ensemble")


def loop_path(ensemble: Ensemble, frames) -> None:
    """The obvious code: every structure alone, every member alone."""
    with torch.no_grad():
        for atoms in frames:
            batch = Batch.from_arrays(GraphArrays.from_atoms([atoms], RADIUS, MAX_NEIGHBOURS))
            outputs = [model(batch) for model in ensemble.models]
            energies = np.array([float(e) for e, _ in outputs])
            forces = np.stack([f.numpy() for _, f in outputs])
            energies.mean(), energies.std(), forces.mean(0), forces.std(0)


def vmap_path(ensemble: Ensemble, batch_size: int) -> Callable:
    params, buffers = stack_module_state(ensemble.models)
    skeleton = copy.deepcopy(ensemble.models[0]).to("meta")

    def one(p, b, batch):
        return functional_call(skeleton, (p, b), (batch,))

    def run(frames) -> None:
        with torch.no_grad():
            for start in range(0, len(frames), batch_size):
                batch = Batch.from_arrays(GraphArrays.from_atoms(frames[start:start + batch_size], RADIUS,
                                                                 MAX_NEIGHBOURS))
                energy, forces = vmap(one, in_dims=(0, 0, None))(params, buffers, batch)
                energy.double().mean(0), energy.double().std(0), forces.double().mean(0), forces.double().std(0)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--force-mode", choices=("direct", "conservative"), default="direct")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    for name, (relative, count, batch_size) in WORKLOADS.items():
        frames = read_structures(SHARED / relative)[:count]
        atoms = sum(len(a) for a in frames)
        with tempfile.TemporaryDirectory() as scratch:
            ensemble = make_ensemble(frames, args.members, args.force_mode, Path(scratch))
            cases: dict[str, Callable[[], None]] = {
                "batched": lambda: ensemble.predict(frames, batch_size=batch_size),
                "loop": lambda: loop_path(ensemble, frames)}
            if args.force_mode == "direct":
                run_vmap = vmap_path(ensemble, batch_size)
                cases["vmap"] = lambda: run_vmap(frames)
            cases["batched"]()   # warm-up (allocator, lazy initialisation)
            best = {case: float("inf") for case in cases}
            for _ in range(args.repeats):
                for case, run in cases.items():
                    start = time.perf_counter()
                    run()
                    best[case] = min(best[case], time.perf_counter() - start)
        results[name] = {
            "structures": len(frames), "atoms": atoms, "batch_size": batch_size,
            "seconds": best,
            "structures_per_second": {c: len(frames) / s for c, s in best.items()},
            "atoms_per_second": {c: atoms / s for c, s in best.items()},
            "ratio_batched_over": {c: s / best["batched"] for c, s in best.items() if c != "batched"},
        }
        line = "  ".join(f"{c} {len(frames) / s:8.1f} structures/s ({atoms / s:9.0f} atoms/s)" for c, s in best.items())
        print(f"{name:<8} {line}  batched/loop x{results[name]['ratio_batched_over']['loop']:.1f}", flush=True)
    save_result(RESULT, {
        "what": "deep-ensemble inference (mean ± std of energy and forces) from ase.Atoms, neighbour lists included",
        "machine": {"node": platform.node(), "cpus": torch.get_num_threads(), "torch": torch.__version__,
                    "note": "shared machine: other processes ran at the same time; best of the repeats"},
        "settings": {"members": args.members, "model": "EGNN 3 layers, hidden 50, head 50,50",
                     "force_mode": args.force_mode, "threads": args.threads, "repeats": args.repeats,
                     "radius": RADIUS, "max_neighbours": MAX_NEIGHBOURS},
        "results": results})


if __name__ == "__main__":
    main()
