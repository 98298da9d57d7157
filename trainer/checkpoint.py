"""Checkpoints: everything needed to continue a trial exactly where it stopped.

`checkpoint.pt` holds the latest state (model, optimiser, scheduler, epoch and
step within it, running sums of the unfinished epoch, RNG state, the result so
far); `best.pt` holds the weights of the best validation epoch with the model
config and data statistics, which is all an ensemble member needs. Both are
written atomically and contain only tensors and plain Python data, so they
load with `torch.load(..., weights_only=True)`.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from trainer.contract.atomicio import atomic_write_bytes

LATEST = "checkpoint.pt"
BEST = "best.pt"


def save(path: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load(path: Path, device: torch.device | str = "cpu") -> dict[str, Any] | None:
    """The saved state, or None when there is none yet."""
    path = Path(path)
    if not path.exists():
        return None
    return torch.load(path, map_location=device, weights_only=True)


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
