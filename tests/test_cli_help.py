"""The command lines explain themselves: every sub-command, option and positional has a help text,
in words a user knows (no "contract 1"), and the messages read well ("slab structures")."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cli import ensemble, hpo
from trainer import cli as train_cli
from trainer.data import cli as data_cli

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return {name: sub for action in parser._actions if isinstance(action, argparse._SubParsersAction)
            for name, sub in action.choices.items()}


def undocumented(parser: argparse.ArgumentParser) -> list[str]:
    """Options and positionals of `parser` without a help text (its subcommands are listed with theirs)."""
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            listed = {choice.dest for choice in action._choices_actions if choice.help}
            missing += [f"command {name}" for name in action.choices if name not in listed]
        elif not isinstance(action, argparse._HelpAction) and not (action.help or "").strip():
            missing.append("/".join(action.option_strings) or action.dest)
    return missing


def every_parser() -> dict[str, argparse.ArgumentParser]:
    parsers = {"gfm-train": train_cli.build_parser(), "gfm-data": data_cli.build_parser(),
               "gfm-hpo": hpo._parser(), "gfm-ensemble": ensemble._parser()}
    for prog, parser in list(parsers.items()):
        parsers.update({f"{prog} {name}": sub for name, sub in subcommands(parser).items()})
    return parsers


@pytest.mark.parametrize("command", sorted(every_parser()))
def test_every_option_and_positional_has_help(command):
    assert undocumented(every_parser()[command]) == []


@pytest.mark.parametrize("command", ["gfm-train", "gfm-data", "gfm-data convert", "gfm-data info"])
def test_commands_describe_themselves(command):
    assert every_parser()[command].description


def test_train_help_says_what_a_trial_directory_is():
    text = subprocess.run([BIN / "gfm-train", "--help"], capture_output=True, text=True, check=True).stdout
    assert "contract" not in text
    assert "trial directory holds trial.yaml" in text and "result.json" in text and "checkpoint.pt" in text


def test_generate_says_slab_structures(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        data_cli.main(["generate", "--kind", "slabs", "--count", "2", "--workers", "1", "-o", str(tmp_path / "s.extxyz")])
    assert exit_.value.code == 0
    assert "wrote 2 slab structures to" in capsys.readouterr().out


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
