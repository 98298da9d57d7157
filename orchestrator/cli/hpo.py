"""`gfm-hpo`: launch, run, resume and inspect an asynchronous hyperparameter search.

  gfm-hpo launch --site frontier --nodes 8192 --data ani1x.bp qm7x.bp [--epochs 10 | --steps N]
                 [--dry-run [--json]]
  gfm-hpo run RUN_DIR          what the batch job executes (also: run in the foreground)
  gfm-hpo resume RUN_DIR       continue a stopped search: nothing completed is lost or repeated
  gfm-hpo status RUN_DIR       counts, best trials, what each slice runs, utilisation
  gfm-hpo report RUN_DIR       the search's figures as PNGs (trajectory, curves, by MPNN type, slices)
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Sequence

from search_spaces import PACKAGED as SPACES
from trainer.contract import locations, packaged, typed
from trainer.contract.errors import UserError, run_cli

from orchestrator.launch import slurm
from orchestrator.sites import PACKAGED as SITES
from orchestrator.trials import runconfig
from orchestrator.trials.runconfig import RunSettings


RUN_DIR_HELP = "the run directory (gfm-hpo launch --run-dir; by default runs/hpo-<time>)"


def _launch_parser(commands) -> None:
    launch = commands.add_parser("launch", help="start a search (submits a batch job on a Slurm site)")
    launch.add_argument("--site", default="local",
                        help=f"packaged site ({', '.join(packaged.packaged_names(SITES))}) or a site YAML's path [local]")
    launch.add_argument("--nodes", type=int, help="nodes to use (default: the whole allocation)")
    launch.add_argument("--nodes-per-trial", type=int, help="slice size (default: the site's)")
    launch.add_argument("--max-evals", type=int, default=100, help="trials to run [100]")
    fidelity = launch.add_mutually_exclusive_group()
    fidelity.add_argument("--epochs", type=int, help="constant fidelity: epochs per trial [10]")
    fidelity.add_argument("--steps", type=int, help="constant fidelity in optimiser steps per trial, instead of epochs")
    launch.add_argument("--space", help=f"packaged search space ({', '.join(packaged.packaged_names(SPACES))}) or a "
                                        "space YAML's path [table_iv: the paper's Table IV]")
    launch.add_argument("--data", nargs="+", default=[], metavar="FILE.bp", help="datasets to train on")
    launch.add_argument("--run-dir", type=Path, help="run directory (default: runs/hpo-<time>)")
    launch.add_argument("--walltime", help="batch job wall time, HH:MM:SS (default: the site's)")
    launch.add_argument("--trial-walltime", type=float, help="seconds before a trial is stopped as failed")
    launch.add_argument("--timeout", type=float, help="seconds after which no new trial starts")
    launch.add_argument("--seed", type=int, default=0,
                        help="seed of the optimiser (its random initial design too) and of every trial's training [0]")
    launch.add_argument("--max-attempts", type=int, default=3, help="launches per trial after node failures [3]")
    launch.add_argument("--max-startup-failures", type=int, default=5,
                        help="stop after this many consecutive trials failed before the trainer reported, "
                             "on every slice [5]")
    launch.add_argument("--snapshot-interval", type=float, default=5.0,
                        help="seconds between the database snapshots readers on other hosts read [5]")
    launch.add_argument("--kill-grace", type=float, default=30.0, help="seconds from SIGTERM to SIGKILL [30]")
    launch.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="trial.yaml override for every trial, e.g. training.batch_size=64")
    launch.add_argument("--dry-run", action="store_true", help="print the slice plan and commands; run nothing")
    launch.add_argument("--json", action="store_true", help="with --dry-run: machine-readable output")
    launch.add_argument("--warm-start", metavar="RUN_DIR", type=Path,
                        help="tell the optimiser every finished trial of this earlier run first")
    launch.add_argument("--warm-start-any-fidelity", action="store_true",
                        help="with --warm-start: accept a run of another epoch or step budget")
    launch.add_argument("--foreground", action="store_true",
                        help="on a Slurm site outside an allocation: run the manager here (each trial its own job)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gfm-hpo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    _launch_parser(commands)
    run = commands.add_parser("run", help="run the manager of RUN_DIR here (what the batch job executes)")
    run.add_argument("run_dir", type=Path, help=RUN_DIR_HELP)
    resume = commands.add_parser("resume", help="continue a stopped search")
    resume.add_argument("run_dir", type=Path, help=RUN_DIR_HELP)
    resume.add_argument("--foreground", action="store_true", help="on a Slurm site: do not submit, run here")
    status = commands.add_parser("status", help="where a search stands")
    status.add_argument("run_dir", type=Path, help=RUN_DIR_HELP)
    status.add_argument("--source", choices=["auto", "live", "snapshot"], default="auto",
                        help="read the manager's snapshot or the live database [auto: the snapshot where the "
                             "manager runs on another host]")
    status.add_argument("--json", action="store_true",
                        help="machine-readable: counts, best and running trials, origins, failures, utilisation")
    report = commands.add_parser("report", help="write the search's figures as PNG files")
    report.add_argument("run_dir", type=Path, help=RUN_DIR_HELP)
    report.add_argument("-o", "--output", type=Path, help="directory for the PNGs (default: RUN_DIR/report)")
    return parser


def settings_from(args: argparse.Namespace) -> RunSettings:
    raw = {"site": args.site, "data": [str(Path(p).resolve()) for p in args.data] or ["<none>"],
           "nodes": args.nodes, "nodes_per_trial": args.nodes_per_trial, "max_evals": args.max_evals,
           "epochs": None if args.steps is not None else 10 if args.epochs is None else args.epochs,
           "steps": args.steps, "space": args.space, "seed": args.seed, "trial_walltime": args.trial_walltime,
           "kill_grace": args.kill_grace, "timeout": args.timeout, "max_attempts": args.max_attempts,
           "max_startup_failures": args.max_startup_failures, "snapshot_interval": args.snapshot_interval,
           "walltime": args.walltime, "trial": runconfig.parse_overrides(args.set),
           "warm_start": None if args.warm_start is None else str(args.warm_start.resolve()),
           "warm_start_any_fidelity": args.warm_start_any_fidelity}
    try:
        return typed.build(RunSettings, raw, "command line")
    except typed.ConfigError as err:  # name the flag, not the field
        message = str(err).removeprefix("command line: ")
        key, _, problem = message.partition(": ")
        raise UserError(f"--{key.split('.')[0].replace('_', '-')}: {problem}") from None


def launch(args: argparse.Namespace) -> int:
    from search_spaces import load_space

    from orchestrator.allocation import Allocation, discover_nodes
    from orchestrator.phases.run import check_datasets, check_run_dir, new_run_dir
    from orchestrator.search.backends import make_optimizer
    from orchestrator.search.fidelity import rungs_for
    from orchestrator.sites import load_site
    from orchestrator.views.plan import format_plan, slice_plan

    settings = settings_from(args)
    site = load_site(settings.site)
    space = load_space(settings.space)  # a bad space file fails now, not in the batch job
    rungs_for(space.fidelity, settings.epochs, space.origin)
    if args.warm_start_any_fidelity and args.warm_start is None:
        raise UserError("--warm-start-any-fidelity: goes with --warm-start RUN_DIR")
    if settings.warm_start is not None:
        from orchestrator.search.warmstart import read_warm_start

        read_warm_start(settings.warm_start, space, settings)  # a run that cannot be used fails now
    nodes = discover_nodes(site, settings.nodes)
    allocation = Allocation(nodes, settings.nodes_per_trial or site.nodes_per_trial)
    run_dir = (args.run_dir or locations.new_run_dir()).resolve()
    runconfig.base_trial(settings, threads=site.cpus_per_rank)  # --set overrides are checked here
    if args.dry_run:
        plan = slice_plan(site, allocation, run_dir / runconfig.TRIALS_DIR)
        print(json.dumps(plan) if args.json else format_plan(plan))
        return 0
    if not args.data:
        raise UserError("--data: at least one dataset is needed (make one with gfm-data convert)")
    submit = _submits(site, args.foreground)
    if submit:
        _check_batch(site, settings)
    check_run_dir(run_dir)
    check_datasets(settings.data)
    # Everything else is checked while the run directory is built aside: the optimiser checks
    # its settings only when it is made, so it is made there, once, before the directory exists.
    with new_run_dir(run_dir) as staging:
        runconfig.save(staging, settings)
        make_optimizer(space, settings.seed, staging / "optimizer")
    if not submit:
        print(f"run directory {run_dir}")
        from orchestrator.phases.hpo import run_hpo

        return run_hpo(run_dir)
    try:
        return _submit(run_dir, site, settings)
    except Exception:  # nothing ran: a refused job must not leave a run that blocks the next launch
        shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _submits(site, foreground: bool) -> bool:
    """Whether the manager goes to the batch system (a Slurm site, outside an allocation)."""
    return site.scheduler == "slurm" and not slurm.inside_allocation() and not foreground


def _check_batch(site, settings: RunSettings) -> None:
    from orchestrator.launch.batch import batch_script

    if settings.nodes is None:
        raise UserError("--nodes: how many nodes to ask the batch system for")
    batch_script(site, settings.nodes, ["true"], "check", "/dev/null")  # the site's required fields


def _submit(run_dir: Path, site, settings: RunSettings) -> int:
    from orchestrator.launch.batch import submit_manager

    job = submit_manager(site, run_dir, settings.nodes, settings.walltime)
    print(f"submitted batch job {job}; run directory {run_dir}")
    print(f"follow it with: gfm-hpo status {run_dir}")
    return 0


def _start(run_dir: Path, site, settings: RunSettings, foreground: bool) -> int:
    from orchestrator.phases.hpo import run_hpo

    if _submits(site, foreground):
        _check_batch(site, settings)
        return _submit(run_dir, site, settings)
    print(f"run directory {run_dir}")
    return run_hpo(run_dir)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "launch":
        return launch(args)
    if args.command == "run":
        from orchestrator.phases.hpo import run_hpo

        return run_hpo(args.run_dir)
    if args.command == "resume":
        from orchestrator.sites import load_site

        settings = runconfig.load(args.run_dir)
        return _start(args.run_dir.resolve(), load_site(settings.site), settings, args.foreground)
    if args.command == "status":
        from orchestrator.views.status import as_json, format_status, status_report

        report = status_report(args.run_dir, source=args.source)
        print(as_json(report) if args.json else format_status(report))
        return 0
    if args.command == "report":
        from orchestrator.views.report import write_report

        for path in write_report(args.run_dir, args.output or args.run_dir / "report"):
            print(path)
        return 0
    raise AssertionError(args.command)


def run_main() -> None:  # console entry point
    run_cli(main, "gfm-hpo")
