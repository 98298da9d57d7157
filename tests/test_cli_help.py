"""Every sub-command of gfm-hpo and gfm-ensemble explains each of its options and positionals."""
from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import pytest

from datasets import BIN
from orchestrator.cli import ensemble, hpo

REPO = Path(__file__).resolve().parent.parent
PARSERS = {"gfm-hpo": hpo._parser, "gfm-ensemble": ensemble._parser}


def sub_commands(parser: argparse.ArgumentParser) -> dict[str, tuple[argparse.ArgumentParser, str | None]]:
    (group,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    helps = {choice.dest: choice.help for choice in group._choices_actions}
    return {name: (sub, helps.get(name)) for name, sub in group.choices.items()}


@pytest.mark.parametrize("prog", PARSERS)
def test_every_option_and_positional_has_help(prog):
    missing = []
    for name, (parser, summary) in sub_commands(PARSERS[prog]()).items():
        if not summary:
            missing.append(f"{prog} {name}")
        for action in parser._actions:
            if not isinstance(action, argparse._HelpAction) and not (action.help or "").strip():
                missing.append(f"{prog} {name} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, f"no help text: {', '.join(missing)}"


def test_launch_help_lists_the_packaged_spaces_and_sites():
    done = subprocess.run([str(BIN / "gfm-hpo"), "launch", "--help"], capture_output=True, text=True, check=True)
    text = " ".join(done.stdout.split())  # argparse wraps lines
    spaces = sorted(p.stem for p in (REPO / "search_spaces").glob("*.yaml"))
    sites = sorted(p.stem for p in (REPO / "site_configs").glob("*.yaml"))
    assert {"demo", "small", "table_iv"} <= set(spaces) and {"frontier", "local"} <= set(sites)
    assert f"packaged search space ({', '.join(spaces)}) or a space YAML's path" in text
    assert f"packaged site ({', '.join(sites)}) or a site YAML's path" in text
    assert "--seed SEED seed of the optimiser" in text


@pytest.mark.parametrize("command", [["gfm-hpo", "status"], ["gfm-ensemble", "info"], ["gfm-ensemble", "evaluate"]])
def test_positionals_are_explained_where_users_read_them(command):
    done = subprocess.run([str(BIN / command[0]), command[1], "--help"], capture_output=True, text=True, check=True)
    positionals = done.stdout.split("positional arguments:")[1].split("options:")[0]
    entries = [line for line in positionals.splitlines() if line.startswith("  ") and not line.startswith("   ")]
    assert entries and all(len(line.split()) > 1 for line in entries), positionals
