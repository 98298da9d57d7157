"""The ensemble phase: the top-K configurations of the search, trained to convergence on the slices.

Selection comes from the trial database, never from hard-coded trial ids
(HydraGNN picked its ensemble in a shell script): completed HPO trials by
objective, one per distinct configuration, ties by trial id. Each member is a
trial of phase "ensemble" (parent_id = the HPO trial it retrains) run by the
same manager, so it is recorded, resumable and fault-tolerant like any trial.
Diversity: --seeds S trains each of the K configurations S times with
distinct seeds (initialisation, shuffling), and --bootstrap gives every
member its own resample of the training split (trainer/data/sampler.py).
The members' best checkpoints then become ENSEMBLE_DIR (trainer/ensemble/build.py).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from trainer.contract import locations, typed
from trainer.contract.errors import UserError
from trainer.contract.trialconfig import RESULT_FILE, TrialConfig, load_trial
from trainer.ensemble.manifest import TrainedMember

from orchestrator.phases.run import check_datasets, run_phase
from orchestrator.search.proposers import FixedProposer, Proposal
from orchestrator.sites import load_site
from orchestrator.trials import runconfig
from orchestrator.trials.db import TrialDB
from orchestrator.trials.schema import Trial

log = logging.getLogger(__name__)

PHASE = "ensemble"
ENSEMBLE_DIR = locations.ENSEMBLE_DIR  # RUN_DIR/ensemble: the manifest and member checkpoints
MEMBERS_DIR = "ensemble/trials"    # RUN_DIR/ensemble/trials/NNNNN: the members' trial directories
SELECTION_KEY = "ensemble_selection"


@dataclass(frozen=True)
class EnsemblePlan:
    top_k: int
    max_epochs: int
    patience: int | None
    seeds: int = 1            # members per configuration, each with its own initialisation seed
    bootstrap: bool = False   # each member trains on its own resample (with replacement) of the training split
    min_steps: int | None = None   # at least so many optimiser steps per member, where epochs are short

    def record(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Member:
    """One member to train: the HPO trial whose configuration it retrains, and its seed."""
    parent_id: int
    seed: int | None          # None: the parent's own seed (a phase started before members had seeds)


SELECTION_RULE = ("by best validation loss at the highest fidelity reached: trials completed at the full "
                  "budget first, then (ASHA) discarded ones by the rung they reached")


def fidelity_reached(trial: Trial) -> float:
    """Epochs of training behind a trial's objective: the whole budget (inf) if completed, its rung if discarded."""
    return math.inf if trial.status == "completed" else float(trial.discarded_at or 0)


def select_top(trials: list[Trial], k: int) -> list[Trial]:
    """The k best trials, one per distinct configuration (its best run), SELECTION_RULE, ties by id.
    Objectives at different fidelities do not compare (a loss after 1 epoch is higher than after 10),
    so a discarded trial only fills places that completed trials leave."""
    best: dict[str, Trial] = {}
    for trial in sorted((t for t in trials if t.status in ("completed", "discarded") and t.objective is not None),
                        key=lambda t: (-fidelity_reached(t), t.objective, t.trial_id)):
        best.setdefault(json.dumps(trial.params, sort_keys=True), trial)
    return list(best.values())[:k]


def member_config(parent: TrialConfig, plan: EnsemblePlan, seed: int | None = None) -> TrialConfig:
    """The parent's trial, trained to convergence: more epochs (and at least min_steps), early stopping,
    best weights kept, the HPO's own step or time budget no longer capping it; with the member's seed
    and, under --bootstrap, its own resample of the training data."""
    data = typed.to_dict(parent)
    data["training"].update(epochs=plan.max_epochs, min_steps=plan.min_steps, max_steps=None, max_seconds=None,
                            patience=plan.patience)
    if seed is not None:
        data["training"]["seed"] = seed
    data["data"]["bootstrap"] = plan.bootstrap
    data["output"]["keep_best"] = True
    data["name"] = f"member-of-{parent.name}" + ("" if seed is None else f"-seed{seed}")
    return typed.build(TrialConfig, data, origin="ensemble member")


def plan_members(chosen: list[int], plan: EnsemblePlan) -> list[Member]:
    """K configurations x S seeds, seed-major (every configuration's first member before any second one,
    so an ensemble cut short still spans the configurations); member m has seed m, so no two members
    share an initialisation or a resample."""
    return [Member(trial_id, replica * len(chosen) + k)
            for replica in range(plan.seeds) for k, trial_id in enumerate(chosen)]


