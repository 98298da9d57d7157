"""The table behind bench/bench_search_quality.py: every point of a grid over the small space, trained once.

The space is search_spaces/small.yaml (Table IV with widths / 10). A tabular
benchmark needs a finite set of configurations, so each dimension gets a few
levels (`GRID`): every backbone, every conv depth and head depth, and five
(hidden) and two (head) widths spaced roughly geometrically, because a width's
effect is multiplicative. 3 x 6 x 5 x 2 x 2 = 360 points.

Each point is a real 2-epoch trial (the HPO fidelity of this benchmark) on
real ethanol frames: the trial.yaml is made exactly as the manager makes it
(`runconfig.base_trial` + `SearchSpace.apply`, seed 0, one thread per trial as
on the `local` site) and trained by the trainer's own `trainer.train.run`.
Workers call `run` in a long-lived process instead of starting `gfm-train`
per point: that skips ~8 s of imports per trial and gives bit-identical
results (checked: same objective to the last digit for PNA, EGNN and SchNet).
The objective is result.json's `objective` (best validation loss); a failed
trial is stored with objective null and its error, as the manager would.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import platform
import random
import shutil
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from importlib.metadata import version
from itertools import product
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

from benchio import RESULTS, save_result
from search_spaces import PACKAGED, Params, SearchSpace, load_space, parse_space
from trainer.contract.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "molecules" / "ethanol_train.xyz.xz"
TABLE = RESULTS / "search_table.json"
WORK = ROOT / "runs" / "search_table"  # trial directories and the converted data (runs/ is not tracked)
FRAMES = 1000
EPOCHS = 2
SPACE = "small"
GRID: dict[str, list[Any]] = {
    "mpnn_type": ["PNA", "EGNN", "SchNet"],
    "num_conv_layers": [1, 2, 3, 4, 5, 6],
    "hidden_dim": [10, 25, 50, 100, 200],
    "num_fc_layers": [2, 3],
    "fc_dim": [30, 100],
}
CONVERT = ["--val", "0.1", "--test", "0.1", "--seed", "0", "--radius", "5.0", "--max-neighbours", "50"]


def grid_space() -> SearchSpace:
    """The small space over the grid's backbones (the table was built before PaiNN and MACE joined it:
    their parameters, and those that apply only to them, are left out), after checking that every
    grid level lies inside it (and nothing is left out)."""
    mapping = load_space(SPACE).to_mapping()
    parameters = mapping["parameters"]
    parameters["mpnn_type"]["choices"] = [c for c in parameters["mpnn_type"]["choices"] if c in GRID["mpnn_type"]]
    mapping["parameters"] = {name: spec for name, spec in parameters.items()
                             if set(spec.get("when", {}).get("mpnn_type", GRID["mpnn_type"])) & set(GRID["mpnn_type"])}
    space = parse_space(mapping, str(PACKAGED / f"{SPACE}.yaml"))
    if list(GRID) != space.names:
        raise UserError(f"{space.origin}: parameters {space.names} differ from the benchmark grid {list(GRID)}")
    for name, levels in GRID.items():
        for level in levels:
            space.check_params({**{n: GRID[n][0] for n in GRID}, name: level})
    return space


def grid_points() -> list[Params]:
    return [dict(zip(GRID, values)) for values in product(*GRID.values())]


def key(params: Params, grid: dict[str, list[Any]] = GRID) -> str:
    """A table point's name, e.g. "PNA/3/50/2/30" (values in the space's order)."""
    return "/".join(str(params[name]) for name in grid)


def snap(params: Params, grid: dict[str, list[Any]] = GRID) -> Params:
    """The grid point nearest to an optimiser's proposal: choices exactly, numbers by the nearest level
    in log scale (so 35 is as far from 25 as from 50: a width's effect is multiplicative)."""
    snapped = {}
    for name, levels in grid.items():
        value = params[name]
        if isinstance(value, str):
            snapped[name] = value
        else:
            snapped[name] = min(levels, key=lambda level: abs(math.log(level) - math.log(value)))
    return snapped


# -- building -------------------------------------------------------------------

def convert_data(work: Path, data: Path = DATA, count: int = FRAMES, name: str = "ethanol") -> Path:
    """The first `count` frames of `data` (FRAMES ethanol frames: 800/100/100), split by the real
    `gfm-data convert` (once)."""
    output = work / f"{name}.bp"
    if output.exists():
        return output
    if not data.exists():
        raise UserError(f"{data}: not found (the shared data directory beside the project is needed)")
    import ase.io

    from trainer.data.structures import read_structures

    work.mkdir(parents=True, exist_ok=True)
    frames = work / f"{name}_{count}.extxyz"
    ase.io.write(frames, read_structures(data)[:count])
    command = [str(Path(sys.executable).parent / "gfm-data"), "convert", "--name", name,
               "--output", str(output), *CONVERT, str(frames)]
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"gfm-data convert failed:\n{run.stderr[-2000:]}")
    return output


def load_table(path: Path) -> dict[str, Any]:
    import json

    if not path.exists():
        return {"points": {}}
    try:
        table = json.loads(path.read_text())
        if not isinstance(table, dict) or not isinstance(table.get("points"), dict):
            raise ValueError("no 'points' mapping")
    except ValueError as err:
        raise UserError(f"{path}: not a search table ({err}); move it away to build a new one") from None
    return table


