"""A stand-in trainer for the launch tests: `python slurm_probe.py TRIAL_DIR`.

Like the trainer, it takes its orders from the trial directory:
TRIAL_DIR/probe.json (written by `make_trial`) may hold "sleep" (seconds),
"ignore_sigterm" (carry on after SIGTERM, as a hung trainer would) and
"exit_code" (a failing trainer). Every rank writes TRIAL_DIR/rank-<rank>.json
with what it saw: the emulated node (SLURMD_NODENAME, "local" under mpiexec),
the launcher's rank variable, and the MPI world size and rank from mpi4py. On
SIGTERM it writes TRIAL_DIR/sigterm-<rank>, waits until every rank has, and
dies of the signal, as a trainer would after saving its checkpoint. `survivors()` is the tests' check that
nothing of a trial is left running.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

ORDERS = "probe.json"


def main() -> None:
    trial_dir = Path(sys.argv[1])
    orders_file = trial_dir / ORDERS
    orders = json.loads(orders_file.read_text()) if orders_file.exists() else {}

    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()

    def on_sigterm(signum: int, frame: object) -> None:
        (trial_dir / f"sigterm-{rank}").write_text(str(os.getpid()))
        if orders.get("ignore_sigterm"):
            return
        # Like a DDP trainer, stop together: the first rank to die makes mpiexec (or srun's
        # --kill-on-bad-exit) kill the others, maybe before their own SIGTERM arrived.
        deadline = time.monotonic() + 10
        while len(list(trial_dir.glob("sigterm-*"))) < comm.Get_size() and time.monotonic() < deadline:
            time.sleep(0.01)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)
    seen = {"node": os.environ.get("SLURMD_NODENAME", "local"),
            "procid": os.environ.get("SLURM_PROCID", os.environ.get("PMI_RANK")),
            "world_size": comm.Get_size(), "rank": rank, "pid": os.getpid()}
    path = trial_dir / f"rank-{rank}.json"
    path.with_suffix(".tmp").write_text(json.dumps(seen))
    path.with_suffix(".tmp").rename(path)
    print(json.dumps(seen), flush=True)
    time.sleep(orders.get("sleep", 0))
    raise SystemExit(orders.get("exit_code", 0))


def make_trial(trial_dir: Path, **orders: object) -> Path:
    """A trial directory whose probe will follow `orders` (sleep=, ignore_sigterm=, exit_code=)."""
    trial_dir.mkdir(parents=True, exist_ok=True)
    (trial_dir / ORDERS).write_text(json.dumps(orders))
    return trial_dir


def command() -> list[str]:
    """The probe as a site's trainer_command (the launcher appends the trial directory)."""
    return [sys.executable, str(Path(__file__).resolve())]


def ranks_seen(trial_dir: Path) -> list[dict]:
    """What every rank reported so far, by rank."""
    seen = [json.loads(p.read_text()) for p in trial_dir.glob("rank-*.json")]
    return sorted(seen, key=lambda item: item["rank"])


def wait_for_ranks(trial_dir: Path, count: int, handle, timeout: float = 60.0) -> list[dict]:
    """Poll until `count` ranks have reported (the launch is then fully up) or the trial ended."""
    deadline = time.monotonic() + timeout
    while len(seen := ranks_seen(trial_dir)) < count:
        if handle.done() or time.monotonic() > deadline:
            raise AssertionError(f"only {len(seen)} of {count} ranks started in {trial_dir} "
                                 f"(exit status {handle.exit_code()}):\n{(trial_dir / 'launcher.err').read_text()}")
        time.sleep(0.05)
    return seen


def survivors(marker: str | Path) -> list[str]:
    """Live processes (not zombies) whose command line mentions `marker`, e.g. a trial directory."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue  # gone meanwhile
        if str(marker) in argv and state != "Z":
            found.append(f"{proc.name}: {argv.strip()}")
    return found


if __name__ == "__main__":
    main()
