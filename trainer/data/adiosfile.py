"""The dataset file: one ADIOS2 BP5 file per source (the contract between convert and load).

Layout (format version 1):
  variables  <split>/<array> for split in trainset, valset, testset and every
             array of `GraphArrays` (graph rows concatenated, edge indices
             local to their graph), plus <split>/atom_offset and
             <split>/edge_offset (cumulative sums of the per-graph counts);
             a split with no samples has no variables.
  attributes name, format_version, units, radius, max_neighbours, elements,
             reference_energies (aligned with elements), counts/<split>,
             degree_histogram, cleaning_report (JSON), split_rule (JSON).

Reading takes a contiguous range of samples, so a rank holds only its share.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from trainer.contract.atomicio import atomic_output
from trainer.data.graphs import PER_ATOM, PER_EDGE, PER_GRAPH, GraphArrays
from trainer.data.header import (FORMAT_VERSION, SPLITS, UNITS, DatasetFileError, DatasetInfo,  # noqa: F401
                                 discard as _discard, open_file, read_info, reader_profile as _reader_profile)

# On-disk dtypes: compact where the range allows, widened to GraphArrays' dtypes on reading.
_DISK_DTYPE = {
    "num_atoms": np.int64, "num_edges": np.int64, "energy": np.float64, "cell": np.float64,
    "pbc": np.uint8, "stress": np.float64, "source": np.int32, "sample_id": np.int64,
    "atomic_numbers": np.uint8, "positions": np.float64, "forces": np.float64, "fixed": np.uint8,
    "edge_index": np.int32, "edge_shift": np.int32,
}
_MEMORY_DTYPE = {"pbc": bool, "fixed": bool, "source": np.int64, "atomic_numbers": np.int64,
                 "edge_index": np.int64, "edge_shift": np.int64}


def write_dataset(path: str | Path, splits: dict[str, GraphArrays], info: DatasetInfo,
                  overwrite: bool = False) -> None:
    """Write all splits and the attributes atomically (temporary directory, then rename)."""
    import adios2

    path = Path(path)
    if path.exists() and not overwrite:
        raise DatasetFileError(f"{path}: already exists (pass --overwrite to replace it)")
    unknown = set(splits) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split names {sorted(unknown)}")
    with atomic_output(path) as tmp:
        adios = adios2.Adios()
        io = adios.declare_io(f"write:{path.name}")
        io.set_engine("BP5")
        with adios2.Stream(io, str(tmp), "w") as stream:
            stream.begin_step()
            for split in SPLITS:
                graphs = splits.get(split)
                if graphs is None or len(graphs) == 0:
                    continue
                for name in PER_GRAPH + PER_ATOM + PER_EDGE:
                    stream.write(f"{split}/{name}", np.ascontiguousarray(getattr(graphs, name), _DISK_DTYPE[name]))
                stream.write(f"{split}/atom_offset", graphs.atom_offsets)
                stream.write(f"{split}/edge_offset", graphs.edge_offsets)
            _write_attributes(stream, info, {s: len(splits.get(s, GraphArrays.empty())) for s in SPLITS})
            stream.end_step()
        _discard(tmp / "profiling.json")  # the writer's profile, written on close (see _reader_profile)


def _write_attributes(stream, info: DatasetInfo, counts: dict[str, int]) -> None:
    stream.write_attribute("name", info.name)
    stream.write_attribute("format_version", np.array([FORMAT_VERSION], np.int64))
    stream.write_attribute("units", json.dumps(info.units))
    stream.write_attribute("radius", np.array([info.radius], np.float64))
    stream.write_attribute("max_neighbours", np.array([info.max_neighbours or 0], np.int64))
    elements = sorted(info.elements)
    stream.write_attribute("elements", np.array(elements or [0], np.int64))
    stream.write_attribute("reference_energies",
                           np.array([info.reference_energies.get(z, 0.0) for z in elements] or [0.0], np.float64))
    for split in SPLITS:
        stream.write_attribute(f"counts/{split}", np.array([counts[split]], np.int64))
    stream.write_attribute("degree_histogram", np.array(info.degree_histogram or [0], np.int64))
    stream.write_attribute("cleaning_report", json.dumps(info.cleaning_report))
    stream.write_attribute("split_rule", json.dumps(info.split_rule))


class DatasetReader:
    """An open dataset file; reads attributes and contiguous ranges of samples."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file, self._variables, attributes = open_file(self.path)
        try:
            self.info = read_info(self._file, attributes, self.path)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        _discard(_reader_profile(self.path))

    def __enter__(self) -> "DatasetReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _read(self, split: str, name: str, start: int, count: int, width: tuple[int, ...]) -> np.ndarray:
        key = f"{split}/{name}"
        if count == 0:
            return np.zeros((0, *width), _MEMORY_DTYPE.get(name, _DISK_DTYPE.get(name, np.int64)))
        if key not in self._variables:
            raise DatasetFileError(f"{self.path}: variable {key} is missing")
        data = self._file.read(key, start=[start] + [0] * len(width), count=[count, *width])
        return np.asarray(data).reshape(count, *width).astype(
            _MEMORY_DTYPE.get(name, _DISK_DTYPE.get(name, np.int64)), copy=False)

    def sizes(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Atoms and edges of every sample of a split (small: one number per sample)."""
        n = self.info.counts[split]
        return self._read(split, "num_atoms", 0, n, ()), self._read(split, "num_edges", 0, n, ())

    def read(self, split: str, start: int = 0, stop: int | None = None) -> GraphArrays:
        """Samples [start, stop) of a split; only their bytes are read."""
        n = self.info.counts[split]
        stop = n if stop is None else min(stop, n)
        if not 0 <= start <= stop:
            raise ValueError(f"bad sample range [{start}, {stop}) for {n} samples")
        count = stop - start
        if count == 0:
            return GraphArrays.empty()
        atom_offset = self._read(split, "atom_offset", start, count, ())
        edge_offset = self._read(split, "edge_offset", start, count, ())
        num_atoms = self._read(split, "num_atoms", start, count, ())
        num_edges = self._read(split, "num_edges", start, count, ())
        a0, a1 = int(atom_offset[0]), int(atom_offset[-1] + num_atoms[-1])
        e0, e1 = int(edge_offset[0]), int(edge_offset[-1] + num_edges[-1])
        widths = {"cell": (3, 3), "stress": (3, 3), "pbc": (3,), "positions": (3,), "forces": (3,),
                  "edge_index": (2,), "edge_shift": (3,)}
        arrays = {"num_atoms": num_atoms, "num_edges": num_edges}
        for name in PER_GRAPH:
            if name not in arrays:
                arrays[name] = self._read(split, name, start, count, widths.get(name, ()))
        for name in PER_ATOM:
            arrays[name] = self._read(split, name, a0, a1 - a0, widths.get(name, ()))
        for name in PER_EDGE:
            arrays[name] = self._read(split, name, e0, e1 - e0, widths.get(name, ()))
        return GraphArrays(**arrays)
