"""The command lines explain themselves: every option and positional has a help text, in words
a user knows (no "contract 1"), and the messages read well ("slab structures")."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from trainer import cli as train_cli
from trainer.data import cli as data_cli

BIN = Path(sys.executable).parent


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
        if not action.help or action.help == argparse.SUPPRESS:
            missing.append("/".join(action.option_strings) or action.dest)
    return missing


@pytest.mark.parametrize("command", ["gfm-train", "gfm-data", "gfm-data convert", "gfm-data info"])
def test_every_option_and_positional_has_help(command):
    # generate's options belong to the generator's own work and are checked there.
    data_parser = data_cli.build_parser()
    parsers = {"gfm-train": train_cli.build_parser(), "gfm-data": data_parser,
               **{f"gfm-data {name}": sub for name, sub in subcommands(data_parser).items()}}
    assert undocumented(parsers[command]) == []
    assert parsers[command].description


def test_train_help_says_what_a_trial_directory_is():
    text = subprocess.run([BIN / "gfm-train", "--help"], capture_output=True, text=True, check=True).stdout
    assert "contract" not in text
    assert "trial directory holds trial.yaml" in text and "result.json" in text and "checkpoint.pt" in text


def test_generate_says_slab_structures(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        data_cli.main(["generate", "--kind", "slabs", "--count", "2", "--workers", "1", "-o", str(tmp_path / "s.extxyz")])
    assert exit_.value.code == 0
    assert "wrote 2 slab structures to" in capsys.readouterr().out
