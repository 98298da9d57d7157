"""Atomic file output: a reader sees the old content or the new, never half.

Every result, checkpoint, manifest and dataset is written under a temporary
name in the destination's directory, flushed to disk, then renamed over the
destination (contract 2 of ARCHITECTURE.md).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temporary_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def atomic_output(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write (a file or a directory); publish it as `path` on success.

    On an exception the temporary output is removed and `path` is untouched.
    Directories (ADIOS2 BP5 output is one) replace an existing destination by
    moving the old one aside first, since rename cannot replace a non-empty directory.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(path)
    tmp = _temporary_sibling(path)
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        if tmp.is_dir() and path.exists():
            old = _temporary_sibling(path)
            os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        _remove(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _finite_or_none(obj: Any) -> Any:
    """JSON has no NaN or infinity: a non-finite number is written as null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: _finite_or_none(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_none(value) for value in obj]
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as strict JSON (non-finite floats become null)."""
    text = json.dumps(_finite_or_none(obj), indent=2, allow_nan=False)
    atomic_write_text(path, text + "\n")


def check_can_publish(path: str | os.PathLike) -> None:
    """A UserError unless `path` could be published (a temporary sibling, then a rename), checked
    before the work that produces it. Probed by making such a sibling: os.access answers yes to
    root even in a read-only or immutable directory."""
    from trainer.contract.errors import UserError

    path = Path(path)
    if not path.parent.is_dir():
        raise UserError(f"{path}: directory {path.parent} does not exist")
    probe = _temporary_sibling(path)
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as err:
        raise UserError(f"{path}: directory {path.parent} is not writable ({err.strerror or err})") from None
