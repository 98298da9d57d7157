"""`python -m trainer run TRIAL_DIR` (the same as `gfm-train TRIAL_DIR`)."""
import sys

from trainer.cli import main
from trainer.contract.errors import run_cli

args = sys.argv[1:]
if args[:1] == ["run"]:
    args = args[1:]
run_cli(main, "python -m trainer", args)
