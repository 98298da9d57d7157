"""gfm-hpo report and notebooks/inspect_trials.ipynb on a real search with a failed trial.

One small real run per module (4 trials on 2 slices of the local site, ~20 s): the search space
starts from four given points, one of them with a learning rate of 1e30, which the real trainer
turns into a non-finite loss, i.e. a failed trial. Runs in progress, with an ensemble phase, or
without any completed trial are that run's database carried on with TrialDB, fed the real
result.json files of its trials.
"""
from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import nbformat
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from hpo_helpers import assert_one_line_error, gfm_hpo, result_of
from orchestrator.trials.db import TrialDB
from orchestrator.views import figures, report
from orchestrator.views.status import utilisation
from tables import assert_columns_aligned

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "inspect_trials.ipynb"
FIGURES = ["trajectory.png", "learning_curves.png", "objective_by_mpnn.png", "slice_timeline.png"]
SPACE = """\
parameters:
  mpnn_type:       {choices: [PNA, EGNN, SchNet]}
  num_conv_layers: {low: 1, high: 6}
  hidden_dim:      {low: 10, high: 200}
  num_fc_layers:   {low: 2, high: 3}
  fc_dim:          {low: 30, high: 100}
  learning_rate:   {low: 1.0e-4, high: 1.0e+30, prior: log-uniform}
initial_points:
  - {mpnn_type: SchNet, num_conv_layers: 2, hidden_dim: 32, num_fc_layers: 2, fc_dim: 32, learning_rate: 1.0e-3}
  - {mpnn_type: EGNN,   num_conv_layers: 2, hidden_dim: 32, num_fc_layers: 2, fc_dim: 32, learning_rate: 1.0e+30}
  - {mpnn_type: PNA,    num_conv_layers: 1, hidden_dim: 16, num_fc_layers: 2, fc_dim: 32, learning_rate: 1.0e-3}
  - {mpnn_type: SchNet, num_conv_layers: 1, hidden_dim: 16, num_fc_layers: 2, fc_dim: 32, learning_rate: 3.0e-3}
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory, molecules_bp) -> Path:
    root = tmp_path_factory.mktemp("report")
    (root / "space.yaml").write_text(SPACE)
    run_dir = root / "run"
    gfm_hpo("launch", "--site", "local", "--nodes", "2", "--max-evals", "4", "--epochs", "2",
            "--space", root / "space.yaml", "--data", molecules_bp, "--run-dir", run_dir,
            "--set", "training.batch_size=16", check=True)
    trials = report.load_run(run_dir)[0]
    assert list(trials["status"]) == ["completed", "failed", "completed", "completed"], trials
    assert "non-finite loss" in trials["error"][1]
    return run_dir


def _axes() -> "matplotlib.axes.Axes":
    return Figure().add_subplot()


def _by_gid(ax, gid: str) -> list:
    return [a for a in ax.get_children() if a.get_gid() == gid]


def _empty_message(ax) -> str | None:
    texts = [t.get_text() for t in ax.texts if t.get_gid() == "empty"]
    return texts[0] if texts else None


def _check_png(data: bytes, min_size: tuple[int, int] = (500, 250)) -> None:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(io.BytesIO(data), format="png")  # decodes every row
    height, width = image.shape[:2]
    assert width >= min_size[0] and height >= min_size[1], image.shape
    assert width <= 4000 and height <= 4000, image.shape
    assert image[..., :3].std() > 0.01, "a blank image"


# -- gfm-hpo report --------------------------------------------------------------------------

def test_report_writes_figures_and_best_trials(run, tmp_path):
    out = tmp_path / "figures"
    done = gfm_hpo("report", run, "-o", out, check=True)
    written = [Path(line) for line in done.stdout.splitlines()]
    assert [p.name for p in written] == FIGURES + ["best_trials.csv", "summary.json"]
    for name in FIGURES:
        _check_png((out / name).read_bytes())
    trials = report.load_run(run)[0]
    completed = trials[trials["status"] == "completed"].sort_values("objective")
    best = pd.read_csv(out / "best_trials.csv")
    assert list(best["trial_id"]) == list(completed["trial_id"]) and list(best["rank"]) == [1, 2, 3]
    assert np.allclose(best["objective"], completed["objective"])
    assert list(best["mpnn_type"]) == list(completed["mpnn_type"])
    summary = json.loads((out / "summary.json").read_text())["phases"]["hpo"]
    assert summary["counts"] == {"queued": 0, "running": 0, "completed": 3, "failed": 1, "interrupted": 0,
                                 "discarded": 0}
    assert summary["best"]["trial_id"] == completed["trial_id"].iloc[0]
    assert 0 < summary["utilisation"] <= 1
    # The default output directory is RUN_DIR/report.
    done = gfm_hpo("report", run, check=True)
    assert done.stdout.splitlines()[0] == str(run / "report" / FIGURES[0])
    _check_png((run / "report" / FIGURES[0]).read_bytes())


def test_each_figure_draws_every_trial(run):
    trials, curves, events = report.load_run(run)
    start = trials["submitted_at"].min()
    completed = trials[trials["status"] == "completed"].sort_values("finished_at")
    failed = trials[trials["status"] == "failed"]

    ax = figures.plot_trajectory(trials, _axes())
    (points,) = _by_gid(ax, "completed")
    offsets = np.asarray(points.get_offsets())
    assert np.allclose(offsets[:, 0], (completed["finished_at"] - start).dt.total_seconds())
    assert np.allclose(offsets[:, 1], completed["objective"])
    (best,) = _by_gid(ax, "best")
    best_so_far = np.minimum.accumulate(completed["objective"].to_numpy())
    assert np.allclose(best.get_ydata(), np.append(best_so_far, best_so_far[-1]))
    (marks,) = _by_gid(ax, "failed")
    assert np.allclose(marks.get_xdata(), (failed["finished_at"] - start).dt.total_seconds())
    assert _empty_message(ax) is None and f"trial #{completed.sort_values('objective')['trial_id'].iloc[0]}" in ax.get_title()

    ranked = completed.sort_values("objective")["trial_id"].tolist()
    wide = trials.copy()  # a diverging trial next to good ones: the objective axis goes logarithmic
    wide.loc[wide["trial_id"] == ranked[-1], "objective"] *= 1000
    assert ax.get_yscale() == "linear" and figures.plot_trajectory(wide, _axes()).get_yscale() == "log"

    ax = figures.plot_learning_curves(trials, curves, _axes(), top=2)
    assert [line.get_gid() for line in ax.lines] == [f"trial-{i}" for i in ranked[:2]]
    for line, trial_id in zip(ax.lines, ranked):
        curve = curves[curves["trial_id"] == trial_id]
        assert list(line.get_xdata()) == [1, 2] and np.allclose(line.get_ydata(), curve["val_loss"])
    ax = figures.plot_learning_curves(trials, curves, _axes(), top=10)
    assert len(ax.lines) == 3  # the failed trial never finished an epoch: no curve

    ax = figures.plot_by_mpnn(trials, _axes())
    (points,) = _by_gid(ax, "completed")
    assert sorted(np.asarray(points.get_offsets())[:, 1]) == pytest.approx(sorted(completed["objective"]))
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["EGNN\n0 done, 1 failed", "PNA\n1 done", "SchNet\n2 done"]

    now = trials["finished_at"].max()
    ax = figures.plot_slice_timeline(trials, events, _axes(), now=now)
    bars = _bars(ax)
    assert len(bars) == 4
    for row in trials.itertuples():
        (bar,) = [b for b in bars if b.trial_id == row.trial_id]
        assert bar.slice == row.slice_index and bar.status == row.status
        assert bar.width == pytest.approx((row.finished_at - row.started_at).total_seconds())
    used = utilisation(trials, 2, now.timestamp())
    assert ax.get_title() == f"hpo on 2 slices: utilisation {100 * used:.0f}%"
    ax = figures.plot_slice_timeline(trials, events, _axes(), slices=4, now=now)
    assert ax.get_title().startswith("hpo on 4 slices") and [t.get_text() for t in ax.get_yticklabels()] == list("0123")


class _Bar:
    def __init__(self, patch):
        self.phase, self.status, trial_id = patch.get_gid().split(":")
        self.trial_id = int(trial_id)
        self.slice = round(patch.get_y() + patch.get_height() / 2)
        self.width, self.left, self.hatch = patch.get_width(), patch.get_x(), patch.get_hatch()


def _bars(ax) -> list[_Bar]:
    """The timeline's bars; each names its trial in its gid."""
    return [_Bar(patch) for container in ax.containers for patch in container.patches]


