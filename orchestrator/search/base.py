"""One ask/tell interface over the optimiser backends (cbo, skopt-gp, random).

The manager owns the loop (contract 6): it asks for configurations when slices
are free and tells the results of finished trials, in any order (its proposer
holds them and tells them in one call before it asks again). The objective is
the trial's best validation loss, LOWER is better; `None` means the trial
FAILED (crash, timeout, NaN) and is reported to the backend as a failure,
never as a made-up number (contract 3). Non-finite objectives count as failures.

Three things every backend gets from `SearchBase`, whatever its own habits:
- configurations come back as plain python values in the space's order;
- a configuration is never proposed twice: everything asked, told or marked
  pending is remembered, a repeat from the backend (DeepHyper's ask(1) returns
  the same point until the next tell; its qUCBd batches may repeat a point)
  is replaced by asking the backend once more, then by a random point;
- foreign configurations (told after a resume, or `add_pending` for trials
  still running) are accepted like any other.

This module and its backends (backends.py, where `make_optimizer` picks one)
never import torch; DeepHyper and scikit-optimize are imported only when their
backend is made.
"""
from __future__ import annotations

import logging
import math
import random
from typing import TYPE_CHECKING, Any, Protocol, Sequence

from search_spaces import Params, SearchSpace
from trainer.contract.errors import UserError

if TYPE_CHECKING:
    from orchestrator.trials.db import TrialDB

log = logging.getLogger(__name__)

Result = tuple[Params, float | None]
Asked = tuple[Params, str]   # a configuration and its origin (orchestrator.trials.schema.ORIGINS)
FRESH_POINT_TRIES = 1000  # random draws before concluding a (discrete) space is exhausted


class TooManyFailures(UserError):
    """The backend's own failure quota (set in the space file) was reached."""


class Optimizer(Protocol):
    def ask(self, n: int) -> list[Params]:
        """`n` new configurations (plain python types), none seen before while the space allows."""

    def ask_with_origin(self, n: int) -> list[Asked]:
        """`ask`, each configuration with where it came from (see SearchBase.ask_with_origin)."""

    def tell(self, results: Sequence[Result]) -> None:
        """Finished trials: (config, best validation loss) or (config, None) for a failure."""

    def add_pending(self, configs: Sequence[Params]) -> None:
        """Configurations already being evaluated that this optimiser did not ask for (resume)."""

    exhausted: bool  # True once `ask` returned fewer than asked: every configuration was proposed


