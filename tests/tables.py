"""Checking the aligned tables that commands print (trainer/contract/text.py makes them)."""
from __future__ import annotations


def assert_columns_aligned(lines: list[str], *right_aligned: str) -> None:
    """Every row of a table (lines[1:]) ends each right-aligned column where its header (lines[0]) does."""
    head, rows = lines[0], lines[1:]
    assert rows
    for name in right_aligned:
        end = head.index(name) + len(name)
        for row in rows:
            assert row[end - 1] != " " and (len(row) == end or row[end] == " "), (name, head, row)