def source_digest() -> str:
    """sha256 of the trainer's python sources: points trained by different code must not be mixed silently."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "trainer").rglob("*.py")):
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def build(table_path: Path, work: Path, workers: int, limit: int | None, minutes: float | None,
          report: Callable[[str], None] = print) -> dict[str, Any]:
    """Train the grid points missing from the table, `workers` at a time; the table is rewritten
    (atomically) after every point, so an interrupted build resumes where it stopped."""
    grid_space()
    table = load_table(table_path)
    data = convert_data(work)
    table["metadata"] = metadata(data)
    missing = [p for p in grid_points() if key(p) not in table["points"]]
    # A shuffled order makes a partial table a random sample of the grid, not all of one backbone.
    random.Random(0).shuffle(missing)
    if limit is not None:
        missing = missing[:limit]
    deadline = None if minutes is None else time.monotonic() + 60 * minutes
    report(f"{len(table['points'])} of {len(grid_points())} points in {table_path}; training {len(missing)}")
    train_missing(table, table_path, missing, workers, deadline, _train_point,
                  (_init_worker, (str(data), str(work / "trials"))), len(grid_points()), key, report)
    return table


def train_missing(table: dict[str, Any], table_path: Path, missing: list[Params], workers: int,
                  deadline: float | None, train_point: Callable[[Params], dict[str, Any]],
                  initializer: tuple[Callable[..., None], tuple], size: int, name: Callable[[Params], str],
                  report: Callable[[str], None]) -> None:
    """Train `missing`, `workers` at a time in fresh interpreters (no torch state inherited from this
    process), until `deadline`; each row goes into the table, rewritten atomically after every point."""
    init, args = initializer
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=init, initargs=args) as pool:
        running: dict[Future, Params] = {}
        todo = iter(missing)
        while True:
            while len(running) < workers and (deadline is None or time.monotonic() < deadline):
                params = next(todo, None)
                if params is None:
                    break
                running[pool.submit(train_point, params)] = params
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                params = running.pop(future)
                row = future.result()
                table["points"][name(params)] = row
                save_result(table_path, table, announce=False)
                objective = "failed: " + str(row["error"]) if row["objective"] is None else f"{row['objective']:.4f}"
                report(f"[{len(table['points'])}/{size}] {name(params):22s} {objective}  {row['seconds']:.1f} s")


def metadata(data: Path) -> dict[str, Any]:
    from trainer.contract import typed

    base = typed.to_dict(_base_trial(data))
    base["data"]["sources"] = [{"path": "ethanol.bp (see data)"}]
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    return {"data": {"file": str(DATA.relative_to(ROOT.parent)), "frames": FRAMES, "split": "800/100/100",
                     "convert": " ".join(["gfm-data convert", *CONVERT])},
            "epochs": EPOCHS, "space": SPACE, "grid": GRID, "base_trial": base,
            "objective": "result.json objective: best validation loss over the epochs (lower is better)",
            "versions": {p: version(p) for p in ("torch", "torch_geometric", "numpy")},
            "python": platform.python_version(), "git_commit": commit.stdout.strip(),
            "trainer_source_sha256": source_digest(), "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _base_trial(data: Path):
    from orchestrator.trials import runconfig

    settings = runconfig.RunSettings(site="local", data=[str(data)], epochs=EPOCHS, seed=0)
    return runconfig.base_trial(settings, threads=1)


# -- in the worker processes --------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(data: str, trials: str) -> None:
    import trainer.train  # noqa: F401  (imported once per worker: the saving over one gfm-train per point)

    _WORKER.update(space=grid_space(), base=_base_trial(Path(data)), trials=Path(trials), digest=source_digest())


def _train_point(params: Params) -> dict[str, Any]:
    import json

    from trainer.contract.trialconfig import RESULT_FILE, write_trial
    from trainer.train import run

    trial = _WORKER["trials"] / key(params).replace("/", "-")
    shutil.rmtree(trial, ignore_errors=True)  # a point left half-trained by an interrupted build
    write_trial(trial, _WORKER["space"].apply(params, _WORKER["base"]))
    start = time.perf_counter()
    with open(trial / "train.log", "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        code = run(trial)
    seconds = time.perf_counter() - start
    result = json.loads((trial / RESULT_FILE).read_text())
    for checkpoint in trial.glob("*.pt"):
        checkpoint.unlink()  # only result.json is needed; 360 sets of weights are not
    failed = result["status"] != "completed" or result["objective"] is None
    best = next((e for e in result["epochs"] if e["epoch"] == result["best_epoch"]), {})
    return {"params": params, "objective": None if failed else result["objective"], "status": result["status"],
            "error": result["error"] if failed else None, "exit_code": code,
            "num_parameters": result["num_parameters"], "epochs_done": result["epochs_done"],
            "val_energy_mae": best.get("val_energy_mae"), "val_force_mae": best.get("val_force_mae"),
            "seconds": seconds, "trainer_source_sha256": _WORKER["digest"]}
