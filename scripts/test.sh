#!/usr/bin/env bash
# Set up, then run the whole test suite (the local Slurm cluster is installed here, started by the tests).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ -x scripts/slurm-cluster.sh ]; then
  scripts/slurm-cluster.sh install
fi
exec .venv/bin/python -m pytest "$@"
