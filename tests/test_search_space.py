"""Search-space files: Table IV by default, every mistake named by file and key, validated trials."""
from __future__ import annotations

import random

import numpy as np
import pytest

from search_spaces import PACKAGED, load_space, parse_space
from trainer.contract import typed
from trainer.contract.trialconfig import TrialConfig
from trainer.contract.typed import ConfigError

BASE = typed.build(TrialConfig, {"data": {"sources": [{"path": "data/ethanol.bp"}]}, "training": {"epochs": 10}})


def test_default_is_table_iv():
    space = load_space()
    assert space.origin == str(PACKAGED / "table_iv.yaml") and space.backend == "cbo"
    assert space.names == ["mpnn_type", "num_conv_layers", "hidden_dim", "num_fc_layers", "fc_dim", "max_L",
                           "correlation"]
    assert space.to_mapping()["parameters"] == {
        "mpnn_type": {"choices": ["PNA", "EGNN", "SchNet", "PaiNN", "MACE"], "path": "model.mpnn_type"},
        "num_conv_layers": {"low": 1, "high": 6, "path": "model.num_conv_layers"},
        "hidden_dim": {"low": 100, "high": 2000, "path": "model.hidden_dim"},
        "num_fc_layers": {"low": 2, "high": 3, "path": "model.num_fc_layers"},
        "fc_dim": {"low": 300, "high": 1000, "path": "model.fc_dim"},
        "max_L": {"low": 0, "high": 2, "when": {"mpnn_type": ["MACE"]}, "path": "model.max_L"},
        "correlation": {"low": 1, "high": 3, "when": {"mpnn_type": ["MACE"]}, "path": "model.correlation"},
    }
    assert [p.kind for p in space.parameters] == ["choice", "int", "int", "int", "int", "int", "int"]
    assert space.fixed == {} and space.optimizer == {}


def test_small_is_table_iv_scaled_down():
    small, full = load_space("small"), load_space("table_iv")
    assert small.names == full.names
    widths = {p.name: (p.low, p.high) for p in small.parameters if p.name.endswith("_dim")}
    assert widths == {"hidden_dim": (10, 200), "fc_dim": (30, 100)}
    with pytest.raises(ConfigError, match=r"^huge: no such file, and not a packaged search space \(packaged: demo, small, table_iv\)$"):
        load_space("huge")


def test_a_directory_named_like_a_packaged_space_is_not_taken_for_it(tmp_path, monkeypatch):
    # The repository holds demo/ (the demo's campaigns) next to the packaged space "demo".
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()
    assert load_space("demo").origin.endswith("search_spaces/demo.yaml")
    (tmp_path / "mine").mkdir()
    with pytest.raises(ConfigError, match=r"^mine: no such file, and not a packaged search space"):
        load_space("mine")


def test_demo_is_small_with_a_short_random_start():
    # The demo's 12 trials on 2 slices: 4 completed random points, then the surrogate (search/backends.py).
    demo, small = load_space("demo"), load_space("small")
    # small's ranges for the three fast backbones (MACE's start-up alone would cost the demo minutes).
    shared = {p.name: p for p in small.parameters}
    assert all(p == shared[p.name] for p in demo.parameters if p.name != "mpnn_type") and demo.backend == "cbo"
    assert set(demo.parameters[0].choices) == {"EGNN", "PNA", "SchNet"} <= set(shared["mpnn_type"].choices)
    assert demo.optimizer == {"n_initial_points": 4}


def test_round_trip_through_a_mapping():
    space = load_space("small")
    assert parse_space(space.to_mapping(), space.origin) == space


VALID = "parameters:\n  hidden_dim: {low: 10, high: 20}\n"
COND = "parameters:\n  mpnn_type: {choices: [EGNN, MACE]}\n"


