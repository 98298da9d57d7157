"""The inference commands of `gfm-ensemble`: predict (mean ± std), evaluate, calibrate, info.

  gfm-ensemble predict STRUCTURES [-e ENSEMBLE_DIR] [-o OUT.extxyz|.csv|.json] [--members]
  gfm-ensemble evaluate ENSEMBLE_DIR|TRIAL_DIR LABELLED [--against SHIFTED] [-o OUTDIR] [--split testset]
  gfm-ensemble calibrate ENSEMBLE_DIR LABELLED [--split valset]
  gfm-ensemble info [ENSEMBLE_DIR]

They run on the trainer's side (torch, the members' weights); the manager's
`gfm-ensemble train` (orchestrator/cli/ensemble.py) adds them to its parser.
Importing this module loads no torch: each command imports what it needs.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from trainer.contract import locations
from trainer.contract.atomicio import check_can_publish
from trainer.contract.errors import UserError
from trainer.contract.text import number, table
from trainer.ensemble import prediction_files
from trainer.ensemble.manifest import MANIFEST_FILE as MANIFEST   # torch-free to import; torch loads per command
from trainer.ensemble.manifest import read_manifest


ENSEMBLE_HELP = "ensemble directory (RUN_DIR/ensemble, made by gfm-ensemble train)"
FOUND = ("the current directory or ./ensemble if either holds manifest.json, else the newest RUN/ensemble "
         "in runs/*, demo/campaign-*/run or */, here or in this repository")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=64, help="structures per forward pass [64]")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="[cpu]")
    parser.add_argument("--source", type=int, default=0,
                        help="for members trained on several datasets: whose reference energies "
                             "(level of theory) to predict with, by position in the training data list [0]")


def add_commands(commands) -> None:
    """Add predict, evaluate, calibrate and info to an argparse sub-parser collection."""
    predict = commands.add_parser("predict", help="energies and forces as mean ± std over the members")
    predict.add_argument("structures", type=Path, help="structure file (all frames are predicted)")
    predict.add_argument("-e", "--ensemble", type=Path, help=f"ensemble directory [{FOUND}]")
    predict.add_argument("-o", "--output", type=Path,
                         help="output file; its suffix picks the format: .extxyz/.xyz (per-atom arrays), "
                              ".csv (one row per structure), .json (everything) [STRUCTURES' stem.pred.extxyz]")
    predict.add_argument("--members", action="store_true", help="also write each member's predictions")
    _common(predict)
    evaluate = commands.add_parser("evaluate", help="accuracy and uncertainty quality on labelled data")
    evaluate.add_argument("ensemble", type=Path,
                          help=ENSEMBLE_HELP + ", or a trained trial directory with best.pt (errors only)")
    evaluate.add_argument("labelled", type=Path, help="labelled structures, or a .bp dataset")
    evaluate.add_argument("--against", type=Path, metavar="SHIFTED",
                          help="a second labelled set (e.g. other conditions): the same metrics on it, and "
                               "its mean std and errors over LABELLED's (the distribution-shift check)")
    evaluate.add_argument("-o", "--output", type=Path,
                          help="directory for metrics.json and PNGs [ENSEMBLE_DIR/evaluations/<name>]")
    evaluate.add_argument("--split", help="split of LABELLED or SHIFTED where it is a .bp dataset "
                                          "(an ASE file is used whole) [testset]")
    _common(evaluate)
    calibrate = commands.add_parser("calibrate", help="fit std -> a·std or a·std^b per quantity on validation "
                                                      "data (form chosen on held-out folds); store it in the manifest")
    calibrate.add_argument("ensemble", type=Path, help=ENSEMBLE_HELP + "; its manifest is updated")
    calibrate.add_argument("labelled", type=Path, help="labelled structures, or a .bp dataset")
    calibrate.add_argument("--split", help="split of a .bp dataset [valset]")
    _common(calibrate)
    info = commands.add_parser("info", help="what an ensemble holds (members are verified)")
    info.add_argument("ensemble", type=Path, nargs="?", help=f"{ENSEMBLE_HELP} [{FOUND}]")



def find_ensemble(start: Path | None = None) -> Path:
    """The ensemble to use when none is named: START (the current directory) if it holds a manifest,
    START/ensemble, else the newest RUN_DIR/ensemble wherever the product puts runs (locations.py)."""
    start = Path.cwd() if start is None else start
    for candidate in (start, start / locations.ENSEMBLE_DIR):
        if (candidate / MANIFEST).is_file():
            return candidate
    bases = locations.search_bases(start)
    run_dir = locations.newest(f"{locations.ENSEMBLE_DIR}/{MANIFEST}", bases=bases)
    if run_dir is not None:
        return run_dir / locations.ENSEMBLE_DIR
    raise UserError(f"no ensemble given (-e ENSEMBLE_DIR) and none found; looked for {MANIFEST} in {start}, "
                    f"{start / locations.ENSEMBLE_DIR}, {locations.searched(locations.ENSEMBLE_DIR, bases)}")


class Bar:
    """A progress bar on stderr, only when it is a terminal and the input is large."""

    def __init__(self, total: int, batch_size: int):
        self.enabled = sys.stderr.isatty() and total > 4 * batch_size

    def __call__(self, done: int, total: int) -> None:
        if self.enabled:
            filled = 30 * done // max(total, 1)
            sys.stderr.write(f"\r[{'#' * filled}{' ' * (30 - filled)}] {done}/{total} structures")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def _check_batch_size(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise UserError(f"--batch-size: must be at least 1, got {args.batch_size}")


def cmd_predict(args: argparse.Namespace) -> int:
    _check_batch_size(args)
    output = args.output or prediction_files.default_output(args.structures)
    writer = prediction_files.writer_for(output)
    if output.resolve() == args.structures.resolve():
        raise UserError(f"-o {output}: would overwrite the input")
    check_can_publish(output)  # before the compute, not after it
    ensemble_dir = args.ensemble or find_ensemble()
    # Cheap checks first: a missing ensemble or a malformed file fails before torch is imported.
    read_manifest(ensemble_dir)
    from trainer.data.structures import read_structures

    structures = read_structures(args.structures)
    from trainer.ensemble.predict import Ensemble

    ensemble = Ensemble.load(ensemble_dir, args.device)
    bar = Bar(len(structures), args.batch_size)
    try:
        pred = ensemble.predict(structures, args.batch_size, members=args.members, source=args.source, progress=bar)
    finally:
        bar.close()
    writer(output, structures, pred, str(ensemble_dir))
    print(f"{len(structures)} structures predicted by {len(pred.member_names)} members of {ensemble_dir} "
          f"-> {output}")
    return 0


def _labelled_run(args: argparse.Namespace, default_split: str):
    _check_batch_size(args)
    read_manifest(args.ensemble)   # cheap checks first, as in cmd_predict
    from trainer.ensemble.evaluate import read_labelled

    labelled = read_labelled(args.labelled, args.split, default_split)
    from trainer.ensemble.predict import Ensemble

    return Ensemble.load(args.ensemble, args.device), labelled


def cmd_evaluate(args: argparse.Namespace) -> int:
    from trainer.ensemble import evaluate_command

    return evaluate_command.run(args, Bar)


def cmd_calibrate(args: argparse.Namespace) -> int:
    ensemble, labelled = _labelled_run(args, "valset")
    from trainer.ensemble.evaluate import fit_calibration
    from trainer.ensemble.manifest import set_calibration

    from trainer.ensemble.evaluate_command import calibration_summary

    fitted = fit_calibration(ensemble, labelled, args.batch_size, args.source)
    set_calibration(args.ensemble, fitted.energy, fitted.forces, fitted.fitted_on, fitted.energy_offsets)
    print(f"calibration of {args.ensemble} on {len(labelled.structures)} structures of {args.labelled}"
          f"{' (' + labelled.origin['split'] + ')' if labelled.origin['split'] else ''}:")
    print(calibration_summary(fitted))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from ase.data import chemical_symbols

    from trainer.ensemble.manifest import load_manifest

    manifest = load_manifest(args.ensemble or find_ensemble())
    elements = " ".join(chemical_symbols[z] for z in manifest.elements)
    print(f"ensemble {manifest.directory}: {len(manifest.members)} members (all verified), radius "
          f"{number(manifest.radius)} Å, max neighbours {number(manifest.max_neighbours)}, elements {elements}")
    calibration = manifest.calibration
    print(f"calibration: energy {calibration.energy.describe()}, forces {calibration.forces.describe()}"
          + (f" (fitted on {calibration.fitted_on.get('file')})" if calibration.fitted_on else " (not fitted)"))
    rows = []
    for member, state in zip(manifest.members, manifest.checkpoints):
        config = state["model_config"]
        rows.append([member.name, config.get("mpnn_type", "?"), config.get("hidden_dim"),
                     config.get("force_mode", "?"), member.val_loss, member.epochs,
                     _hpo_trial(member), member.trial_id, member.seed])
    for line in table(["member", "backbone", "hidden", "forces", "val loss", "epoch", "HPO trial", "member trial",
                       "seed"], rows, "llrlrrrrr", indent="  "):
        print(line)
    print("  HPO trial: the search trial whose configuration it retrains; "
          "member trial: its own training run (ensemble phase)")
    return 0


def _hpo_trial(member) -> int | None:
    """The member's HPO trial; ensembles written before the manifest recorded it say so in the
    name they were given then, member<k>-trial<HPO trial id>."""
    if member.hpo_trial_id is not None:
        return member.hpo_trial_id
    old = re.fullmatch(r"member\d+-trial(\d+)", member.name)
    return int(old.group(1)) if old else None


COMMANDS = {"predict": cmd_predict, "evaluate": cmd_evaluate, "calibrate": cmd_calibrate, "info": cmd_info}
