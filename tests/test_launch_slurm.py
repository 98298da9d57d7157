"""Trials on the real local Slurm (scripts/slurm-cluster.sh): slices, MPI worlds, kill, node faults.

Most tests run the launcher outside any allocation, so each trial is a Slurm
job of its own. `test_inside_an_allocation` runs the same executor as the main
process of a 4-node allocation (`salloc ... python this_file.py`), the way the
manager runs on Frontier: trials are then job steps.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

import slurm_probe
from orchestrator.allocation import Allocation, discover_nodes
from orchestrator.launch.executor import TrialExecutor
from orchestrator.launch.node_faults import node_failure
from orchestrator.sites import SiteConfig, load_site
from slurm_probe import make_trial
from trainer.contract import typed

pytestmark = pytest.mark.slurm


def slurm_site(**changes: object) -> SiteConfig:
    site = typed.replace_path(load_site("local-slurm"), "trainer_command", slurm_probe.command())
    for key, value in changes.items():
        site = typed.replace_path(site, key, value)
    return site


@pytest.fixture
def executor(slurm_cluster, tmp_path):
    with TrialExecutor(slurm_site(), tmp_path / "runinfo", max_trials=2, env=slurm_cluster.env) as executor:
        yield executor


@contextmanager
def node_down(cluster, node: str):
    cluster.run("scontrol", "update", f"nodename={node}", "state=down", "reason=test")
    try:
        yield
    finally:
        cluster.run("scontrol", "update", f"nodename={node}", "state=resume", check=False)
        cluster.wait_idle(node)


def running_steps(cluster) -> list[str]:
    return cluster.run("squeue", "--steps", "--noheader", "--format=%i %j %N").stdout.splitlines()


def check_two_worlds(trial_dirs: list[Path], slices: list[tuple[str, ...]]) -> None:
    """Each trial: 4 ranks, 2 per node, exactly on its slice; the slices never share a node."""
    for trial_dir, nodes in zip(trial_dirs, slices):
        seen = slurm_probe.ranks_seen(trial_dir)
        assert [(r["rank"], r["procid"], r["world_size"]) for r in seen] == [
            (0, "0", 4), (1, "1", 4), (2, "2", 4), (3, "3", 4)]
        where = [r["node"] for r in seen]
        assert sorted(set(where)) == sorted(nodes) and all(where.count(n) == 2 for n in nodes)
    assert not set(slices[0]) & set(slices[1])


def test_two_slices_run_concurrently(slurm_cluster, executor, tmp_path):
    alloc = Allocation(slurm_cluster.nodes, 2)
    handles = [executor.submit(make_trial(tmp_path / f"trial-{s.index}", sleep=1), s) for s in alloc.slices]
    assert [h.wait(120) for h in handles] == [0, 0]
    check_two_worlds([h.trial_dir for h in handles], [s.nodes for s in alloc.slices])
    # Concurrent, not one after the other: every rank of both trials started before either trial ended.
    started = max(p.stat().st_mtime for h in handles for p in h.trial_dir.glob("rank-*.json"))
    ended = min(json.loads((h.trial_dir / "launch.json").read_text())["finished"] for h in handles)
    assert started < ended
    assert all(node_failure(h.trial_dir, h.exit_code(), env=slurm_cluster.env) is None for h in handles)


def test_kill_reaches_every_rank_and_the_slice_is_reusable(slurm_cluster, executor, tmp_path):
    slice = Allocation(slurm_cluster.nodes, 2).slice(0)
    handle = executor.submit(make_trial(tmp_path / "long", sleep=300), slice)
    slurm_probe.wait_for_ranks(handle.trial_dir, 4, handle)
    assert any(" trial-long " in line for line in running_steps(slurm_cluster))
    code = handle.kill(grace_seconds=30)
    assert code == 128 + signal.SIGTERM  # srun's report of ranks that died of SIGTERM
    assert sorted(p.name for p in handle.trial_dir.glob("sigterm-*")) == [f"sigterm-{r}" for r in range(4)]
    assert slurm_probe.survivors(handle.trial_dir) == []
    assert not any(" trial-long " in line for line in running_steps(slurm_cluster))
    again = executor.submit(make_trial(tmp_path / "again"), slice)  # no pause: the same nodes at once
    assert again.wait(120) == 0
    assert sorted({r["node"] for r in slurm_probe.ranks_seen(again.trial_dir)}) == sorted(slice.nodes)
    assert node_failure(handle.trial_dir, handle.exit_code(), env=slurm_cluster.env) is None  # we killed it


def test_kill_forces_ranks_that_ignore_sigterm(slurm_cluster, executor, tmp_path):
    slice = Allocation(slurm_cluster.nodes, 2).slice(1)
    handle = executor.submit(make_trial(tmp_path / "hung", sleep=300, ignore_sigterm=True), slice)
    slurm_probe.wait_for_ranks(handle.trial_dir, 4, handle)
    assert handle.kill(grace_seconds=0.5) == 128 + signal.SIGKILL
    assert len(list(handle.trial_dir.glob("sigterm-*"))) == 4  # asked politely first
    assert slurm_probe.survivors(handle.trial_dir) == []
    assert not any(" trial-hung " in line for line in running_steps(slurm_cluster))


def test_trainer_failure_is_not_a_node_fault(slurm_cluster, executor, tmp_path):
    handle = executor.submit(make_trial(tmp_path / "bad", exit_code=2), Allocation(slurm_cluster.nodes, 2).slice(0))
    assert handle.wait(120) == 2
    assert node_failure(handle.trial_dir, handle.exit_code(), env=slurm_cluster.env) is None


def test_launch_onto_a_down_node_is_a_node_fault(slurm_cluster, tmp_path):
    # --immediate=1: outside an allocation a job on a DOWN node would otherwise wait in the queue.
    with TrialExecutor(slurm_site(immediate=1), tmp_path / "runinfo", max_trials=1, env=slurm_cluster.env) as executor:
        with node_down(slurm_cluster, "n4"):
            handle = executor.submit(make_trial(tmp_path / "down"), Allocation(slurm_cluster.nodes, 2).slice(1))
            assert handle.wait(120) not in (0, None)
            fault = node_failure(handle.trial_dir, handle.exit_code(), env=slurm_cluster.env)
    assert fault is not None and fault.nodes == ("n4",)
    assert "Required node not available" in fault.reason and " n4" in str(fault)


def test_inside_an_allocation(slurm_cluster, tmp_path):
    """The manager as an allocation's main process: trials are steps, kill() reaches their ranks,
    and a DOWN node refuses its step."""
    try:
        done = subprocess.run(["salloc", "--nodes=4", "--exclusive", "--no-kill", "--job-name=manager",
                               sys.executable, __file__, str(tmp_path)],
                              env=slurm_cluster.env, capture_output=True, text=True, timeout=300)
    finally:
        slurm_cluster.run("scontrol", "update", "nodename=n4", "state=resume", check=False)
        slurm_cluster.wait_idle("n4")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["codes"] == [0, 0] and report["inside_allocation"] is True
    assert (report["killed"], report["sigterms"], report["survivors"]) == (128 + signal.SIGTERM, 4, [])
    check_two_worlds([tmp_path / "trial-0", tmp_path / "trial-1"], [("n1", "n2"), ("n3", "n4")])
    argv = json.loads((tmp_path / "trial-0" / "launch.json").read_text())["argv"]
    assert not any(a.startswith(("--immediate", "--partition", "--overlap")) for a in argv)
    assert report["fault_nodes"] == ["n4"] and "Unable to create step" in report["fault"]


def _manager_inside_allocation(out: Path) -> None:
    """Run by test_inside_an_allocation under salloc: SLURM_JOB_NODELIST etc. come from Slurm."""
    env = dict(os.environ)
    site = slurm_site()
    alloc = Allocation(discover_nodes(site, None, env), 2)
    with TrialExecutor(site, out / "runinfo", max_trials=2, env=env) as executor:
        handles = [executor.submit(make_trial(out / f"trial-{s.index}", sleep=1), s) for s in alloc.slices]
        codes = [h.wait(120) for h in handles]
        long = executor.submit(make_trial(out / "long", sleep=300), alloc.slice(0))
        slurm_probe.wait_for_ranks(long.trial_dir, 4, long)
        killed = long.kill(grace_seconds=30)
        subprocess.run(["scontrol", "update", "nodename=n4", "state=down", "reason=test"], env=env, check=True)
        failed = executor.submit(make_trial(out / "on-down-node"), alloc.slice(1))
        failed.wait(120)
        fault = node_failure(failed.trial_dir, failed.exit_code(), env=env)
    report = {"codes": codes, "inside_allocation": executor.inside_allocation, "killed": killed,
              "sigterms": len(list(long.trial_dir.glob("sigterm-*"))), "survivors": slurm_probe.survivors(long.trial_dir),
              "fault_nodes": list(fault.nodes) if fault else None, "fault": str(fault)}
    (out / "report.json").write_text(json.dumps(report))


if __name__ == "__main__":
    _manager_inside_allocation(Path(sys.argv[1]))
