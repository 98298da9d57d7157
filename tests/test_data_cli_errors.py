"""Bad input to the installed `gfm-data` script: one line naming the file, exit 2, nothing written."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

SCRIPT = shutil.which("gfm-data") or str(Path(sys.executable).with_name("gfm-data"))


def water(energy: float = -14.0, forces: np.ndarray | None = None, rows: int = 3) -> Atoms:
    atoms = Atoms("H2O", positions=[[0, 0, 0], [0, 0, 0.96], [0, 0.96, 0]])
    atoms.calc = SinglePointCalculator(atoms, energy=energy,
                                       forces=np.full((rows, 3), 0.2) if forces is None else forces)
    return atoms


def run(*args, cwd: Path) -> subprocess.CompletedProcess:
    if not Path(SCRIPT).exists():
        pytest.skip("the gfm-data console script is not installed (pip install -e .)")
    return subprocess.run([SCRIPT, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gfm-data: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """A directory of small good and bad inputs."""
    ase.io.write(tmp_path / "good.extxyz", [water(-14.0 - 0.01 * k) for k in range(10)])
    (tmp_path / "empty.xyz").write_text("")
    (tmp_path / "words.foo").write_text("these are not atoms\n")
    (tmp_path / "broken.xyz").write_text("3\ncomment\nH 0 0 0\nH 0 0\n")
    (tmp_path / "broken.xyz.xz").write_bytes(b"\xfd7zXZ\x00 definitely not xz data")
    unlabelled = [Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]]) for _ in range(4)]
    ase.io.write(tmp_path / "unlabelled.extxyz", unlabelled)
    ase.io.write(tmp_path / "shape.traj", [water(), water(rows=4)])
    ase.io.write(tmp_path / "violent.extxyz", [water(forces=np.full((3, 3), 500.0)) for _ in range(3)])
    ase.io.write(tmp_path / "two.extxyz", [water(), water(-13.0)])
    return tmp_path


CASES = {
    "missing file": (["convert", "--name", "x", "-o", "out.bp", "nowhere.xyz"], ["nowhere.xyz: no such file"]),
    "empty file": (["convert", "--name", "x", "-o", "out.bp", "empty.xyz"], ["empty.xyz: empty file"]),
    "unknown format": (["convert", "--name", "x", "-o", "out.bp", "words.foo"], ["words.foo: unknown file format"]),
    "malformed": (["convert", "--name", "x", "-o", "out.bp", "broken.xyz"], ["broken.xyz: not readable as"]),
    "bad compression": (["convert", "--name", "x", "-o", "out.bp", "broken.xyz.xz"],
                        ["broken.xyz.xz: cannot decompress"]),
    "no labels anywhere": (["convert", "--name", "x", "-o", "out.bp", "unlabelled.extxyz"],
                           ["unlabelled.extxyz: none of the 4 structures has both energy and force labels"]),
    "forces of the wrong shape": (["convert", "--name", "x", "-o", "out.bp", "shape.traj"],
                                  ["shape.traj: structure 1: forces have shape (4, 3), expected (3, 3)"]),
    "fractions leave no training": (["convert", "--name", "x", "-o", "out.bp", "--val", "0.6", "--test", "0.5",
                                     "good.extxyz"], ["--val 0.6 + --test 0.5"]),
    "split too small": (["convert", "--name", "x", "-o", "out.bp", "--val", "0.4", "--test", "0.4", "two.extxyz"],
                        ["two.extxyz: 2 structures after cleaning are too few"]),
    "explicit split emptied by cleaning": (["convert", "--name", "x", "-o", "out.bp", "good.extxyz",
                                            "--split", "val=violent.extxyz"],
                                           ["violent.extxyz: none of the 3 structures survived cleaning (max_force: 3)"]),
    "no training split": (["convert", "--name", "x", "-o", "out.bp", "--split", "test=good.extxyz"],
                          ["no training structures"]),
    "same file twice": (["convert", "--name", "x", "-o", "out.bp", "good.extxyz", "--split", "test=good.extxyz"],
                        ["good.extxyz: given more than once"]),
    "bad flag value": (["convert", "--name", "x", "-o", "out.bp", "--radius", "-1", "good.extxyz"],
                       ["--radius", "must be positive"]),
    "info on a non-dataset": (["info", "good.extxyz"], ["good.extxyz: not a readable ADIOS2 file"]),
    "generate too small": (["generate", "--kind", "slabs", "--count", "5", "--max-atoms", "10", "-o", "out.extxyz"],
                           ["--max-atoms 10"]),
    "generate unknown molecule": (["generate", "--kind", "molecules", "--molecule", "ethanol", "--count", "5",
                                   "-o", "out.extxyz"], ["--molecule ethanol: choose from CH3CH2OH"]),
}


@pytest.mark.parametrize("args, fragments", list(CASES.values()), ids=list(CASES))
def test_bad_input_is_one_line_and_writes_nothing(inputs, args, fragments):
    before = sorted(os.listdir(inputs))
    assert_one_line_error(run(*args, cwd=inputs), *fragments)
    assert sorted(os.listdir(inputs)) == before  # no output, no report, no temporary left behind


def test_existing_output_is_untouched(inputs):
    assert run("convert", "--name", "good", "-o", "good.bp", "good.extxyz", cwd=inputs).returncode == 0
    report = inputs / "good.bp.report.json"
    snapshot = {p: p.read_bytes() for p in [report, *sorted((inputs / "good.bp").iterdir())]}
    listing = sorted(os.listdir(inputs))
    # Without --overwrite: refused. With --overwrite but bad input: fails before replacing anything.
    assert_one_line_error(run("convert", "--name", "good", "-o", "good.bp", "two.extxyz", cwd=inputs),
                          "good.bp: already exists")
    assert_one_line_error(run("convert", "--name", "good", "-o", "good.bp", "--overwrite", "shape.traj",
                              cwd=inputs), "shape.traj")
    assert_one_line_error(run("generate", "--kind", "bulk", "--count", "3", "-o", "good.extxyz", cwd=inputs),
                          "good.extxyz: already exists")
    assert sorted(os.listdir(inputs)) == listing
    assert {p: p.read_bytes() for p in snapshot} == snapshot
    info = run("info", "good.bp", cwd=inputs)
    assert info.returncode == 0 and "trainset 8, valset 1, testset 1" in info.stdout


@pytest.mark.parametrize("command", [["convert", "--name", "x", "good.extxyz"], ["generate", "--kind", "bulk",
                                                                                "--count", "3"]])
def test_output_into_an_unwritable_directory_is_refused_first(inputs, readonly_dir, command):
    output = readonly_dir / ("out.bp" if command[0] == "convert" else "out.extxyz")
    assert_one_line_error(run(*command, "-o", output, cwd=inputs),
                          f"{output}: directory {readonly_dir} is not writable")
    assert list(readonly_dir.iterdir()) == []
