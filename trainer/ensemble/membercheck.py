"""A member's checkpoint against what the manifest says of it.

The SHA-256 in the manifest proves the file is the one the manifest was
written with, not that the manifest describes it: a manifest edited by hand
(or by a script gone wrong) could name a file with other hyperparameters or
another seed, and a member that diverged late could have been saved with NaN
weights. Both are refused by member name before any prediction is made.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


def check_member(member, state: dict[str, Any], path: Path, origin: str, error: type[Exception]) -> None:
    """`member`: a MemberEntry; `state`: its checkpoint's contents; `error`: the class to raise."""
    import torch

    model_config = state.get("model_config") or {}
    for key, value in sorted(member.params.items()):
        if key in model_config and model_config[key] != value:
            raise error(f"{origin}: member {member.name}: its params say {key} {value!r} but {path} was "
                        f"trained with {model_config[key]!r}; refusing to use it")
    recorded = (state.get("training") or {}).get("seed")
    if member.seed is not None and recorded is not None and int(recorded) != member.seed:
        raise error(f"{origin}: member {member.name}: seed {member.seed} in the manifest, {recorded} in {path}")
    if member.epochs is not None and state.get("epoch") is not None and int(state["epoch"]) != member.epochs:
        raise error(f"{origin}: member {member.name}: epoch {member.epochs} in the manifest, "
                    f"{state['epoch']} in {path}")
    for name, tensor in state["model"].items():
        if torch.is_tensor(tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise error(f"{path}: member {member.name} has non-finite weights ({name}); refusing to use it")
