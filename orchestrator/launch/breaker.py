"""The circuit breaker: stop a phase whose trials cannot even start, instead of failing thousands.

A misconfigured site or trainer command (a module that does not load, a
wrong path, a launcher flag the machine refuses) fails every trial within
seconds of its launch, and the manager would go on creating and failing
trials, thousands of them at the paper's scale, each told to the optimiser.
A start-up failure is a failed trial that finished no epoch. The breaker
opens after `limit` consecutive ones *and* one on every usable slice: a
single bad slice keeps failing its own trials (node faults are the
allocation's business) while the others' completed trials reset the count,
and an occasional configuration that fails at start-up (too big for the
memory) is interrupted in its streak by the next one that trains. 5 by
default: with the first wave on every slice launched at once, a broken site
has failed every slice's first trial by then on up to 5 slices, and on more
the rule "every slice" waits for each to have shown it (one wave, never
thousands). The trials still running are interrupted, so a resume after the
fix runs them again.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from trainer.contract.errors import UserError


class CircuitOpen(UserError):
    """The phase was stopped by the breaker: exit status 1, the database resumable."""

    exit_code = 1


@dataclass
class CircuitBreaker:
    limit: int
    streak: int = 0
    slices: set[int] = field(default_factory=set)
    last_error: str | None = None

    def record(self, failed_at_startup: bool, slice_index: int, error: str | None) -> None:
        """After each finished trial: a start-up failure extends the streak, anything else ends it."""
        if not failed_at_startup:
            self.streak, self.slices, self.last_error = 0, set(), None
            return
        self.streak += 1
        self.slices.add(slice_index)
        self.last_error = error

    def tripped(self, usable_slices: set[int]) -> bool:
        return self.streak >= self.limit and usable_slices <= self.slices

    def message(self) -> str:
        return (f"stopped: {self.streak} consecutive trials failed before their first epoch, on every slice "
                f"(max_startup_failures {self.limit}); the site or trainer command looks misconfigured. "
                f"Last error: {self.last_error}. Fix it, then run gfm-hpo resume")


def failed_at_startup(status: str, result: dict | None) -> bool:
    return status == "failed" and not (result or {}).get("epochs")