@pytest.mark.parametrize("text, where, problem", [
    ("bakend: cbo\n" + VALID, "bakend", "unknown key (did you mean 'backend'?)"),
    ("backend: ga\n" + VALID, "backend", "must be one of cbo, skopt-gp, random"),
    ("parameters:\n  hiden_dim: {low: 1, high: 3}\n", "parameters.hiden_dim", "unknown parameter: not a field of model or training in trial.yaml (did you mean 'hidden_dim'?)"),
    ("parameters:\n  dropout: {low: 0.0, high: 0.5}\n", "parameters.dropout", "unknown parameter"),
    ("parameters:\n  hidden_dim: {low: 10, hihg: 20}\n", "parameters.hidden_dim.hihg", "unknown key (did you mean 'high'?)"),
    ("parameters:\n  hidden_dim: {low: 300, high: 100}\n", "parameters.hidden_dim.low", "low (300) is greater than high (100)"),
    ("parameters:\n  num_conv_layers: {low: 0, high: 9}\n", "parameters.num_conv_layers.low", "model.num_conv_layers: must be at least 1, got 0"),
    ("parameters:\n  num_conv_layers: {low: 1, high: 9}\n", "parameters.num_conv_layers.high", "model.num_conv_layers: must be at most 6, got 9"),
    ("parameters:\n  num_conv_layers: {choices: [1, 2, 3]}\n", "parameters.num_conv_layers.choices[0]", "choices must be strings, got 1"),
    ("parameters:\n  mpnn_type: {choices: []}\n", "parameters.mpnn_type.choices", "at least one choice is needed"),
    ("parameters:\n  mpnn_type: {choices: [PNA, GAT]}\n", "parameters.mpnn_type.choices[1]", "model.mpnn_type: must be one of EGNN, PNA, SchNet, PaiNN, MACE; got the string 'GAT'"),
    (COND + "  max_L: {low: 0, high: 2, when: {mpnn_typ: [MACE]}}\n", "parameters.max_L.when.mpnn_typ", "not another parameter of this space (it has mpnn_type)"),
    (COND + "  max_L: {low: 0, high: 2, when: {mpnn_type: [MAC]}}\n", "parameters.max_L.when.mpnn_type[0]", "'MAC' is not one of EGNN, MACE"),
    (COND + "  max_L: {low: 0, high: 2, when: {mpnn_type: []}}\n", "parameters.max_L.when.mpnn_type", "expected a list of its choices"),
    (COND + "  max_L: {low: 0, high: 2, when: {}}\n", "parameters.max_L.when", "name exactly one parent parameter, got 0"),
    (COND + "  max_L: {low: 0, high: 2, when: {mpnn_type: [MACE]}}\n  correlation: {low: 1, high: 3, when: {max_L: [a]}}\n",
     "parameters.correlation.when.max_L", "a condition needs a parameter with choices"),
    (COND + "  max_L: {low: 0, high: 9, when: {mpnn_type: [MACE]}}\n", "parameters.max_L.high", "model.max_L: must be at most 3, got 9"),
    ("parameters:\n  mpnn_type: {low: 1, high: 3}\n", "parameters.mpnn_type", "takes text values: give choices, not a range"),
    ("parameters:\n  hidden_dim: {low: 10.5, high: 20}\n", "parameters.hidden_dim.low", "model.hidden_dim takes integers, got 10.5"),
    ("parameters:\n  learning_rate: {low: 0, high: 0.1, prior: log-uniform}\n", "parameters.learning_rate.low", "a log-uniform range needs low > 0"),
    ("parameters:\n  learning_rate: {low: 1.0e-4, high: 1.0e-2, prior: log}\n", "parameters.learning_rate.prior", "must be one of uniform, log-uniform"),
    ("parameters:\n  lr: {path: training.lr, low: 0.1, high: 0.2}\n", "parameters.lr.path", "training.lr is not a trial.yaml key"),
    ("parameters:\n  zero1: {choices: [a]}\n", "parameters.zero1", "cannot be searched"),
    ("parameters:\n  hidden_dim: {low: 10}\n", "parameters.hidden_dim.high", "a range needs both low and high"),
    ("parameters: {}\n", "parameters", "at least one hyperparameter is needed"),
    (VALID + "  width: {path: model.hidden_dim, low: 1, high: 2}\n", "parameters.width", "sets model.hidden_dim, which parameter 'hidden_dim' already sets"),
    (VALID + "fixed: {model.hidden_dim: 12}\n", "parameters.hidden_dim", "sets model.hidden_dim, which is also under fixed"),
    (VALID + "fixed: {training.force_weight: heavy}\n", "fixed", "training.force_weight: expected a number, got the string 'heavy'"),
    (VALID + "fixed: {trainig.epochs: 3}\n", "fixed", "trainig: unknown key (did you mean 'training'?)"),
    (VALID + "optimizer: [ET]\n", "optimizer", "expected a mapping, got a list"),
])
def test_bad_files_name_file_and_key(tmp_path, text, where, problem):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_space(path)
    message = str(err.value)
    assert message.startswith(f"{path}: {where}: "), message
    assert problem in message and "\n" not in message


