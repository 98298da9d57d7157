"""ASE's file reading and writing, done by the calling process alone.

ASE decides on first use whether it runs in parallel: once mpi4py has been
imported it reads on rank 0 of COMM_WORLD and broadcasts, and writes on rank 0
only. Every process of this project does its own structure I/O, so that is
never wanted, and it can be fatal: DeepHyper sets mpi4py.rc.initialize = False
when imported, and ASE's first MPI call then aborts the process without a
word ("Attempting to use an MPI routine before initializing"). ASE consults
its world's size even when called with parallel=False, so the world itself is
made serial here, for the whole process.
"""
from __future__ import annotations

import ase.io
import ase.parallel

ase.parallel.world.comm = ase.parallel.DummyMPI()

read = ase.io.read
write = ase.io.write
