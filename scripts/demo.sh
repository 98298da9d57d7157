#!/usr/bin/env bash
# Set up, then run the main job on the embedded default (local site, small real or generated data).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m orchestrator.demo "$@"