class SearchBase:
    """Bookkeeping shared by the backends; a backend implements `_propose`, `_learn`, `_origin`, `_exclude`."""

    def __init__(self, space: SearchSpace, seed: int):
        self.space = space
        self._rng = random.Random(seed)
        self._seen: set[tuple] = set()
        self._pending: dict[tuple, Params] = {}
        self.num_told = 0
        self.num_failed = 0
        self.num_repeats = 0  # proposals from the backend dropped because they were seen before
        self.exhausted = False  # every configuration of a (small, discrete) space has been proposed
        self.settings: dict[str, Any] = {}  # the backend's effective settings, for the record

    # -- the interface ----------------------------------------------------------

    def ask(self, n: int) -> list[Params]:
        return [params for params, _ in self.ask_with_origin(n)]

    def ask_with_origin(self, n: int) -> list[Asked]:
        """`ask`, each configuration with where it came from: "initial_design" (the backend's random
        points before its surrogate is fitted), "surrogate", or "random" (random search, or a random
        point standing in for a repeated proposal)."""
        if n < 0:
            raise ValueError(f"ask(n) needs n >= 0, got {n}")
        chosen: list[Asked] = []
        for extra in (0, 1):
            # The second round sees the first round's points as pending; it asks for one point
            # more because a backend's first proposal is usually its incumbent, repeated.
            missing = n - len(chosen)
            if missing == 0:
                break
            origin = self._origin()  # only a tell changes it, so it holds for the whole batch
            proposals = [self.space.check_params(p) for p in self._propose(missing + extra)]
            fresh = self._fresh(proposals)
            self.num_repeats += len(proposals) - len(fresh)
            self._mark_pending(fresh[:missing])
            chosen += [(params, origin) for params in fresh[:missing]]
        while len(chosen) < n:
            point = self._random_fresh_point()
            if point is None:  # fewer than asked: the manager stops proposing (see `exhausted`)
                break
            self._mark_pending([point])
            chosen.append((point, "random"))
        return chosen

    def tell(self, results: Sequence[Result]) -> None:
        told: list[Result] = []
        for params, objective in results:
            params = self.space.check_params(params)
            if objective is not None:
                if isinstance(objective, bool) or not isinstance(objective, (int, float)):
                    raise TypeError(f"objective must be a number or None, got {objective!r}")
                objective = float(objective) if math.isfinite(objective) else None
            told.append((params, objective))
        foreign = [p for p, _ in told if self._key(p) not in self._pending]
        self._register(foreign)
        for params, _ in told:
            self._pending.pop(self._key(params), None)
        self.num_told += len(told)
        self.num_failed += sum(objective is None for _, objective in told)
        if told:
            self._learn(told)

    def add_pending(self, configs: Sequence[Params]) -> None:
        self._mark_pending([self.space.check_params(p) for p in configs])

    @property
    def pending(self) -> list[Params]:
        return list(self._pending.values())

    # -- what a backend provides -------------------------------------------------

    def _propose(self, n: int) -> list[Params]:
        raise NotImplementedError

    def _learn(self, results: list[Result]) -> None:
        raise NotImplementedError

    def _origin(self) -> str:
        """What the next `_propose` returns: "initial_design", "surrogate" or "random"."""
        raise NotImplementedError

    def _exclude(self, configs: list[Params]) -> None:
        """Tell the backend not to propose these again (asked, pending or told); default: nothing."""

    # -- internals -----------------------------------------------------------------

    def _key(self, params: Params) -> tuple:
        return tuple(params[name] for name in self.space.names)

    def _fresh(self, proposals: list[Params]) -> list[Params]:
        fresh, keys = [], set()
        for params in proposals:
            key = self._key(params)
            if key not in self._seen and key not in keys:
                fresh.append(params)
                keys.add(key)
        return fresh

    def _register(self, configs: list[Params]) -> None:
        new = [p for p in configs if self._key(p) not in self._seen]
        self._seen.update(self._key(p) for p in new)
        if new:
            self._exclude(new)

    def _mark_pending(self, configs: list[Params]) -> None:
        self._register(configs)
        for params in configs:
            self._pending[self._key(params)] = params

    def _random_fresh_point(self) -> Params | None:
        for _ in range(FRESH_POINT_TRIES):
            point = self.space.sample(self._rng)
            if self._key(point) not in self._seen:
                return point
        # A configuration is never evaluated twice (a repeat would only re-measure training noise):
        # the search ends here, where DeepHyper would propose a point again.
        if not self.exhausted:
            log.warning("search space %s is exhausted: all %d configurations have been proposed",
                        self.space.origin, len(self._seen))
        self.exhausted = True
        return None


class RandomSearch(SearchBase):
    """The baseline: uniform (or log-uniform, per the space) independent draws."""

    def _propose(self, n: int) -> list[Params]:
        return [self.space.sample(self._rng) for _ in range(n)]

    def _learn(self, results: list[Result]) -> None:
        """Random search learns nothing from results."""

    def _origin(self) -> str:
        return "random"


def restore(optimizer: Optimizer, db: "TrialDB", phase: str = "hpo") -> tuple[int, int]:
    """Rebuild an optimiser's knowledge from the database (resume): tell every finished trial (a discarded
    one with the value its rung judged), mark every unfinished one pending. Returns (told, pending)."""
    finished = db.trials(phase=phase, statuses=("completed", "failed", "discarded"))
    optimizer.tell([(t.params, t.objective if t.status in ("completed", "discarded") else None) for t in finished])
    unfinished = db.trials(phase=phase, statuses=("queued", "running", "interrupted"))
    optimizer.add_pending([t.params for t in unfinished])
    return len(finished), len(unfinished)
