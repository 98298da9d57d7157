"""The shared foundation: typed configs and atomic output."""
from __future__ import annotations

import json
import os

import pytest

from trainer.contract import typed
from trainer.contract.atomicio import atomic_output, atomic_write_json
from trainer.contract.trialconfig import TrialConfig, load_trial

MINIMAL = {"data": {"sources": [{"path": "a.bp"}]}}


@pytest.mark.parametrize("patch, message", [
    ({"model": {"hiden_dim": 64}}, "x.yaml: model.hiden_dim: unknown key (did you mean 'hidden_dim'?)"),
    ({"model": {"num_conv_layers": 9}}, "x.yaml: model.num_conv_layers: must be at most 6, got 9"),
    ({"model": {"num_conv_layers": True}}, "x.yaml: model.num_conv_layers: expected an integer, got a boolean (True)"),
    ({"model": {"mpnn_type": "GAT"}}, "x.yaml: model.mpnn_type: must be one of EGNN, PNA, SchNet, PaiNN, MACE; got the string 'GAT'"),
    ({"training": {"learning_rate": "fast"}}, "x.yaml: training.learning_rate: expected a number, got the string 'fast'"),
    ({"training": {"learning_rate": 0}}, "x.yaml: training.learning_rate: must be greater than 0.0, got 0.0"),
    ({"training": {"energy_weight": 0, "force_weight": 0}}, "x.yaml: training.force_weight: energy_weight and force_weight cannot both be 0"),
    ({"data": {"sources": []}}, "x.yaml: data.sources: at least one dataset is needed"),
    ({"data": {"sources": [{"weight": 2}]}}, "x.yaml: data.sources[0].path: required key is missing"),
    ({"data": {"sources": "a.bp"}}, "x.yaml: data.sources: expected a list, got the string 'a.bp'"),
])
def test_schema_errors_name_the_file_and_key(patch, message):
    with pytest.raises(typed.ConfigError) as err:
        typed.build(TrialConfig, {**MINIMAL, **patch}, "x.yaml")
    assert str(err.value) == message


def test_yaml_scientific_notation_and_round_trip():
    config = typed.build(TrialConfig, {**MINIMAL, "training": {"learning_rate": "1e-3"}}, "x.yaml")
    assert config.training.learning_rate == 1e-3
    assert typed.build(TrialConfig, typed.to_dict(config)) == config
    assert typed.replace_path(config, "model.hidden_dim", 128).model.hidden_dim == 128


def test_malformed_yaml_is_one_line(tmp_path):
    bad = tmp_path / "trial.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(typed.ConfigError) as err:
        load_trial(tmp_path)
    assert str(err.value).startswith(f"{bad}: not valid YAML at line")
    assert "\n" not in str(err.value)
    (tmp_path / "trial.yaml").write_text("- a list\n")
    with pytest.raises(typed.ConfigError, match="expected a mapping of keys at the top level"):
        load_trial(tmp_path)


def test_relative_data_paths_resolve_against_the_trial_dir(tmp_path):
    (tmp_path / "trial.yaml").write_text("data:\n  sources:\n    - path: ../data/eth.bp\n")
    config = load_trial(tmp_path)
    assert config.data.sources[0].path == str((tmp_path.parent / "data" / "eth.bp").resolve())


def test_atomic_output_leaves_the_old_file_on_failure(tmp_path):
    target = tmp_path / "result.json"
    atomic_write_json(target, {"status": "running", "loss": float("nan")})
    assert json.loads(target.read_text()) == {"status": "running", "loss": None}
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash while writing")
    assert json.loads(target.read_text())["status"] == "running"
    assert os.listdir(tmp_path) == ["result.json"]


def test_atomic_output_replaces_directories(tmp_path):
    target = tmp_path / "data.bp"
    for generation in ("old", "new"):
        with atomic_output(target) as tmp:
            tmp.mkdir()
            (tmp / "payload").write_text(generation)
    assert (target / "payload").read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["data.bp"]
