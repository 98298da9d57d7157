"""Launch commands, and trials on the local site (mpiexec -n 2) started and killed through Parsl."""
from __future__ import annotations

import json
import signal

import pytest

import slurm_probe
from orchestrator.allocation import Allocation, Slice, discover_nodes
from orchestrator.launch.executor import TrialExecutor
from orchestrator.launch.launchers import trial_command
from orchestrator.launch.node_faults import node_failure
from orchestrator.sites import load_site
from slurm_probe import make_trial
from trainer.contract import typed


def test_frontier_command_inside_the_allocation():
    site = load_site("frontier")
    alloc = Allocation(discover_nodes(site, 8192, {}), site.nodes_per_trial)
    argv = trial_command(site, alloc.slice(31), "/lustre/hpo/trials/00031")
    assert argv == ["srun", "--nodes=256", "--ntasks=2048", "--ntasks-per-node=8",
                    "--nodelist=frontier[07937-08192]", "--exclusive", "--cpus-per-task=7",
                    "--gpus-per-task=1", "--gpu-bind=closest", "--job-name=trial-00031", "--kill-on-bad-exit=1",
                    "gfm-train", "/lustre/hpo/trials/00031"]
    # Outside an allocation every trial is its own job: then it needs the account and partition.
    outside = trial_command(typed.replace_path(site, "account", "mat000"), alloc.slice(0), "/x/trial-7",
                            inside_allocation=False)
    assert outside[outside.index("--kill-on-bad-exit=1") + 1:] == [
        "--partition=batch", "--account=mat000", "gfm-train", "/x/trial-7"]
    assert "--job-name=trial-7" in outside


def test_local_slurm_and_local_commands():
    argv = trial_command(load_site("local-slurm"), Slice(1, ("n3", "n4")), "/tmp/t/00002", inside_allocation=False)
    assert argv == ["srun", "--nodes=2", "--ntasks=4", "--ntasks-per-node=2", "--nodelist=n3,n4", "--exclusive",
                    "--cpus-per-task=1", "--job-name=trial-00002", "--mpi=pmi2", "--kill-on-bad-exit=1",
                    "--partition=debug", "--immediate=10", "gfm-train", "/tmp/t/00002"]
    local = load_site("local")
    assert trial_command(local, Slice(0, ("local-0001",)), "/t/1") == ["gfm-train", "/t/1"]
    assert trial_command(local, Slice(0, ("local-0001", "local-0002")), "/t/1") == [
        "mpiexec", "-n", "2", "gfm-train", "/t/1"]


# -- real launches on this machine ---------------------------------------------

def local_site():
    return typed.replace_path(load_site("local"), "trainer_command", slurm_probe.command())


def two_rank_slices() -> list[Slice]:
    site = load_site("local")
    return Allocation(discover_nodes(site, 4, {}), 2).slices  # 2 slices of 2 local "nodes" = 2 ranks each


@pytest.mark.mpi
def test_two_concurrent_trials_each_an_mpi_world_of_two(tmp_path):
    slices = two_rank_slices()
    with TrialExecutor(local_site(), tmp_path / "runinfo", max_trials=2) as executor:
        handles = [executor.submit(make_trial(tmp_path / f"trial-{s.index}"), s) for s in slices]
        codes = [h.wait(120) for h in handles]
    assert codes == [0, 0]
    for handle in handles:
        seen = slurm_probe.ranks_seen(handle.trial_dir)
        assert [(r["rank"], r["world_size"], r["procid"]) for r in seen] == [(0, 2, "0"), (1, 2, "1")]
        record = json.loads((handle.trial_dir / "launch.json").read_text())
        assert record["exit_code"] == 0 and record["argv"][:3] == ["mpiexec", "-n", "2"]
        assert node_failure(handle.trial_dir, handle.exit_code()) is None


@pytest.mark.mpi
def test_kill_sends_sigterm_to_every_rank_and_frees_the_slice(tmp_path):
    slice = two_rank_slices()[0]
    with TrialExecutor(local_site(), tmp_path / "runinfo", max_trials=2) as executor:
        handle = executor.submit(make_trial(tmp_path / "long", sleep=120), slice)
        slurm_probe.wait_for_ranks(handle.trial_dir, 2, handle)
        assert handle.exit_code() is None and not handle.done()
        code = handle.kill(grace_seconds=30)
        # mpiexec (hydra) reports a rank's death by signal N as exit status N; srun as 128+N.
        assert code == signal.SIGTERM and handle.exit_code() == code
        assert sorted(p.name for p in handle.trial_dir.glob("sigterm-*")) == ["sigterm-0", "sigterm-1"]
        assert slurm_probe.survivors(handle.trial_dir) == []
        assert json.loads((handle.trial_dir / "launch.json").read_text())["killed"] is True
        again = executor.submit(make_trial(tmp_path / "next"), slice)  # at once, on the same slice
        assert again.wait(120) == 0
        assert len(slurm_probe.ranks_seen(again.trial_dir)) == 2


