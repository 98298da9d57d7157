"""User-facing errors and the one convention every command line follows.

A problem with what the user gave us (a file, a flag, a config key) is a
`UserError`: it is printed as one line naming the file and the problem, the
process exits non-zero, and no traceback is shown. Anything else is a bug and
keeps its traceback.
"""
from __future__ import annotations

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
