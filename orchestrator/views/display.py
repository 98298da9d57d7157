"""The live progress of a manager in the foreground: trials done, the best so far, and each running
trial's epoch and latest validation loss.

On a terminal it is a block of lines redrawn in place (the clock ticks); into a
file or a pipe (a batch job's log, the demo's output) a line is written only
when something other than the clock has changed, so a log does not fill with
identical lines while members train. The epochs come from the curves the
manager copies into the database every few seconds (Manager._update_progress).
"""
from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

from trainer.contract.text import number

from orchestrator.views.status import planned_epochs

MIN_INTERVAL_S = 1.0
MAX_LISTED = 6        # running trials named one by one; the rest are counted


class LiveStatus:
    """Called by the manager after every change; prints at most once a second, and only news."""

    def __init__(self, stream: TextIO | None = None, max_listed: int = MAX_LISTED):
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.max_listed = max_listed
        self._last_news: tuple[str, ...] = ()
        self._last_time = 0.0
        self._drawn = 0                                   # lines of the block on the terminal
        self._epochs: dict[int, int | None] = {}          # trial id -> epochs its trial.yaml asks for
        self._parents: dict[int, int | None] = {}         # trial id -> its HPO trial (ensemble members)

    def __call__(self, manager) -> None:
        if time.monotonic() - self._last_time < MIN_INTERVAL_S:
            return
        news = self.lines(manager)
        if news == self._last_news and not self.tty:
            return
        self._last_news, self._last_time = news, time.monotonic()
        clock = time.strftime("%H:%M:%S", time.gmtime(time.time() - manager.started))
        if self.tty:
            # Back to the first line of the previous block, clear to the end of the screen, redraw.
            # Lines are cut to the terminal's width: a wrapped line would throw the count off.
            width = shutil.get_terminal_size().columns
            block = [f"[{clock}] {news[0]}", *(f"    {line}" for line in news[1:])]
            self.stream.write("\r" + "\033[A" * max(0, self._drawn - 1) + "\033[J")
            self.stream.write("\n".join(line[:width - 1] for line in block))
            self._drawn = len(block)
        else:
            self.stream.write(f"[{clock}] {news[0]}" + "".join(f" | {line}" for line in news[1:]) + "\n")
        self.stream.flush()

    def lines(self, manager) -> tuple[str, ...]:
        """What the display says, without the clock: the phase's summary, then one entry per running
        trial (in slice order, at most `max_listed`, then how many more)."""
        counts = manager.db.counts(manager.phase)
        total = sum(counts.values()) + manager.proposer.remaining(sum(counts.values()))
        done = counts["completed"] + counts["failed"]
        summary = (f"{manager.phase}: {done}/{total} done ({counts['completed']} completed, {counts['failed']} failed), "
                   f"{len(manager.running)} running on {len(manager.allocation.slices)} slices")
        best = manager.db.best(manager.phase)
        if best is not None:
            summary += f", best {number(best[1])} by {self._label(manager, best[0])}"
        runs = [manager.running[index] for index in sorted(manager.running)]
        listed = runs[:self.max_listed]
        progress = manager.db.latest_epochs([run.trial.trial_id for run in listed])
        entries = []
        for run in listed:
            trial = run.trial
            self._parents.setdefault(trial.trial_id, trial.parent_id)
            if trial.trial_id not in self._epochs:
                self._epochs[trial.trial_id] = planned_epochs(trial.trial_dir)
            epoch, val_loss = progress.get(trial.trial_id, (None, None))
            planned = self._epochs[trial.trial_id] or "?"
            state = "starting" if epoch is None else f"epoch {epoch}/{planned}, val loss {number(val_loss)}"
            origin = f" ({trial.origin})" if trial.origin else ""   # the search: initial design or surrogate
            entries.append(f"{self._label(manager, trial.trial_id)}{origin}: {state}")
        if len(runs) > len(listed):
            entries.append(f"{len(runs) - len(listed)} more running")
        return (summary, *entries)

    def _label(self, manager, trial_id: int) -> str:
        """"trial 7" in the search; "member trial 10 (from HPO trial 6)" in the ensemble phase."""
        if trial_id not in self._parents:
            self._parents[trial_id] = manager.db.get(trial_id).parent_id
        parent = self._parents[trial_id]
        return f"trial {trial_id}" if parent is None else f"member trial {trial_id} (from HPO trial {parent})"

    def close(self, manager=None) -> None:
        """Print the final state (never throttled), and end the block on a terminal."""
        if manager is not None:
            self._last_time = 0.0
            self(manager)
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
