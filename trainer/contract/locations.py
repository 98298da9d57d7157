"""Where the product puts run directories, and how a command finds the newest one when none is named.

Both sides need it: `gfm-hpo` makes runs and `gfm-hpo report`, the notebook
and `gfm-ensemble` look for them (the inference commands live on the trainer's
side, which must not import the orchestrator), so the places are written down
once, here:

  runs/hpo-<time>            `gfm-hpo launch` without --run-dir (relative to where it is run)
  demo/campaign-<time>/run   the embedded demo (`scripts/demo.sh`), under the repository
  */                         any run directory right inside the folder searched
  RUN_DIR/ensemble           `gfm-ensemble train`'s ensemble of a run

The patterns are tried under the current directory, then under the repository
that holds this code (the demo writes there whatever the current directory).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterable

REPOSITORY = Path(__file__).resolve().parents[2]
RUNS_DIR = "runs"                     # gfm-hpo launch's default parent of run directories
DEMO_DIR = "demo"                     # the demo's campaigns, under the repository
DEMO_CAMPAIGN = "campaign-%Y%m%d-%H%M%S"
DEMO_RUN = "run"                      # a campaign's run directory
ENSEMBLE_DIR = "ensemble"             # RUN_DIR/ensemble: what gfm-ensemble train makes
RUN_PATTERNS = (f"{RUNS_DIR}/*", f"{DEMO_DIR}/campaign-*/{DEMO_RUN}", "*")


def new_run_dir(base: Path | None = None) -> Path:
    """Where `gfm-hpo launch` puts a run when no --run-dir is given: runs/hpo-<time>."""
    return (base or Path.cwd()) / RUNS_DIR / time.strftime("hpo-%Y%m%d-%H%M%S")


def new_demo_campaign() -> Path:
    return REPOSITORY / DEMO_DIR / time.strftime(DEMO_CAMPAIGN)


def search_bases(start: Path | None = None) -> list[Path]:
    """The folders whose run patterns are searched: `start` (the current directory), then the repository."""
    bases = [(start or Path.cwd()).resolve()]
    if REPOSITORY not in bases:
        bases.append(REPOSITORY)
    return bases


def searched(inside: str = "", bases: Iterable[Path] | None = None) -> str:
    """What `newest` looks at, for an error message: "/a/runs/*/ensemble, /a/demo/campaign-*/run/ensemble, ..."."""
    suffix = f"/{inside}" if inside else ""
    return ", ".join(f"{base}/{pattern}{suffix}" for base in (bases or search_bases()) for pattern in RUN_PATTERNS)


def newest(marker: str, age: Callable[[Path], float] | None = None,
           bases: Iterable[Path] | None = None) -> Path | None:
    """The newest run directory that holds `marker` (a path inside it: "trials.db",
    "ensemble/manifest.json") and matches one of RUN_PATTERNS, under the first of `bases` that has
    any: the current directory's own runs win over the repository's demo campaigns, whatever their
    age. `age(run_dir)` ranks them (default: the marker's modification time); None when none is found."""
    depth = len(Path(marker).parts)
    for base in bases or search_bases():
        found = {path.parents[depth - 1].resolve()
                 for pattern in RUN_PATTERNS for path in base.glob(f"{pattern}/{marker}")}
        if found:
            return max(sorted(found), key=age or (lambda run_dir: (run_dir / marker).stat().st_mtime))
    return None
