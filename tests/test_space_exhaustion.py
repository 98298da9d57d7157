"""A small discrete space runs out: the search stops with a message instead of proposing a configuration again."""
from __future__ import annotations

import pytest

from datasets import emt_only
from hpo_helpers import gfm_hpo
from orchestrator.search.backends import make_optimizer
from orchestrator.search.proposers import HpoProposer
from orchestrator.trialdb import load_trials
from search_spaces import parse_space

TINY = {"parameters": {"mpnn_type": {"choices": ["EGNN", "SchNet"]}, "num_conv_layers": {"low": 1, "high": 2}}}


@pytest.mark.parametrize("backend", ["random", "cbo", "skopt-gp"])
def test_ask_returns_fewer_once_every_configuration_was_proposed(tmp_path, backend):
    space = parse_space({**TINY, "backend": backend}, "tiny.yaml")
    optimizer = make_optimizer(space, 0, tmp_path / "optimizer")
    first = optimizer.ask(3)
    optimizer.tell([(p, 0.5) for p in first])
    rest = optimizer.ask(3)
    keys = [(p["mpnn_type"], p["num_conv_layers"]) for p in first + rest]
    assert len(keys) == len(set(keys)) == 4 and optimizer.exhausted      # all four, each once
    assert optimizer.ask(1) == []
    proposer = HpoProposer(space, optimizer, None, max_evals=10)
    assert proposer.remaining(created=4) == 0


@emt_only
def test_a_campaign_on_an_exhausted_space_stops_with_a_message(tmp_path, molecules_bp):
    space = tmp_path / "tiny.yaml"
    space.write_text("backend: random\nparameters:\n  mpnn_type: {choices: [EGNN, SchNet]}\n")
    run = tmp_path / "run"
    done = gfm_hpo("launch", "--site", "local", "--nodes", "2", "--max-evals", "5", "--epochs", "1", "--space", space,
                   "--data", molecules_bp, "--run-dir", run, "--set", "training.batch_size=16", check=True)
    trials = load_trials(run)
    assert sorted(trials["mpnn_type"]) == ["EGNN", "SchNet"] and set(trials["status"]) == {"completed"}
    assert "the search stopped before --max-evals 5: every configuration of" in done.stdout
    assert "is exhausted: all 2 configurations have been proposed" in (run / "manager.log").read_text()