def _selection(db: TrialDB, plan: EnsemblePlan) -> list[Member]:
    """The members to train; fixed at the first call so a resumed phase trains the same members."""
    chosen = db.get_meta(SELECTION_KEY)
    started = db.get_meta("ensemble_plan")
    # A phase started before --seeds and --bootstrap existed: its plan says neither, and meant one
    # member per configuration with the parent's own seed and the whole training split.
    legacy = started is not None and "seeds" not in started
    if started is not None and {"seeds": 1, "bootstrap": False, "min_steps": None, **started} != plan.record():
        raise UserError(f"{db.path}: the ensemble phase was started with {started}; "
                        "run gfm-ensemble train again with those settings to continue it")
    if chosen is None:
        top = select_top(db.trials("hpo"), plan.top_k)
        if not top:
            raise UserError(f"{db.path}: no completed (or discarded) HPO trial to build an ensemble from")
        if len(top) < plan.top_k:
            log.warning("only %d distinct completed configurations for an ensemble of %d", len(top), plan.top_k)
        chosen = [t.trial_id for t in top]
        log.info("ensemble: HPO trials %s, %s", chosen, SELECTION_RULE)
        db.set_meta(SELECTION_KEY, chosen)
        db.set_meta("ensemble_plan", plan.record())
    if legacy:
        return [Member(trial_id, None) for trial_id in chosen]
    return plan_members(chosen, plan)


def member_walltime(settings: runconfig.RunSettings, plan: EnsemblePlan, parents: list[dict]) -> float | None:
    """The HPO trials' wall time scaled by how many more steps a member may take than its parent
    (from the parents' result.json: the HPO steps they took and their steps per epoch)."""
    if settings.trial_walltime is None:
        return None
    ratio = 1.0
    for result in parents:
        per_epoch, done = result.get("steps_per_epoch"), result.get("steps_done")
        if per_epoch and done:
            ratio = max(ratio, max(plan.max_epochs * per_epoch, plan.min_steps or 0) / done)
        elif settings.epochs:  # a parent without step counts: epochs are all there is to scale by
            ratio = max(ratio, plan.max_epochs / settings.epochs)
    return settings.trial_walltime * ratio


def _parent_results(run_dir: Path, plan: EnsemblePlan) -> list[dict]:
    """The result.json of each HPO trial the phase retrains (or would choose now), read-only."""
    with TrialDB(run_dir) as db:
        chosen = db.get_meta(SELECTION_KEY) or [t.trial_id for t in select_top(db.trials("hpo"), plan.top_k)]
        directories = [db.get(trial_id).trial_dir for trial_id in chosen]
    results = []
    for directory in directories:
        path = Path(directory) / RESULT_FILE if directory else None
        results.append(json.loads(path.read_text()) if path is not None and path.exists() else {})
    return results


def train_members(run_dir: Path, plan: EnsemblePlan, env: dict[str, str] | None = None,
                  display=None) -> int:
    """Run (or resume) the ensemble phase of RUN_DIR; the manager's exit status."""
    run_dir = Path(run_dir).resolve()
    settings = runconfig.load(run_dir)
    site = load_site(settings.site)
    check_datasets(settings.data)
    # The HPO wall time was set for the HPO budget; members may take many more steps.
    walltime = member_walltime(settings, plan, _parent_results(run_dir, plan)) if settings.trial_walltime else None
    settings = dataclasses.replace(settings, trial_walltime=walltime, timeout=None)

    def members(db: TrialDB) -> FixedProposer:
        proposals = []
        for member in _selection(db, plan):
            parent = db.get(member.parent_id)
            config = member_config(load_trial(parent.trial_dir), plan, member.seed)
            proposals.append(Proposal(parent.params, config, parent_id=member.parent_id))
        return FixedProposer(PHASE, proposals)

    return run_phase(run_dir, settings, site, members, run_dir / MEMBERS_DIR, env, display)


def completed_members(run_dir: Path) -> list[Trial]:
    with TrialDB(run_dir) as db:
        return [t for t in db.trials(PHASE) if t.status == "completed"]


def ensemble_inputs(run_dir: Path) -> tuple[Path, list[TrainedMember], str, str]:
    """What trainer.ensemble.build needs from the database: (ENSEMBLE_DIR, its members, where they
    come from, the dataset whose validation split calibrates them)."""
    run_dir = Path(run_dir).resolve()
    settings = runconfig.load(run_dir)
    members = completed_members(run_dir)
    if not members:
        raise UserError(f"{run_dir}: no ensemble member completed its training (see gfm-hpo status {run_dir})")
    # Named after the HPO trial it retrains and its seed ("member03-hpo00007-seed1"); its own trial id is
    # in the manifest as trial_id.
    sources = [TrainedMember(f"member{k:02d}-hpo{t.parent_id:05d}-seed{_seed_of(t)}", Path(t.trial_dir) / "best.pt",
                             t.params, trial_id=t.trial_id, hpo_trial_id=t.parent_id) for k, t in enumerate(members)]
    return run_dir / ENSEMBLE_DIR, sources, str(run_dir), settings.data[0]


def _seed_of(member: Trial) -> int:
    return load_trial(member.trial_dir).training.seed
