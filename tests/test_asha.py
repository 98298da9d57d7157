"""ASHA's rung decisions (orchestrator/search/fidelity.py) on crafted curves, against a real trial database:
who is discarded, who continues, that a trial is judged once per rung (also across a manager restart), what
the optimiser is told, and the space file's fidelity section."""
from __future__ import annotations

import pytest

from orchestrator.phases.ensemble import select_top
from orchestrator.search.backends import make_optimizer
from orchestrator.search.base import restore
from orchestrator.search.fidelity import Asha, keeps, make_rule, predict_final, rung_value, rungs_for
from orchestrator.trials.db import TrialDB, TransitionError
from search_spaces import load_space, parse_space
from trainer.contract.errors import UserError
from trainer.contract.typed import ConfigError

PARAMS = {"mpnn_type": "EGNN", "num_conv_layers": 2, "hidden_dim": 10, "num_fc_layers": 2, "fc_dim": 30}


def curve(*losses: float | None) -> list[dict]:
    """A result.json "epochs" list: epoch e has validation loss losses[e - 1]."""
    return [{"epoch": e, "val_loss": v} for e, v in enumerate(losses, 1)]


def running(db: TrialDB, hidden_dim: int) -> int:
    trial_id = db.create_trial("hpo", {**PARAMS, "hidden_dim": hidden_dim})
    db.mark_running(trial_id, 0, ["n1"])
    return trial_id


def test_the_rule_keeps_the_best_share_of_each_rung():
    assert keeps(0.5, [], 3) == (True, 1, 1)              # the first at a rung always continues
    assert keeps(0.6, [0.5], 3) == (False, 2, 2)          # best max(1, floor(2/3)) = 1 of 2
    assert keeps(0.4, [0.5], 3) == (True, 1, 2)
    assert keeps(0.5, [0.5], 3) == (True, 1, 2)           # a tie favours the newcomer
    assert keeps(0.3, [0.1, 0.2, 0.4, 0.5, 0.6], 3) == (False, 3, 6)   # floor(6 / 3) = 2 continue
    assert keeps(0.15, [0.1, 0.2, 0.4, 0.5, 0.6], 3) == (True, 2, 6)
    assert keeps(0.3, [0.1, 0.2, 0.4, 0.5, 0.6], 2) == (True, 3, 6)   # halving keeps 3 of 6


def test_rung_value_is_the_best_loss_up_to_the_rung_and_skips_non_finite():
    epochs = curve(0.9, 0.5, 0.7, 0.2)
    assert [rung_value(epochs, r) for r in (1, 2, 3, 4)] == [0.9, 0.5, 0.5, 0.2]
    assert rung_value(curve(float("nan"), 0.8), 2) == 0.8 and rung_value(curve(float("nan")), 1) is None


def test_a_trial_that_finished_between_two_looks_still_counts_at_its_rungs(tmp_path):
    with TrialDB(tmp_path) as db:
        asha = Asha([1, 3], 3, db)
        quick, slow = running(db, 10), running(db, 20)
        asha.record_passed(quick, curve(0.2, 0.15, 0.1, 0.05))     # completed before the manager looked
        assert [(d.rung, d.value, d.kept) for d in db.rung_decisions(quick)] == [(1, 0.2, True), (3, 0.1, True)]
        asha.record_passed(quick, curve(0.2, 0.15, 0.1, 0.05))     # recorded once
        assert len(db.rung_decisions(quick)) == 2
        decision = asha.judge(slow, curve(0.6))                    # rank 2 of 2 at rung 1: the quick one counts
        assert (decision.rung, decision.kept, decision.rank, decision.judged) == (1, False, 2, 2)


def test_crafted_curves_who_is_discarded_and_who_continues(tmp_path):
    with TrialDB(tmp_path) as db:
        asha = Asha([1, 3], 3, db)
        good, bad, late_good, late_bad = (running(db, h) for h in (10, 20, 30, 40))
        assert asha.judge(good, curve(0.5)) is None                  # alone at rung 1: continues
        assert asha.judge(good, curve(0.5)) is None                  # seen again: not judged twice
        decision = asha.judge(bad, curve(0.9, 0.1))                  # rung 1 reads epoch 1 only: 0.9
        assert (decision.trial_id, decision.rung, decision.value, decision.kept) == (bad, 1, 0.9, False)
        assert (decision.rank, decision.judged) == (2, 2)
        assert asha.judge(late_good, curve(0.3)) is None             # rank 1 of 3
        assert asha.judge(good, curve(0.5, 0.4, 0.35)) is None       # first at rung 3
        # Both rungs reached at once (a manager that looked late): judged at 1, then at 3.
        decision = asha.judge(late_bad, curve(0.45, 0.44, 0.43))
        assert (decision.rung, decision.kept) == (1, False)          # rank 3 of 4 at rung 1: stops there
        assert {d.rung for d in db.rung_decisions(late_bad)} == {1}  # never judged at rung 3
        assert asha.judge(late_good, curve(0.3, 0.2, 0.1)) is None   # rank 1 of 2 at rung 3
        assert db.rung_values(1) == {good: 0.5, bad: 0.9, late_good: 0.3, late_bad: 0.45}
        assert db.rung_values(3) == {good: 0.35, late_good: 0.1}
        assert asha.verdict(bad).rung == 1 and asha.verdict(good) is None


def test_a_resumed_trial_is_not_judged_again_at_rungs_it_passed(tmp_path):
    with TrialDB(tmp_path) as db:
        first = running(db, 10)
        assert Asha([1, 3], 3, db).judge(first, curve(0.5)) is None
        better = [running(db, h) for h in (20, 30, 40)]
        for trial_id in better:
            Asha([1, 3], 3, db).judge(trial_id, curve(0.1))
        # A new manager (empty cache): `first` resumes from its checkpoint with epochs 1-2 on record.
        # Judged again at rung 1 now, it would be discarded (rank 4 of 4); it passed there once.
        assert Asha([1, 3], 3, db).judge(first, curve(0.5, 0.45)) is None
        assert [d.rung for d in db.rung_decisions(first)] == [1]


def test_a_discarded_trial_keeps_its_value_is_told_and_never_proposed_again(tmp_path):
    # Four configurations in all: after the discarded one is told, three are left to propose.
    space = parse_space({"backend": "random", "parameters": {"mpnn_type": {"choices": ["EGNN", "SchNet"]},
                                                             "num_conv_layers": {"low": 1, "high": 2}}}, "tiny.yaml")
    with TrialDB(tmp_path) as db:
        trial_id = db.create_trial("hpo", {"mpnn_type": "EGNN", "num_conv_layers": 2})
        db.mark_running(trial_id, 0, ["n1"])
        with pytest.raises(TransitionError, match="discarded_at"):
            db.mark_finished(trial_id, "discarded", 0.9)
        with pytest.raises(TransitionError, match="finite value"):
            db.mark_finished(trial_id, "discarded", None, discarded_at=1)
        db.mark_finished(trial_id, "discarded", 0.9, result={"epochs": curve(0.9, 0.95), "epochs_done": 2},
                         discarded_at=1)
        trial = db.get(trial_id)
        assert (trial.status, trial.objective, trial.discarded_at, trial.epochs_done) == ("discarded", 0.9, 1, 2)
        assert db.best("hpo") is None                                   # not a completed trial
        with pytest.raises(TransitionError):
            db.requeue(trial_id, "try again")                           # discarded trials never resume
        optimizer = make_optimizer(space, 0, tmp_path / "optimizer")
        assert restore(optimizer, db) == (1, 0)
    assert optimizer.num_told == 1 and optimizer.num_failed == 0        # told as a value, not as a failure
    proposed = [(p["mpnn_type"], p["num_conv_layers"]) for p in optimizer.ask(3)]
    assert sorted(proposed) == [("EGNN", 1), ("SchNet", 1), ("SchNet", 2)]


def test_the_ensemble_takes_the_highest_fidelity_first(tmp_path):
    with TrialDB(tmp_path) as db:
        a, b, c = (running(db, h) for h in (10, 20, 30))
        db.mark_finished(a, "completed", 0.30)
        db.mark_finished(b, "discarded", 0.10, discarded_at=1)   # lower loss, but after 1 epoch only
        db.mark_finished(c, "discarded", 0.20, discarded_at=3)
        assert [t.trial_id for t in select_top(db.trials("hpo"), 2)] == [a, c]
        assert [t.trial_id for t in select_top(db.trials("hpo"), 5)] == [a, c, b]


