"""Running gfm-hpo as users do (its console script in a subprocess) and reading what it left."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from datasets import BIN


def gfm_hpo(*args: str, env: dict | None = None, timeout: float = 900, check: bool = False) -> subprocess.CompletedProcess:
    done = subprocess.run([str(BIN / "gfm-hpo"), *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=timeout)
    if check:
        assert done.returncode == 0, f"gfm-hpo {' '.join(map(str, args))} failed:\n{done.stdout}\n{done.stderr}"
    return done


def result_of(trial_dir: str | Path) -> dict:
    return json.loads((Path(trial_dir) / "result.json").read_text())


def assert_one_line_error(done: subprocess.CompletedProcess, *fragments: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gfm-hpo: error: "), done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def intervals_overlap(a, b) -> bool:
    return a.started_at < b.finished_at and b.started_at < a.finished_at
