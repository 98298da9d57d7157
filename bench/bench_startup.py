"""Start-up cost of each backbone in a fresh process: imports, building the model, the first step.

    python bench/bench_startup.py [--backbones EGNN PNA SchNet PaiNN MACE] [--repeats 3]
                                  [--size SMALL|MEDIUM] [--threads 2]

Each repeat of each backbone is a new Python process (interleaved, the machine is shared)
that times, from its first line:
  import       the trainer's model code (torch included) and, for MACE, mace-torch + e3nn
  build        build_model for the SMALL (or MEDIUM) config, conservative forces; MACE at
               ModelConfig's defaults for its own parameters (max_L 1, correlation 3)
  first_step   one training step (forward, force loss through -dE/dx, backward, Adam) on
               a batch of 32 ethanol frames
The median over repeats is reported (min and max too). A trial pays all three once, before
its first epoch, in every HPO evaluation. Writes bench/results/startup.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
from pathlib import Path

from benchio import RESULTS, save_result

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "molecules" / "ethanol_train.xyz.xz"
RESULT = RESULTS / "startup.json"
SIZES = {"SMALL": dict(num_conv_layers=3, hidden_dim=50, fc_dim=50, num_fc_layers=2),
         "MEDIUM": dict(num_conv_layers=4, hidden_dim=256, fc_dim=256, num_fc_layers=2)}

CHILD = r"""
import json, sys, time
start = time.perf_counter()
backbone, size, threads, data = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
import torch
from trainer.contract.trialconfig import ModelConfig
from trainer.models import build_model
from trainer.models.build import DataStats
if backbone == "MACE":
    from trainer.models.mace_backbone import import_mace
    import_mace()
imported = time.perf_counter()
torch.set_num_threads(threads)
from trainer.data.batch import Batch
from trainer.data.graphs import GraphArrays
from trainer.data.structures import read_structures
frames = read_structures(data)[:32]
graphs = GraphArrays.from_atoms(frames, radius=5.0, max_neighbours=50,
                                forces=[a.get_forces() for a in frames])
batch = Batch.from_arrays(graphs)
stats = DataStats(5.0, [1, 6, 8], [{1: -13.6, 6: -1029.0, 8: -2041.0}], 0.0, 0.1, 1.0, [0] * 8 + [9])
data_ready = time.perf_counter()
model = build_model(ModelConfig(mpnn_type=backbone, force_mode="conservative", **size), stats)
built = time.perf_counter()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
model.train()
energy, forces = model(batch)
loss = (forces - batch.forces).pow(2).mean() + energy.mean() * 0.0
optimizer.zero_grad()
loss.backward()
optimizer.step()
stepped = time.perf_counter()
print(json.dumps({"import_s": imported - start, "build_s": built - data_ready, "first_step_s": stepped - built,
                  "parameters": sum(p.numel() for p in model.parameters())}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["EGNN", "PNA", "SchNet", "PaiNN", "MACE"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", default="SMALL", choices=list(SIZES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULT)
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {b: [] for b in args.backbones}
    for repeat in range(args.repeats):
        for backbone in args.backbones:
            done = subprocess.run([sys.executable, "-c", CHILD, backbone, json.dumps(SIZES[args.size]),
                                   str(args.threads), str(DATA)], capture_output=True, text=True, cwd=ROOT)
            if done.returncode != 0:
                raise SystemExit(f"{backbone}: the child process failed:\n{done.stderr[-2000:]}")
            runs[backbone].append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"repeat {repeat + 1}/{args.repeats} done", flush=True)
    rows = []
    for backbone, measured in runs.items():
        row = {"backbone": backbone, "size": args.size, "parameters": measured[0]["parameters"]}
        for key in ("import_s", "build_s", "first_step_s"):
            values = [m[key] for m in measured]
            row[key] = round(statistics.median(values), 2)
            row[key.replace("_s", "_min_max_s")] = [round(min(values), 2), round(max(values), 2)]
        row["total_s"] = round(row["import_s"] + row["build_s"] + row["first_step_s"], 2)
        rows.append(row)
    print(f"{'backbone':8s} {'params':>9s} {'import s':>9s} {'build s':>8s} {'1st step s':>10s} {'total s':>8s}")
    for row in rows:
        print(f"{row['backbone']:8s} {row['parameters']:9d} {row['import_s']:9.2f} {row['build_s']:8.2f} "
              f"{row['first_step_s']:10.2f} {row['total_s']:8.2f}")
    save_result(args.output, {
        "what": "start-up per backbone in a fresh process: imports, build_model, first training step (medians)",
        "machine": {"node": platform.node(), "threads": args.threads,
                    "note": "shared machine: other processes ran at the same time"},
        "settings": {"repeats": args.repeats, "size": args.size, "config": SIZES[args.size],
                     "forces": "conservative", "batch": "32 ethanol frames"},
        "results": rows})


if __name__ == "__main__":
    main()
