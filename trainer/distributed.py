"""Who am I, who else is there, and how do we talk: rank discovery and DDP set-up.

Works under `srun` (SLURM_*), `mpiexec` (MPICH's PMI_* or Open MPI's OMPI_*),
`torchrun` (RANK/WORLD_SIZE/...), or as a single process. Under srun and
mpiexec the ranks share an MPI communicator (mpi4py), which the data store
uses to exchange samples and which picks the rendezvous for torch.distributed:
rank 0 asks the OS for a free port and broadcasts its host and port, so trials
that share a host never collide on a port.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from trainer.contract.errors import UserError

# Environment variables that launchers set, per launcher: (rank, world size, local rank, local size).
_LAUNCHERS = {
    "torchrun": ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"),
    "srun": ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE"),
    "mpiexec-openmpi": ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                        "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"),
    "mpiexec": ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"),
}


@dataclass
class Context:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    launcher: str
    hostname: str
    device: torch.device
    comm: Any = None          # mpi4py communicator when launched by srun/mpiexec with world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def discover(environ: dict[str, str] | None = None) -> tuple[str, int, int, int, int]:
    """(launcher, rank, world size, local rank, local world size) from the launcher's environment."""
    env = os.environ if environ is None else environ
    for launcher, (rank, size, local, local_size) in _LAUNCHERS.items():
        if rank in env and size in env:
            world = int(env[size])
            # SLURM_NTASKS_PER_NODE may be "2(x3)" or absent; the local size only sizes threads.
            local_count = env.get(local_size, "").split("(")[0]
            return (launcher.split("-")[0], int(env[rank]), world, int(env.get(local, 0)),
                    int(local_count) if local_count.isdigit() else 1)
    return "single", 0, 1, 0, 1


def node_name() -> str:
    """The node's name; emulated Slurm nodes share a hostname, so prefer Slurm's own."""
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def _pick_device(preference: str, local_rank: int) -> torch.device:
    if preference == "cpu" or not torch.cuda.is_available():
        if preference == "cuda":
            raise RuntimeError("training.device is cuda but no CUDA device is visible")
        return torch.device("cpu")
    # With --gpus-per-task=1 each rank sees one device; otherwise share out by local rank.
    index = local_rank % torch.cuda.device_count()
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


class MPIUnavailable(UserError):
    """Several ranks to join, but mpi4py cannot load an MPI library."""


MPI_HELP = ("on a workstation `pip install mpich` (or install this package with its mpich extra); "
            "on a cluster, build mpi4py against the site's MPI (`pip install --no-binary=mpi4py mpi4py` "
            "with the site's mpicc on PATH) or set MPI4PY_LIBMPI to the site's libmpi.so")


def mpi(reason: str = "this run has several ranks"):
    """mpi4py's MPI module, initialised; imported only here, so a single process needs no MPI.

    mpi4py's wheels carry no MPI library: they load one when `mpi4py.MPI` is
    first imported, and without one that raises a RuntimeError of several
    lines (or an ImportError for an mpi4py built against a library since
    removed). `reason` says why MPI is wanted, for the one-line error.

    Importing DeepHyper's evaluator sets mpi4py.rc.initialize = False for the
    whole process; MPI is then never initialised, and the first use of a
    communicator aborts the process without a word.
    """
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError, OSError) as err:
        # The last line names the library that failed to load (libmpi.so: cannot open shared object file).
        detail = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise MPIUnavailable(f"{reason}, which talk over MPI, but mpi4py cannot load an MPI library "
                             f"({detail}): {MPI_HELP}") from None

    if not MPI.Is_initialized():
        MPI.Init()
    return MPI


def init(device: str = "auto", threads: int | None = None, timeout_s: float = 600.0) -> Context:
    """Join the trial's ranks: MPI communicator, torch.distributed process group, device, threads."""
    launcher, rank, world, local_rank, local_world = discover()
    comm = None
    if world > 1 and launcher in ("srun", "mpiexec"):
        comm = mpi(f"{launcher} started {world} ranks").COMM_WORLD
        if comm.Get_size() != world:
            raise RuntimeError(f"{launcher} says {world} ranks but MPI sees {comm.Get_size()}: "
                               "under srun use --mpi=pmi2 with the mpich wheel")
    ctx_device = _pick_device(device, local_rank)
    torch.set_num_threads(threads or max(1, len(os.sched_getaffinity(0)) // max(1, local_world)))
    if world > 1:
        if launcher == "torchrun":
            init_method = "env://"
        else:
            address = comm.bcast((node_address(), _free_port()) if rank == 0 else None, root=0)
            init_method = f"tcp://{address[0]}:{address[1]}"
        dist.init_process_group("nccl" if ctx_device.type == "cuda" else "gloo", init_method=init_method,
                                rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s))
    return Context(rank, world, local_rank, local_world, launcher, node_name(), ctx_device, comm)


def node_address() -> str:
    """An address other ranks can reach this host on."""
    name = socket.gethostname()
    try:
        socket.getaddrinfo(name, None)
        return name
    except socket.gaierror:
        return "127.0.0.1"


def shutdown(ctx: Context) -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_sum(ctx: Context, values: list[float]) -> list[float]:
    """Sum a few numbers over ranks (float64, one collective)."""
    if not ctx.distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=ctx.device if ctx.device.type == "cuda" else "cpu")
    dist.all_reduce(tensor)
    return tensor.tolist()


def all_max(ctx: Context, values: list[float]) -> list[float]:
    if not ctx.distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=ctx.device if ctx.device.type == "cuda" else "cpu")
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor.tolist()


def all_gather_objects(ctx: Context, obj: Any) -> list[Any]:
    if not ctx.distributed:
        return [obj]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered
