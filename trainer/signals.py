"""SIGTERM/SIGUSR1 remembered from a trainer process's first moment, before torch is imported.

Importing torch and the models takes 1-4 s; a manager or an allocation that
stops a trial in that window would otherwise kill it with the default action
(exit -15, no result.json). `gfm-train` installs `early` first thing; the
trial's StopSignal (trainer/epoch.py) then takes over, and with it any
signal that came in between, so the trial ends "interrupted" (exit 75) as a
later signal would make it.
"""
from __future__ import annotations

import signal

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
_early: list[int] = []


def _remember(signum: int, frame) -> None:
    _early.append(signum)


def early() -> None:
    """Remember stop signals from now on (until a StopSignal takes over)."""
    _early.clear()
    for sig in STOP_SIGNALS:
        signal.signal(sig, _remember)


def take_early() -> int | None:
    """The first stop signal remembered since `early()`, forgotten here (a second trial in the same
    process must not inherit it)."""
    first = _early[0] if _early else None
    _early.clear()
    return first
