"""Structures from any file ASE reads, and their labels as plain arrays.

Labels live in different places depending on who wrote the file: extxyz,
.traj and ASE databases put `energy`/`forces`/`stress` into a single-point
calculator; other tools store them under their own `info`/`arrays` keys. We
look in the calculator first, then in a short explicit list of keys, so that a
label is never guessed from an arbitrary key.

Stress convention (stored in eV/Å^3): ASE's, sigma = (1/V) dE/d(strain), so a
cell that wants to shrink has positive diagonal stress. VASP prints the
opposite sign in kbar; mlearn's `virial_stress_kbar` (order xx yy zz xy yz zx)
is therefore converted as sigma = -0.1 GPa/kbar * value. The sign was checked
on mlearn Mo's strained cells: dE ~= V sigma : d(strain) (tests/test_data_convert.py).
"""
from __future__ import annotations

import bz2
import gzip
import io
import lzma
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import ase.io
import ase.io.formats
import numpy as np
from ase import Atoms, units

from trainer import aseio
from trainer.contract.errors import UserError, one_line

ENERGY_KEYS = ("energy", "REF_energy", "dft_energy", "DFT_energy", "total_energy")
FORCE_KEYS = ("forces", "REF_forces", "dft_forces", "DFT_forces")
STRESS_KEYS = ("stress", "REF_stress", "dft_stress", "DFT_stress")
VASP_KBAR_KEY = "virial_stress_kbar"
_KBAR = 0.1 * units.GPa  # eV/Å^3 per kbar

# ASE reads these transparently, but seeking backwards in a compressed stream
# restarts decompression; extxyz does that per frame (a 1000-frame file took
# 19 s instead of 0.4 s here), so compressed files are unpacked first.
_DECOMPRESS = {".xz": lzma.open, ".lzma": lzma.open, ".gz": gzip.open, ".bz2": bz2.open}


class StructureFileError(UserError):
    """A structure file that cannot be read, or whose contents are inconsistent."""


@dataclass
class LabelledStructures:
    """Structures with their labels, None where a label is absent."""
    structures: list[Atoms]
    energy: list[float | None]       # eV (NaN: the file says NaN; None: no label)
    forces: list[np.ndarray | None]  # [n_atoms, 3] eV/Å each
    stress: list[np.ndarray | None]  # [3, 3] eV/Å^3 each

    def __len__(self) -> int:
        return len(self.structures)


@contextmanager
def plain_file(path: str | Path) -> Iterator[tuple[Path, str]]:
    """(an uncompressed path, ASE's format name) for `path`; a temporary copy lives as long as the context."""
    path = Path(path)
    if not path.exists():
        raise StructureFileError(f"{path}: no such file")
    if not path.is_file():
        raise StructureFileError(f"{path}: not a regular file")
    opener = _DECOMPRESS.get(path.suffix.lower())
    if opener is None:
        yield path, _format(path, path)
        return
    with tempfile.TemporaryDirectory(prefix="gfm-data-") as scratch:
        # Keep the inner name (POSCAR, x.extxyz, ...): ASE guesses the format from it.
        plain = Path(scratch) / path.with_suffix("").name
        try:
            with opener(path, "rb") as packed, open(plain, "wb") as unpacked:
                shutil.copyfileobj(packed, unpacked, 1 << 22)
        except (OSError, EOFError, lzma.LZMAError) as err:
            raise StructureFileError(f"{path}: cannot decompress ({one_line(err, with_type=True)})") from None
        yield plain, _format(plain, path)


def _format(plain: Path, shown: Path) -> str:
    try:
        fmt = ase.io.formats.filetype(str(plain), guess=True)
    except ase.io.formats.UnknownFileTypeError as err:
        problem = "empty file" if plain.stat().st_size == 0 else f"unknown file format ({one_line(err, with_type=True)})"
        raise StructureFileError(f"{shown}: {problem}") from None
    except OSError as err:
        raise StructureFileError(f"{shown}: cannot read ({one_line(err, with_type=True)})") from None
    if fmt not in ase.io.formats.ioformats or not ase.io.formats.ioformats[fmt].can_read:
        raise StructureFileError(f"{shown}: unknown file format (ASE cannot read '{fmt}')")
    return fmt


def read_structures(path: str | Path) -> list[Atoms]:
    """Every structure of `path` (all frames), in file order; problems raise StructureFileError."""
    with plain_file(path) as (plain, fmt):
        return read_frames(plain, fmt, Path(path))


