"""The learning-curve table behind the fidelity replay of bench/bench_search_quality.py.

Like search_table.py (same space, data, trial.yaml and in-process trainer) but
every point trains for the HPO default of 10 epochs and keeps EVERY epoch's
validation loss, so that a replayed search can stop a trial at any epoch and
read the value a rung would have seen. 10 epochs cost 5x the 2-epoch table per
point, so the grid is a subset of search_table.GRID (every backbone, depths
1/3/6, widths 10-100: 3 x 3 x 4 x 2 x 2 = 144 points) to fit the shared
2-core machines. A trial's learning rate follows its whole 10-epoch budget
(cosine, stage two), exactly as a trial that the manager stops early would.
"""
from __future__ import annotations

import contextlib
import json
import random
import shutil
import time
from itertools import product
from pathlib import Path
from typing import Any, Callable

import search_table
from benchio import RESULTS
from search_spaces import Params

TABLE = RESULTS / "curve_table.json"
# The warm-start benchmark's earlier campaign: the same grid on another dataset (3BPA at 300 K,
# 27 atoms against ethanol's 9), only the points a 30-trial random campaign there would have trained.
WARM_TABLE = RESULTS / "curve_table_3bpa.json"
WARM_DATA = search_table.DATA.parent / "3bpa_train_300K.xyz.xz"
WARM_FRAMES = 500
EPOCHS = 10
GRID: dict[str, list[Any]] = {
    "mpnn_type": ["PNA", "EGNN", "SchNet"],
    "num_conv_layers": [1, 3, 6],
    "hidden_dim": [10, 25, 50, 100],
    "num_fc_layers": [2, 3],
    "fc_dim": [30, 100],
}


def grid_points() -> list[Params]:
    return [dict(zip(GRID, values)) for values in product(*GRID.values())]


def key(params: Params) -> str:
    return search_table.key(params, GRID)


def snap(params: Params) -> Params:
    return search_table.snap(params, GRID)


def load_complete(path: Path) -> dict[str, Any]:
    """The table, refused (one line) unless every grid point is in it."""
    from trainer.contract.errors import UserError

    table = search_table.load_table(path)
    missing = [key(p) for p in grid_points() if key(p) not in table["points"]]
    if missing:
        raise UserError(f"{path}: {len(missing)} of {len(grid_points())} points are not trained yet "
                        f"(e.g. {missing[0]}); run with --build-curves first")
    return table


def build(table_path: Path, work: Path, workers: int, limit: int | None, minutes: float | None,
          report: Callable[[str], None] = print, warm: bool = False) -> dict[str, Any]:
    """Train the missing points, `workers` at a time; resumable (the table is saved after every point).
    `warm`: the warm-start source table (3BPA) instead of the ethanol one."""
    space = search_table.grid_space()
    for params in grid_points():
        space.check_params(params)
    table = search_table.load_table(table_path)
    data = (search_table.convert_data(work, WARM_DATA, WARM_FRAMES, "3bpa") if warm
            else search_table.convert_data(work))
    table["metadata"] = {**search_table.metadata(data), "epochs": EPOCHS, "grid": GRID}
    table["metadata"]["base_trial"]["training"]["epochs"] = EPOCHS
    if warm:
        table["metadata"]["data"] = {"file": str(WARM_DATA.name), "frames": WARM_FRAMES, "split": "400/50/50"}
    missing = [p for p in grid_points() if key(p) not in table["points"]]
    random.Random(0).shuffle(missing)
    if limit is not None:
        missing = missing[:limit]
    deadline = None if minutes is None else time.monotonic() + 60 * minutes
    report(f"{len(table['points'])} of {len(grid_points())} points in {table_path}; training {len(missing)}")
    search_table.train_missing(table, table_path, missing, workers, deadline, _train_point,
                               (_init_worker, (str(data), str(work / ("warm_trials" if warm else "curve_trials")))),
                               len(grid_points()), key, report)
    return table


# -- in the worker processes --------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(data: str, trials: str) -> None:
    import dataclasses

    import trainer.train  # noqa: F401  (imported once per worker)

    base = search_table._base_trial(Path(data))
    base = dataclasses.replace(base, training=dataclasses.replace(base.training, epochs=EPOCHS))
    _WORKER.update(space=search_table.grid_space(), base=base, trials=Path(trials),
                   digest=search_table.source_digest())


def _train_point(params: Params) -> dict[str, Any]:
    from trainer.contract.trialconfig import RESULT_FILE, write_trial
    from trainer.train import run

    trial = _WORKER["trials"] / key(params).replace("/", "-")
    shutil.rmtree(trial, ignore_errors=True)
    write_trial(trial, _WORKER["space"].apply(params, _WORKER["base"]))
    start = time.perf_counter()
    with open(trial / "train.log", "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        code = run(trial)
    seconds = time.perf_counter() - start
    result = json.loads((trial / RESULT_FILE).read_text())
    for checkpoint in trial.glob("*.pt"):
        checkpoint.unlink()
    failed = result["status"] != "completed" or result["objective"] is None
    epochs = result.get("epochs", [])
    return {"params": params, "objective": None if failed else result["objective"], "status": result["status"],
            "error": result["error"] if failed else None, "exit_code": code,
            # the value a rung at epoch e reads: the validation loss of each epoch, in order
            "val_loss": [e.get("val_loss") for e in epochs], "epoch_seconds": [e.get("seconds") for e in epochs],
            "num_parameters": result["num_parameters"], "epochs_done": result["epochs_done"],
            "seconds": seconds, "trainer_source_sha256": _WORKER["digest"]}
