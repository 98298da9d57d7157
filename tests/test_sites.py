"""Site files: the packaged sites, a user's own file, validation, and the batch script."""
from __future__ import annotations

import pytest

from orchestrator.launch.batch import batch_script
from orchestrator.sites import known_sites, load_site
from trainer.contract import typed
from trainer.contract.typed import ConfigError

LOCAL_SITE = """\
name: mybox
scheduler: local
launcher: mpiexec
ranks_per_node: 2
"""


def test_packaged_sites():
    assert known_sites() == ["frontier", "local", "local-slurm", "perlmutter"]
    frontier = load_site("frontier")
    assert (frontier.launcher, frontier.ranks_per_node, frontier.cpus_per_rank, frontier.gpus_per_rank) == (
        "srun", 8, 7, 1)
    assert frontier.launch_flags == ["--gpu-bind=closest"] and frontier.nodes_per_trial == 256
    assert frontier.account is None and frontier.requires == ["account"]
    perlmutter = load_site("perlmutter")
    assert (perlmutter.ranks_per_node, perlmutter.gpus_per_rank) == (4, 1)
    local = load_site("local")
    assert (local.scheduler, local.launcher, local.ranks_per_node) == ("local", "mpiexec", 1)
    assert load_site("local-slurm").mpi == "pmi2"
    assert frontier.origin.endswith("site_configs/frontier.yaml")


def test_a_users_site_file(tmp_path):
    path = tmp_path / "mybox.yaml"
    path.write_text(LOCAL_SITE)
    site = load_site(str(path))
    assert site.name == "mybox" and site.ranks_per_node == 2 and site.trainer_command == ["gfm-train"]
    assert site.origin == str(path)


@pytest.mark.parametrize("extra, message", [
    ("ranks_per_nod: 4\n", "ranks_per_nod: unknown key (did you mean 'ranks_per_node'?)"),
    ("cpus_per_rank: 0\n", "cpus_per_rank: must be at least 1, got 0"),
    ("launch_flags: [--ntasks=3]\n", "launch_flags[0]: --ntasks is set from the site's other fields"),
    ("walltime: 2h\n", "walltime: expected [D-]HH:MM:SS or minutes, got '2h'"),
    ("node_pattern: 'n[2-1]'\n", "node_pattern: descending range '2-1'"),
    ("requires: [acount]\n", "requires[0]: must be one of account, partition, qos"),
])
def test_mistakes_name_the_file_and_key(tmp_path, extra, message):
    path = tmp_path / "site.yaml"
    path.write_text(LOCAL_SITE + extra)
    with pytest.raises(ConfigError) as err:
        load_site(str(path))
    assert str(err.value).startswith(f"{path}: {message}")


def test_srun_needs_slurm(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text(LOCAL_SITE.replace("launcher: mpiexec", "launcher: srun"))
    with pytest.raises(ConfigError, match="launcher: srun needs scheduler: slurm"):
        load_site(str(path))


def test_unknown_site_lists_the_packaged_ones():
    with pytest.raises(ConfigError, match=r"frontire: no such file, and not a packaged site \(packaged: frontier, "):
        load_site("frontire")


def test_account_is_required_only_when_a_batch_job_is_written():
    frontier = load_site("frontier")  # a dry run reads the site without an account
    with pytest.raises(ConfigError) as err:
        batch_script(frontier, 8192, ["gfm-hpo", "run", "hpo"], "gfm-hpo", "hpo/manager-%j.out")
    assert str(err.value) == (f"{frontier.origin}: account: required to submit a batch job on frontier; "
                              "set it in the site file")
    script = batch_script(typed.replace_path(frontier, "account", "mat000"), 8192,
                          ["gfm-hpo", "run", "hpo dir"], "gfm-hpo", "hpo/manager-%j.out")
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    for directive in ["--nodes=8192", "--time=02:00:00", "--exclusive", "--no-kill", "--account=mat000",
                      "--partition=batch", "--output=hpo/manager-%j.out"]:
        assert f"#SBATCH {directive}" in lines
    assert "module load rocm/6.2.4" in lines
    assert lines[-1] == "exec gfm-hpo run 'hpo dir'"


def test_a_local_site_has_no_batch_job():
    with pytest.raises(ConfigError, match="local has no batch scheduler"):
        batch_script(load_site("local"), 2, ["gfm-hpo"], "x", "x.out")
