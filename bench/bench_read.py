"""Reading a dataset: one ADIOS2 file vs one file per structure (Fig. 2 a vs b of the HydraGNN GFM paper).

    python bench/bench_read.py [--count 10000] [--kind slabs] [--repeats 3] [--data-dir DIR]

The same --count EMT-generated structures (graphs with radius 5 Å, at most 50
neighbours) are stored three ways and read back into one GraphArrays:
  adios2       the dataset written by `gfm-data convert` (all in trainset), read in
               two contiguous ranges as two ranks would;
  npz_per_file one .npz per structure holding the same arrays (the baseline: the
               per-sample files of the paper's Fig. 2 a);
  extxyz_per_file one extxyz per structure, atoms and labels only (no graph: a
               lower bound for reading raw structure files one by one).
Reported: samples/s, files touched, and the ratio adios2 / baseline. Files are
read from a warm page cache (the directory was just written; caches are not
dropped on a shared machine), which favours the many-small-files layouts: on a
parallel file system each extra open is a metadata operation. Writes
bench/results/read.json.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from benchio import RESULTS, save_result
from trainer.data.adiosfile import DatasetReader
from trainer.data.convert import ConvertOptions, Input, convert
from trainer.data.generate import GenerateOptions, generate, write_frames
from trainer.data.graphs import PER_ATOM, PER_EDGE, PER_GRAPH, GraphArrays

ROOT = Path(__file__).resolve().parent.parent
RESULT = RESULTS / "read.json"
FIELDS = PER_GRAPH + PER_ATOM + PER_EDGE


def read_adios(path: Path, ranks: int = 2) -> tuple[GraphArrays, int]:
    with DatasetReader(path) as reader:
        n = reader.info.counts["trainset"]
        bounds = np.linspace(0, n, ranks + 1).astype(int)
        parts = [reader.read("trainset", int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]
    return GraphArrays.concat(parts), sum(1 for f in path.rglob("*") if f.is_file())


def write_npz(graphs: GraphArrays, directory: Path) -> list[Path]:
    directory.mkdir(exist_ok=True)
    paths = []
    for g in range(len(graphs)):
        one = graphs.select([g])
        paths.append(directory / f"{g:07d}.npz")
        np.savez(paths[-1], **{name: getattr(one, name) for name in FIELDS})
    return paths


def read_npz(paths: list[Path]) -> tuple[GraphArrays, int]:
    parts = []
    for path in paths:
        with np.load(path) as data:
            parts.append(GraphArrays(**{name: data[name] for name in FIELDS}))
    return GraphArrays.concat(parts), len(paths)


def read_extxyz(paths: list[Path]) -> tuple[int, int]:
    import ase.io

    atoms = sum(len(ase.io.read(path, format="extxyz")) for path in paths)
    return atoms, len(paths)


def best_time(fn, *args, repeats: int):
    best, value = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn(*args)
        best = min(best, time.perf_counter() - start)
    return value, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--kind", choices=("slabs", "bulk"), default="slabs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, help="keep the files here (default: a temporary dir)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        directory = args.data_dir or Path(scratch)
        directory.mkdir(parents=True, exist_ok=True)
        frames = generate(GenerateOptions(kind=args.kind, count=args.count, seed=1, workers=2))
        source = directory / "structures.extxyz"
        write_frames(source, frames, overwrite=True)
        dataset = directory / "structures.bp"
        convert([Input(source)], dataset, ConvertOptions(name="bench", val=0.0, test=0.0), overwrite=True)
        graphs, _ = read_adios(dataset)
        npz_paths = write_npz(graphs, directory / "npz")
        xyz_dir = directory / "extxyz"
        xyz_dir.mkdir(exist_ok=True)
        xyz_paths = []
        for k, atoms in enumerate(frames):
            xyz_paths.append(xyz_dir / f"{k:07d}.extxyz")
            write_frames(xyz_paths[-1], [atoms], overwrite=True)
        del frames

        (from_adios, adios_files), t_adios = best_time(read_adios, dataset, repeats=args.repeats)
        (from_npz, npz_files), t_npz = best_time(read_npz, npz_paths, repeats=args.repeats)
        (xyz_atoms, xyz_files), t_xyz = best_time(read_extxyz, xyz_paths, repeats=max(1, args.repeats - 2))
        for name in FIELDS:  # the two graph layouts must hold exactly the same data
            np.testing.assert_array_equal(getattr(from_adios, name), getattr(from_npz, name))
        assert xyz_atoms == int(from_adios.num_atoms.sum())

    n = args.count
    rows = {
        "adios2": {"seconds": t_adios, "samples_per_s": n / t_adios, "files_touched": adios_files},
        "npz_per_file": {"seconds": t_npz, "samples_per_s": n / t_npz, "files_touched": npz_files},
        "extxyz_per_file": {"seconds": t_xyz, "samples_per_s": n / t_xyz, "files_touched": xyz_files,
                            "note": "atoms and labels only, no neighbour lists"},
    }
    for name, row in rows.items():
        print(f"{name:>16}: {row['seconds']:7.2f} s  {row['samples_per_s']:10.0f} samples/s  "
              f"{row['files_touched']:6d} files")
    ratio = rows["adios2"]["samples_per_s"] / rows["npz_per_file"]["samples_per_s"]
    print(f"adios2 / npz_per_file: {ratio:.1f}x samples/s, {npz_files / adios_files:.0f}x fewer files")
    result = {"benchmark": "read", "kind": args.kind, "count": n, "repeats": args.repeats,
              "edges": int(from_adios.num_edges.sum()), "atoms": int(from_adios.num_atoms.sum()),
              "layouts": rows, "ratio_adios2_over_npz_samples_per_s": ratio,
              "ratio_adios2_over_extxyz_samples_per_s": rows["adios2"]["samples_per_s"] / rows["extxyz_per_file"]["samples_per_s"],
              "note": "warm page cache; shared 2-core machine, timings are noisy"}
    save_result(RESULT, result)


if __name__ == "__main__":
    main()