def _copy_run(run: Path, copy: Path) -> Path:
    """The run's settings and database (a closed WAL database: its -wal/-shm files go along)."""
    copy.mkdir()
    for path in run.iterdir():
        if path.name == "run.yaml" or path.name.startswith("trials.db"):
            shutil.copy(path, copy / path.name)
    return copy


def test_run_in_progress_with_an_ensemble_phase(run, tmp_path):
    copy = _copy_run(run, tmp_path / "copy")
    trials = report.load_run(copy)[0]
    top = trials[trials["status"] == "completed"].sort_values("objective").head(2)
    with TrialDB(copy) as db:
        ids = [db.create_trial("ensemble", {}, trial_dir=row.trial_dir, parent_id=int(row.trial_id))
               for row in top.itertuples()]
        for slot, (trial_id, row) in enumerate(zip(ids, top.itertuples())):
            db.mark_running(trial_id, slot, [f"local-{slot + 1:04d}"])
        db.mark_finished(ids[0], "completed", result=result_of(top["trial_dir"].iloc[0]))
        db.update_progress(ids[1], result_of(top["trial_dir"].iloc[1]))
    trials, curves, events = report.load_run(copy)

    ax = figures.plot_trajectory(trials, _axes())  # HPO by default: the members are not search points
    assert len(_by_gid(ax, "completed")[0].get_offsets()) == 3
    ax = figures.plot_trajectory(trials, _axes(), phase="ensemble")
    assert len(_by_gid(ax, "completed")[0].get_offsets()) == 1 and "1 running" in ax.get_title()

    now = events["at"].max() + pd.Timedelta(seconds=60)
    bars = _bars(figures.plot_slice_timeline(trials, events, _axes(), now=now))
    members = [b for b in bars if b.phase == "ensemble"]
    assert len(bars) == 6 and sorted(b.trial_id for b in members) == ids
    assert all(b.hatch for b in members) and not any(b.hatch for b in bars if b.phase == "hpo")
    (running,) = [b for b in members if b.status == "running"]
    started = trials.loc[trials["trial_id"] == ids[1], "started_at"].iloc[0]
    first = events.loc[events["status"] == "running", "at"].min()
    assert running.left + running.width == pytest.approx((now - first).total_seconds())  # drawn up to now
    assert running.left == pytest.approx((started - first).total_seconds())
    ax = figures.plot_slice_timeline(trials, events, _axes(), phases=("hpo",), now=now)
    assert len(_bars(ax)) == 4 and ax.get_title().startswith("hpo on 2 slices")

    # gfm-hpo status: the search first, where its configurations came from, aligned tables, and the
    # running member with both its numbers, its epoch and its latest validation loss.
    lines = gfm_hpo("status", copy, check=True).stdout.splitlines()
    assert lines[1].startswith("hpo: 3 completed, 1 failed") and lines[2] == (
        "  proposed by: initial_points (the space file's initial_points) #1-4")
    best = lines.index("  best trials:")
    assert_columns_aligned(lines[best + 1:best + 5], "trial", "objective", "epochs", "num_conv_layers", "fc_dim")
    assert lines[best + 1].split()[:4] == ["trial", "objective", "origin", "epochs"]
    assert [line.split()[2] for line in lines[best + 2:best + 5]] == ["initial_points"] * 3
    running = lines.index("  running:")
    assert_columns_aligned(lines[running + 1:running + 3], "slice", "member trial", "HPO trial", "time", "epoch",
                           "val loss")
    last = result_of(top["trial_dir"].iloc[1])["epochs"][-1]
    assert lines[running + 2].split()[:3] == ["1", str(ids[1]), str(int(top["trial_id"].iloc[1]))]
    assert lines[running + 2].split()[-2:] == [f"{last['epoch']}/2", f"{last['val_loss']:.4g}"]
    member_best = lines.index("  best trials:", best + 1)
    assert lines[member_best + 1].split()[:5] == ["member", "trial", "HPO", "trial", "objective"]
    report_json = json.loads(gfm_hpo("status", copy, "--json", check=True).stdout)["phases"]
    assert list(report_json) == ["hpo", "ensemble"]
    assert report_json["hpo"]["origins"] == {"initial_points": [1, 2, 3, 4]}
    assert report_json["hpo"]["best"][0]["origin"] == "initial_points"
    (member,) = report_json["ensemble"]["running"]
    assert (member["trial_id"], member["hpo_trial_id"], member["epochs"]) == (ids[1], int(top["trial_id"].iloc[1]), 2)
    assert member["val_loss"] == pytest.approx(last["val_loss"])

    gfm_hpo("report", copy, check=True)
    summary = json.loads((copy / "report" / "summary.json").read_text())["phases"]
    assert summary["ensemble"]["counts"]["completed"] == 1 and summary["ensemble"]["counts"]["running"] == 1
    assert summary["hpo"]["counts"]["completed"] == 3
    for name in FIGURES:
        _check_png((copy / "report" / name).read_bytes())