def test_malformed_yaml(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("parameters:\n  hidden_dim: {low: 1, high\n")
    with pytest.raises(ConfigError, match=rf"^{path}: not valid YAML at line \d+"):
        load_space(path)
    with pytest.raises(ConfigError, match=rf"^{tmp_path / 'absent.yaml'}: no such file$"):
        load_space(tmp_path / "absent.yaml")


def test_apply_gives_validated_trials(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("parameters:\n"
                    "  mpnn_type: {choices: [EGNN, SchNet]}\n"
                    "  hidden_dim: {low: 16, high: 64}\n"
                    "  learning_rate: {low: 1.0e-4, high: 1e-2, prior: log-uniform}\n"
                    "  decay: {path: training.weight_decay, low: 0, high: 0.1}\n"
                    "fixed: {training.force_weight: 10, model.force_mode: conservative}\n")
    space = load_space(path)
    assert [p.kind for p in space.parameters] == ["choice", "int", "float", "float"]
    trial = space.apply({"mpnn_type": "SchNet", "hidden_dim": 32, "learning_rate": 3e-3, "decay": 0.05}, BASE)
    assert isinstance(trial, TrialConfig)
    assert (trial.model.mpnn_type, trial.model.hidden_dim, trial.model.force_mode) == ("SchNet", 32, "conservative")
    assert (trial.training.learning_rate, trial.training.weight_decay, trial.training.force_weight) == (3e-3, 0.05, 10.0)
    assert trial.data == BASE.data and trial.training.epochs == 10
    # Values from a backend (numpy scalars) are accepted; values outside the space are not.
    numpy_params = {"mpnn_type": np.str_("EGNN"), "hidden_dim": np.int64(16), "learning_rate": np.float64(1e-4), "decay": 0}
    assert space.check_params(numpy_params) == {"mpnn_type": "EGNN", "hidden_dim": 16, "learning_rate": 1e-4, "decay": 0.0}
    for bad, problem in [({"hidden_dim": 65}, "parameters.hidden_dim: 65 is outside the range [16, 64]"),
                         ({"mpnn_type": "PNA"}, "parameters.mpnn_type: 'PNA' is not one of EGNN, SchNet"),
                         ({"hidden_dim": 20.5}, "parameters.hidden_dim: expected an integer, got 20.5"),
                         ({"depth": 3}, "parameters.depth: not a parameter of this space")]:
        with pytest.raises(ConfigError, match=problem.replace("[", r"\[").replace("]", r"\]")):
            space.apply({**numpy_params, **bad}, BASE)


def test_samples_stay_inside_and_follow_the_prior():
    space = parse_space({"parameters": {"mpnn_type": {"choices": ["PNA", "EGNN", "SchNet"]},
                                        "batch_size": {"low": 8, "high": 256, "prior": "log-uniform"},
                                        "learning_rate": {"low": 1e-4, "high": 1e-2, "prior": "log-uniform"}}})
    rng = random.Random(0)
    samples = [space.sample(rng) for _ in range(4000)]
    for s in samples:
        assert space.check_params(s) == s
    assert {s["mpnn_type"] for s in samples} == {"PNA", "EGNN", "SchNet"}
    assert {s["batch_size"] for s in samples} >= {8, 256}
    # Log-uniform: each decade (factor 10) of the learning rate is about equally likely.
    low_decade = sum(s["learning_rate"] < 1e-3 for s in samples) / len(samples)
    assert 0.45 < low_decade < 0.55
    assert space.sample(random.Random(5)) == space.sample(random.Random(5))


def test_conditional_parameters_apply_only_where_their_parent_says():
    space = parse_space({"parameters": {"mpnn_type": {"choices": ["EGNN", "PaiNN", "MACE"]},
                                        "hidden_dim": {"low": 8, "high": 64},
                                        "max_L": {"low": 0, "high": 2, "when": {"mpnn_type": ["MACE"]}},
                                        "correlation": {"low": 2, "high": 3, "when": {"mpnn_type": ["MACE"]}}}})
    samples = [space.sample(random.Random(seed)) for seed in range(300)]
    mace = [s for s in samples if s["mpnn_type"] == "MACE"]
    assert {(s["max_L"], s["correlation"]) for s in mace} == {(L, c) for L in range(3) for c in (2, 3)}
    assert {(s["max_L"], s["correlation"]) for s in samples if s["mpnn_type"] != "MACE"} == {(0, 2)}
    # Inactive values are fixed (or may be left out): one configuration, whatever a backend said.
    egnn = {"mpnn_type": "EGNN", "hidden_dim": 16, "max_L": 0, "correlation": 2}
    assert space.check_params({**egnn, "max_L": 2, "correlation": 3}) == egnn
    assert space.check_params({"mpnn_type": "EGNN", "hidden_dim": 16}) == egnn
    with pytest.raises(ConfigError, match=r"parameters.max_L: missing"):
        space.check_params({"mpnn_type": "MACE", "hidden_dim": 16, "correlation": 3})
    with pytest.raises(ConfigError, match=r"parameters.max_L: 7 is outside the range \[0, 2\]"):
        space.check_params({**egnn, "max_L": 7})
    trial = space.apply({"mpnn_type": "MACE", "hidden_dim": 16, "max_L": 2, "correlation": 3}, BASE)
    assert (trial.model.mpnn_type, trial.model.max_L, trial.model.correlation) == ("MACE", 2, 3)
    assert parse_space(space.to_mapping(), space.origin) == space
