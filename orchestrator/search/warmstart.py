"""Warm start: tell a new campaign's optimiser every finished trial of an earlier one (`--warm-start DIR`).

The earlier run's HPO trials that finished (completed and discarded with
their values, failed as failures) are read once, when the new run's manager
first starts, checked against the new space (a point outside it, or of a
space with other parameters, is dropped and counted) and stored in the new
run's database (meta "warm_start": where from, how many imported and
dropped; "warm_start_points": the points themselves), so a resumed manager
tells the same points again without the earlier run directory. Objectives at
another epoch budget are not comparable (a 2-epoch loss is higher than a
10-epoch one), so a run of another fidelity is refused unless the user says
`--warm-start-any-fidelity`.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search_spaces import SearchSpace
from trainer.contract.errors import UserError
from trainer.contract.typed import ConfigError

from orchestrator.trials import runconfig
from orchestrator.trials.schema import database_path

META = "warm_start"
POINTS = "warm_start_points"


@dataclass(frozen=True)
class WarmStart:
    source: str
    points: list[tuple[dict[str, Any], float | None]]   # (params, objective or None for a failure)
    dropped: int

    def record(self) -> dict[str, Any]:
        return {"from": self.source, "imported": len(self.points), "dropped": self.dropped,
                "failures": sum(objective is None for _, objective in self.points)}


def fidelity_of(settings: runconfig.RunSettings) -> str:
    return f"{settings.epochs} epochs" if settings.epochs is not None else f"{settings.steps} steps"


def read_warm_start(source: str | Path, space: SearchSpace, settings: runconfig.RunSettings) -> WarmStart:
    """The earlier run's finished HPO trials that lie in `space`; UserError for a run that cannot be used."""
    source = Path(source).resolve()
    if not database_path(source).exists():
        raise UserError(f"--warm-start {source}: not a run directory with a trial database")
    if (source / runconfig.RUN_FILE).exists() and not settings.warm_start_any_fidelity:
        earlier = runconfig.load(source)
        if (earlier.epochs, earlier.steps) != (settings.epochs, settings.steps):
            raise UserError(f"--warm-start {source}: its trials trained {fidelity_of(earlier)}, this run "
                            f"{fidelity_of(settings)}; their objectives do not compare (add "
                            "--warm-start-any-fidelity to import them anyway)")
    points, dropped = [], 0
    for params, status, objective in _finished(source):
        try:
            params = space.check_params(params)
        except ConfigError:
            dropped += 1
            continue
        points.append((params, objective if status in ("completed", "discarded") else None))
    return WarmStart(str(source), points, dropped)


def _finished(source: Path) -> list[tuple[dict[str, Any], str, float | None]]:
    import json

    try:
        db = sqlite3.connect(f"{database_path(source).as_uri()}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT params, status, objective FROM trials WHERE phase = 'hpo' "
                              "AND status IN ('completed', 'discarded', 'failed') ORDER BY trial_id").fetchall()
        finally:
            db.close()
    except sqlite3.DatabaseError as err:
        raise UserError(f"--warm-start {source}: not a readable trial database ({err})") from None
    return [(json.loads(params), status, objective) for params, status, objective in rows]
