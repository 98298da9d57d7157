#!/usr/bin/env bash
# Create .venv with everything the project needs; safe to run again (a no-op when up to date).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
stamp=.venv/.installed
want=$(cat setup.cfg scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
# The CPU build of torch first: a bare "torch" requirement would pull a multi-GB CUDA build.
.venv/bin/pip install --quiet torch==2.13.0
# mpich gives mpi4py a working MPI and mpiexec on a workstation; sites use their own MPI.
# mace: mace-torch, for the MACE backbone and its tests (optional for users).
.venv/bin/pip install --quiet -e ".[test,mpich,mace]"
echo "$want" > "$stamp"
echo "setup: .venv ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
