"""The trial contract the manager and the trainer share: torch-free by construction.

  errors       one-line user errors (exit 2) and the command-line convention
  typed        YAML onto typed dataclasses, with errors naming file and key
  packaged     the YAML files the package ships (sites, search spaces), by name or path
  atomicio     files written whole or not at all (temp file, fsync, rename)
  trialconfig  the schema of TRIAL_DIR/trial.yaml
  result       TRIAL_DIR/result.json and the trainer's exit codes
  locations    where the product puts run directories and ensembles, and finding the newest
  text         aligned terminal tables and numbers to a few significant digits

Nothing here imports torch, vesin or adios2 (tests/test_torch_boundary.py):
the manager imports these modules, and a trial's start-up must not pay for them.
"""
