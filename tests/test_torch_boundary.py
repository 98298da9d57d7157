"""The manager never imports torch, and the trial contract imports neither torch, vesin nor adios2.

Both hold by structure (trainer/contract/ is the only trainer code the manager
imports at module level), and these tests check it the way it matters: every
module imported, then a dry run and a whole small search on the stand-in
trainer, all in one fresh process whose sys.modules is looked at last.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

from datasets import emt_only

BENCH = Path(__file__).resolve().parents[1] / "bench"
HEAVY = ("torch", "torch_geometric", "vesin", "adios2")


def loaded_heavy(script: str) -> dict:
    """Run `script` in a fresh interpreter; it prints a JSON object as its last line."""
    code = textwrap.dedent("""
        import importlib, json, pkgutil, sys

        def import_all(package):
            names = []
            for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
                if not info.name.endswith("__main__"):  # __main__ runs a command line
                    importlib.import_module(info.name)
                    names.append(info.name)
            return names

        def heavy():
            return sorted({m.split(".")[0] for m in sys.modules} & set(%r))
        """ % (HEAVY,)) + textwrap.dedent(script)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_trial_contract_imports_no_torch_vesin_or_adios2():
    out = loaded_heavy("""
        import search_spaces, site_configs, trainer.contract
        modules = import_all(trainer.contract)
        print(json.dumps({"modules": modules, "heavy": heavy()}))
        """)
    assert {"trainer.contract.errors", "trainer.contract.typed", "trainer.contract.atomicio",
            "trainer.contract.trialconfig", "trainer.contract.result"} <= set(out["modules"])
    assert out["heavy"] == []


@emt_only  # the manager opens the dataset (torch-free) but the stand-in never reads it
def test_the_manager_never_imports_torch(tmp_path, molecules_bp):
    site = tmp_path / "standin-site.yaml"
    site.write_text(yaml.safe_dump({
        "name": "standin", "scheduler": "local", "launcher": "none", "nodes_per_trial": 1,
        "node_pattern": "local[0001-0064]",
        "trainer_command": [sys.executable, str(BENCH / "standin_trainer.py"), "--median-seconds", "0.05"]}))
    data = molecules_bp  # checked by the launch as a trial would open it; the stand-in trains on nothing
    run_dir = tmp_path / "run"
    out = loaded_heavy(f"""
        import orchestrator
        modules = import_all(orchestrator)
        after_imports = heavy()
        from orchestrator.cli import hpo
        from orchestrator.trialdb import load_trials
        assert hpo.main(["launch", "--site", {str(site)!r}, "--nodes", "64", "--nodes-per-trial", "16",
                         "--dry-run"]) == 0
        assert hpo.main(["launch", "--site", {str(site)!r}, "--nodes", "2", "--max-evals", "4", "--epochs", "2",
                         "--space", "small", "--data", {str(data)!r}, "--run-dir", {str(run_dir)!r}]) == 0
        assert hpo.main(["status", {str(run_dir)!r}]) == 0
        statuses = sorted(load_trials({str(run_dir)!r})["status"])
        print(json.dumps({{"modules": modules, "after_imports": after_imports, "heavy": heavy(),
                          "statuses": statuses}}))
        """)
    assert {"orchestrator.manager", "orchestrator.cli.ensemble", "orchestrator.launch.executor",
            "orchestrator.search.backends", "orchestrator.views.report"} <= set(out["modules"])
    assert len(out["statuses"]) == 4 and set(out["statuses"]) <= {"completed", "failed"}  # the search ran
    assert "torch" not in out["after_imports"] and "torch" not in out["heavy"], out
