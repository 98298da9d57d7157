"""Graphs per second of the models: one training step (forward + backward + AdamW) and inference.

    python bench/bench_model_step.py [--threads 2] [--repeats 3] [--seconds 0.4]
                                     [--backbones EGNN PNA SchNet PaiNN MACE] [--sizes SMALL MEDIUM]
                                     [--no-baselines]

Workload (the project's speed targets): ethanol frames of
../shared/data/molecules/ethanol_train.xyz.xz (9 atoms, 72 edges at 5 Å),
batches of 32 graphs for training (AdamW lr 1e-3, fused) and 64 for inference
(energy + forces), fp32, torch.set_num_threads(--threads). SMALL = 3 layers,
hidden 50, head 50,50; MEDIUM = 4 layers, hidden 256, head 256,256. MACE runs
at ModelConfig's defaults for its own parameters (max_L 1, correlation 3).

Baselines, measured in the same run (the machine is shared, so cases are
interleaved: each repeat times every case once, and the best repeat counts):
  - "textbook" layers in the same model: EGNN's edge MLP applied to the
    gathered concatenation [h_i, h_j] (the same function as ours, every
    Linear on edge rows), and PyG's own PNAConv and SchNet InteractionBlock
    (training step, direct forces; PaiNN and MACE have none: MACE is
    mace-torch's own model already);
  - AdamW without fused=True (its per-parameter Python loop), SMALL EGNN.
Ratios are ours / baseline (> 1: ours is faster). The targets are for the
whole training loop (data loading and metrics come on top of this step).
Writes bench/results/model_step.json.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from benchio import RESULTS, save_result
from trainer.contract.trialconfig import ModelConfig
from trainer.data.batch import Batch
from trainer.data.graphs import GraphArrays
from trainer.data.reference import degree_histogram, fit_reference_energies
from trainer.data.structures import read_structures
from trainer.models import DataStats, build_model, count_parameters
from trainer.models.layers import Graph, RadialFilter, mlp, scatter_sum

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "molecules" / "ethanol_train.xyz.xz"
RESULT = RESULTS / "model_step.json"
SIZES = {"SMALL": dict(num_conv_layers=3, hidden_dim=50, fc_dim=50, num_fc_layers=2),
         "MEDIUM": dict(num_conv_layers=4, hidden_dim=256, fc_dim=256, num_fc_layers=2)}
TEXTBOOK = ("EGNN", "PNA", "SchNet")  # the backbones with a "textbook" baseline (below)
# graphs/s of the whole training loop and of inference, 2 cores (the project's targets)
TARGETS = {("EGNN", "SMALL", "direct", "train"): 1900, ("EGNN", "SMALL", "conservative", "train"): 1300,
           ("EGNN", "MEDIUM", "direct", "train"): 350, ("EGNN", "SMALL", "direct", "infer"): 8300,
           ("EGNN", "SMALL", "conservative", "infer"): 4200}


class TextbookEGNN(nn.Module):
    """Our EGNN layer's function written the usual way: every Linear of phi_e on gathered edge rows.

    m_ij = W_o (SiLU(W [h_i, h_j] + b) * W(|r_ij|)) per edge, then summed; ours
    runs W on atoms before the gather and W_o on atoms after the sum.
    """

    def __init__(self, hidden: int, num_radial: int, avg_degree: float):
        super().__init__()
        self.edge_in = nn.Linear(2 * hidden, hidden)
        self.filter = RadialFilter(num_radial, hidden)
        self.edge_out = nn.Linear(hidden, hidden, bias=False)
        self.node_mlp = mlp([2 * hidden, hidden, hidden])
        self.norm = avg_degree ** -0.5

    def forward(self, h: torch.Tensor, graph: Graph) -> torch.Tensor:
        pairs = torch.cat([h[graph.target], h[graph.source]], dim=-1)
        messages = self.edge_out(nn.functional.silu(self.edge_in(pairs)) * self.filter(graph))
        aggregated = scatter_sum(messages, graph.target, graph.num_nodes) * self.norm
        return h + self.node_mlp(torch.cat([h, aggregated], dim=-1))


class PygPNA(nn.Module):
    def __init__(self, hidden: int, num_radial: int, histogram: list[int]):
        super().__init__()
        from torch_geometric.nn.conv import PNAConv
        self.conv = PNAConv(hidden, hidden, ["mean", "min", "max", "std"],
                            ["identity", "amplification", "attenuation"], torch.tensor(histogram),
                            edge_dim=num_radial, towers=1, pre_layers=1, post_layers=1)

    def forward(self, h: torch.Tensor, graph: Graph) -> torch.Tensor:
        edge_index = torch.stack([graph.source, graph.target])
        return h + nn.functional.silu(self.conv(h, edge_index, graph.radial))


class PygSchNet(nn.Module):
    def __init__(self, hidden: int, num_radial: int, cutoff: float):
        super().__init__()
        from torch_geometric.nn.models.schnet import InteractionBlock
        self.block = InteractionBlock(hidden, num_radial, hidden, cutoff)

    def forward(self, h: torch.Tensor, graph: Graph) -> torch.Tensor:
        edge_index = torch.stack([graph.source, graph.target])
        return h + self.block(h, edge_index, graph.distance, graph.radial)


def baseline_layers(backbone: str, config: ModelConfig, stats: DataStats) -> list[nn.Module]:
    depth, hidden, radial = config.num_conv_layers, config.hidden_dim, config.num_radial
    if backbone == "EGNN":
        return [TextbookEGNN(hidden, radial, stats.average_degree) for _ in range(depth)]
    if backbone == "PNA":
        return [PygPNA(hidden, radial, stats.degree_histogram) for _ in range(depth)]
    return [PygSchNet(hidden, radial, stats.radius) for _ in range(depth)]


def ethanol(count: int) -> tuple[GraphArrays, DataStats]:
    frames = read_structures(DATA)[:count]
    graphs = GraphArrays.from_atoms(frames, radius=5.0, max_neighbours=50,
                                    energies=[a.get_potential_energy() for a in frames],
                                    forces=[a.get_forces() for a in frames])
    references = fit_reference_energies(graphs)
    per_atom = np.array([(e - sum(references[z] for z in a.numbers)) / len(a)
                         for e, a in zip(graphs.energy, frames)])
    stats = DataStats(radius=5.0, elements=sorted(references), reference_energies=[references],
                      energy_shift=float(per_atom.mean()), energy_scale=float(per_atom.std()),
                      force_scale=float(np.sqrt(np.mean(graphs.forces ** 2))),
                      degree_histogram=degree_histogram(graphs))
    return graphs, stats


@dataclass
class Case:
    backbone: str
    size: str
    force_mode: str
    phase: str          # "train" or "infer"
    variant: str        # "ours", "textbook", "adamw-unfused"
    run: Callable[[], int]  # one step; returns the graphs it processed
    parameters: int
    rates: list[float]


def make_case(backbone: str, size: str, force_mode: str, phase: str, variant: str, stats: DataStats,
              batches: list[Batch]) -> Case:
    config = ModelConfig(mpnn_type=backbone, force_mode=force_mode, **SIZES[size])
    torch.manual_seed(0)
    model = build_model(config, stats)
    if variant == "textbook":
        model.layers = nn.ModuleList(baseline_layers(backbone, config, stats))
    cursor = iter(range(1 << 62))
    if phase == "infer":
        model.eval()

        def run() -> int:
            batch = batches[next(cursor) % len(batches)]
            with torch.no_grad():
                model(batch)
            return batch.num_graphs
    else:
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=variant != "adamw-unfused")

        def run() -> int:
            batch = batches[next(cursor) % len(batches)]
            energy, forces = model(batch)
            loss = ((energy - batch.energy) / batch.num_atoms / stats.energy_scale).pow(2).mean() \
                + ((forces - batch.forces) / stats.force_scale).pow(2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return batch.num_graphs
    for _ in range(3):  # warm-up: allocator, autograd caches
        run()
    return Case(backbone, size, force_mode, phase, variant, run, count_parameters(model), [])


def measure(case: Case, seconds: float) -> float:
    graphs, start = 0, time.perf_counter()
    while True:
        graphs += case.run()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and graphs >= 3 * 32:
            return graphs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=0.4, help="minimum time of one measurement")
    parser.add_argument("--backbones", nargs="+", default=["EGNN", "PNA", "SchNet", "PaiNN", "MACE"])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES))
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument("--output", type=Path, default=RESULT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    graphs, stats = ethanol(640)
    train = [Batch.from_arrays(graphs.select(np.arange(k, k + 32))) for k in range(0, 640, 32)]
    infer = [Batch.from_arrays(graphs.select(np.arange(k, k + 64))) for k in range(0, 640, 64)]
    cases = []
    for backbone in args.backbones:
        for size in args.sizes:
            for force_mode in ("direct", "conservative"):
                cases.append(make_case(backbone, size, force_mode, "train", "ours", stats, train))
                cases.append(make_case(backbone, size, force_mode, "infer", "ours", stats, infer))
            if not args.no_baselines and backbone in TEXTBOOK:
                cases.append(make_case(backbone, size, "direct", "train", "textbook", stats, train))
    if not args.no_baselines and "EGNN" in args.backbones and "SMALL" in args.sizes:
        cases.append(make_case("EGNN", "SMALL", "direct", "train", "adamw-unfused", stats, train))
    for repeat in range(args.repeats):
        for case in cases:
            case.rates.append(measure(case, args.seconds))
        print(f"repeat {repeat + 1}/{args.repeats} done", flush=True)
    rows = []
    for case in cases:
        best = max(case.rates)
        row = {"backbone": case.backbone, "size": case.size, "force_mode": case.force_mode, "phase": case.phase,
               "variant": case.variant, "parameters": case.parameters, "graphs_per_s_best": round(best, 1),
               "graphs_per_s_median": round(statistics.median(case.rates), 1),
               "ms_per_batch_best": round(1e3 * (32 if case.phase == "train" else 64) / best, 2)}
        target = TARGETS.get((case.backbone, case.size, case.force_mode, case.phase))
        if target and case.variant == "ours":
            row["target_whole_loop"] = target
            row["ratio_to_target"] = round(best / target, 2)
        rows.append(row)
    ours = {(r["backbone"], r["size"], r["force_mode"], r["phase"]): r for r in rows if r["variant"] == "ours"}
    for row in rows:
        if row["variant"] != "ours":
            key = (row["backbone"], row["size"], row["force_mode"], row["phase"])
            row["ratio_ours_to_this"] = round(ours[key]["graphs_per_s_best"] / row["graphs_per_s_best"], 2)
    print(f"{'backbone':8s} {'size':6s} {'forces':12s} {'phase':5s} {'variant':14s} {'graphs/s':>9s}  "
          f"{'median':>8s}  note")
    for row in rows:
        note = (f"target {row['target_whole_loop']} (x{row['ratio_to_target']})" if "target_whole_loop" in row
                else f"ours x{row['ratio_ours_to_this']}" if "ratio_ours_to_this" in row else "")
        print(f"{row['backbone']:8s} {row['size']:6s} {row['force_mode']:12s} {row['phase']:5s} {row['variant']:14s} "
              f"{row['graphs_per_s_best']:9.0f}  {row['graphs_per_s_median']:8.0f}  {note}")
    save_result(args.output, {
        "what": "graphs/s of one training step (forward+backward+AdamW) and of inference (energy+forces)",
        "machine": {"node": platform.node(), "cpus": torch.get_num_threads(), "torch": torch.__version__,
                    "note": "shared machine: other processes ran at the same time; best of the repeats"},
        "settings": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                     "train_batch": 32, "infer_batch": 64, "frames": 640, "sizes": SIZES},
        "results": rows})


if __name__ == "__main__":
    main()
