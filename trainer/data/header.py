"""A dataset file's header: opening it and reading its attributes, without numpy arrays of samples.

Torch-free on purpose: the manager checks every dataset with `check_dataset`
before it writes a run directory, the same way the trainer opens it, and must
not import torch to do so (tests/test_torch_boundary.py). ADIOS2's Python
package imports torch whenever it is installed (only to accept tensors, which
we never pass), so `import_adios2` hides torch from that one import where
torch is not loaded already. `trainer/data/adiosfile.py` builds its reader on
these functions.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainer.contract.errors import UserError, adios_reason

FORMAT_VERSION = 1
SPLITS = ("trainset", "valset", "testset")
UNITS = {"energy": "eV", "forces": "eV/Angstrom", "positions": "Angstrom", "stress": "eV/Angstrom^3"}


class DatasetFileError(UserError):
    """A dataset file that is missing, unreadable or not in our format."""


@dataclass
class DatasetInfo:
    """The attributes of a dataset file."""
    name: str
    radius: float
    max_neighbours: int | None
    elements: list[int]
    reference_energies: dict[int, float]
    counts: dict[str, int]
    degree_histogram: list[int] = field(default_factory=list)
    cleaning_report: dict = field(default_factory=dict)
    split_rule: dict = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=lambda: dict(UNITS))
    format_version: int = FORMAT_VERSION


def reader_profile(path: Path) -> Path:
    """Where ADIOS2's BP5 reader drops its timing profile on close.

    BP5 (ADIOS2 2.10 to at least 2.12) writes a profile whenever an engine
    closes, with no parameter to stop it (`Profile=Off` only reaches BP3/BP4):
    the writer a `profiling.json` inside the dataset, every reading process
    /tmp/<file name>_<pid in hex>_profiling.json, hundreds after a test run.
    The names are fixed and the reader's carries our pid, so we remove them.
    """
    return Path("/tmp") / f"{path.name}_{os.getpid():x}_profiling.json"


def discard(profile: Path) -> None:
    try:
        profile.unlink(missing_ok=True)
    except OSError:  # someone else's file of the same name, or /tmp read-only: leave it
        pass


def import_adios2():
    """The adios2 module, imported without pulling in torch (1-3 s and the manager's boundary)."""
    if "adios2" in sys.modules or "torch" in sys.modules:
        import adios2

        return adios2
    sys.modules["torch"] = None  # `import torch` inside adios2 now raises ImportError: no tensor support
    try:
        import adios2
    finally:
        del sys.modules["torch"]
    return adios2


def open_file(path: Path):
    """(the adios2.FileReader, its variables, its attributes); a DatasetFileError naming the file
    and ADIOS2's reason when it is missing, foreign or damaged."""
    adios2 = import_adios2()

    if not path.exists():
        raise DatasetFileError(f"{path}: no such dataset (make one with gfm-data convert)")
    handle = None
    try:
        handle = adios2.FileReader(str(path))
        return handle, handle.available_variables(), handle.available_attributes()
    except Exception as err:  # adios2 raises plain RuntimeErrors for foreign or damaged files
        if handle is not None:
            handle.close()
        discard(reader_profile(path))
        raise DatasetFileError(f"{path}: not a readable ADIOS2 file ({adios_reason(err)})") from None


def read_info(handle, attributes: dict, path: Path) -> DatasetInfo:
    if "format_version" not in attributes or "radius" not in attributes:
        raise DatasetFileError(f"{path}: not a dataset written by gfm-data convert")

    def scalar(name: str):
        return np.asarray(handle.read_attribute(name)).reshape(-1)[0].item()

    def text(name: str) -> str:
        return str(handle.read_attribute(name))

    version = int(scalar("format_version"))
    if version != FORMAT_VERSION:
        raise DatasetFileError(f"{path}: format version {version}, this program reads {FORMAT_VERSION}")
    elements = [int(z) for z in np.asarray(handle.read_attribute("elements")).reshape(-1) if z > 0]
    energies = np.asarray(handle.read_attribute("reference_energies"), np.float64).reshape(-1)
    return DatasetInfo(
        name=text("name"),
        radius=float(scalar("radius")),
        max_neighbours=int(scalar("max_neighbours")) or None,
        elements=elements,
        reference_energies={z: float(e) for z, e in zip(elements, energies)},
        counts={split: int(scalar(f"counts/{split}")) for split in SPLITS},
        degree_histogram=[int(v) for v in np.asarray(handle.read_attribute("degree_histogram")).reshape(-1)],
        cleaning_report=json.loads(text("cleaning_report")),
        split_rule=json.loads(text("split_rule")),
        units=json.loads(text("units")),
        format_version=version,
    )


def check_dataset(path: str | Path) -> DatasetInfo:
    """Open a dataset as a trial will and check what every trial needs (training and validation
    samples); its attributes, or a DatasetFileError naming the file."""
    path = Path(path)
    handle, _, attributes = open_file(path)
    try:
        info = read_info(handle, attributes, path)
    except DatasetFileError:
        raise
    except Exception as err:  # an attribute of the wrong type: written by something else
        raise DatasetFileError(f"{path}: not a dataset written by gfm-data convert ({adios_reason(err)})") from None
    finally:
        handle.close()
        discard(reader_profile(path))
    for split, flag in (("trainset", "--val and --test below 1"), ("valset", "--val > 0")):
        if info.counts[split] == 0:
            raise DatasetFileError(f"{path}: no {split} samples (convert with {flag})")
    return info
