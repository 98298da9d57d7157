"""`gfm-train TRIAL_DIR`: run one trial; `gfm-train --template`: a complete trial.yaml."""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Sequence

from trainer import signals
from trainer.contract.errors import UserError, run_cli
from trainer.contract.result import EXIT_BAD_CONFIG, EXIT_COMPLETED, EXIT_FAILED, EXIT_INTERRUPTED

DESCRIPTION = """\
Train one model: the trial in TRIAL_DIR. A trial directory holds trial.yaml,
the trial's whole configuration (datasets, model, training; relative paths are
taken from the directory). gfm-train writes its outcome into the same
directory: result.json (status, losses of every epoch, the objective),
checkpoint.pt (the latest state: running gfm-train again on the directory
resumes an interrupted trial) and best.pt (the weights of the best validation
epoch). Run it under srun, mpiexec or torchrun to train on several ranks."""

EPILOG = (f"exit status: {EXIT_COMPLETED} completed, {EXIT_FAILED} failed (the reason is in result.json),\n"
          f"  {EXIT_BAD_CONFIG} bad trial.yaml or data, {EXIT_INTERRUPTED} stopped by a signal (run it again to resume)")


def process_start_time() -> float:
    """Wall-clock time at which this process started (so start-up cost includes imports)."""
    try:
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
            ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
            up = float(uptime.read().split()[0])
        return time.time() - (up - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.time()


def template() -> str:
    from trainer.contract import typed
    from trainer.contract.trialconfig import DataConfig, SourceConfig, TrialConfig

    example = TrialConfig(data=DataConfig(sources=[SourceConfig(path="../data/ethanol.bp")]))
    header = ("# trial.yaml: one training run (gfm-train TRIAL_DIR reads TRIAL_DIR/trial.yaml).\n"
              "# Relative paths are taken from the trial directory. Unknown keys are errors.\n")
    return header + typed.commented_yaml(example) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gfm-train", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trial_dir", nargs="?", type=Path, metavar="TRIAL_DIR",
                        help="the trial directory: trial.yaml in, result.json and checkpoints out")
    parser.add_argument("--template", action="store_true",
                        help="print a complete trial.yaml with every key and its default explained, to start from")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.template:
        print(template(), end="")
        return 0
    if args.trial_dir is None:
        parser.error("TRIAL_DIR is required (or --template)")
    if not args.trial_dir.is_dir():
        raise UserError(f"{args.trial_dir}: not a directory")
    started = process_start_time()
    signals.early()  # before torch: a stop during the imports still ends as "interrupted"
    from trainer.train import run  # imports torch: only when there is a trial to run

    return run(args.trial_dir, started)


def run_main() -> None:  # pragma: no cover - console entry point
    run_cli(main, "gfm-train")