@pytest.mark.mpi
def test_kill_forces_a_trial_that_ignores_sigterm(tmp_path):
    slice = two_rank_slices()[0]
    with TrialExecutor(local_site(), tmp_path / "runinfo", max_trials=1) as executor:
        handle = executor.submit(make_trial(tmp_path / "hung", sleep=120, ignore_sigterm=True), slice)
        slurm_probe.wait_for_ranks(handle.trial_dir, 2, handle)
        assert handle.kill(grace_seconds=0.5) == 128 + signal.SIGKILL
        assert len(list(handle.trial_dir.glob("sigterm-*"))) == 2  # it was asked first
        assert slurm_probe.survivors(handle.trial_dir) == []


@pytest.mark.mpi
def test_failing_trainer_and_single_rank_trial(tmp_path):
    with TrialExecutor(local_site(), tmp_path / "runinfo", max_trials=2) as executor:
        failing = executor.submit(make_trial(tmp_path / "bad", exit_code=2), two_rank_slices()[0])
        single = executor.submit(make_trial(tmp_path / "one", exit_code=2), Slice(0, ("local-0001",)))
        assert failing.wait(120) == 2 and single.wait(120) == 2
    assert node_failure(failing.trial_dir, failing.exit_code()) is None  # the trainer's own failure, not a node's
    assert [r["world_size"] for r in slurm_probe.ranks_seen(single.trial_dir)] == [1]
    assert json.loads((single.trial_dir / "launch.json").read_text())["argv"][0] != "mpiexec"


@pytest.mark.mpi
def test_shutdown_kills_what_is_still_running(tmp_path):
    executor = TrialExecutor(local_site(), tmp_path / "runinfo", max_trials=1).start()
    handle = executor.submit(make_trial(tmp_path / "left", sleep=120), two_rank_slices()[1])
    slurm_probe.wait_for_ranks(handle.trial_dir, 2, handle)
    executor.shutdown(grace_seconds=10)
    assert handle.done() and handle.exit_code() == signal.SIGTERM
    assert slurm_probe.survivors(handle.trial_dir) == []


# -- node faults from srun's own lines (the real Slurm cases are in test_launch_slurm.py) --

def ended_trial(tmp_path, stderr: str, killed: bool = False, launcher: str = "srun"):
    record = {"launcher": launcher, "nodes": ["n3", "n4"], "killed": killed}
    (tmp_path / "launch.json").write_text(json.dumps(record))
    (tmp_path / "launcher.err").write_text(stderr)
    return tmp_path


@pytest.mark.parametrize("line, nodes, meaning", [
    ("srun: error: Node failure on n[3-4]", ("n3", "n4"), "node failure on n3,n4"),
    ("srun: error: Task launch for StepId=12.0 failed on node n4: Communication connection failure",
     ("n4",), "task launch failed on n4"),
    ("srun: error: Nodes n3 are still not ready", ("n3",), "node not ready on n3"),
    # Unnamed culprits: Slurm cannot be asked here (no PATH), so the whole slice is named.
    ("srun: error: Unable to create step for job 8: Requested node configuration is not available",
     (), "step refused on one of n3,n4"),
])
def test_node_fault_patterns(tmp_path, line, nodes, meaning):
    trial = ended_trial(tmp_path, f"--> executable follows <--\nTraceback (most recent call last):\n{line}\n")
    fault = node_failure(trial, 1, env={"PATH": ""})
    assert fault is not None and fault.nodes == nodes
    assert str(fault) == f"{meaning}: {line}"


def test_what_is_not_a_node_fault(tmp_path):
    line = "srun: error: Node failure on n4\n"
    assert node_failure(ended_trial(tmp_path, line), 0) is None
    assert node_failure(ended_trial(tmp_path, line, killed=True), 1) is None  # the manager stopped it
    assert node_failure(ended_trial(tmp_path, line, launcher="mpiexec"), 1) is None
    # A rank's own output that merely mentions the words (srun forwards it into the same file).
    assert node_failure(ended_trial(tmp_path, "RuntimeError: srun: error: Node failure on n4\n"), 1) is None
    assert node_failure(tmp_path / "never-launched", 1) is None
