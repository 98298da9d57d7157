"""A trained trial (TRIAL_DIR with best.pt) read as an ensemble of one member, for `evaluate`.

Nothing is written into the trial: the manifest is built in memory from
best.pt (hashed now, so the member is still checked against what was read).
The neighbour cap, which graphs are built with, comes from best.pt where
gfm-train recorded it, else from the trial's first dataset. One model has no
spread, so evaluating it gives errors only.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

from trainer.checkpoint import BEST
from trainer.contract.errors import UserError
from trainer.contract.trialconfig import TRIAL_FILE, load_trial
from trainer.ensemble.manifest import (MANIFEST_FILE, EnsembleError, Manifest, MemberEntry, _agreed_data,
                                       _read_bytes, parse_checkpoint, trained_on)


def is_trial(path: Path) -> bool:
    """A trial directory with best weights (and no manifest: an ensemble directory is never a trial)."""
    return (path / BEST).is_file() and not (path / MANIFEST_FILE).is_file()


def trial_manifest(trial_dir: str | Path) -> Manifest:
    """A one-member manifest of TRIAL_DIR/best.pt, its checkpoint loaded (as load_manifest leaves it)."""
    trial_dir = Path(trial_dir)
    path = trial_dir / BEST
    data = _read_bytes(path)
    state = parse_checkpoint(data, path)
    radius, elements, source_elements = _agreed_data([(path, state["stats"])])
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", trial_dir.resolve().name).lstrip("_.-") or "trial"
    member = MemberEntry(name=name, checkpoint=BEST, sha256=hashlib.sha256(data).hexdigest(),
                         params=dict(state["model_config"]), trial_id=None,
                         val_loss=_number(state.get("val_loss")), epochs=_number(state.get("epoch"), int),
                         **trained_on(state))
    manifest = Manifest(radius=radius, max_neighbours=_max_neighbours(trial_dir, state), elements=elements,
                        source_elements=source_elements, members=[member], run_dir=str(trial_dir))
    manifest.check()
    manifest.directory = trial_dir
    manifest.checkpoints.append(state)
    return manifest


def _max_neighbours(trial_dir: Path, state: dict) -> int | None:
    training = state.get("training")
    if isinstance(training, dict) and "max_neighbours" in training:
        return training["max_neighbours"]
    from trainer.data.adiosfile import DatasetReader

    try:   # a best.pt written before gfm-train recorded it: the training data says
        with DatasetReader(load_trial(trial_dir).data.sources[0].path) as reader:
            return reader.info.max_neighbours
    except UserError as err:
        raise EnsembleError(f"{trial_dir}: its best.pt does not record the neighbour cap and its "
                            f"{TRIAL_FILE} names no readable dataset that does ({err})") from None


def _number(value, kind=float):
    return None if value is None else kind(value)