def test_fidelity_section_of_the_space_file():
    mapping = load_space("small").to_mapping()
    assert mapping["fidelity"]["kind"] == "constant" and rungs_for(load_space("small").fidelity, 10, "s") == []
    fidelity = parse_space({**mapping, "fidelity": {"kind": "asha", "reduction_factor": 3}}, "s.yaml").fidelity
    assert rungs_for(fidelity, 10, "s.yaml") == [1, 3, 9] and rungs_for(fidelity, 27, "s.yaml") == [1, 3, 9]
    assert parse_space({**mapping, "fidelity": {"kind": "asha", "rungs": [2, 5]}}, "s.yaml").fidelity.resolve(10) == [2, 5]
    for bad, message in [({"kind": "constant", "rungs": [1]}, "fidelity.rungs: rungs apply to kind: asha"),
                         ({"kind": "asha", "rungs": [3, 1]}, "fidelity.rungs: rungs must be increasing"),
                         ({"kind": "asha", "rungs": [0]}, r"fidelity.rungs\[0\]: a rung is a whole number"),
                         ({"kind": "asha", "reduction_factor": 1}, "fidelity.reduction_factor: must be greater"),
                         ({"kind": "halving"}, "fidelity.kind: must be one of constant, asha"),
                         ({"kind": "asha", "rung": [1]}, "fidelity.rung: unknown key .*did you mean 'rungs'")]:
        with pytest.raises(ConfigError, match=f"s.yaml: {message}"):
            parse_space({**mapping, "fidelity": bad}, "s.yaml")
    late = parse_space({**mapping, "fidelity": {"kind": "asha", "rungs": [2, 10]}}, "s.yaml").fidelity
    with pytest.raises(UserError, match=r"s.yaml: fidelity.rungs: every rung must come before the epoch budget \(10\)"):
        rungs_for(late, 10, "s.yaml")
    with pytest.raises(UserError, match="use an epoch budget"):
        rungs_for(fidelity, None, "s.yaml")


def test_a_manager_restarted_mid_discard_records_the_discard_instead_of_resuming(tmp_path):
    """The last manager judged the trial out and died before the trial had stopped: the next one
    records it discarded (and tells its proposer the value) rather than running it again."""
    from types import SimpleNamespace

    from orchestrator.allocation import Allocation
    from orchestrator.manager import Manager
    from orchestrator.trials.runconfig import RunSettings

    told = []
    proposer = SimpleNamespace(phase="hpo", restore=lambda db: None,
                               finished=lambda params, objective: told.append((params, objective)))
    executor = SimpleNamespace(launcher=None, env={})
    settings = RunSettings(site="local", data=["x.bp"])
    with TrialDB(tmp_path) as db:
        out, kept = (db.create_trial("hpo", {**PARAMS, "hidden_dim": h}, str(tmp_path / "trials" / "{trial_id:05d}"))
                     for h in (10, 20))
        for trial_id in (out, kept):
            db.mark_running(trial_id, 0, ["n1"])
        asha = Asha([1], 3, db)
        assert asha.judge(kept, curve(0.2)) is None
        assert asha.judge(out, curve(0.9)).kept is False
        manager = Manager(settings, db, Allocation(["n1", "n2"], 1), executor, proposer, tmp_path / "trials",
                          fidelity=Asha([1], 3, db))
        manager._recover()
        assert (db.get(out).status, db.get(out).discarded_at, db.get(out).objective) == ("discarded", 1, 0.9)
        assert db.get(kept).status == "queued"            # the one that passed resumes from its checkpoint
        assert told == [(db.get(out).params, 0.9)]


def test_learning_curve_rule_stops_what_its_fitted_curve_says_cannot_beat_the_best(tmp_path):
    # y = a + b / t through (1, 0.6), (2, 0.4): a = 0.2, b = 0.4, so 0.24 at 10 epochs.
    assert predict_final([0.6, 0.4], 10) == pytest.approx(0.24)
    with TrialDB(tmp_path) as db:
        rule = make_rule("learning_curve", [2, 3], 3, 10, db)
        early = running(db, 10)
        assert rule.judge(early, curve(0.6, 0.4)) is None            # nothing completed yet: nothing to beat
        done = running(db, 20)
        db.mark_finished(done, "completed", 0.2)
        slow, fast = running(db, 30), running(db, 40)
        decision = rule.judge(slow, curve(0.6, 0.4))
        assert (decision.rung, decision.value, decision.kept) == (2, 0.4, False)   # told its measured 0.4
        assert rule.judge(fast, curve(0.5, 0.25)) is None            # 0.05 at 10 epochs: continues
        assert rule.judge(fast, curve(0.5, 0.25, 0.24)) is None and [d.rung for d in db.rung_decisions(fast)] == [2, 3]
    spec = parse_space({**load_space("small").to_mapping(), "fidelity": {"kind": "learning_curve"}}, "s.yaml").fidelity
    assert rungs_for(spec, 10, "s.yaml") == list(range(2, 10))
    assert isinstance(make_rule("asha", [1, 3], 3, 10, None), Asha) and make_rule("constant", [], 3, 10, None) is None
