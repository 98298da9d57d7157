"""The HPO phase: asynchronous Bayesian optimisation of the run's search space on its slices."""
from __future__ import annotations

import sys
from pathlib import Path

from search_spaces import load_space
from trainer.contract import typed

from orchestrator.phases.run import check_datasets, run_phase
from orchestrator.search.backends import make_optimizer
from orchestrator.search.fidelity import Asha, make_rule, rungs_for
from orchestrator.search import warmstart
from orchestrator.search.proposers import HpoProposer, Proposer
from orchestrator.sites import load_site
from orchestrator.trials import runconfig
from orchestrator.trials.db import TrialDB
from orchestrator.views.display import LiveStatus


def run_hpo(run_dir: Path, env: dict[str, str] | None = None, quiet: bool = False) -> int:
    """`gfm-hpo run RUN_DIR`: the HPO phase of a run directory, resuming whatever is on record."""
    run_dir = Path(run_dir).resolve()
    settings = runconfig.load(run_dir)
    site = load_site(settings.site)
    space = load_space(settings.space)
    check_datasets(settings.data)
    base = runconfig.base_trial(settings, threads=site.cpus_per_rank)
    rungs = rungs_for(space.fidelity, settings.epochs, space.origin)

    made: list[HpoProposer] = []

    def hpo_proposer(db: TrialDB) -> Proposer:
        if db.get_meta("space") is None:
            db.set_meta("space", space.to_mapping())
            db.set_meta("settings", typed.to_dict(settings))
            db.set_meta("command", sys.argv)
        if settings.warm_start is not None and db.get_meta(warmstart.META) is None:
            # Read once and kept in this run's database: a resume needs neither the earlier run nor its state now.
            earlier = warmstart.read_warm_start(settings.warm_start, space, settings)
            db.set_meta(warmstart.POINTS, earlier.points)
            db.set_meta(warmstart.META, earlier.record())
        prior = [(params, objective) for params, objective in db.get_meta(warmstart.POINTS, [])]
        optimizer = make_optimizer(space, settings.seed, run_dir / "optimizer")
        made.append(HpoProposer(space, optimizer, base, settings.max_evals, prior))
        return made[-1]

    def fidelity(db: TrialDB) -> Asha | None:
        return make_rule(space.fidelity.kind, rungs, space.fidelity.reduction_factor, settings.epochs, db)

    status = run_phase(run_dir, settings, site, hpo_proposer, run_dir / runconfig.TRIALS_DIR, env,
                       None if quiet else LiveStatus(), fidelity)
    if made and getattr(made[-1].optimizer, "exhausted", False):
        print(f"the search stopped before --max-evals {settings.max_evals}: every configuration of "
              f"{space.origin} has been proposed (a configuration is never trained twice)")
    return status
