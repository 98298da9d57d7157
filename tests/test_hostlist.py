"""Hostlists: expand/compress, round trips, bad syntax, and agreement with Slurm's own parser."""
from __future__ import annotations

import random

import pytest

from orchestrator.hostlist import HostlistError, compress, expand
from trainer.contract.errors import UserError


@pytest.mark.parametrize("text, names", [
    ("frontier[00001-00004,00010],nid[001000-001003]",
     ["frontier00001", "frontier00002", "frontier00003", "frontier00004", "frontier00010",
      "nid001000", "nid001001", "nid001002", "nid001003"]),
    ("n1", ["n1"]),
    ("login", ["login"]),
    ("n[9-11]", ["n9", "n10", "n11"]),
    ("n[08-11]", ["n08", "n09", "n10", "n11"]),
    ("n[1-010]", ["n1", "n2", "n3", "n4", "n5", "n6", "n7", "n8", "n9", "n10"]),  # width of the first number
    ("x[1-2]-ib", ["x1-ib", "x2-ib"]),
    ("a[1-2]b[3-4]", ["a1b3", "a1b4", "a2b3", "a2b4"]),
    ("n[3,1-2],m5", ["n3", "n1", "n2", "m5"]),
    ("n1,n1", ["n1", "n1"]),
])
def test_expand(text, names):
    assert expand(text) == names


@pytest.mark.parametrize("names, text", [
    (["frontier00001", "frontier00002", "frontier00003", "frontier00004", "frontier00010",
      "nid001000", "nid001001", "nid001002", "nid001003"], "frontier[00001-00004,00010],nid[001000-001003]"),
    (["n1", "n2"], "n1,n2"),  # shorter than n[1-2]
    (["n1", "n3", "n4"], "n[1,3-4]"),
    (["n9", "n10", "n11"], "n[9-11]"),
    (["n9", "n010"], "n9,n010"),  # different padding cannot share a bracket
    (["n3", "n1", "n2"], "n[3,1-2]"),  # order is kept
    (["x1-ib", "x2-ib"], "x1-ib,x2-ib"),  # Slurm 22.05 rejects text after a bracket
    (["login", "n0", "n1", "n2"], "login,n[0-2]"),
])
def test_compress(names, text):
    assert compress(names) == text
    assert expand(text) == names


def test_round_trip_of_random_node_lists():
    rng = random.Random(7)
    for _ in range(300):
        prefix = rng.choice(["n", "nid", "frontier", "gpu-a", ""])
        width = rng.choice([0, 3, 5])
        numbers = rng.sample(range(0, 2000), rng.randint(1, 40))
        if rng.random() < 0.5:
            numbers.sort()
        names = [f"{prefix or 'x'}{n:0{width}d}" for n in numbers]
        assert expand(compress(names)) == names


@pytest.mark.parametrize("bad, problem", [
    ("n[4-2]", "descending range '4-2'"),
    ("n[]", "bad range '[]'"),
    ("n[a-b]", "bad range '[a-b]'"),
    ("n[1-2", "unclosed '['"),
    ("n1]", "']' without '['"),
    ("n[1[2]]", "nested '['"),
    ("a,,b", "empty name"),
    ("", "empty hostlist"),
    ("n [1-2]", "whitespace"),
])
def test_bad_syntax_is_a_user_error_naming_the_string(bad, problem):
    with pytest.raises(UserError) as err:
        expand(bad)
    assert isinstance(err.value, HostlistError)
    assert problem in str(err.value)
    if bad:
        assert repr(bad) in str(err.value)


def test_compress_rejects_names_that_are_not_names():
    with pytest.raises(HostlistError, match="not a node name"):
        compress(["n1", "n[2]"])


@pytest.mark.slurm
def test_agrees_with_scontrol(slurm_cluster):
    """Slurm's own parser (scontrol show hostnames / hostlist) is the reference."""
    cases = ["frontier[00001-00004,00010],nid[001000-001003]", "n[9-11]", "n[08-11]", "n[1-010]",
             "a[1-2]b[3-4]", "n[3,1-2],m5", "n1,n1,n2", "login,n[0-2]", "nid[000998-001002]"]
    rng = random.Random(3)
    cases += [compress([f"nid{n:06d}" for n in sorted(rng.sample(range(5000), 50))]) for _ in range(5)]
    for text in cases:
        theirs = slurm_cluster.run("scontrol", "show", "hostnames", text).stdout.split()
        assert expand(text) == theirs, text
        their_compressed = slurm_cluster.run("scontrol", "show", "hostlist", ",".join(theirs)).stdout.strip()
        assert expand(their_compressed) == theirs
        assert len(compress(theirs)) <= len(their_compressed), (compress(theirs), their_compressed)
        # What we hand to srun --nodelist, Slurm must read back as the same nodes.
        assert slurm_cluster.run("scontrol", "show", "hostnames", compress(theirs)).stdout.split() == theirs
