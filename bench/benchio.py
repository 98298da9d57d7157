"""Where every benchmark leaves its figures: bench/results/NAME.json (gitignored; the README carries them)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from trainer.contract.atomicio import atomic_write_json

RESULTS = Path(__file__).resolve().parent / "results"


def save_result(path: Path, payload: Any, announce: bool = True) -> None:
    """Write `payload` as JSON to `path` atomically, creating its folder (absent in a fresh clone).

    Long benchmarks save after every measurement (announce=False) so that a run
    that fails later keeps what it measured.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, payload)
    if announce:
        print(f"wrote {path}", flush=True)
