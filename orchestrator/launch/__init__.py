"""Running a trial on its slice.

  launchers    one class per site `launcher:` (srun, mpiexec, none): its command and stop strategy
  executor     TrialExecutor: starts trials through Parsl and hands back a TrialHandle
  records      the launch files a trial directory holds, and the one exit-status rule
  slurm        every squeue / scancel / sinfo / sbatch call
  node_faults  srun's own messages that blame a node
  orphans      launchers an earlier manager left running, found and stopped
  batch        the manager's sbatch script and its submission
"""
