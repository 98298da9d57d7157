"""`gfm-ensemble`: the deep ensemble, from training its members to predicting with it.

  gfm-ensemble train RUN_DIR --top-k K [--seeds S] [--bootstrap] [--max-epochs 40] [--min-steps 6000]
                     [--patience P] [--foreground]
  gfm-ensemble predict STRUCTURES [-e ENSEMBLE_DIR] [-o OUT.extxyz|.csv|.json] [--members]
  gfm-ensemble evaluate ENSEMBLE_DIR|TRIAL_DIR LABELLED [--against SHIFTED] [-o OUTDIR] [--split testset]
  gfm-ensemble calibrate ENSEMBLE_DIR LABELLED [--split valset]
  gfm-ensemble info [ENSEMBLE_DIR]

STRUCTURES and LABELLED: any file ASE reads (xyz/extxyz, traj, db, POSCAR, cif,
also .xz/.gz/.bz2 compressed); LABELLED may also be a dataset of `gfm-data
convert` (.bp), of which one split is used. Units: energy eV, forces eV/Å.
Without -e (predict) or ENSEMBLE_DIR (info), the ensemble is the first of: the
current directory (if it holds manifest.json), ./ensemble, the newest
RUN/ensemble of the runs in runs/*, demo/campaign-*/run (the demo's) or */,
looked for in the current directory and in this repository.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from trainer.contract.errors import UserError, run_cli
from trainer.ensemble import cli as inference

# Members train at least this many optimiser steps: on 800 ethanol frames (25 steps per epoch) 40 epochs
# are 1000 steps. Measured there (SMALL EGNN, held-out force MAE): 100 meV/Å after 1000 steps, 69 after
# 3000, 55 after 6000; each doubling still gains ~20-30 % but costs twice the time, and 6000 steps keep a
# SMALL member near a minute on 2 cores. Large data never reaches it and keeps its epoch count.
MIN_STEPS = 6000


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gfm-ensemble", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train the K best HPO configurations (x S seeds) to convergence; "
                                              "make RUN_DIR/ensemble")
    train.add_argument("run_dir", type=Path, help="the run directory of a search (gfm-hpo launch --run-dir)")
    train.add_argument("--top-k", type=int, default=10, help="members: the K best distinct configurations [10]")
    train.add_argument("--seeds", type=int, default=1,
                       help="members per configuration, each with its own seed (initialisation, shuffling); "
                            "K x S members in all [1]")
    train.add_argument("--bootstrap", action="store_true",
                       help="each member trains on its own resample with replacement of the training split, "
                            "drawn from its seed")
    train.add_argument("--max-epochs", type=int, default=40, help="epochs at most per member [40]")
    train.add_argument("--min-steps", type=int, default=MIN_STEPS,
                       help=f"optimiser steps at least per member: more epochs where epochs are short, and no "
                            f"early stopping before; 0: none [{MIN_STEPS}]")
    train.add_argument("--patience", type=int, default=10,
                       help="stop a member after this many epochs without a better validation loss [10]")
    train.add_argument("--foreground", action="store_true",
                       help="on a Slurm site outside an allocation: run here instead of submitting a batch job")
    inference.add_commands(commands)
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    from trainer.contract.result import EXIT_INTERRUPTED
    from trainer.ensemble.build import build_ensemble
    from trainer.ensemble.evaluate_command import calibration_summary
    from trainer.ensemble.manifest import read_manifest

    from orchestrator.launch import slurm
    from orchestrator.launch.batch import submit_manager
    from orchestrator.phases.ensemble import SELECTION_RULE, EnsemblePlan, ensemble_inputs, train_members
    from orchestrator.sites import load_site
    from orchestrator.trials import runconfig
    from orchestrator.views.display import LiveStatus

    for flag, value in (("--top-k", args.top_k), ("--seeds", args.seeds), ("--max-epochs", args.max_epochs),
                        ("--patience", args.patience)):
        if value < 1:
            raise UserError(f"{flag}: must be at least 1, got {value}")
    if args.min_steps < 0:
        raise UserError(f"--min-steps: must be at least 0, got {args.min_steps}")
    run_dir = args.run_dir.resolve()
    settings = runconfig.load(run_dir)
    site = load_site(settings.site)
    if site.scheduler == "slurm" and not slurm.inside_allocation() and not args.foreground:
        command = [sys.executable, "-m", "orchestrator.cli.ensemble", "train", str(run_dir), "--top-k",
                   str(args.top_k), "--seeds", str(args.seeds), "--max-epochs", str(args.max_epochs),
                   "--patience", str(args.patience), "--min-steps", str(args.min_steps),
                   "--foreground"] + (["--bootstrap"] if args.bootstrap else [])
        job = submit_manager(site, run_dir, settings.nodes, settings.walltime, command, phase="ensemble")
        print(f"submitted batch job {job}; the ensemble will be in {run_dir / 'ensemble'}")
        return 0
    plan = EnsemblePlan(args.top_k, args.max_epochs, args.patience, args.seeds, args.bootstrap, args.min_steps or None)
    print(f"members: the {args.top_k} best HPO configurations {SELECTION_RULE}")
    status = train_members(run_dir, plan, display=LiveStatus())
    if status == EXIT_INTERRUPTED:
        return status
    directory = build_ensemble(*ensemble_inputs(run_dir))
    manifest = read_manifest(directory)
    print(f"ensemble of {len(manifest.members)} members in {directory}")
    if manifest.calibration.fitted_on is not None:
        print(f"calibration on {manifest.calibration.fitted_on.get('file')} "
              f"({manifest.calibration.fitted_on.get('split')}, "
              f"{manifest.calibration.fitted_on.get('structures')} structures):")
        print(calibration_summary(manifest.calibration))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "train":
        return cmd_train(args)
    return inference.COMMANDS[args.command](args)


def run_main() -> None:  # pragma: no cover - console entry point
    run_cli(main, "gfm-ensemble")


if __name__ == "__main__":  # the batch job runs `python -m orchestrator.cli.ensemble train ...`
    run_main()
