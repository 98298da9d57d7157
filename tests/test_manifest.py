"""ENSEMBLE_DIR: manifest contents, integrity checks, and refusal of tampered or foreign members."""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ensembles import ethanol_ensemble, mixed_ensemble  # noqa: F401  (fixtures)
from trainer.ensemble.manifest import (MANIFEST_FILE, EnsembleError, TrainedMember, load_manifest, read_manifest,
                              set_calibration, write_manifest)
from trainer.contract.typed import ConfigError
from trainer.ensemble.calibration import StdMap


@pytest.fixture
def ensemble_copy(ethanol_ensemble, tmp_path) -> Path:
    """A private copy of the ethanol ensemble that a test may damage."""
    return Path(shutil.copytree(ethanol_ensemble, tmp_path / "ensemble"))


def trial_of(ensemble: Path, name: str) -> Path:
    return ensemble.parent / "trials" / name


def rewrite_manifest(ensemble: Path, change) -> None:
    data = json.loads((ensemble / MANIFEST_FILE).read_text())
    change(data)
    (ensemble / MANIFEST_FILE).write_text(json.dumps(data))


def test_manifest_describes_the_members(ethanol_ensemble):
    manifest = load_manifest(ethanol_ensemble)
    assert [m.name for m in manifest.members] == ["egnn16", "schnet12", "pna8"]
    assert manifest.radius == 5.0 and manifest.max_neighbours == 50
    assert manifest.elements == [1, 6, 8] and manifest.source_elements == [[1, 6, 8]]
    assert manifest.units["energy"] == "eV" and manifest.units["forces"] == "eV/Angstrom"
    assert manifest.calibration.energy.form == manifest.calibration.forces.form == "identity"
    assert manifest.format_version == 2
    # The test members were trained by gfm-train with seeds 0, 1, 2 on the whole training split.
    assert [m.seed for m in manifest.members] == [0, 1, 2]
    assert all(m.data == {"bootstrap": False, "train_samples": 160, "distinct_train_samples": 160}
               for m in manifest.members)
    assert manifest.run_dir == str(ethanol_ensemble.parent) and manifest.created_at
    for member, state in zip(manifest.members, manifest.checkpoints):
        best = trial_of(ethanol_ensemble, member.name) / "best.pt"
        copy = ethanol_ensemble / member.checkpoint
        assert member.checkpoint == f"members/{member.name}.pt"
        assert copy.read_bytes() == best.read_bytes()   # a byte-for-byte copy
        assert member.sha256 == hashlib.sha256(best.read_bytes()).hexdigest()
        original = torch.load(best, weights_only=True)
        assert member.val_loss == original["val_loss"] and member.epochs == original["epoch"]
        assert member.params["mpnn_type"] == original["model_config"]["mpnn_type"]
        assert state["model_config"] == original["model_config"]
    losses = [m.val_loss for m in manifest.members]
    assert manifest.best_member == losses.index(min(losses))


def test_members_must_share_their_data(ethanol_ensemble, mixed_ensemble, tmp_path):
    sources = [TrainedMember("a", trial_of(ethanol_ensemble, "egnn16") / "best.pt", {}),
               TrainedMember("b", trial_of(mixed_ensemble, "egnn8") / "best.pt", {})]
    with pytest.raises(EnsembleError, match="trained on different data") as caught:
        write_manifest(tmp_path / "e", sources, None, 50)
    assert "egnn8/best.pt" in str(caught.value) and "egnn16/best.pt" in str(caught.value)
    assert not (tmp_path / "e" / MANIFEST_FILE).exists()


def test_bad_member_sources(ethanol_ensemble, tmp_path):
    best = trial_of(ethanol_ensemble, "egnn16") / "best.pt"
    with pytest.raises(EnsembleError, match="no such member checkpoint"):
        write_manifest(tmp_path / "e", [TrainedMember("a", tmp_path / "missing.pt", {})], None, 50)
    with pytest.raises(EnsembleError, match="member name '../evil'"):
        write_manifest(tmp_path / "e", [TrainedMember("../evil", best, {})], None, 50)
    with pytest.raises(ConfigError, match="members: member names repeat"):
        write_manifest(tmp_path / "e", [TrainedMember("a", best, {}), TrainedMember("a", best, {})], None, 50)


def test_tampered_member_is_refused(ensemble_copy):
    path = ensemble_copy / "members" / "schnet12.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01   # one bit of one byte
    path.write_bytes(bytes(data))
    with pytest.raises(EnsembleError) as caught:
        load_manifest(ensemble_copy)
    message = str(caught.value)
    assert str(path) in message and "SHA-256 does not match" in message and "\n" not in message


def _replace_member(ensemble: Path, name: str, data: bytes) -> Path:
    """Put `data` in place of a member AND fix its hash, as someone covering their tracks would."""
    path = ensemble / "members" / f"{name}.pt"
    path.write_bytes(data)

    def fix(manifest: dict) -> None:
        for member in manifest["members"]:
            if member["name"] == name:
                member["sha256"] = hashlib.sha256(data).hexdigest()
    rewrite_manifest(ensemble, fix)
    return path


