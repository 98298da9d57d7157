"""Slurm hostlists: `frontier[00001-00004,00010],nid001000` <-> a list of node names.

Node lists arrive from Slurm compressed (SLURM_JOB_NODELIST, sinfo) and go back to
it compressed (`srun --nodelist`), so both directions live here and round-trip:
`expand(compress(names)) == names`. Order and duplicates are kept, as Slurm does.

Grammar (a superset of Slurm 22.05, which rejects text after a bracket):
    hostlist := item ("," item)*          commas inside brackets belong to the brackets
    item     := text ("[" ranges "]" text)*   several bracket groups: cartesian product
    ranges   := range ("," range)*
    range    := digits | digits "-" digits    the width of the first number sets the padding
"""
from __future__ import annotations

import itertools
import re
from typing import Iterable

from trainer.contract.errors import UserError

_RANGE = re.compile(r"(\d+)(?:-(\d+))?")
# A node name as compress() sees it: everything before its last run of digits, the digits, the rest.
_NAME = re.compile(r"(.*?)(\d+)(\D*)")


class HostlistError(UserError):
    """A hostlist string that cannot be parsed."""


def expand(hostlist: str) -> list[str]:
    """All node names of `hostlist`, in order (duplicates kept)."""
    text = hostlist.strip()
    if not text:
        raise HostlistError(f"empty hostlist {hostlist!r}")
    names: list[str] = []
    for item in _split_items(text, hostlist):
        names.extend(_expand_item(item, hostlist))
    return names


def compress(names: Iterable[str]) -> str:
    """The shortest hostlist that expands to exactly `names` (same order).

    Consecutive names that differ only in their trailing number share one bracket:
    ["n1", "n2", "n3", "n7"] -> "n[1-3,7]". Only neighbours are merged, so the
    order survives the round trip. The result is always something srun accepts.
    """
    groups: list[tuple[str, int, list[int]]] = []  # prefix, padding width, numbers
    plain: list[str | None] = []  # a name with no digits, or None where a group sits
    for name in names:
        if not name or any(ch in name for ch in "[],") or name.strip() != name:
            raise HostlistError(f"{name!r} is not a node name")
        match = _NAME.fullmatch(name)
        if match is None or match.group(3):
            # No digits, or text after them: Slurm 22.05 rejects "x[1-2]-ib", so such names stay whole.
            groups.append(("", 0, []))
            plain.append(name)
            continue
        prefix, digits, _ = match.groups()
        number = int(digits)
        width = len(digits) if digits.startswith("0") else 0  # 0: fits any width up to len(digits)
        if plain and plain[-1] is None:
            last_prefix, last_width, numbers = groups[-1]
            merged = _merge_width(last_width, numbers, width, len(digits))
            if last_prefix == prefix and merged is not None:
                numbers.append(number)
                groups[-1] = (prefix, merged, numbers)
                continue
        groups.append((prefix, width, [number]))
        plain.append(None)
    parts = []
    for (prefix, width, numbers), name in zip(groups, plain):
        if name is not None:
            parts.append(name)
        else:
            # Putting a lone number into an existing bracket always saves the prefix, so
            # the best form of a group is all in one bracket or, when shorter, all spelled out.
            bracket = f"{prefix}[{_ranges(numbers, width)}]"
            spelled = ",".join(f"{prefix}{n:0{width}d}" for n in numbers)
            parts.append(min(bracket, spelled, key=len))
    return ",".join(parts)


# -- internals ---------------------------------------------------------------

def _split_items(text: str, original: str) -> list[str]:
    """Split at the commas that are outside brackets."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
            if depth > 1:
                raise HostlistError(f"nested '[' in hostlist {original!r}")
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise HostlistError(f"']' without '[' in hostlist {original!r}")
        elif ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    if depth:
        raise HostlistError(f"unclosed '[' in hostlist {original!r}")
    items.append(text[start:])
    for item in items:
        if not item:
            raise HostlistError(f"empty name in hostlist {original!r}")
        if any(ch.isspace() for ch in item):
            raise HostlistError(f"whitespace inside hostlist {original!r}")
    return items


def _expand_item(item: str, original: str) -> list[str]:
    # re.split with a group keeps the bracket contents at the odd positions.
    pieces = re.split(r"\[([^\]]*)\]", item)
    choices: list[list[str]] = []
    for i, piece in enumerate(pieces):
        choices.append(_expand_ranges(piece, original) if i % 2 else [piece])
    names = ["".join(parts) for parts in itertools.product(*choices)]
    if any(not name for name in names):
        raise HostlistError(f"empty name in hostlist {original!r}")
    return names


def _expand_ranges(ranges: str, original: str) -> list[str]:
    out = []
    for part in ranges.split(","):
        match = _RANGE.fullmatch(part)
        if match is None:
            raise HostlistError(f"bad range '[{ranges}]' in hostlist {original!r}: expected numbers like 1-4 or 007")
        low_text, high_text = match.groups()
        low = int(low_text)
        high = low if high_text is None else int(high_text)
        if high < low:
            raise HostlistError(f"descending range '{part}' in hostlist {original!r}")
        out.extend(f"{n:0{len(low_text)}d}" for n in range(low, high + 1))
    return out


def _merge_width(width: int, numbers: list[int], new_width: int, new_len: int) -> int | None:
    """The padding width a bracket needs after adding a number, or None when impossible.

    A zero-padded number ("007") pins the width; an unpadded one ("7", "10")
    fits any width from 0 up to its own length.
    """
    if width == 0 and new_width == 0:
        return 0
    target = width or new_width
    if new_width and new_width != target:
        return None
    if not new_width and new_len < target:
        return None  # "7" cannot be written with the width of "007"
    if not width and any(len(str(n)) < target for n in numbers):
        return None
    return target


def _ranges(numbers: list[int], width: int) -> str:
    parts, start = [], 0
    for i in range(1, len(numbers) + 1):
        if i == len(numbers) or numbers[i] != numbers[i - 1] + 1:
            low, high = numbers[start], numbers[i - 1]
            parts.append(f"{low:0{width}d}" if low == high else f"{low:0{width}d}-{high:0{width}d}")
            start = i
    return ",".join(parts)
