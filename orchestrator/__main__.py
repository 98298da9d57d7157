"""`python -m orchestrator ...` is `gfm-hpo ...` (the batch job calls the manager this way)."""
from orchestrator.cli.hpo import main
from trainer.contract.errors import run_cli

run_cli(main, "gfm-hpo")
