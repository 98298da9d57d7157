"""Writing and reading datasets leaves no ADIOS2 profiling files behind.

ADIOS2's BP5 engines write a timing profile on every close: the writer inside
the dataset, every reading process in /tmp (hundreds after one test run).
"""
from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from test_data_convert import head
from trainer.data.adiosfile import DatasetFileError, DatasetReader, write_dataset

BIN = Path(sys.executable).parent


def leftovers(name: str, *directories: Path) -> list[Path]:
    """Profiling files of datasets called `name` in /tmp, and any under `directories`."""
    found = list(Path("/tmp").glob(f"{name}*_profiling.json"))
    for directory in directories:
        found += list(directory.rglob("*profiling.json"))
    return found


def test_convert_info_and_reads_leave_no_profiling_file(tmp_path, monkeypatch, molecules_file):
    # A name no other test (or concurrent run) uses, since /tmp is shared.
    name = f"noprofile-{uuid.uuid4().hex[:8]}"
    work = tmp_path / "cwd"
    work.mkdir()
    source = head(molecules_file, 30, tmp_path / "eth.extxyz")
    dataset = tmp_path / f"{name}.bp"
    # The console scripts in their own processes: convert writes and reads back nothing, info reads.
    for args in (["convert", "--name", "eth", "-o", dataset, source], ["info", dataset]):
        subprocess.run([BIN / "gfm-data", *map(str, args)], cwd=work, check=True, capture_output=True)
    # In this process too: whole splits, a range, a rewrite, and files that fail to open.
    monkeypatch.chdir(work)
    with DatasetReader(dataset) as reader:
        splits = {split: reader.read(split) for split in ("trainset", "valset", "testset")}
        reader.read("trainset", 2, 5)
        info = reader.info
    write_dataset(dataset, splits, info, overwrite=True)
    DatasetReader(dataset).close()
    foreign = tmp_path / f"{name}-foreign.bp"
    write_dataset(foreign, {}, info)
    (foreign / "md.idx").unlink()  # damaged: ADIOS2 cannot open it
    with pytest.raises(DatasetFileError, match="not a readable ADIOS2 file"):
        DatasetReader(foreign)
    assert leftovers(name, tmp_path) == []
