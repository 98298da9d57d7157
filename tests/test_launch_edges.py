"""gfm-hpo launch/status on bad input and at the edges: every problem one line, nothing left half-made."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from datasets import emt_only
from hpo_helpers import assert_one_line_error, gfm_hpo
from orchestrator.launch.breaker import CircuitBreaker, failed_at_startup
from orchestrator.phases.run import PhaseFailed, check_outcome
from orchestrator.trials.db import TrialDB


def standin_site(tmp_path, script: str, name: str = "site.yaml") -> str:
    """A local site (launcher none) whose trainer is `script`, run as `python SCRIPT TRIAL_DIR`."""
    program = tmp_path / f"{name}.py"
    program.write_text(script)
    site = tmp_path / name
    site.write_text(yaml.safe_dump({"name": "standin", "scheduler": "local", "launcher": "none",
                                    "node_pattern": "local[0001-0064]",
                                    "trainer_command": [sys.executable, str(program)]}))
    return str(site)


# A trainer that reads nothing and reports the same failure for every trial, after one "epoch".
FAILS_LATE = """
import json, sys, time
from pathlib import Path
epoch = {"epoch": 1, "train_loss": 1.0, "val_loss": 1.0, "val_energy_mae": 1.0, "val_force_mae": 1.0,
         "seconds": 0.1, "graphs_per_second": 1.0, "learning_rate": 0.001, "steps": 1}
Path(sys.argv[1], "result.json").write_text(json.dumps(
    {"name": "t", "status": "failed", "error": "out of patience with this data", "epochs": [epoch],
     "started_at": time.time(), "finished_at": time.time()}))
