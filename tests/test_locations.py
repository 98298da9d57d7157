"""Finding the newest run or ensemble when none is named: wherever the product itself puts them.

`gfm-hpo launch` writes runs/hpo-<time> under the current directory, the demo writes
demo/campaign-<time>/run under the repository; `gfm-ensemble predict/info` without -e, the
notebook's default RUN_DIR and `report.find_run(None)` all look there (trainer/contract/locations.py).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import ase.io
import pytest

from ensembles import ethanol_ensemble  # noqa: F401  (fixture)
from orchestrator.trials.db import TrialDB
from orchestrator.views import report
from test_ensemble_cli import gfm_ensemble
from trainer.contract import locations
from trainer.contract.errors import UserError
from trainer.ensemble.cli import find_ensemble

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "inspect_trials.ipynb"


def make_run(run_dir: Path, at: float) -> Path:
    """A run directory as gfm-hpo leaves it (run.yaml, trials.db), launched at `at`."""
    run_dir.mkdir(parents=True)
    TrialDB(run_dir).close()
    (run_dir / "run.yaml").write_text("site: local\n")
    os.utime(run_dir / "run.yaml", (at, at))
    return run_dir


@pytest.fixture
def repository(tmp_path, monkeypatch) -> Path:
    """A stand-in for the repository, so that the developer's own demo campaigns are not found."""
    repo = tmp_path / "repo"
    repo.mkdir()
    monkeypatch.setattr(locations, "REPOSITORY", repo)
    return repo


def test_newest_run_here_first_then_the_repositorys_demo(tmp_path, repository, monkeypatch):
    here = tmp_path / "work"
    here.mkdir()
    monkeypatch.chdir(here)
    demo = make_run(repository / "demo" / "campaign-20260101-000000" / "run", at=3000)
    make_run(repository / "demo" / "campaign-20250101-000000" / "run", at=1000)
    assert report.find_run(None) == demo.resolve()       # nothing here: the newest demo campaign
    older = make_run(here / "runs" / "hpo-1", at=100)
    assert report.find_run(None) == older.resolve()      # a run here wins over the repository's
    newer = make_run(here / "runs" / "hpo-2", at=200)
    make_run(here / "loose-run", at=150)                 # a run directory right here counts too
    assert report.find_run(None) == newer.resolve()
    assert report.find_run(here / "runs") == newer       # a folder of runs, as before


def test_no_run_anywhere_says_where_it_looked(tmp_path, repository, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as caught:
        report.find_run(None)
    message = str(caught.value)
    assert "\n" not in message and "no run directory given" in message
    for place in (f"{tmp_path}/runs/*", f"{repository}/demo/campaign-*/run"):
        assert place in message


def test_notebook_default_is_the_newest_run(tmp_path, repository, monkeypatch):
    cell = json.loads(NOTEBOOK.read_text())["cells"][0]
    assert "parameters" in cell["metadata"]["tags"]
    assert "".join(cell["source"]).rstrip().endswith("RUN_DIR = None")
    # The notebook runs in notebooks/: the runs are the repository's.
    (repository / "notebooks").mkdir()
    monkeypatch.chdir(repository / "notebooks")
    demo = make_run(repository / "demo" / "campaign-1" / "run", at=1000)
    assert report.find_run(None) == demo.resolve()


def test_find_ensemble_order_and_error(tmp_path, repository):
    manifest = "ensemble/manifest.json"
    run = tmp_path / "demo" / "campaign-1" / "run"
    (run / "ensemble").mkdir(parents=True)
    (run / manifest).write_text("{}")
    assert find_ensemble(tmp_path) == (run / "ensemble").resolve()
    (tmp_path / "ensemble").mkdir()
    (tmp_path / manifest).write_text("{}")
    assert find_ensemble(tmp_path) == tmp_path / "ensemble"           # ./ensemble comes first
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError) as caught:
        find_ensemble(empty)
    message = str(caught.value)
    assert "none found" in message and "\n" not in message
    for place in (f"{empty}/runs/*/ensemble", f"{empty}/demo/campaign-*/run/ensemble",
                  f"{repository}/demo/campaign-*/run/ensemble"):
        assert place in message


def test_info_and_predict_find_the_demos_ensemble(ethanol_ensemble, session_data, variant, tmp_path):
    campaign = tmp_path / "demo" / "campaign-20260101-000000"
    shutil.copytree(ethanol_ensemble, campaign / "run" / "ensemble")
    info = gfm_ensemble("info", cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    assert f"ensemble {campaign / 'run' / 'ensemble'}: 3 members" in info.stdout
    structures = tmp_path / "one.extxyz"
    ase.io.write(structures, session_data.frames(variant, "ethanol_test", 1), format="extxyz")
    predict = gfm_ensemble("predict", structures, "-o", tmp_path / "p.csv", cwd=tmp_path)
    assert predict.returncode == 0, predict.stderr
    assert "demo/campaign-20260101-000000/run/ensemble" in predict.stdout
