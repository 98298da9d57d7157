"""Multi-fidelity early discarding: asynchronous successive halving (ASHA) judged against the database.

The space file's `fidelity: {kind: asha, rungs: [1, 3, 9], reduction_factor: 3}`
makes every rung a checkpoint in a trial's life: when a running trial's
result.json shows it has trained `rung` epochs, its value there (the best
validation loss up to that epoch: what its objective would be if it ended
now) is compared with the values every earlier trial had at the same rung.
It continues if it is among the best max(1, floor(n / reduction_factor)) of
the n values the rung then holds (its own included), else it is discarded:
stopped gracefully by the manager (the gentle signal of a wall-time stop; the
trainer checkpoints and exits 75), recorded as "discarded" at that rung with
its partial curve, and told to the optimiser with that value.

This is the stop-or-continue form of ASHA (Li et al. 2020, the form of Ray
Tune's ASHAScheduler and of DeepHyper's SuccessiveHalvingStopper): the
manager never waits for a rung to fill, so every slice stays busy, which is
what an asynchronous manager needs; synchronous successive halving would hold
slices idle until a whole rung had reported. In this form a discarded trial is
never promoted back, so it never resumes; its checkpoint is kept only as the
record of where it stopped. The first trials at a rung pass easily (few
values to compare with): that is ASHA's known price for never waiting.

DeepHyper's stoppers are not used: each one lives inside a running job
(`job.record(budget, objective)` called by the training loop, state kept in
its process and in DeepHyper's storage of the evaluator), while here the
trainer knows nothing of the optimiser (contract 1) and the manager sees the
curves only through result.json and the database; their rungs are also fixed
to a geometric ladder (min_steps - 1 + reduction_factor^k). The same rule is
implemented here on the database's rungs table, so a restarted manager
resumes with every value and decision on record.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

from search_spaces import FidelitySpec
from trainer.contract.errors import UserError

from orchestrator.trials.db import TrialDB
from orchestrator.trials.rungs import RungDecision



def rungs_for(spec: FidelitySpec, epochs: int | None, origin: str) -> list[int]:
    """The rungs of a run with this epoch budget; a UserError where they cannot apply."""
    if spec.kind == "constant":
        return []
    if epochs is None:
        raise UserError(f"{origin}: fidelity.kind: {spec.kind} judges trials at epochs; use an epoch budget "
                        "(--epochs), not --steps")
    rungs = spec.resolve(epochs)
    late = [r for r in rungs if r >= epochs]
    if late:
        raise UserError(f"{origin}: fidelity.rungs: every rung must come before the epoch budget ({epochs}), "
                        f"got {late[0]}")
    if not rungs:
        raise UserError(f"{origin}: fidelity: no rung below the epoch budget ({epochs}); lower min_epochs")
    return rungs


def rung_value(epochs: Sequence[dict[str, Any]], rung: int) -> float | None:
    """Best finite validation loss over the first `rung` epochs of a result.json curve; None if none."""
    values = [e.get("val_loss") for e in epochs if e.get("epoch", 0) <= rung]
    finite = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return min(finite) if finite else None


def keeps(value: float, others: Sequence[float], reduction_factor: float) -> tuple[bool, int, int]:
    """(continue?, rank, n): the rule at one rung, against the values other trials had there."""
    n = len(others) + 1
    rank = 1 + sum(other < value for other in others)   # ties favour the newcomer
    return rank <= max(1, math.floor(n / reduction_factor)), rank, n


class Asha:
    """The manager's rung judge for one phase; every decision goes to the database before it is acted on."""

    def __init__(self, rungs: Sequence[int], reduction_factor: float, db: TrialDB, phase: str = "hpo"):
        self.rungs, self.reduction_factor, self.db, self.phase = list(rungs), reduction_factor, db, phase
        self._judged: dict[int, set[int]] = {}   # trial id -> rungs already decided (a cache of the table)

    def judge(self, trial_id: int, epochs: Sequence[dict[str, Any]]) -> RungDecision | None:
        """Judge every rung the curve has reached and the trial has not been judged at, lowest first;
        the decision that discards it, or None while it continues."""
        for decision in self._due(trial_id, epochs):
            self._record(decision)
            if not decision.kept:
                return decision
        return None

    def record_passed(self, trial_id: int, epochs: Sequence[dict[str, Any]]) -> None:
        """A trial that finished past rungs it was never judged at (short epochs: it got there between
        two looks of the manager) leaves its values there as passed, so that they count for the trials
        judged after it, as every completed trial's do in ASHA."""
        for decision in self._due(trial_id, epochs):
            self._record(dataclasses.replace(decision, kept=True))

    def _due(self, trial_id: int, epochs: Sequence[dict[str, Any]]):
        """The decisions at the rungs the curve has reached and the trial was not judged at, lowest
        first; they end where a rung has no finite loss yet (the trainer fails such a trial itself)."""
        judged = self._judged_rungs(trial_id)
        reached = max((e.get("epoch", 0) for e in epochs), default=0)
        for rung in self.rungs:
            if rung > reached:
                return
            if rung in judged:
                continue
            decision = self._decide(trial_id, epochs, rung)
            if decision is None:
                return
            yield decision

    def _record(self, decision: RungDecision) -> None:
        self.db.record_rung(decision)
        self._judged_rungs(decision.trial_id).add(decision.rung)

    def _decide(self, trial_id: int, epochs: Sequence[dict[str, Any]], rung: int) -> RungDecision | None:
        """ASHA's rule at one rung: kept among the best 1/reduction_factor of the values seen there."""
        value = rung_value(epochs, rung)
        if value is None:
            return None
        others = [v for t, v in self.db.rung_values(rung, self.phase).items() if t != trial_id]
        kept, rank, n = keeps(value, others, self.reduction_factor)
        return RungDecision(trial_id, rung, value, kept, rank, n)

    def verdict(self, trial_id: int) -> RungDecision | None:
        """The decision that discarded this trial, if one is on record (a manager that died before
        recording the stop leaves the trial running: the next one finishes the job)."""
        return next((d for d in self.db.rung_decisions(trial_id) if not d.kept), None)

    def _judged_rungs(self, trial_id: int) -> set[int]:
        if trial_id not in self._judged:
            self._judged[trial_id] = {d.rung for d in self.db.rung_decisions(trial_id)}
        return self._judged[trial_id]