class Payload:
    """Unpickling this would run a command: weights_only loading must refuse it."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/gfm-test-should-not-exist",))


@pytest.mark.parametrize("kind", ["pickle-with-code", "other-torch-file", "text"])
def test_foreign_member_is_refused(ensemble_copy, kind):
    if kind == "pickle-with-code":
        buffer = io.BytesIO()
        torch.save({"model": Payload()}, buffer, pickle_module=pickle)
        data, expected = buffer.getvalue(), "not a model checkpoint readable with weights_only"
    elif kind == "other-torch-file":
        buffer = io.BytesIO()
        torch.save({"weights": torch.zeros(3)}, buffer)
        data, expected = buffer.getvalue(), "not a best.pt of gfm-train"
    else:
        data, expected = b"hello, I am not a checkpoint\n", "not a model checkpoint"
    path = _replace_member(ensemble_copy, "pna8", data)
    with pytest.raises(EnsembleError, match=expected) as caught:
        load_manifest(ensemble_copy)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    assert not Path("/tmp/gfm-test-should-not-exist").exists()


def test_malformed_manifests(ensemble_copy, tmp_path):
    with pytest.raises(EnsembleError, match="no such ensemble directory"):
        read_manifest(tmp_path / "nowhere")
    with pytest.raises(EnsembleError, match="no manifest"):
        read_manifest(tmp_path)
    rewrite_manifest(ensemble_copy, lambda m: m["members"][0].update(checkpoint="../../etc/passwd"))
    with pytest.raises(ConfigError, match=r"members\[0\]\.checkpoint: .* inside the ensemble directory"):
        read_manifest(ensemble_copy)
    rewrite_manifest(ensemble_copy, lambda m: m.update(radius="five"))
    with pytest.raises(ConfigError, match="radius: expected a number"):
        read_manifest(ensemble_copy)
    (ensemble_copy / MANIFEST_FILE).write_text("{ not json")
    with pytest.raises(EnsembleError, match="not a readable manifest"):
        read_manifest(ensemble_copy)


def test_set_calibration(ensemble_copy):
    before = read_manifest(ensemble_copy)
    set_calibration(ensemble_copy, 1.5, 0.75, {"file": "val.bp", "split": "valset"})
    after = load_manifest(ensemble_copy)   # members still verify: only the manifest changed
    assert (after.calibration.energy.form, after.calibration.energy.a) == ("scalar", 1.5)
    assert after.calibration.forces == StdMap("scalar", 0.75, 1.0)
    assert after.calibration.fitted_on["file"] == "val.bp"
    assert after.members == before.members
    set_calibration(ensemble_copy, StdMap("power", 2.0, 0.5), 1.0)
    after = read_manifest(ensemble_copy)
    assert after.calibration.energy == StdMap("power", 2.0, 0.5) and after.calibration.forces.form == "identity"
    with pytest.raises(ConfigError, match="energy.a: must be greater than 0.0"):
        set_calibration(ensemble_copy, 0.0, 1.0)
    with pytest.raises(ConfigError, match="b: the scalar form has b = 1"):
        set_calibration(ensemble_copy, StdMap("scalar", 2.0, 0.5), 1.0)
    assert read_manifest(ensemble_copy).calibration.energy.b == 0.5   # a refused change leaves it as it was


def _as_format_1(data: dict, energy: float, forces: float) -> None:
    """What gfm-ensemble wrote before calibration maps and members' seeds: one factor per quantity."""
    data["format_version"] = 1
    data["calibration"] = {"energy": energy, "forces": forces, "fitted_on": {"file": "val.bp"}}
    for member in data["members"]:
        del member["seed"], member["data"]


def test_format_1_manifests_keep_working(ensemble_copy, ethanol_ensemble):
    rewrite_manifest(ensemble_copy, lambda data: _as_format_1(data, 2.5, 1.0))
    manifest = load_manifest(ensemble_copy)
    assert manifest.calibration.energy == StdMap("scalar", 2.5, 1.0)
    assert manifest.calibration.forces == StdMap("identity", 1.0, 1.0)
    assert manifest.members[0].seed is None and manifest.members[0].data is None
    from trainer.ensemble.evaluate import read_labelled
    from trainer.ensemble.predict import Ensemble

    frames = read_labelled(ethanol_ensemble.parent.parent / "ethanol.bp", "testset", "testset").structures[:4]
    pred = Ensemble.load(ensemble_copy).predict(frames)
    np.testing.assert_allclose(pred.energy_std, 2.5 * pred.energy_std_raw)
    np.testing.assert_array_equal(pred.forces_std, pred.forces_std_raw)
    set_calibration(ensemble_copy, 1.2, 1.0)   # written back as format 2
    assert json.loads((ensemble_copy / MANIFEST_FILE).read_text())["format_version"] == 2
    rewrite_manifest(ensemble_copy, lambda data: _as_format_1(data, -1.0, 1.0))
    with pytest.raises(ConfigError, match="calibration.energy.a: must be greater than 0.0"):
        read_manifest(ensemble_copy)
    rewrite_manifest(ensemble_copy, lambda data: data.update(format_version=3, calibration={}))
    with pytest.raises(ConfigError, match="format_version: 3; this program reads 1, 2"):
        read_manifest(ensemble_copy)
