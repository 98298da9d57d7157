"""The shape of the house: no import cycles, small modules, every module drawn in docs/layout.png."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs"))

import layout  # noqa: E402  (docs/ is not a package)

MAX_LINES = 300


def test_no_import_cycles():
    assert layout.cycles(layout.import_graph()) == []


def test_cycles_are_found():
    # The check itself must be able to fail: a made-up graph with a cycle through three modules.
    graph = {"a": {"b": True}, "b": {"c": True}, "c": {"a": True}, "d": {"a": True}, "e": {"a": False}}
    assert layout.cycles(graph) == [["a", "b", "c"]]
    assert layout.cycles({"a": {"b": False}, "b": {"a": True}}) == []  # a lazy import breaks no start-up


def test_modules_are_small():
    long = {name: n for name, path in layout.modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"modules over {MAX_LINES} lines: split them by idea"


def test_every_module_has_a_place_in_the_picture():
    for name in layout.modules():
        layout.group_of(name)  # raises for a module no group names
