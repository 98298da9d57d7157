"""HpoProposer: the manager's outcomes reach the optimiser in one tell, before the next proposal."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from orchestrator.search.backends import make_optimizer
from orchestrator.search.proposers import HpoProposer
from orchestrator.trials import runconfig
from orchestrator.trials.runconfig import RunSettings
from search_spaces import load_space
from trainer.contract import typed


def hpo_proposer(tmp_path: Path, max_evals: int = 20) -> HpoProposer:
    data = tmp_path / "dummy.bp"
    data.touch()
    settings = typed.build(RunSettings, {"site": "local", "data": [str(data)], "epochs": 2}, "test")
    space = load_space("small")
    optimizer = make_optimizer(space, seed=0, log_dir=tmp_path / "optimizer")
    return HpoProposer(space, optimizer, runconfig.base_trial(settings, threads=1), max_evals)


def test_outcomes_are_held_and_told_in_one_call_before_the_next_proposal(tmp_path):
    proposer = hpo_proposer(tmp_path)
    optimizer = proposer.optimizer
    calls: list[list] = []
    tell = optimizer.tell
    optimizer.tell = lambda results: (calls.append(list(results)), tell(results))[1]

    first = proposer.propose(4, created=0)
    assert len(first) == 4 and len({tuple(p.params.values()) for p in first}) == 4
    proposer.finished(first[0].params, 0.5)
    proposer.finished(first[1].params, None)        # a failure stays a failure
    proposer.finished(first[2].params, 0.25)
    assert calls == [] and optimizer.num_told == 0   # nothing told until the optimiser is asked again

    second = proposer.propose(3, created=4)
    assert calls == [[(first[0].params, 0.5), (first[1].params, None), (first[2].params, 0.25)]]
    assert (optimizer.num_told, optimizer.num_failed) == (3, 1)
    assert [p.params for p in first[3:]] == optimizer.pending[:1]   # still running: still pending
    seen = {tuple(p.params.values()) for p in first}
    assert all(tuple(p.params.values()) not in seen for p in second)

    proposer.propose(1, created=7)
    assert len(calls) == 1                          # nothing new finished: no empty tell


def test_each_proposal_says_where_it_came_from(tmp_path):
    proposer = hpo_proposer(tmp_path)
    first = {"mpnn_type": "SchNet", "num_conv_layers": 2, "hidden_dim": 32, "num_fc_layers": 2, "fc_dim": 32}
    proposer.space = dataclasses.replace(proposer.space, initial_points=(first,))
    proposals = proposer.propose(3, created=0)
    assert [p.origin for p in proposals] == ["initial_points", "initial_design", "initial_design"]
    assert proposals[0].params == first
