"""Plain-text output for terminals: aligned tables and numbers with a sensible number of digits.

Shared by both sides' commands (`gfm-hpo status`, `gfm-ensemble info/evaluate`),
so that every table is aligned the same way whatever the width of its values.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

MISSING = "-"


def number(value: Any, digits: int = 4) -> str:
    """`value` to `digits` significant digits (0.032273552152845594 -> 0.03227); ints and text as
    they are; None and NaN as "-"."""
    value = getattr(value, "item", lambda: value)()  # numpy scalars
    if value is None:
        return MISSING
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return MISSING
    return f"{value:.{digits}g}"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None,
          indent: str = "", gap: str = "  ") -> list[str]:
    """Lines of a table whose columns are as wide as their widest cell, header included.

    `align` has one letter per column, "l" (text) or "r" (numbers); by default a column is
    right-aligned when every cell in it is a number. Cells that are not strings go through
    `number`. Trailing spaces are dropped.
    """
    cells = [[c if isinstance(c, str) else number(c) for c in row] for row in rows]
    columns = len(header)
    if any(len(row) != columns for row in cells):
        raise ValueError(f"every row needs {columns} cells")
    if align is None:
        align = "".join("r" if rows and all(_is_number(row[i]) for row in rows) else "l" for i in range(columns))
    widths = [max([len(header[i])] + [len(row[i]) for row in cells]) for i in range(columns)]

    def line(row: Sequence[str]) -> str:
        text = gap.join(c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(row, widths, align))
        return (indent + text).rstrip()

    return [line(header)] + [line(row) for row in cells]


def _is_number(value: Any) -> bool:
    value = getattr(value, "item", lambda: value)()
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