def test_run_without_a_completed_trial(run, tmp_path):
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copy(run / "run.yaml", fresh / "run.yaml")
    TrialDB(fresh).close()  # the manager has started, no trial yet
    done = gfm_hpo("report", fresh, check=True)
    assert len(done.stdout.splitlines()) == 6
    trials, curves, events = report.load_run(fresh)
    assert "no hpo trials yet" in _empty_message(figures.plot_trajectory(trials, _axes()))
    assert "no trial has started" in _empty_message(figures.plot_slice_timeline(trials, events, _axes()))

    failed = report.load_run(run)[0].iloc[1]
    with TrialDB(fresh) as db:
        trial_id = db.create_trial("hpo", {"mpnn_type": failed["mpnn_type"]}, trial_dir=failed["trial_dir"])
        db.mark_running(trial_id, 0, ["local-0001"])
        db.mark_finished(trial_id, "failed", error=failed["error"], result=result_of(failed["trial_dir"]))
        db.create_trial("hpo", {"mpnn_type": "PNA"})  # queued: nowhere on the timeline yet
    gfm_hpo("report", fresh, check=True)
    for name in FIGURES:
        _check_png((fresh / "report" / name).read_bytes())
    assert pd.read_csv(fresh / "report" / "best_trials.csv").empty
    trials, curves, events = report.load_run(fresh)
    ax = figures.plot_trajectory(trials, _axes())
    assert "no completed trial yet" in _empty_message(ax) and len(_by_gid(ax, "failed")[0].get_xdata()) == 1
    assert "no completed hpo trial" in _empty_message(figures.plot_learning_curves(trials, curves, _axes()))
    ax = figures.plot_by_mpnn(trials, _axes())
    assert "no completed hpo trial" in _empty_message(ax)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["EGNN\n0 done, 1 failed", "PNA\n0 done"]
    assert [b.status for b in _bars(figures.plot_slice_timeline(trials, events, _axes()))] == ["failed"]


