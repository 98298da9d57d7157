"""The circuit breaker: stop a phase whose trials cannot even start, instead of failing thousands.

A misconfigured site or trainer command (a module that does not load, a
wrong path, a launcher flag the machine refuses) fails every trial within
seconds of its launch, and the manager would go on creating and failing
trials, thousands of them at the paper's scale, each told to the optimiser.
A start-up failure is a failed trial from which the trainer never reported:
no result.json this attempt (the launcher or the program died before our
trainer ran) or a launch that raised. A failure the trainer reported itself
(a NaN, a setting the machine lacks, a model too big) is a fact about that
configuration, told to the optimiser, and ends the streak: otherwise a search
whose space holds many such configurations would be stopped for them. The
breaker opens after `limit` consecutive start-up failures *and* one on every
usable slice: a single bad slice keeps failing its own trials (node faults
are the allocation's business) while the others' trials reset the count.
5 by default: with the first wave launched on every slice at once, a broken
site has failed that many within seconds on any allocation of 5 slices or
more, and below that a few waves of seconds each; "every slice" makes it wait
at most one wave longer on a large one, never thousands of trials. The trials
still running are interrupted, so a resume after the fix runs them again.
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
        return (f"stopped: {self.streak} consecutive trials failed before the trainer reported, on every slice "
                f"(max_startup_failures {self.limit}); the site or trainer command looks misconfigured. "
                f"Last error: {self.last_error}. Fix it, then run gfm-hpo resume")


def failed_at_startup(status: str, result: dict | None) -> bool:
    """`result`: the trial's result.json from this attempt, None when the trainer wrote none."""
    return status == "failed" and result is None
