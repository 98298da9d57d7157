"""Manager side: the head node's asynchronous search and ensemble phases. Never imports torch.

  cli/     gfm-hpo and gfm-ensemble
  phases/  a run's HPO and ensemble phases, one Manager each
  manager  the loop: collect, stop at wall time, launch, sleep (contract 6)
  search/  the ask/tell interface, the optimiser backends, the trial sources
  launch/  launchers (srun, mpiexec, none), the Parsl trial executor, Slurm control
  trials/  the trial database, outcomes, run settings
  views/   status, live display, report figures, dry-run plan
  allocation, hostlist, sites   node lists cut into fixed slices; site files
  demo     the embedded default campaign (scripts/demo.sh)
"""
