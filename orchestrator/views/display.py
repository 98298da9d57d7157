"""The live progress line of a manager in the foreground: trials done, running, failed, best so far."""
from __future__ import annotations

import sys
import time
from typing import TextIO

MIN_INTERVAL_S = 1.0


class LiveStatus:
    """Called by the manager after every change; prints at most once a second, and only news."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self._last_line = ""
        self._last_time = 0.0

    def __call__(self, manager) -> None:
        if time.monotonic() - self._last_time < MIN_INTERVAL_S:
            return
        line = self.line(manager)
        if line == self._last_line:
            return
        self._last_line, self._last_time = line, time.monotonic()
        if self.tty:
            self.stream.write("\r\033[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    @staticmethod
    def line(manager) -> str:
        counts = manager.db.counts(manager.phase)
        total = sum(counts.values()) + manager.proposer.remaining(sum(counts.values()))
        done = counts["completed"] + counts["failed"]
        best = manager.db.best(manager.phase)
        elapsed = time.strftime("%H:%M:%S", time.gmtime(time.time() - manager.started))
        text = (f"[{elapsed}] {manager.phase}: {done}/{total} done ({counts['completed']} completed, "
                f"{counts['failed']} failed), {len(manager.running)} running on "
                f"{len(manager.allocation.slices)} slices")
        if best is not None:
            text += f", best {best[1]:.5g} (trial {best[0]})"
        return text

    def close(self, manager=None) -> None:
        """Print the final state (never throttled), and end the line on a terminal."""
        if manager is not None:
            self._last_time = 0.0
            self(manager)
        if self.tty and self._last_line:
            self.stream.write("\n")
            self.stream.flush()
