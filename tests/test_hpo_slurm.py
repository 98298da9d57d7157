"""gfm-hpo on a real Slurm (scripts/slurm-cluster.sh): batch submission, DDP trials on slices,
faults recorded as data, and resume after the manager is killed."""
from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from datasets import BIN, one_variant
from hpo_helpers import gfm_hpo, intervals_overlap, result_of
from orchestrator.trialdb import TrialDB, load_trials

SITE = Path(__file__).resolve().parent.parent / "site_configs" / "local-slurm.yaml"
# Every test here drives the shared local Slurm cluster: `-m "not slurm"` must leave them out.
pytestmark = pytest.mark.slurm


@pytest.fixture
def two_rank_site(tmp_path) -> Path:
    """local-slurm with one rank per node: a 2-node slice runs a 2-rank DDP trial."""
    site = yaml.safe_load(SITE.read_text())
    site.update(name="local-slurm-1rpn", ranks_per_node=1)
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(site))
    return path


def launch_args(site: Path, data: Path, run: Path, max_evals: int, *extra: str) -> list[str]:
    return ["launch", "--site", site, "--nodes", "4", "--nodes-per-trial", "2", "--max-evals", str(max_evals),
            "--epochs", "2", "--space", "small", "--data", data, "--run-dir", run,
            "--set", "training.batch_size=16", "--set", "model.num_radial=8", *extra]


