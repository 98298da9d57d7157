"""Worker side of the orchestrator: runs on every rank of a trial under srun.

  contract/  the torch-free trial contract the manager imports (errors, typed configs,
             atomic I/O, trial.yaml, result.json)
  data/      conversion to ADIOS2, cleaning, neighbour lists, the distributed store, batching
  models/    EGNN, PNA, SchNet and PaiNN backbones, MACE through mace-torch, and their heads
  ensemble/  inference: members, batched mean ± std, evaluation, calibration, ASE calculator
  train, distributed, loss, optim, checkpoint, ...   the epoch loop of one trial

The package root imports nothing: the manager imports trainer.contract alone.
"""
