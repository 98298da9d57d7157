"""Test data, generated or real, made once per session; every test that needs structures runs on it.

Each role below ("molecules", "slabs", "crystals", ...) comes in two variants:
  emt  structures made here by the real `gfm-data generate` (ASE's EMT, a real if
       simple physics engine): always there, so a fresh clone runs every test;
  dft  the first-principles file of ../shared/data (CI has it): collected only
       where every such file exists, so a clone without it skips nothing.
A test takes the variant through the module-scoped `variant` fixture (test ids
[emt] and [dft]); its files and datasets come from `SessionData`, which makes
each one on first use and keeps it for the session, however many modules use it.
The fixtures are registered once, in conftest.py: a session fixture imported into
several test modules would run once per module.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import ase.io
import pytest

from mpi_store_check import read_structures

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
BIN = Path(sys.executable).parent

REAL = {  # role: file of ../shared/data
    "molecules": "molecules/ethanol_train.xyz.xz",
    "molecules_test": "molecules/ethanol_test.xyz.xz",
    "ethanol": "molecules/ethanol_train.xyz.xz",
    "ethanol_test": "molecules/ethanol_test.xyz.xz",
    "molecules_large": "molecules/3bpa_train_300K.xyz.xz",  # real only
    "slabs": "surfaces/oc20_debug_sub5.extxyz.xz",
    "crystals": "crystals/mlearn_Si_training.extxyz.xz",
    "crystals_test": "crystals/mlearn_Si_test.extxyz.xz",
    "crystals_elastic": "crystals/mlearn_Mo_training.extxyz.xz",  # real only (EMT twin built in its test)
}
GENERATED = {  # role: gfm-data generate --kind, --count, --seed (a held-out role has its own), more options
    "molecules": ("molecules", 320, 0, ()),  # a mix of 12 molecules: sizes 3 to 11 atoms, H C N O
    "molecules_test": ("molecules", 48, 1, ()),
    "ethanol": ("molecules", 900, 0, ("--molecule", "CH3CH2OH")),  # one molecule, like rMD17 ethanol
    "ethanol_test": ("molecules", 48, 1, ("--molecule", "CH3CH2OH")),
    "slabs": ("slabs", 200, 0, ()),          # 200 slab sizes for test_sampler.py
    "crystals": ("bulk", 72, 0, ()),
    "crystals_test": ("bulk", 12, 1, ()),
}
SOURCE_NAMES = {  # the name a converted dataset carries, by variant
    "emt": {"molecules": "emt_molecules", "ethanol": "emt_ethanol", "slabs": "emt_slabs", "crystals": "emt_bulk"},
    "dft": {"molecules": "ethanol", "ethanol": "ethanol", "slabs": "oc20", "crystals": "mlearn_Si"},
}
MISSING = sorted(relative for relative in set(REAL.values()) if not (SHARED_DATA / relative).exists())
VARIANTS = ["emt"] if MISSING else ["emt", "dft"]
# For a test that checks the same thing on any data (the mechanics of a trial, a refusal): the
# generated data only, which is also what a fresh clone runs.
emt_only = pytest.mark.parametrize("variant", ["emt"], indirect=True)
# For a test whose real-data run costs much and checks nothing that the data could change
# (the trainings only feed what is tested): real data where present, else generated.
ONE_VARIANT = VARIANTS[-1:]
one_variant = pytest.mark.parametrize("variant", ONE_VARIANT, indirect=True)


def report_header() -> str:
    if not SHARED_DATA.is_dir():
        return f"real-data variants not collected: ../shared/data not found at {SHARED_DATA}"
    if MISSING:
        return f"real-data variants not collected: {SHARED_DATA} lacks {', '.join(MISSING)}"
    return f"real-data variants collected: [dft] runs on {SHARED_DATA}, [emt] on generated EMT data"


def convert(frames_file: Path, output: Path, name: str, count: int, val: float = 0.1,
            test: float = 0.1) -> Path:
    """Convert the first `count` frames of a structure file (through the console script)."""
    subset = output.with_suffix(".extxyz")
    ase.io.write(subset, read_structures(frames_file, count))
    subprocess.run([BIN / "gfm-data", "convert", "--name", name, "--output", str(output),
                    "--val", str(val), "--test", str(test), "--seed", "0", "--radius", "5.0",
                    "--max-neighbours", "50", str(subset)], check=True, capture_output=True)
    return output


class SessionData:
    """Structure files and converted datasets of both variants, made on first use."""

    def __init__(self, root: Path):
        self.root = root
        self._made: dict[tuple, Path] = {}

    def file(self, variant: str, role: str) -> Path:
        if variant == "dft":
            return SHARED_DATA / REAL[role]
        if ("file", role) not in self._made:
            kind, count, seed, options = GENERATED[role]
            path = self.root / f"emt_{role}.extxyz"
            done = subprocess.run([str(BIN / "gfm-data"), "generate", "--kind", kind, "--count", str(count),
                                   "--seed", str(seed), *options, "--workers", "2", "--output", str(path)],
                                  capture_output=True, text=True)
            assert done.returncode == 0, f"gfm-data generate failed:\n{done.stdout}{done.stderr}"
            self._made[("file", role)] = path
        return self._made[("file", role)]

    def frames(self, variant: str, role: str, count: int | None = None) -> list:
        """The first `count` (default all) structures of a role's file, read afresh (free to change)."""
        return read_structures(self.file(variant, role), count)

    def dataset(self, variant: str, role: str, count: int, val: float = 0.1, test: float = 0.1) -> Path:
        key = ("dataset", variant, role, count, val, test)
        if key not in self._made:
            name = SOURCE_NAMES[variant][role]
            self._made[key] = convert(self.file(variant, role), self.root / f"{variant}_{role}_{count}.bp",
                                      name, count, val, test)
        return self._made[key]


@pytest.fixture(scope="session")
def session_data(tmp_path_factory) -> SessionData:
    return SessionData(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module", params=VARIANTS)
def variant(request) -> str:
    """"emt" (generated) or "dft" (../shared/data, only collected where it exists)."""
    return request.param


@pytest.fixture(scope="module")
def molecules_file(session_data, variant) -> Path:
    """Small organic molecules: generated H/C/N/O molecules along MD runs, or rMD17 ethanol."""
    return session_data.file(variant, "molecules")


@pytest.fixture(scope="module")
def molecules_test_file(session_data, variant) -> Path:
    """Held-out molecules: another seed, or the rMD17 ethanol test frames."""
    return session_data.file(variant, "molecules_test")


@pytest.fixture(scope="module")
def slabs_file(session_data, variant) -> Path:
    """Adsorbates on metal slabs with FixAtoms: generated, or OC20 relaxation frames."""
    return session_data.file(variant, "slabs")


@pytest.fixture(scope="module")
def crystals_file(session_data, variant) -> Path:
    """Periodic crystals: generated fcc alloy supercells, or mlearn Si."""
    return session_data.file(variant, "crystals")


@pytest.fixture(scope="module")
def crystals_test_file(session_data, variant) -> Path:
    return session_data.file(variant, "crystals_test")


@pytest.fixture(scope="module")
def molecules_bp(session_data, variant) -> Path:
    """300 molecule frames: 240 train / 30 val / 30 test."""
    return session_data.dataset(variant, "molecules", 300)


@pytest.fixture(scope="module")
def crystals_bp(session_data, variant) -> Path:
    """60 periodic crystals: 42 train / 12 val / 6 test."""
    return session_data.dataset(variant, "crystals", 60, 0.2, 0.1)
