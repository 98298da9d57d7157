"""`gfm-train TRIAL_DIR`: run one trial (contract 1); `gfm-train --template`: a complete trial.yaml."""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Sequence

from trainer.contract.errors import UserError, run_cli


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gfm-train", description=__doc__)
    parser.add_argument("trial_dir", nargs="?", type=Path, help="directory holding trial.yaml")
    parser.add_argument("--template", action="store_true", help="print a complete, commented trial.yaml")
    args = parser.parse_args(argv)
    if args.template:
        print(template(), end="")
        return 0
    if args.trial_dir is None:
        parser.error("TRIAL_DIR is required (or --template)")
    if not args.trial_dir.is_dir():
        raise UserError(f"{args.trial_dir}: not a directory")
    started = process_start_time()
    from trainer.train import run  # imports torch: only when there is a trial to run

    return run(args.trial_dir, started)


def run_main() -> None:  # pragma: no cover - console entry point
    run_cli(main, "gfm-train")