sys.exit(1)
"""


@emt_only
def test_a_file_that_is_not_a_dataset_is_refused_before_anything_is_written(tmp_path, molecules_bp):
    fake = tmp_path / "fake.bp"
    fake.write_text("not ADIOS2\n" * 20)
    run = tmp_path / "run"
    done = gfm_hpo("launch", "--nodes", "1", "--data", molecules_bp, fake, "--run-dir", run)
    assert_one_line_error(done, f"{fake}: not a readable ADIOS2 file", "not a .bp file")
    assert "ADIOS2 EXCEPTION" not in done.stderr and "<Engine>" not in done.stderr
    assert len(done.stderr) < 300
    assert not run.exists()
    empty_dir = tmp_path / "empty.bp"
    empty_dir.mkdir()
    done = gfm_hpo("launch", "--nodes", "1", "--data", empty_dir, "--run-dir", run)
    assert_one_line_error(done, f"{empty_dir}: not a readable ADIOS2 file", "No such file or directory")
    assert not run.exists()


@emt_only
def test_every_trial_failing_for_one_reason_is_a_failed_launch(tmp_path, molecules_bp):
    run = tmp_path / "run"
    done = gfm_hpo("launch", "--site", standin_site(tmp_path, FAILS_LATE), "--nodes", "2", "--max-evals", "3",
                   "--space", "demo", "--data", molecules_bp, "--run-dir", run)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == ["gfm-hpo: error: all 3 hpo trials failed: out of patience with this data"], done.stderr
    report = json.loads(gfm_hpo("status", run, "--json", check=True).stdout)
    assert report["phases"]["hpo"]["counts"]["failed"] == 3


BAD_SPACES = {
    "unknown optimiser setting": ("parameters:\n  hidden_dim: {low: 8, high: 16}\noptimizer: {surogate_model: RF}\n",
                                  ["optimizer", "surogate_model"]),
    "integer range of one value": ("parameters:\n  hidden_dim: {low: 8, high: 8}\n",
                                   ["parameters.hidden_dim.high", "low and high are both 8", "fixed:"]),
}


@emt_only
@pytest.mark.parametrize("case", sorted(BAD_SPACES))
def test_a_failed_launch_leaves_no_run_directory(tmp_path, molecules_bp, case):
    text, fragments = BAD_SPACES[case]
    space = tmp_path / "space.yaml"
    space.write_text(text)
    run = tmp_path / "run"
    done = gfm_hpo("launch", "--nodes", "1", "--space", space, "--data", molecules_bp, "--run-dir", run)
    assert_one_line_error(done, str(space), *fragments)
    assert not run.exists() and list(tmp_path.iterdir()) == [space]  # no temporary sibling either


@emt_only
def test_a_site_without_its_account_fails_before_the_run_directory(tmp_path, molecules_bp):
    run = tmp_path / "run"
    done = gfm_hpo("launch", "--site", "frontier", "--nodes", "8", "--nodes-per-trial", "4", "--data", molecules_bp, "--run-dir", run)
    assert_one_line_error(done, "frontier.yaml: account: required to submit a batch job")
    assert not run.exists()


@emt_only
def test_unusable_run_directories(tmp_path, molecules_bp, readonly_dir):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    done = gfm_hpo("launch", "--nodes", "1", "--data", molecules_bp, "--run-dir", a_file)
    assert_one_line_error(done, f"{a_file}: not a directory")
    done = gfm_hpo("launch", "--nodes", "1", "--data", molecules_bp, "--run-dir", a_file / "run")
    assert_one_line_error(done, f"{a_file} is not a directory")
    done = gfm_hpo("launch", "--nodes", "1", "--data", molecules_bp, "--run-dir", readonly_dir / "run")
    assert_one_line_error(done, f"{readonly_dir / 'run'}: cannot create the run directory")
    assert a_file.read_text() == "x"


@pytest.mark.parametrize("content", [b"\x00garbage" * 512, b""])
def test_status_on_a_damaged_database_is_one_line(tmp_path, content):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.yaml").write_text("site: local\ndata: [x.bp]\n")
    (run / "trials.db").write_bytes(content)
    for command in ("status", "report"):
        done = gfm_hpo(command, run)
        assert_one_line_error(done, f"{run / 'trials.db'}: not a readable trial database")
    assert (run / "trials.db").read_bytes() == content


@emt_only
def test_the_circuit_breaker_stops_a_broken_trainer_command_and_the_run_resumes(tmp_path, molecules_bp):
    site = standin_site(tmp_path, "import sys\nprint('module gfm-env not found', file=sys.stderr)\nsys.exit(127)\n")
    run = tmp_path / "run"
    done = gfm_hpo("launch", "--site", site, "--nodes", "2", "--max-evals", "30", "--space", "demo",
                   "--data", molecules_bp, "--run-dir", run)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("gfm-hpo: error: stopped: ") and "failed before the trainer reported, on every slice" in lines[0]
    assert "exited with status 127" in lines[0] and "module gfm-env not found" in lines[0]
    counts = json.loads(gfm_hpo("status", run, "--json", check=True).stdout)["phases"]["hpo"]["counts"]
    assert 5 <= counts["failed"] <= 7 and counts["completed"] == 0 and counts["running"] == 0, counts
    # Fixed (here: the stand-in trainer instead), the same run directory carries on to its end.
    bench = Path(__file__).resolve().parents[1] / "bench" / "standin_trainer.py"
    spec = yaml.safe_load(Path(site).read_text())
    spec["trainer_command"] = [sys.executable, str(bench), "--median-seconds", "0.05"]
    Path(site).write_text(yaml.safe_dump(spec))
    done = gfm_hpo("resume", run, check=True)
    counts = json.loads(gfm_hpo("status", run, "--json", check=True).stdout)["phases"]["hpo"]["counts"]
    assert sum(counts.values()) == 30 and counts["completed"] >= 20, counts


def test_breaker_needs_the_streak_and_every_slice():
    breaker = CircuitBreaker(limit=3)
    for _ in range(5):
        breaker.record(True, 0, "boom")
    assert not breaker.tripped({0, 1})  # one bad slice alone never stops the phase
    breaker.record(True, 1, "boom")
    assert breaker.tripped({0, 1}) and "Last error: boom" in breaker.message()
    breaker.record(False, 0, None)  # a trial the trainer reported on ends the streak
    breaker.record(True, 0, "x")
    breaker.record(True, 1, "x")
    assert not breaker.tripped({0, 1})
    breaker.record(True, 1, "x")
    assert breaker.tripped({0, 1})
    assert failed_at_startup("failed", None)  # the trainer never reported: the launch or the program
    assert not failed_at_startup("failed", {"epochs": [], "error": "no CUDA device"})  # the trainer's own word
    assert not failed_at_startup("completed", {"epochs": [{"epoch": 1}]}) and not failed_at_startup("interrupted", None)


def test_a_phase_of_failures_is_summed_up_once(tmp_path):
    with TrialDB(tmp_path) as db:
        check_outcome(db, "hpo")  # nothing ran: nothing to say
        for k, error in enumerate(["no CUDA device", "no CUDA device", "non-finite loss at epoch 1"]):
            trial = db.create_trial("hpo", {"k": k})
            db.mark_running(trial, 0, ["n1"])
            db.mark_finished(trial, "failed", error=error)
        with pytest.raises(PhaseFailed, match=r"^all 3 hpo trials failed, for 2 different reasons "
                                              r"\(see gfm-hpo status\); the most common \(2\): no CUDA device$"):
            check_outcome(db, "hpo")
        trial = db.create_trial("hpo", {"k": 3})
        db.mark_running(trial, 0, ["n1"])
        db.mark_finished(trial, "completed", objective=0.5)
        check_outcome(db, "hpo")  # one success: the search worked


@emt_only
def test_a_refused_batch_submission_leaves_no_run_directory(tmp_path, molecules_bp):
    env = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
    env["PATH"] = str(tmp_path / "no-slurm-here")  # sbatch cannot be found: the submission fails last
    run = tmp_path / "run"
    done = gfm_hpo("launch", "--site", "local-slurm", "--nodes", "2", "--data", molecules_bp, "--run-dir", run,
                   env=env)
    assert_one_line_error(done, "sbatch, which is not on PATH")
    assert not run.exists() and not list(tmp_path.glob(".run.tmp-*"))


@emt_only
def test_a_dataset_without_validation_samples_is_refused_at_launch(tmp_path, session_data, variant):
    no_val = session_data.dataset(variant, "molecules", 40, 0.0, 0.1)
    done = gfm_hpo("launch", "--nodes", "1", "--data", no_val, "--run-dir", tmp_path / "run")
    assert_one_line_error(done, f"{no_val}: no valset samples (convert with --val > 0)")
    assert not (tmp_path / "run").exists()
