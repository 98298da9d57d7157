"""`gfm-data convert`: structure files -> cleaned, split, neighbour-listed ADIOS2 dataset.

One output file per source name. Every input file is read, labelled and
cleaned on its own (so the report has one row per file); sample_id numbers the
structures of all inputs in the order given (positional inputs first, then
--split files), and the report records each file's first sample_id, so any
sample can be traced back to its file and frame.
"""
from __future__ import annotations

import json
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trainer.contract.atomicio import atomic_output, check_can_publish
from trainer.data.cleaning import SourceReport, clean, report_dict
from trainer.data.reference import degree_histogram, fit_references, read_isolated_atoms
from trainer.data.splitting import check_fractions, random_split
from trainer.data.structures import (ENERGY_KEYS, FORCE_KEYS, extract_labels, plain_file, read_frames,
                                     xyz_frame_starts)
from trainer.contract.errors import UserError

if TYPE_CHECKING:  # graphs (and adiosfile) import vesin, which imports torch (~2 s): only when there is work
    from trainer.data.adiosfile import DatasetInfo
    from trainer.data.graphs import GraphArrays

RANDOM = "random"  # an input whose structures are split by fractions
# Below this many frames per chunk, starting worker processes costs more than it saves.
MIN_CHUNK_FRAMES = 500
# Structures (ASE objects) held in memory at once per process, for inputs of millions of frames.
MAX_CHUNK_FRAMES = 10000


@dataclass(frozen=True)
class ConvertOptions:
    name: str
    radius: float = 5.0
    max_neighbours: int | None = 50
    max_force: float = 100.0
    val: float = 0.1
    test: float = 0.1
    seed: int = 0
    workers: int = 1
    isolated_atoms: Path | None = None   # reference energies from this file's one-atom structures


@dataclass(frozen=True)
class Input:
    path: Path
    split: str = RANDOM  # or one of SPLITS for an explicit --split


def report_path(output: str | Path) -> Path:
    """The cleaning report's JSON file, beside the dataset."""
    return Path(f"{output}.report.json")


def check_options(options: ConvertOptions) -> None:
    if not options.name or any(c in options.name for c in "/\\\n"):
        raise UserError(f"--name {options.name!r}: must be a non-empty word without slashes")
    if not options.radius > 0:
        raise UserError(f"--radius {options.radius}: must be positive")
    if options.max_neighbours is not None and options.max_neighbours < 1:
        raise UserError(f"--max-neighbours {options.max_neighbours}: must be at least 1")
    if not options.max_force > 0:
        raise UserError(f"--max-force {options.max_force}: must be positive")
    if options.workers < 1:
        raise UserError(f"--workers {options.workers}: must be at least 1")
    check_fractions(options.val, options.test)


def check_output(output: Path, overwrite: bool) -> None:
    """Fail before any work when the result could not be published."""
    if output.exists() and not overwrite:
        raise UserError(f"{output}: already exists (pass --overwrite to replace it)")
    check_can_publish(output)


@dataclass(frozen=True)
class _Chunk:
    """Frames of one input to process together: a whole file, or a byte range of an xyz file."""
    plain: Path                              # uncompressed file to read
    fmt: str
    item: Input
    byte_range: tuple[int, int] | None = None
    first: int = 0                           # index in the file of the chunk's first frame


def _process(chunk: _Chunk, options: ConvertOptions) -> tuple[GraphArrays, SourceReport]:
    """Read, label, clean and graph one chunk (sample_ids local to its file; offset later)."""
    structures = read_frames(chunk.plain, chunk.fmt, chunk.item.path, chunk.byte_range)
    labelled = extract_labels(structures, chunk.item.path, chunk.first)
    report = SourceReport(path=str(chunk.item.path), split=chunk.item.split, first_sample_id=0)
    keep = clean(labelled, options.max_force, report)
    from trainer.data.graphs import GraphArrays

    graphs = GraphArrays.from_atoms(
        [structures[k] for k in keep], options.radius, options.max_neighbours,
        energies=[labelled.energy[k] for k in keep], forces=[labelled.forces[k] for k in keep],
        stresses=[labelled.stress[k] for k in keep], source=0, sample_ids=chunk.first + keep)
    return graphs, report