def predict_final(best_so_far: Sequence[float], budget: int) -> float:
    """The loss at `budget` epochs of the curve y = a + b / t fitted (least squares) to the best-so-far
    losses of epochs 1..e: a saturating power law, the simplest of the forms learning-curve models
    (DeepHyper's LCModelStopper among them) fit; it tends to be optimistic, so it stops late."""
    x = [1.0 / t for t in range(1, len(best_so_far) + 1)]
    mean_x, mean_y = sum(x) / len(x), sum(best_so_far) / len(best_so_far)
    spread = sum((xi - mean_x) ** 2 for xi in x)
    slope = sum((xi - mean_x) * (yi - mean_y) for xi, yi in zip(x, best_so_far)) / spread
    return mean_y - slope * mean_x + slope / budget


class CurveRule(Asha):
    """Learning-curve extrapolation: at each judged epoch, stop a trial whose fitted curve, extended to
    the budget, ends worse than the best completed trial so far. The optimiser is told the trial's
    measured best loss (the value the rule's fit started from), not the extrapolation."""

    def __init__(self, rungs: Sequence[int], budget: int, db: TrialDB, phase: str = "hpo"):
        super().__init__(rungs, 1.0, db, phase)
        self.budget = budget

    def _decide(self, trial_id: int, epochs: Sequence[dict[str, Any]], rung: int) -> RungDecision | None:
        curve = [rung_value(epochs, t) for t in range(1, rung + 1)]
        if any(v is None for v in curve):
            return None
        best = self.db.best(self.phase)
        # Nothing completed yet: nothing to beat, the trial passes this epoch.
        kept = best is None or predict_final(curve, self.budget) <= best[1]
        return RungDecision(trial_id, rung, curve[-1], kept, 1 if kept else 2, 1 if best is None else 2)


def make_rule(kind: str, rungs: Sequence[int], reduction_factor: float, budget: int | None,
              db: TrialDB) -> "Asha | None":
    """The manager's judge for a space's fidelity: ASHA, learning-curve extrapolation, or None (constant)."""
    if not rungs:
        return None
    if kind == "learning_curve":
        return CurveRule(rungs, budget or 0, db)
    return Asha(rungs, reduction_factor, db)