def wait_until(predicate, timeout: float, what: str, step: float = 0.2):
    """Poll `predicate` until it returns something (not None/False/empty); return that."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def trial_in(run: Path, trial_id: int, status: str):
    if not (run / "trials.db").exists():
        return None
    trials = load_trials(run)
    rows = trials[(trials["trial_id"] == trial_id) & (trials["status"] == status)]
    return SimpleNamespace(**rows.iloc[0].to_dict()) if len(rows) else None


def assert_disjoint_when_concurrent(trials) -> None:
    rows = [r for r in trials.itertuples() if r.started_at is not None and r.finished_at is not None]
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            if intervals_overlap(a, b):
                assert set(a.nodes).isdisjoint(b.nodes), (a.trial_id, a.nodes, b.trial_id, b.nodes)


@one_variant  # each test is a campaign on the cluster: real data where present, else generated
def test_batch_job_runs_ddp_trials_on_disjoint_slices(tmp_path, slurm_cluster, two_rank_site, molecules_bp):
    run = tmp_path / "run"
    done = gfm_hpo(*launch_args(two_rank_site, molecules_bp, run, 4), env=slurm_cluster.env, check=True)
    job = done.stdout.split("submitted batch job ")[1].split(";")[0].strip()
    assert job.isdigit() and (run / "hpo.sbatch").exists()

    def job_gone(job: str) -> bool:
        queue = slurm_cluster.run("squeue", "--noheader", f"--jobs={job}", check=False)
        return queue.returncode != 0 or not queue.stdout.strip()

    wait_until(lambda: job_gone(job), 600, f"batch job {job} to finish")
    log = "\n".join(p.read_text() for p in run.glob("hpo-*.out"))
    trials = load_trials(run)
    assert len(trials) == 4 and set(trials["status"]) == {"completed"}, (trials[["status", "error"]], log)
    for row in trials.itertuples():
        result = result_of(row.trial_dir)
        assert result["world_size"] == 2
        assert sorted(result["hostnames"]) == sorted(row.nodes)  # the ranks ran on the slice's nodes
        assert set(row.nodes) <= set(slurm_cluster.nodes)
    assert set(trials["slice_index"]) == {0, 1}
    assert_disjoint_when_concurrent(trials)

    # The ensemble phase of the same run, as its own batch job: members are srun steps on the slices.
    # --min-steps 0: the members' epoch budget alone (the test is about the slices, not accuracy).
    done = subprocess.run([BIN / "gfm-ensemble", "train", run, "--top-k", "2", "--max-epochs", "3",
                           "--patience", "2", "--min-steps", "0"], env=slurm_cluster.env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    job = done.stdout.split("submitted batch job ")[1].split(";")[0].strip()
    wait_until(lambda: job_gone(job), 600, f"ensemble batch job {job} to finish")
    log = "\n".join(p.read_text() for p in run.glob("ensemble-*.out"))
    trials = load_trials(run)
    members = trials[trials["phase"] == "ensemble"]
    assert len(members) == 2 and set(members["status"]) == {"completed"}, log
    assert all(result_of(d)["world_size"] == 2 for d in members["trial_dir"])
    manifest = json.loads((run / "ensemble" / "manifest.json").read_text())
    assert sorted(m["trial_id"] for m in manifest["members"]) == sorted(members["trial_id"].tolist()), log
    assert_disjoint_when_concurrent(trials)


def _step_of(trial_dir: Path, env: dict) -> str | None:
    name = f"trial-{Path(trial_dir).name}"
    out = subprocess.run(["squeue", "--steps", "--noheader", "--format=%i %j"], env=env,
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        step, _, step_name = line.partition(" ")
        if step_name.strip() == name and not step.endswith(".batch"):
            return step
    return None


def _rank_pids(trial_dir: Path) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"gfm-train {trial_dir}$"], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


@one_variant
def test_faults_are_recorded_and_the_search_completes(tmp_path, slurm_cluster, two_rank_site, molecules_bp):
    """A step killed with SIGKILL, a trainer that raises, a NaN loss, a hung trial past its wall time."""
    if torch.cuda.is_available():
        pytest.skip("the 'raises' case asks for CUDA on a machine without it; this machine has CUDA")
    space = tmp_path / "space.yaml"
    benign = {"mpnn_type": "SchNet", "hidden_dim": 16, "learning_rate": 1e-3, "device": "cpu"}
    space.write_text(yaml.safe_dump({
        "backend": "cbo",
        "parameters": {"mpnn_type": {"choices": ["EGNN", "SchNet"]}, "hidden_dim": {"low": 8, "high": 24},
                       "learning_rate": {"low": 1e-4, "high": 1e30, "prior": "log-uniform"},
                       "device": {"choices": ["cpu", "cuda"], "path": "training.device"}},
        "initial_points": [benign, benign,                      # 1: SIGKILLed step, 2: hangs (SIGSTOP)
                           {**benign, "learning_rate": 1e30},   # 3: non-finite loss
                           {**benign, "device": "cuda"}],       # 4: raises (no CUDA here)
    }))
    run = tmp_path / "run"
    manager = subprocess.Popen([BIN / "gfm-hpo", *map(str, launch_args(
        two_rank_site, molecules_bp, run, 7, "--space", space, "--foreground", "--trial-walltime", "60",
        "--kill-grace", "3"))], env=slurm_cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Both trials start at once (two slices); their steps exist before Python even starts.
        first = wait_until(lambda: trial_in(run, 1, "running"), 120, "trial 1 to run", 0.05)
        second = wait_until(lambda: trial_in(run, 2, "running"), 120, "trial 2 to run", 0.05)
        killed = wait_until(lambda: _step_of(first.trial_dir, slurm_cluster.env), 120, "trial 1's step", 0.05)
        hung = wait_until(lambda: _step_of(second.trial_dir, slurm_cluster.env), 120, "trial 2's step", 0.05)
        slurm_cluster.run("scancel", "--signal=STOP", hung)   # a hang: alive, silent, past its wall time
        slurm_cluster.run("scancel", "--signal=KILL", killed)
        stdout, stderr = manager.communicate(timeout=900)
    finally:
        if manager.poll() is None:
            manager.kill()
    assert manager.returncode == 0, stdout + stderr
    trials = load_trials(run).set_index("trial_id")
    assert len(trials) == 7 and set(trials["status"]) <= {"completed", "failed"}, trials[["status", "error"]]
    errors = trials["error"]
    # srun reports the killed step as SIGKILL (137), or, when slurmstepd ends the step first (seen on a
    # loaded machine), exits 143 with "Force Terminated": either way the failure names the kill.
    assert trials.loc[1, "status"] == "failed", errors[1]
    assert any(word in errors[1] for word in ("SIGKILL", "137", "Force Terminated")), errors[1]
    assert trials.loc[2, "status"] == "failed" and "exceeded the trial wall time of 60 s" in errors[2]
    assert trials.loc[3, "status"] == "failed" and "non-finite loss" in errors[3]
    assert trials.loc[4, "status"] == "failed" and "no CUDA device" in errors[4]
    assert trials.loc[[1, 2, 3, 4], "objective"].isna().all()
    assert not _rank_pids(second.trial_dir), "the hung trial's ranks survived"
    # The manager never waits on a trial (contract 6): while trial 2 hung on its slice, the
    # other slice was reused for trial after trial.
    hung_row = trials.loc[2]
    others = trials[(trials["slice_index"] != hung_row["slice_index"])]
    during = others[(others["started_at"] > hung_row["started_at"]) & (others["finished_at"] < hung_row["finished_at"])]
    assert len(during) >= 2, trials[["slice_index", "started_at", "finished_at"]]
    assert_disjoint_when_concurrent(trials.reset_index())
    with TrialDB(run) as db:  # every trial's history ends in its final status
        for trial_id in trials.index:
            assert db.events(trial_id)[-1][1] == trials.loc[trial_id, "status"]


@one_variant
def test_resume_after_the_manager_is_killed(tmp_path, slurm_cluster, two_rank_site, molecules_bp):
    run = tmp_path / "run"
    args = launch_args(two_rank_site, molecules_bp, run, 6, "--foreground", "--kill-grace", "3")
    manager = subprocess.Popen([BIN / "gfm-hpo", *map(str, args)], env=slurm_cluster.env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: (run / "trials.db").exists() and bool((load_trials(run)["status"] == "completed").sum() >= 2),
                   600, "two completed trials")
        manager.send_signal(signal.SIGKILL)
        manager.wait(timeout=60)
    finally:
        if manager.poll() is None:
            manager.kill()
    before = load_trials(run)
    done_before = before[before["status"] == "completed"].set_index("trial_id")
    assert len(done_before) >= 2
    resumed = gfm_hpo("resume", run, "--foreground", env=slurm_cluster.env, timeout=900)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    after = load_trials(run).set_index("trial_id")
    assert len(after) == 6 and set(after["status"]) == {"completed"}, after[["status", "error"]]
    for trial_id, row in done_before.iterrows():  # kept, not run again
        assert after.loc[trial_id, "objective"] == row["objective"]
        assert after.loc[trial_id, "finished_at"] == row["finished_at"]
        assert after.loc[trial_id, "attempt"] == 1
    configs = [tuple(sorted(p.items())) for p in
               after[["mpnn_type", "num_conv_layers", "hidden_dim", "num_fc_layers", "fc_dim"]].to_dict("records")]
    assert len(set(configs)) == 6, "a configuration was evaluated twice"
    assert_disjoint_when_concurrent(after.reset_index())