def _chunks(plain: Path, fmt: str, item: Input, workers: int) -> list[_Chunk]:
    """A file as chunks of frames: xyz/extxyz files are cut so that each worker gets about two
    chunks and no chunk holds more than MAX_CHUNK_FRAMES structures in memory; other formats whole."""
    starts = xyz_frame_starts(plain) if fmt in ("xyz", "extxyz") else None
    if starts is None:
        return [_Chunk(plain, fmt, item)]
    frames = len(starts) - 1
    pieces = -(-frames // MAX_CHUNK_FRAMES)
    if workers > 1:
        pieces = max(pieces, min(2 * workers, frames // MIN_CHUNK_FRAMES))
    bounds = np.linspace(0, frames, max(pieces, 1) + 1).astype(int)
    return [_Chunk(plain, fmt, item, (int(starts[lo]), int(starts[hi])), int(lo))
            for lo, hi in zip(bounds[:-1], bounds[1:])]


def check_inputs(inputs: list[Input], output: Path) -> None:
    """Every input exists, none is given twice (it would be counted twice), none is the output."""
    if not inputs:
        raise UserError(f"{output}: no input files (give FILE arguments or --split SPLIT=FILE)")
    seen: dict[Path, Path] = {}
    for item in inputs:
        if not item.path.is_file():
            raise UserError(f"{item.path}: {'not a regular file' if item.path.exists() else 'no such file'}")
        resolved = item.path.resolve()
        if resolved in seen:
            raise UserError(f"{item.path}: given more than once (also as {seen[resolved]})")
        if resolved == output.resolve():
            raise UserError(f"{item.path}: is also the output")
        seen[resolved] = item.path


def load_inputs(inputs: list[Input], options: ConvertOptions) -> list[tuple[GraphArrays, SourceReport]]:
    """(graphs, report) per input file, in order; with workers > 1, chunks run in a process pool."""
    with ExitStack() as stack:
        chunks = []
        for item in inputs:
            plain, fmt = stack.enter_context(plain_file(item.path))
            chunks.append(_chunks(plain, fmt, item, options.workers))
        flat = [chunk for per_file in chunks for chunk in per_file]
        from trainer.data.graphs import GraphArrays  # after the cheap checks of every file (see top)

        if options.workers > 1 and len(flat) > 1:
            pool = stack.enter_context(ProcessPoolExecutor(min(options.workers, len(flat)), mp_context=_context()))
            results = iter(pool.map(_process, flat, [options] * len(flat)))
        else:
            results = (_process(chunk, options) for chunk in flat)
        loaded = []
        for item, per_file in zip(inputs, chunks):
            parts = [next(results) for _ in per_file]
            report = parts[0][1]
            for _, more in parts[1:]:
                report.read += more.read
                for rule, count in more.dropped.items():
                    report.dropped[rule] += count
            if report.kept == 0:
                raise UserError(f"{item.path}: {_nothing_kept(report)}")
            loaded.append((GraphArrays.concat([g for g, _ in parts]), report))
        return loaded


def _context() -> multiprocessing.context.BaseContext:
    """fork when the process has a single thread, else spawn.

    A spawned worker re-imports everything, ~3 s here because vesin imports
    torch; a fork is free, but copying a process whose other threads hold locks
    can deadlock, so it is used only when no other Python thread runs (the CLI).
    """
    if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _nothing_kept(report: SourceReport) -> str:
    unlabelled = report.dropped["missing_energy"] + report.dropped["missing_forces"]
    if unlabelled == report.read:
        return (f"none of the {report.read} structures has both energy and force labels "
                f"(looked in the calculator results and in keys {', '.join(ENERGY_KEYS)} / "
                f"{', '.join(FORCE_KEYS)})")
    counts = ", ".join(f"{rule}: {n}" for rule, n in report.dropped.items() if n)
    return f"none of the {report.read} structures survived cleaning ({counts})"


def assign_splits(parts: list[tuple[GraphArrays, SourceReport]], options: ConvertOptions) -> dict[str, np.ndarray]:
    """Global graph indices of each split: explicit files whole, the rest pooled and split by fractions."""
    from trainer.data.adiosfile import SPLITS

    owner = np.concatenate([np.full(len(g), i) for i, (g, _) in enumerate(parts)])
    pooled = np.flatnonzero(np.isin(owner, [i for i, (_, r) in enumerate(parts) if r.split == RANDOM]))
    chosen = {split: [np.flatnonzero(owner == i) for i, (_, r) in enumerate(parts) if r.split == split]
              for split in SPLITS}
    if len(pooled):
        where = ", ".join(r.path for _, r in parts if r.split == RANDOM)
        for split, local in random_split(len(pooled), options.val, options.test, options.seed, where).items():
            chosen[split].append(pooled[local])
    splits = {split: np.sort(np.concatenate(found)) if found else np.zeros(0, np.int64)
              for split, found in chosen.items()}
    if len(splits["trainset"]) == 0:
        raise UserError(f"{parts[0][1].path}: no training structures (give inputs to split by fractions, "
                        "or --split train=FILE)")
    return splits


def convert(inputs: list[Input], output: str | Path, options: ConvertOptions,
            overwrite: bool = False) -> tuple[DatasetInfo, dict]:
    """Run the whole pipeline; returns the dataset's attributes and the cleaning report."""
    output = Path(output)
    check_options(options)
    check_output(output, overwrite)
    check_inputs(inputs, output)
    # Read before the long part, so that a bad file is said at once.
    isolated = read_isolated_atoms(options.isolated_atoms) if options.isolated_atoms else None
    parts = load_inputs(inputs, options)
    from trainer.data.adiosfile import SPLITS, DatasetInfo, write_dataset
    from trainer.data.graphs import GraphArrays

    first = 0
    for graphs, report in parts:  # number the samples across inputs, in the order given
        report.first_sample_id = first
        graphs.sample_id += first
        first += report.read
    report = report_dict([r for _, r in parts], options.max_force)
    graphs = GraphArrays.concat([g for g, _ in parts])
    splits = {name: graphs.select(indices) for name, indices in assign_splits(parts, options).items()}
    train = splits["trainset"]
    elements = sorted(int(z) for z in np.unique(graphs.atomic_numbers))
    references = isolated.covering(elements) if isolated else fit_references(train)
    report["reference_energies"] = references.to_dict()  # how they were fitted, in the report and the file
    info = DatasetInfo(
        name=options.name, radius=options.radius, max_neighbours=options.max_neighbours,
        elements=elements, reference_energies=references.energies,
        counts={split: len(g) for split, g in splits.items()},
        degree_histogram=degree_histogram(train),
        cleaning_report=report,
        split_rule={"val": options.val, "test": options.test, "seed": options.seed,
                    "explicit": {s: [r.path for _, r in parts if r.split == s] for s in SPLITS}})
    # The report is published only once the dataset is: its temporary file is
    # renamed after write_dataset (itself atomic) has succeeded.
    with atomic_output(report_path(output)) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        write_dataset(output, splits, info, overwrite=overwrite)
    return info, report