def test_bad_run_directories_are_one_line_errors(run, tmp_path):
    assert_one_line_error(gfm_hpo("report", tmp_path / "nowhere"), "nowhere: no such run directory")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(gfm_hpo("report", tmp_path / "empty"), "empty: not a run directory")
    (tmp_path / "file").write_text("x")
    assert_one_line_error(gfm_hpo("report", tmp_path / "file"), "file: not a run directory")
    (tmp_path / "new").mkdir()
    shutil.copy(run / "run.yaml", tmp_path / "new" / "run.yaml")
    assert_one_line_error(gfm_hpo("report", tmp_path / "new"), "new: no trial database yet")
    (tmp_path / "new" / "trials.db").write_bytes(b"not a database at all" * 100)
    assert_one_line_error(gfm_hpo("report", tmp_path / "new"), "trials.db: not a readable trial database")
    assert_one_line_error(gfm_hpo("report", run, "-o", tmp_path / "file"), "file: exists and is not a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "file", "new"]
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["run.yaml", "trials.db"]


def test_importing_the_report_module_stays_light():
    code = ("import sys, orchestrator.views.report, orchestrator.cli.hpo, orchestrator.cli.ensemble; "
            "print(sorted({'torch', 'pandas', 'matplotlib'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# -- the notebook -----------------------------------------------------------------------------

def test_notebook_executes_on_a_real_run(run, tmp_path):
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    first = notebook.cells[0]
    assert first.cell_type == "code" and "parameters" in first.metadata.get("tags", [])
    assert first.source.rstrip().endswith("RUN_DIR = None")
    # As shipped (RUN_DIR = None): the newest run where gfm-hpo launch puts them, runs/* of the folder
    # the notebook runs in (here a folder of our own, so that no run of the developer's is found).
    folder = tmp_path / "work"
    (folder / "runs").mkdir(parents=True)
    (folder / "runs" / "hpo-test").symlink_to(run)
    # A kernel spec of our own, pinned to this interpreter: the tests never depend on (or pick up)
    # whatever "python3" kernel the user's Jupyter configuration happens to name.
    spec = tmp_path / "kernels" / "gfm-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "gfm tests", "language": "python"}))
    specs = KernelSpecManager(kernel_dirs=[str(spec.parent)], ensure_native_kernel=False)
    manager = KernelManager(kernel_name="gfm-test", kernel_spec_manager=specs)
    NotebookClient(notebook, km=manager, timeout=300, startup_timeout=120,
                   resources={"metadata": {"path": str(folder)}}).execute()

    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    images = [out.data["image/png"] for out in outputs if "image/png" in out.get("data", {})]
    assert len(images) == 4
    for image in images:
        _check_png(base64.b64decode(image), min_size=(400, 200))
    tables = [out.data["text/html"] for out in outputs if "text/html" in out.get("data", {})]
    best = figures.best_trials(report.load_run(run)[0])
    (ranking,) = [t for t in tables if "rank" in t and "objective" in t]
    assert "<table" in ranking and all(f"<td>{o:.6f}</td>" in ranking for o in best["objective"])
    assert any("non-finite loss" in t for t in tables)  # the failures table
    assert str(run.resolve()) in "".join(out.get("text", "") for out in outputs if out.output_type == "stream")
