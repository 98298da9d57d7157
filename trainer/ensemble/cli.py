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
import sys
from pathlib import Path

from trainer.contract.errors import UserError
from trainer.ensemble import prediction_files
from trainer.ensemble.manifest import MANIFEST_FILE as MANIFEST   # torch-free to import; torch loads per command
from trainer.ensemble.manifest import read_manifest


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
    predict.add_argument("-e", "--ensemble", type=Path, help="ensemble directory (default: see above)")
    predict.add_argument("-o", "--output", type=Path,
                         help="output file; its suffix picks the format: .extxyz/.xyz (per-atom arrays), "
                              ".csv (one row per structure), .json (everything) [STRUCTURES' stem.pred.extxyz]")
    predict.add_argument("--members", action="store_true", help="also write each member's predictions")
    _common(predict)
    evaluate = commands.add_parser("evaluate", help="accuracy and uncertainty quality on labelled data")
    evaluate.add_argument("ensemble", type=Path,
                          help="ensemble directory, or a trained trial directory with best.pt (errors only)")
    evaluate.add_argument("labelled", type=Path, help="labelled structures, or a .bp dataset")
    evaluate.add_argument("--against", type=Path, metavar="SHIFTED",
                          help="a second labelled set (e.g. other conditions): the same metrics on it, and "
                               "its mean std and errors over LABELLED's (the distribution-shift check)")
    evaluate.add_argument("-o", "--output", type=Path,
                          help="directory for metrics.json and PNGs [ENSEMBLE_DIR/evaluations/<name>]")
    evaluate.add_argument("--split", help="split of a .bp dataset [testset]")
    _common(evaluate)
    calibrate = commands.add_parser("calibrate", help="fit std -> a·std or a·std^b per quantity on validation "
                                                      "data (form chosen on held-out folds); store it in the manifest")
    calibrate.add_argument("ensemble", type=Path)
    calibrate.add_argument("labelled", type=Path, help="labelled structures, or a .bp dataset")
    calibrate.add_argument("--split", help="split of a .bp dataset [valset]")
    _common(calibrate)
    info = commands.add_parser("info", help="what an ensemble holds (members are verified)")
    info.add_argument("ensemble", type=Path, nargs="?")



def find_ensemble(start: Path | None = None) -> Path:
    """The ensemble to use when none is named (the order is in this module's docstring)."""
    start = Path.cwd() if start is None else start
    for candidate in (start, start / "ensemble"):
        if (candidate / MANIFEST).is_file():
            return candidate
    for pattern in ("runs/*/ensemble", "*/ensemble"):
        found = sorted(start.glob(f"{pattern}/{MANIFEST}"), key=lambda p: p.stat().st_mtime)
        if found:
            return found[-1].parent
    raise UserError(f"no ensemble given (-e ENSEMBLE_DIR) and none found in {start}, {start / 'ensemble'} "
                    f"or {start / 'runs/*/ensemble'}")


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
    set_calibration(args.ensemble, fitted.energy, fitted.forces, fitted.fitted_on)
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
          f"{manifest.radius} Å, max neighbours {manifest.max_neighbours}, elements {elements}")
    print(f"calibration: energy {manifest.calibration.energy.describe()}, "
          f"forces {manifest.calibration.forces.describe()}"
          + (f" (fitted on {manifest.calibration.fitted_on.get('file')})" if manifest.calibration.fitted_on else ""))
    for member, state in zip(manifest.members, manifest.checkpoints):
        config = state["model_config"]
        print(f"  {member.name:<16} {config.get('mpnn_type', '?'):<7} hidden {config.get('hidden_dim', '?'):<5} "
              f"{config.get('force_mode', '?'):<12} val loss {member.val_loss}  epoch {member.epochs}  "
              f"trial {member.trial_id}")
    return 0


COMMANDS = {"predict": cmd_predict, "evaluate": cmd_evaluate, "calibrate": cmd_calibrate, "info": cmd_info}
