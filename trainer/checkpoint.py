"""Checkpoints: everything needed to continue a trial exactly where it stopped.

`checkpoint.pt` holds the latest state (model, optimiser, scheduler, epoch and
step within it, running sums of the unfinished epoch, RNG state, the result so
far, and the configuration it belongs to: `resume_state` refuses it for an
edited trial.yaml, and names it when it is damaged or not ours); `best.pt` holds the weights of the best validation epoch with the model
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
from trainer.contract.errors import UserError, load_refusal
from trainer.contract.trialconfig import TRIAL_FILE, TrialConfig, bound_config, config_changes

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


# What every checkpoint.pt of gfm-train holds; a file without them is someone else's.
LATEST_KEYS = {"model", "optimizer", "scheduler", "rng", "position", "result"}


def resume_state(trial_dir: Path, config: TrialConfig, device: torch.device | str = "cpu") -> dict[str, Any] | None:
    """checkpoint.pt of `trial_dir` to resume from, or None; a UserError naming the file when it is
    unreadable, not ours, or of another configuration than trial.yaml's (never deleted here: it may
    be the only copy of a long training)."""
    path = Path(trial_dir) / LATEST
    try:
        state = load(path, device)
    except Exception as err:  # torch raises whatever its unpickler or zip reader hit
        raise UserError(f"{path}: unreadable checkpoint ({load_refusal(err)}); move it away to start "
                        "this trial from the beginning") from None
    if state is None:
        return None
    if not isinstance(state, dict) or not LATEST_KEYS <= set(state):
        raise UserError(f"{path}: not a checkpoint of gfm-train (it lacks "
                        f"{', '.join(sorted(LATEST_KEYS - set(state if isinstance(state, dict) else ())))}); "
                        "move it away to start this trial from the beginning")
    bound = state.get("bound_config")
    changes = config_changes(bound, bound_config(config)) if isinstance(bound, dict) else []
    if changes:
        shown = "; ".join(changes[:3]) + (f"; and {len(changes) - 3} more" if len(changes) > 3 else "")
        raise UserError(f"{Path(trial_dir) / TRIAL_FILE}: changed since {path} was written ({shown}); "
                        "train the new configuration in a new trial directory, or restore trial.yaml")
    return state


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
