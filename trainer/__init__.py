"""Worker side of the orchestrator: runs on every rank of a trial under srun.

The package root imports nothing heavy: the torch-free modules (`errors`,
`atomicio`, `typed`, `trialconfig`) define the trial contract and are imported
by the manager, which must stay light.
"""
