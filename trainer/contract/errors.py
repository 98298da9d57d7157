"""User-facing errors and the one convention every command line follows.

A problem with what the user gave us (a file, a flag, a config key) is a
`UserError`: it is printed as one line naming the file and the problem, the
process exits non-zero, and no traceback is shown. Anything else is a bug and
keeps its traceback.
"""
from __future__ import annotations

import re
import sys
from typing import Callable, NoReturn, Sequence


class UserError(Exception):
    """Bad input: printed as `prog: error: message`, exit status `exit_code`."""

    exit_code = 2


def run_cli(main: Callable[[Sequence[str] | None], int | None], prog: str,
            argv: Sequence[str] | None = None) -> NoReturn:
    """Run `main(argv)` and turn its outcome into an exit status."""
    try:
        status = main(argv)
    except UserError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(status or 0)


_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


def one_line(err: BaseException | str, limit: int | None = None, with_type: bool = False) -> str:
    """An error's text as one line, for messages that must stay one line.

    Parsers put the offending text, newlines included, into their messages and
    ADIOS2 adds terminal colour codes; only the words are kept, cut to `limit`
    characters. `with_type` prefixes the exception's class (when the text alone
    would not say what went wrong).
    """
    text = " ".join(_COLOUR.sub("", str(err)).split())
    if limit is not None and len(text) > limit:
        text = text[:limit - 3].rstrip() + "..."
    if with_type and isinstance(err, BaseException):
        return f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text


# ADIOS2 messages: "[date] [ADIOS2 EXCEPTION] <Engine> <BP4Reader> <OpenFiles> : text", nested when one
# layer rethrows another's, and ": iostream error" appended by each layer on the way out.
_ADIOS_HEADER = re.compile(r"\[[^\]]*\]\s*\[ADIOS2 (?:EXCEPTION|ERROR)\]\s*(?:<[^>]*>\s*)*:\s*")
_ADIOS_NOISE = re.compile(r"(?:\s*:\s*iostream error)+\s*$|,? in call to POSIX \w+: errno = \d+")


def adios_reason(err: BaseException | str, limit: int = 160) -> str:
    """The essential reason of an ADIOS2 exception, one line: the innermost layer's text, without
    its time stamp, the engine/class/function trail and the "iostream error" tails (~460 characters
    of which the user needs ~80)."""
    text = " ".join(_COLOUR.sub("", str(err)).split())
    parts = [p for p in _ADIOS_HEADER.split(text) if p.strip()]
    reason = _ADIOS_NOISE.sub("", parts[-1] if parts else text).strip().rstrip(":").strip()
    return one_line(reason or text, limit=limit)


_TORCH_REFUSAL = re.compile(r"WeightsUnpickler error:\s*(.*?)(?:\s*Please use `torch\.serialization|"
                            r"\s*Check the documentation of torch\.load|$)")


def load_refusal(err: BaseException | str, limit: int = 200) -> str:
    """Why `torch.load(weights_only=True)` refused a file, without torch's advice to retry with
    `weights_only=False` (which would execute whatever the file's pickle says: exactly what
    loading with weights only is there to prevent) or to allow-list the offending class."""
    text = " ".join(_COLOUR.sub("", str(err)).split())
    found = _TORCH_REFUSAL.search(text)
    if found and found.group(1).strip():
        return one_line("refused by weights_only loading: " + found.group(1).strip().rstrip("."), limit=limit)
    if "weights_only" in text:  # another wording of the same advice: keep only its first sentence
        return one_line(text.split(". ", 1)[0], limit=limit)
    return one_line(err, limit=limit, with_type=isinstance(err, BaseException))
