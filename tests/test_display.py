"""The manager's live display (orchestrator/views/display.py) on a real trial database.

Into a file or pipe a line is written only when something other than the clock changed; each
running trial shows its epoch and latest validation loss (the curves the manager copies into the
database), ensemble members both of their numbers; on a terminal the block is redrawn in place.
"""
from __future__ import annotations

import io
import time
from functools import partial
from types import SimpleNamespace

import pytest

from orchestrator.trials.db import TrialDB
from orchestrator.views import display
from orchestrator.views.display import LiveStatus
from trainer.contract import typed
from trainer.contract.trialconfig import TrialConfig, write_trial

PARAMS = {"mpnn_type": "EGNN", "hidden_dim": 16}


@pytest.fixture(autouse=True)
def no_throttle(monkeypatch):
    monkeypatch.setattr(display, "MIN_INTERVAL_S", 0.0)


class Manager:
    """What the display reads of orchestrator.manager.Manager."""

    def __init__(self, db: TrialDB, phase: str, slices: int, remaining: int = 0):
        self.db, self.phase, self.started = db, phase, time.time()
        self.proposer = SimpleNamespace(remaining=lambda created: remaining)
        self.allocation = SimpleNamespace(slices=list(range(slices)))
        self.running: dict[int, SimpleNamespace] = {}

    def start(self, slice_index: int, trial_id: int) -> None:
        self.db.mark_running(trial_id, slice_index, [f"n{slice_index}"])
        self.running[slice_index] = SimpleNamespace(trial=self.db.get(trial_id))

    def finish(self, slice_index: int, objective: float) -> None:
        run = self.running.pop(slice_index)
        self.db.mark_finished(run.trial.trial_id, "completed", objective)


def trial(db: TrialDB, tmp_path, phase: str = "hpo", epochs: int = 20, **kwargs) -> int:
    config = typed.build(TrialConfig, {"data": {"sources": [{"path": "x.bp"}]}, "training": {"epochs": epochs}})
    return db.create_trial(phase, PARAMS, str(tmp_path / "trials" / "{trial_id:05d}"),
                           prepare=partial(write_trial, config=config), **kwargs)


def epoch(db: TrialDB, trial_id: int, *losses: float) -> None:
    db.update_progress(trial_id, {"epochs": [{"epoch": k + 1, "val_loss": v} for k, v in enumerate(losses)]})


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_a_line_only_when_a_member_moves(tmp_path):
    with TrialDB(tmp_path) as db:
        parents = [trial(db, tmp_path, origin="surrogate") for _ in range(2)]
        members = [trial(db, tmp_path, "ensemble", parent_id=p) for p in parents]
        manager = Manager(db, "ensemble", slices=2)
        manager.start(0, members[0])
        manager.start(1, members[1])
        out = io.StringIO()
        live = LiveStatus(out)
        for _ in range(5):                      # the clock moves, nothing else: one line
            live(manager)
        assert len(out.getvalue().splitlines()) == 1
        epoch(db, members[0], 0.5, 0.25)
        live(manager)
        live(manager)
        lines = out.getvalue().splitlines()
        assert len(lines) == 2
        assert lines[1].endswith(f"ensemble: 0/2 done (0 completed, 0 failed), 2 running on 2 slices"
                                 f" | member trial {members[0]} (from HPO trial {parents[0]}): epoch 2/20, val loss 0.25"
                                 f" | member trial {members[1]} (from HPO trial {parents[1]}): starting")
        assert lines[1].startswith("[00:00:0")
        manager.finish(0, 0.0123456789)
        live.close(manager)
        last = out.getvalue().splitlines()[-1]
        assert f"1/2 done (1 completed, 0 failed), 1 running on 2 slices, best 0.01235 by member trial " \
               f"{members[0]} (from HPO trial {parents[0]})" in last
        live.close(manager)                     # nothing new: no repeated final line
        assert out.getvalue().splitlines()[-1] == last and len(out.getvalue().splitlines()) == 3


def test_search_names_a_few_running_trials_and_their_origin(tmp_path):
    with TrialDB(tmp_path) as db:
        manager = Manager(db, "hpo", slices=8, remaining=12)
        ids = [trial(db, tmp_path, epochs=10, origin="initial_design" if k < 5 else "surrogate") for k in range(8)]
        for index, trial_id in enumerate(ids):
            manager.start(index, trial_id)
        epoch(db, ids[0], 0.75)
        out = io.StringIO()
        LiveStatus(out, max_listed=6)(manager)
        entries = out.getvalue().strip().split(" | ")
        assert entries[0].endswith("hpo: 0/20 done (0 completed, 0 failed), 8 running on 8 slices")
        assert entries[1:] == [f"trial {ids[0]} (initial_design): epoch 1/10, val loss 0.75",
                               *(f"trial {i} (initial_design): starting" for i in ids[1:5]),
                               f"trial {ids[5]} (surrogate): starting", "2 more running"]


def test_terminal_block_is_redrawn_in_place(tmp_path):
    with TrialDB(tmp_path) as db:
        manager = Manager(db, "hpo", slices=2, remaining=3)
        first, second = trial(db, tmp_path), trial(db, tmp_path)
        manager.start(0, first)
        manager.start(1, second)
        out = Terminal()
        live = LiveStatus(out)
        live(manager)
        assert out.getvalue().startswith("\r\033[J[00:00:00] hpo: 0/5 done")
        assert out.getvalue().count("\n") == 2 and out.getvalue().endswith("starting")
        live(manager)                           # the clock is redrawn on a terminal: up two lines, clear
        assert out.getvalue().count("\r\033[A\033[A\033[J") == 1
        live.close()
        assert out.getvalue().endswith("\n")
