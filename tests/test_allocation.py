"""Fixed slices, spares and bad-node exclusion; where the node list comes from."""
from __future__ import annotations

import re

import pytest

from orchestrator.allocation import Allocation, Event, Slice, discover_nodes
from orchestrator.hostlist import expand
from orchestrator.sites import load_site
from trainer.contract.errors import UserError


def nodes(n: int) -> list[str]:
    return [f"n{i:02d}" for i in range(1, n + 1)]


def test_contiguous_slices_and_spares():
    alloc = Allocation(nodes(11), 3)
    assert alloc.slices == [Slice(0, ("n01", "n02", "n03")), Slice(1, ("n04", "n05", "n06")),
                            Slice(2, ("n07", "n08", "n09"))]
    assert alloc.spares == ["n10", "n11"]
    assert alloc.slice(1).hostlist == "n[04-06]"
    assert [e.to_dict() for e in alloc.events] == [
        {"kind": "slice", "slice": 0, "node": None, "nodes": "n[01-03]", "reason": ""},
        {"kind": "slice", "slice": 1, "node": None, "nodes": "n[04-06]", "reason": ""},
        {"kind": "slice", "slice": 2, "node": None, "nodes": "n[07-09]", "reason": ""},
        {"kind": "spares", "slice": None, "node": None, "nodes": "n10,n11", "reason": ""}]


def test_exclude_takes_a_spare_then_retires_and_frees_the_healthy_nodes():
    alloc = Allocation(nodes(7), 3)  # slices n01-03, n04-06; spare n07
    new = alloc.exclude("n05", "step refused")
    assert new == [Event("exclude", 1, node="n05", reason="step refused"),
                   Event("replace", 1, node="n07", nodes="n[04,07,06]", reason="in place of n05")]
    assert alloc.slice(1) == Slice(1, ("n04", "n07", "n06"))  # same index, same position
    assert alloc.spares == []

    new = alloc.exclude("n02", "node failure")
    assert [e.kind for e in new] == ["exclude", "retire"]
    assert new[1].nodes == "n01,n03"
    assert [s.index for s in alloc.slices] == [1]
    assert alloc.retired == [0]
    assert alloc.spares == ["n01", "n03"]  # the retired slice's healthy nodes serve the others

    new = alloc.exclude("n06", "again")
    assert new[1] == Event("replace", 1, node="n01", nodes="n[04,07,01]", reason="in place of n06")
    assert alloc.excluded == {"n05": "step refused", "n02": "node failure", "n06": "again"}
    assert alloc.exclude("n06", "twice") == []  # idempotent
    assert alloc.events[-len(new):] == new


def test_excluding_a_spare_and_replaying_the_events():
    first = Allocation(nodes(8), 3)
    first.exclude("n08", "flaky spare")
    assert first.spares == ["n07"]
    first.exclude("n01", "down")
    second = Allocation(nodes(8), 3)
    for event in first.events:
        if event.kind == "exclude":
            second.exclude(event.node, event.reason)
    assert second.slices == first.slices and second.spares == first.spares
    assert second.events == first.events
    with pytest.raises(ValueError, match="n99"):
        first.exclude("n99", "not ours")


@pytest.mark.parametrize("node_list, m, message", [
    (nodes(4), 5, "nodes per trial (5) is more than the 4 nodes available"),
    (nodes(4), 0, "nodes per trial must be at least 1"),
    ([], 1, "no nodes"),
    (["n1", "n2", "n1"], 1, "node n1 appears twice"),
])
def test_impossible_layouts_are_user_errors(node_list, m, message):
    with pytest.raises(UserError, match=re.escape(message)):
        Allocation(node_list, m)


def test_discover_inside_a_slurm_allocation():
    site = load_site("frontier")
    env = {"SLURM_JOB_ID": "42", "SLURM_JOB_NODELIST": "frontier[00010-00013,00020]"}
    assert discover_nodes(site, None, env) == ["frontier00010", "frontier00011", "frontier00012",
                                               "frontier00013", "frontier00020"]
    assert discover_nodes(site, 2, env) == ["frontier00010", "frontier00011"]
    with pytest.raises(UserError, match="--nodes 6 is more than the 5 nodes of Slurm job 42"):
        discover_nodes(site, 6, env)


def test_discover_synthetic_lists_for_dry_runs_and_the_local_site():
    frontier = discover_nodes(load_site("frontier"), 8192, {})
    assert len(frontier) == 8192 and frontier[0] == "frontier00001" and frontier[-1] == "frontier08192"
    alloc = Allocation(frontier, 256)
    assert len(alloc.slices) == 32 and alloc.spares == []
    assert expand(alloc.slice(31).hostlist) == list(alloc.slice(31).nodes)
    assert alloc.slice(31).hostlist == "frontier[07937-08192]"
    assert discover_nodes(load_site("local"), 3, {"SLURM_JOB_NODELIST": "n[1-4]"}) == [
        "local-0001", "local-0002", "local-0003"]  # the local site ignores an outer Slurm job
    with pytest.raises(UserError, match="number of nodes must be given"):
        discover_nodes(load_site("local"), None, {})
    with pytest.raises(UserError, match=r"--nodes 9409 is more than the 9408 nodes of frontier's node_pattern"):
        discover_nodes(load_site("frontier"), 9409, {})
