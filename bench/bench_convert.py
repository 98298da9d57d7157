"""Conversion rate of `gfm-data convert` on EMT-generated structures, and generation rate.

    python bench/bench_convert.py [--count 10000] [--kind slabs] [--workers 1 2] [--repeats 2] [--data-dir DIR]

1. generates --count structures with `gfm-data generate` (2 processes; timed);
2. converts them with 1 and 2 worker processes, interleaved, best of --repeats
   (structures/s; the 1-worker run is the baseline of the ratio), and breaks one 1-worker conversion into
   its phases (read, labels + cleaning, graphs, write);
3. on the real ethanol file (1000 frames, xz), compares ase.io.read on the
   compressed file (what a plain script does) with our decompress-then-read.
The machine is shared with other jobs: figures are noisy. Writes bench/results/convert.json.
"""
from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from benchio import RESULTS, save_result
import trainer.data.adiosfile  # noqa: F401  (imports vesin and torch, ~2 s: kept out of the timings)
from trainer.data.cleaning import SourceReport, clean
from trainer.data.convert import ConvertOptions, Input, convert
from trainer.data.generate import GenerateOptions, generate, write_frames
from trainer.data.structures import extract_labels, read_structures

ROOT = Path(__file__).resolve().parent.parent
RESULT = RESULTS / "convert.json"
ETHANOL = ROOT.parent / "shared" / "data" / "molecules" / "ethanol_train.xyz.xz"


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (worker pools are joined before convert returns)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def phases(path: Path, options: ConvertOptions, output: Path) -> dict[str, float]:
    """Seconds per phase of one single-process conversion (the same steps convert() takes)."""
    from trainer.data.adiosfile import DatasetInfo, write_dataset
    from trainer.data.graphs import GraphArrays

    structures, t_read = timed(read_structures, path)
    start = time.perf_counter()
    labelled = extract_labels(structures, path)
    keep = clean(labelled, options.max_force, SourceReport(str(path), "random", 0))
    t_clean = time.perf_counter() - start
    graphs, t_graphs = timed(GraphArrays.from_atoms, [structures[k] for k in keep], options.radius,
                             options.max_neighbours, energies=[labelled.energy[k] for k in keep],
                             forces=[labelled.forces[k] for k in keep], stresses=[labelled.stress[k] for k in keep])
    info = DatasetInfo(name="phases", radius=options.radius, max_neighbours=options.max_neighbours,
                       elements=sorted(set(graphs.atomic_numbers.tolist())), reference_energies={},
                       counts={"trainset": len(graphs)})
    _, t_write = timed(write_dataset, output, {"trainset": graphs}, info, True)
    return {"read_s": t_read, "labels_and_cleaning_s": t_clean, "graphs_s": t_graphs, "write_s": t_write}


def compressed_read_baseline() -> dict | None:
    if not ETHANOL.exists():
        return None
    import ase.io

    ours, t_ours = timed(read_structures, ETHANOL)
    plain, t_plain = timed(ase.io.read, str(ETHANOL), ":")
    assert len(ours) == len(plain)
    return {"file": ETHANOL.name, "frames": len(ours), "ase_read_on_xz_s": t_plain,
            "decompress_then_read_s": t_ours, "speedup": t_plain / t_ours}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--kind", choices=("slabs", "bulk"), default="slabs")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=2, help="conversions per setting; the best is reported")
    parser.add_argument("--data-dir", type=Path, help="keep the generated data here (default: a temporary dir)")
    parser.add_argument("--skip-xz-baseline", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        directory = args.data_dir or Path(scratch)
        directory.mkdir(parents=True, exist_ok=True)
        source = directory / f"{args.kind}_{args.count}.extxyz"
        frames, t_gen = timed(generate, GenerateOptions(kind=args.kind, count=args.count, seed=0, workers=2))
        write_frames(source, frames, overwrite=True)
        atoms = np.array([len(a) for a in frames])
        print(f"generate: {args.count} {args.kind} ({atoms.min()}-{atoms.max()} atoms, mean {atoms.mean():.1f}) "
              f"in {t_gen:.1f} s on 2 processes = {60 * args.count / t_gen:.0f} structures/min")
        del frames

        times: dict[int, list[float]] = {w: [] for w in args.workers}
        cpu: dict[int, list[float]] = {w: [] for w in args.workers}
        for _ in range(args.repeats):  # interleaved, so a burst of load from other jobs hits all settings
            for workers in args.workers:
                options = ConvertOptions(name="bench", workers=workers)
                before = cpu_seconds()
                _, seconds = timed(convert, [Input(source)], directory / f"w{workers}.bp", options, True)
                times[workers].append(seconds)
                cpu[workers].append(cpu_seconds() - before)
        runs = []
        for workers, seconds in times.items():
            best = min(seconds)
            runs.append({"workers": workers, "seconds_all": seconds, "seconds_best": best,
                         "cpu_seconds_min": min(cpu[workers]), "structures_per_s": args.count / best})
            print(f"convert, {workers} worker(s): best of {args.repeats} {best:.1f} s = "
                  f"{args.count / best:.0f} structures/s (all: {', '.join(f'{s:.1f}' for s in seconds)}; "
                  f"CPU {min(cpu[workers]):.1f} s)")
        base = runs[0]["structures_per_s"]
        for run in runs:
            run["rate_ratio_vs_first"] = run["structures_per_s"] / base
        split = phases(source, ConvertOptions(name="bench"), directory / "phases.bp")
        print("phases (1 process): " + ", ".join(f"{k[:-2]} {v:.1f} s" for k, v in split.items()))
        xz = None if args.skip_xz_baseline else compressed_read_baseline()
        if xz:
            print(f"reading {xz['file']} ({xz['frames']} frames): ase.io.read on .xz {xz['ase_read_on_xz_s']:.1f} s, "
                  f"decompress first {xz['decompress_then_read_s']:.2f} s ({xz['speedup']:.0f}x)")

    result = {
        "benchmark": "convert", "kind": args.kind, "count": args.count,
        "atoms_per_structure": {"min": int(atoms.min()), "mean": float(atoms.mean()), "max": int(atoms.max())},
        "settings": {"radius": 5.0, "max_neighbours": 50},
        "generate_s": t_gen, "generate_structures_per_min": 60 * args.count / t_gen, "generate_processes": 2,
        "convert": runs, "phases_one_process": split, "xz_read": xz,
        "note": "shared 2-core machine; other jobs were running, so timings are noisy",
    }
    save_result(RESULT, result)


if __name__ == "__main__":
    main()