def read_frames(plain: Path, fmt: str, shown: Path, byte_range: tuple[int, int] | None = None) -> list[Atoms]:
    """All frames of an uncompressed file, or those in `byte_range` of an xyz/extxyz file."""
    try:
        if byte_range is None:
            frames = aseio.read(str(plain), ":", format=fmt)
        else:
            with open(plain, "rb") as handle:
                handle.seek(byte_range[0])
                text = handle.read(byte_range[1] - byte_range[0]).decode()
            frames = aseio.read(io.StringIO(text), ":", format=fmt)
    except Exception as err:  # each ASE reader raises its own kinds of error on malformed input
        raise StructureFileError(f"{shown}: not readable as {fmt} ({one_line(err, with_type=True)})") from None
    if isinstance(frames, Atoms):
        frames = [frames]
    if not frames:
        raise StructureFileError(f"{shown}: no structures in the file")
    return list(frames)


def xyz_frame_starts(plain: Path) -> np.ndarray | None:
    """Byte offsets of the frames of an xyz/extxyz file and its end ([frames + 1]), or None if irregular.

    Lets several processes parse parts of one file. Anything unexpected returns
    None, and the whole file is then read by ASE, which reports the problem.
    """
    starts, position = [], 0
    with open(plain, "rb") as handle:
        while line := handle.readline():
            if not line.strip():
                position += len(line)
                continue
            try:
                count = int(line)
            except ValueError:
                return None
            starts.append(position)
            position += len(line)
            for _ in range(count + 1):
                body = handle.readline()
                if not body:
                    return None
                position += len(body)
    return np.asarray(starts + [position], dtype=np.int64) if starts else None


def extract_labels(structures: list[Atoms], path: str | Path, first: int = 0) -> LabelledStructures:
    """Energy, forces and stress of every structure; a label of the wrong shape raises StructureFileError.

    `first` is the index in the file of structures[0], for messages.
    """
    energy: list[float | None] = []
    forces: list[np.ndarray | None] = []
    stress: list[np.ndarray | None] = []
    for k, atoms in enumerate(structures):
        where = f"{path}: structure {first + k}"
        results = getattr(atoms.calc, "results", None) or {}
        value = _first(results, atoms.info, keys=ENERGY_KEYS)
        energy.append(None if value is None else _number(value, f"{where}: energy"))
        forces.append(_forces(results, atoms, where))
        stress.append(_stress(results, atoms, where))
    return LabelledStructures(list(structures), energy, forces, stress)


def _first(results: dict, *mappings: dict, keys: tuple[str, ...]):
    """The calculator's result under the canonical key (keys[0]), else the first listed key present."""
    if keys[0] in results and results[keys[0]] is not None:
        return results[keys[0]]
    for key in keys:
        for mapping in mappings:
            if key in mapping and mapping[key] is not None:
                return mapping[key]
    return None


def _number(value, where: str) -> float:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise StructureFileError(f"{where} is not a number ({value!r})") from None
    if array.size != 1:
        raise StructureFileError(f"{where} has {array.size} values, expected 1")
    return float(array.reshape(()))


def _array(value, where: str) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise StructureFileError(f"{where} is not numeric") from None


def _forces(results: dict, atoms: Atoms, where: str) -> np.ndarray | None:
    value = _first(results, atoms.arrays, atoms.info, keys=FORCE_KEYS)
    if value is None:
        return None
    array = _array(value, f"{where}: forces")
    if array.size != 3 * len(atoms):
        raise StructureFileError(f"{where}: forces have shape {array.shape}, expected ({len(atoms)}, 3)")
    return array.reshape(len(atoms), 3)


def _stress(results: dict, atoms: Atoms, where: str) -> np.ndarray | None:
    value = _first(results, atoms.info, keys=STRESS_KEYS)
    if value is not None:
        array = _array(value, f"{where}: stress")
        if array.size == 6:  # ASE's Voigt order: xx yy zz yz xz xy
            xx, yy, zz, yz, xz, xy = array.reshape(6)
            return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
        if array.size == 9:
            return array.reshape(3, 3)
        raise StructureFileError(f"{where}: stress has {array.size} values, expected 6 or 9")
    if VASP_KBAR_KEY in atoms.info:
        array = _array(atoms.info[VASP_KBAR_KEY], f"{where}: {VASP_KBAR_KEY}")
        if array.size != 6:
            raise StructureFileError(f"{where}: {VASP_KBAR_KEY} has {array.size} values, expected 6")
        xx, yy, zz, xy, yz, zx = array.reshape(6)  # VASP order
        return -_KBAR * np.array([[xx, xy, zx], [xy, yy, yz], [zx, yz, zz]])
    return None
