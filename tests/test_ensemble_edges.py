"""gfm-ensemble predict on ensembles whose files pass the hash but not the checks behind it, and into
places it cannot write: one line naming the member or the file, before any compute."""
from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import pytest
import torch

from datasets import emt_only
from ensembles import ethanol_ensemble  # noqa: F401  (fixture)
from test_ensemble_cli import assert_clean_failure, ethanol_input, gfm_ensemble  # noqa: F401  (fixture)


class NotAllowed:  # not on weights-only loading's allow-list
    pass


def _copy(ensemble: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(ensemble, tmp_path / "ensemble"))


def _manifest(ensemble: Path, change) -> None:
    document = json.loads((ensemble / "manifest.json").read_text())
    change(document)
    (ensemble / "manifest.json").write_text(json.dumps(document))


def _replace(ensemble: Path, name: str, state) -> None:
    """Swap a member's file and give the manifest its new hash, as a careless (or careful) editor would."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    (ensemble / "members" / f"{name}.pt").write_bytes(data)

    def rehash(document):
        for member in document["members"]:
            if member["name"] == name:
                member["sha256"] = hashlib.sha256(data).hexdigest()
    _manifest(ensemble, rehash)


def _with_nan(ensemble: Path, name: str) -> None:
    state = torch.load(ensemble / "members" / f"{name}.pt", weights_only=True)
    key = next(k for k, v in state["model"].items() if v.is_floating_point() and v.numel() > 1)
    state["model"][key].view(-1)[0] = float("nan")
    _replace(ensemble, name, state)


def _other_width(ensemble: Path, name: str) -> None:
    def edit(document):
        for member in document["members"]:
            if member["name"] == name:
                member["params"]["hidden_dim"] += 1
    _manifest(ensemble, edit)


CASES = {
    "params disagree with the checkpoint": (_other_width, ["member schnet12: its params say hidden_dim",
                                                           "was trained with", "schnet12.pt"]),
    "non-finite weights": (_with_nan, ["schnet12.pt: member schnet12 has non-finite weights"]),
    "unsafe pickle": (lambda e, n: _replace(e, n, {"model": {}, "x": NotAllowed()}),
                      ["schnet12.pt: not a model checkpoint readable with weights_only",
                       "refused by weights_only loading: Unsupported global", "NotAllowed"]),
}


@emt_only
@pytest.mark.parametrize("case", sorted(CASES))
def test_members_are_checked_beyond_their_hash(case, ethanol_ensemble, ethanol_input, tmp_path):
    change, words = CASES[case]
    ensemble = _copy(ethanol_ensemble, tmp_path)
    change(ensemble, "schnet12")
    output = tmp_path / "out.csv"
    run = gfm_ensemble("predict", ethanol_input, "-e", ensemble, "-o", output)
    assert_clean_failure(run, *words)
    assert "weights_only=False" not in run.stderr and "add_safe_globals" not in run.stderr
    assert not output.exists()


@emt_only
def test_predict_into_an_unwritable_directory_fails_before_loading(ethanol_ensemble, ethanol_input, tmp_path,
                                                                   readonly_dir):
    broken = _copy(ethanol_ensemble, tmp_path)
    _with_nan(broken, "egnn16")  # would be refused when loading: the output is checked before that
    output = readonly_dir / "out.extxyz"
    assert_clean_failure(gfm_ensemble("predict", ethanol_input, "-e", broken, "-o", output),
                         f"{output}: directory {readonly_dir} is not writable")
    assert list(readonly_dir.iterdir()) == []
