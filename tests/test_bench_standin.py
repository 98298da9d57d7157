"""The stand-in trainer of bench/bench_manager_scale.py keeps the trainer's contract, and the
benchmark's instrumented manager runs a (tiny) search end to end at 8192 simulated nodes."""
from __future__ import annotations

import math
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.trialdb import load_trials
from orchestrator.trials import runconfig
from orchestrator.trials.outcome import classify
from orchestrator.trials.runconfig import RunSettings
from search_spaces import load_space
from trainer.contract import typed
from trainer.contract.result import Result
from trainer.contract.trialconfig import write_trial

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import bench_manager_scale  # noqa: E402  (bench/ is not a package)
import manager_probe  # noqa: E402
from standin_trainer import plan_trial  # noqa: E402

BIG_MODEL = {"mpnn_type": "PNA", "num_conv_layers": 6, "hidden_dim": 2000, "num_fc_layers": 3, "fc_dim": 1000}


def trial_config(tmp_path: Path, params: dict):
    data = tmp_path / "dummy.bp"
    data.touch()
    settings = typed.build(RunSettings, {"site": "local", "data": [str(data)], "epochs": 4}, "test")
    space = load_space("table_iv")
    return space.apply(params, runconfig.base_trial(settings, threads=1))


def run_standin(trial_dir: Path) -> tuple[int, float]:
    launched = time.time()
    done = subprocess.run([sys.executable, str(BENCH / "standin_trainer.py"), "--median-seconds", "0.05",
                           str(trial_dir)], capture_output=True, text=True, timeout=60)
    return done.returncode, launched


def test_standin_completes_with_the_planned_objective(tmp_path):
    config = trial_config(tmp_path, {**BIG_MODEL, "num_conv_layers": 4, "hidden_dim": 800})
    name = next(f"{i:05d}" for i in range(1, 1000) if not plan_trial(config, f"{i:05d}", 0.05).fails)
    trial_dir = tmp_path / name
    write_trial(trial_dir, config)
    code, launched = run_standin(trial_dir)
    assert code == 0
    outcome = classify(trial_dir, code, launched)
    assert outcome.status == "completed", outcome.error
    plan = plan_trial(config, name, 0.05)
    assert outcome.objective == pytest.approx(min(plan.val_losses))
    result = Result.from_json(outcome.result)  # the trainer's own reader accepts it
    assert len(result.epochs) == 4 and result.stop_reason == "epoch budget"
    assert result.started_at <= launched + 5 and result.finished_at >= result.started_at


def test_standin_fails_on_nan_like_the_trainer(tmp_path):
    config = trial_config(tmp_path, BIG_MODEL)  # the biggest model: the likeliest to diverge
    name = next(f"{i:05d}" for i in range(1, 1000) if plan_trial(config, f"{i:05d}", 0.05).fails)
    trial_dir = tmp_path / name
    write_trial(trial_dir, config)
    code, launched = run_standin(trial_dir)
    assert code == 1
    outcome = classify(trial_dir, code, launched)
    assert outcome.status == "failed" and outcome.objective is None
    assert "non-finite loss at epoch" in outcome.error
    assert len(outcome.result["epochs"]) == len(plan_trial(config, name, 0.05).val_losses)


def test_standin_reports_a_bad_trial_file(tmp_path):
    trial_dir = tmp_path / "00001"
    trial_dir.mkdir()
    (trial_dir / "trial.yaml").write_text("data: {sources: []}\nmodel: {hidden_dimm: 3}\n")
    code, launched = run_standin(trial_dir)
    assert code == 2
    outcome = classify(trial_dir, code, launched)
    assert outcome.status == "failed" and "trial.yaml" in outcome.error


def test_draws_are_spread_and_some_fail(tmp_path):
    space, rng = load_space("table_iv"), random.Random(0)
    base = trial_config(tmp_path, BIG_MODEL)
    plans = [plan_trial(space.apply(space.sample(rng), base), f"{i:05d}", 1.0) for i in range(2000)]
    seconds = sorted(p.epoch_seconds for p in plans)
    assert seconds[-20] > 2.5 * seconds[1000]          # a heavy right tail (p99 vs median)
    assert 0.01 < sum(p.fails for p in plans) / len(plans) < 0.08
    assert all(math.isfinite(v) for p in plans if not p.fails for v in p.val_losses)


def test_bench_runs_the_real_manager_on_8192_nodes(tmp_path):
    trials = 40  # more than the 32 slices: slices are reused
    probe, run_dir, cpu = manager_probe.run_search("random", "random", trials, timeout=None, median_seconds=0.2,
                                                   seed=0, work=tmp_path)
    report = bench_manager_scale.analyse("random", probe, run_dir, cpu, width=20)
    summary = report["summary"]
    assert summary["trials"] == trials and summary["completed"] + summary["failed"] == trials
    assert 0 < summary["utilisation"] <= summary["ideal_utilisation"] <= 1
    assert sum(b["n"] for b in report["bins"]["tell"]) == trials
    assert sum(b["n"] for b in report["bins"]["gap"]) == trials - 32
    assert set(load_trials(run_dir)["slice_index"]) == set(range(32))
