"""The optimiser backends behind search/base.py: DeepHyper CBO, scikit-optimize's GP, random search.

Settings come from the space file's `optimizer:` mapping, are merged over the
defaults below and checked against the installed library's real signature,
so a typo fails at start-up with the file and key named, not at the first ask.
"""
from __future__ import annotations

import difflib
import inspect
import statistics
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.search.base import RandomSearch, Result, SearchBase, TooManyFailures
from search_spaces import Params, SearchSpace
from trainer.contract.atomicio import atomic_write_json
from trainer.contract.errors import one_line
from trainer.contract.typed import ConfigError

# DeepHyper's own defaults (mixedga acquisition optimiser, cl_max refits) cost seconds per
# tell at a few hundred evaluations; these were measured at ~0.2 s up to 1000 (bench/bench_optimizer.py).
CBO_DEFAULTS: dict[str, Any] = {
    "surrogate_model": "ET",
    "acq_func": "UCBd",
    "acq_optimizer": "sampling",
    "multi_point_strategy": "qUCBd",
    # DeepHyper ends the search at the 100th failure by default; a long run on thousands of
    # nodes sees more than that, and the manager already records every failure.
    "acq_optimizer_kwargs": {"max_total_failures": -1},
}
# CBO arguments this module sets itself (or that have no meaning for one objective).
CBO_OWNED = {"self", "problem", "random_state", "log_dir", "verbose", "stopper", "checkpoint_history_to_csv",
             "checkpoint_restart", "solution_selection", "moo_lower_bounds", "moo_scalarization_strategy",
             "moo_scalarization_weight"}

# EI rather than skopt's default gp_hedge, which evaluates three acquisition functions on every
# candidate (3x the cost of each point of a batch); "sampling" rather than lbfgs restarts.
SKOPT_DEFAULTS: dict[str, Any] = {"acq_func": "EI", "acq_optimizer": "sampling", "strategy": "cl_min"}
SKOPT_PASSED = ("acq_func", "acq_optimizer", "acq_func_kwargs", "acq_optimizer_kwargs")  # to skopt.Optimizer
SKOPT_LIES = {"cl_min": min, "cl_mean": statistics.fmean, "cl_max": max}


def make_optimizer(space: SearchSpace, seed: int, log_dir: str | Path) -> SearchBase:
    """The backend named by `space.backend`, seeded; its effective settings go to log_dir/optimizer.json."""
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    if space.backend == "cbo":
        optimizer: SearchBase = CBOSearch(space, seed, log_dir)
    elif space.backend == "skopt-gp":
        optimizer = SkoptGPSearch(space, seed)
    else:
        _check_keys(space, [])
        optimizer = RandomSearch(space, seed)
    atomic_write_json(log_dir / "optimizer.json", {
        "backend": space.backend, "seed": seed, "space": space.to_mapping(),
        "settings": optimizer.settings, "versions": _versions()})
    return optimizer


class CBOSearch(SearchBase):
    """deephyper.hpo.CBO driven by ask/tell. CBO maximises, so it is told -loss; failures as "F"."""

    def __init__(self, space: SearchSpace, seed: int, log_dir: Path):
        super().__init__(space, seed)
        from ConfigSpace import InCondition
        from deephyper.hpo import CBO, HpProblem

        _check_keys(space, [n for n in inspect.signature(CBO.__init__).parameters if n not in CBO_OWNED])
        self.settings = _cbo_settings(space)
        problem = HpProblem()
        added = {}
        for p in space.parameters:
            if p.kind == "choice":
                added[p.name] = problem.add_hyperparameter(list(p.choices), p.name)
            else:
                added[p.name] = problem.add_hyperparameter(
                    (p.low, p.high, "log-uniform") if p.log else (p.low, p.high), p.name)
        # Conditional parameters as ConfigSpace conditions: DeepHyper then samples them only where
        # they apply and reports the low end elsewhere, the value search_spaces fixes them at.
        conditions = [InCondition(added[p.name], added[p.parent], list(p.when))
                      for p in space.parameters if p.parent is not None]
        if conditions:
            problem.add_conditions(conditions)
        self._order = list(problem.hyperparameter_names)  # DeepHyper's (alphabetical) order of a vector
        try:
            self._cbo = CBO(problem, random_state=seed, log_dir=str(log_dir), verbose=0,
                            checkpoint_history_to_csv=False, **self.settings)
            # DeepHyper checks the acquisition settings only when it builds its inner optimiser:
            # do it now so that a bad value fails at start-up rather than at the first ask.
            self._cbo._setup_optimizer()
        except (TypeError, ValueError) as err:  # pydantic's ValidationError is a ValueError
            raise ConfigError(f"{space.origin}: optimizer: DeepHyper rejected the settings: {one_line(err)}") from None

    def _propose(self, n: int) -> list[Params]:
        return self._cbo.ask(n)

    def _learn(self, results: list[Result]) -> None:
        from deephyper.skopt.optimizer.optimizer import ExhaustedFailures

        try:
            self._cbo.tell([(params, "F" if loss is None else -loss) for params, loss in results])
        except ExhaustedFailures:
            raise TooManyFailures(f"{self.space.origin}: optimizer.acq_optimizer_kwargs.max_total_failures: "
                                  f"the search has seen {self.num_failed} failed trials") from None

    def _origin(self) -> str:
        # DeepHyper 0.13's optimiser (deephyper/skopt/optimizer/optimizer.py, ask and _ask) returns
        # random points while its _n_initial_points is above 0: that count starts at CBO's
        # n_initial_points (default 2 * dimensions + 1, hpo/_cbo.py) and falls by one per told result
        # that is not a failure ("F"), in tell's batch branch as in its single one. Only after that is
        # the surrogate fitted and asked; without an estimator (surrogate_model "DUMMY") never.
        opt = self._cbo._opt
        return "initial_design" if opt._n_initial_points > 0 or opt.base_estimator_ is None else "surrogate"

    def _exclude(self, configs: list[Params]) -> None:
        # DeepHyper filters its candidate points against `sampled`, but does not record the points
        # of a qUCBd batch there, nor told points that it did not propose (after a resume).
        self._cbo._opt.sampled.extend([params[name] for name in self._order] for params in configs)


class SkoptGPSearch(SearchBase):
    """scikit-optimize's GP with the constant liar over every configuration still being evaluated.

    skopt's own multi-point ask lies only about the points of one batch; here every pending
    configuration (asked earlier or running since before a resume) gets the lie too, so an
    asynchronous manager that asks one point at a time never gets the same point twice.
    Each ask fits the GP's hyperparameters once to the told results, then adds the lies
    with those hyperparameters fixed (see `_believer`); tell only records.

    Failures: skopt has no notion of them. A failed configuration is given the worst
    objective observed so far (recomputed at each ask), which is DeepHyper's default for
    failures too. Failures here are mostly properties of the configuration (out of memory
    for wide, deep models; divergence), so the model should learn to avoid the region;
    leaving them out would let the GP propose the same region again. A trial that failed
    on a bad node is the allocation's business (exclusion, retry), not the optimiser's.
    """

    def __init__(self, space: SearchSpace, seed: int):
        super().__init__(space, seed)
        from skopt import Optimizer
        from skopt.space import Categorical, Integer, Real

        _check_keys(space, [*SKOPT_PASSED, "strategy", "n_initial_points"])
        self.settings = {**SKOPT_DEFAULTS, "n_initial_points": 2 * len(space) + 1, **space.optimizer}
        self._n_initial = self.settings["n_initial_points"]
        if isinstance(self._n_initial, bool) or not isinstance(self._n_initial, int) or self._n_initial < 1:
            raise ConfigError(f"{space.origin}: optimizer.n_initial_points: expected an integer >= 1, "
                              f"got {self._n_initial!r}")
        if self.settings["strategy"] not in SKOPT_LIES:
            raise ConfigError(f"{space.origin}: optimizer.strategy: must be one of {', '.join(SKOPT_LIES)}; "
                              f"got {self.settings['strategy']!r}")
        if "ps" in str(self.settings["acq_func"]):
            raise ConfigError(f"{space.origin}: optimizer.acq_func: per-second acquisition functions need "
                              "trial durations, which this interface does not pass")
        self._dimensions = [
            Categorical(list(p.choices), name=p.name) if p.kind == "choice" else
            (Integer if p.kind == "int" else Real)(p.low, p.high, name=p.name,
                                                   prior="log-uniform" if p.log else "uniform")
            for p in space.parameters]
        self._optimizer_class = Optimizer
        self._np_rng = np.random.RandomState(seed)
        self._told: list[Result] = []
        try:
            self._new_optimizer()
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{space.origin}: optimizer: scikit-optimize rejected the settings: "
                              f"{one_line(err)}") from None

    def _new_optimizer(self, base_estimator: Any = "GP") -> Any:
        return self._optimizer_class(self._dimensions, base_estimator=base_estimator, n_initial_points=0,
                                     random_state=self._np_rng.randint(np.iinfo(np.int32).max),
                                     **{k: self.settings[k] for k in SKOPT_PASSED if k in self.settings})

    def _origin(self) -> str:
        # skopt's own Optimizer would draw n_initial_points (its default 10) random asks before fitting;
        # it is made here with none, and this class draws random points itself until n_initial_points
        # results that are not failures have been told (default 2 * dimensions + 1, as in DeepHyper).
        observed = sum(loss is not None for _, loss in self._told)
        return "initial_design" if observed < self._n_initial else "surrogate"

    def _propose(self, n: int) -> list[Params]:
        if self._origin() == "initial_design":
            return [self.space.sample(self._rng) for _ in range(n)]
        worst = max(loss for _, loss in self._told if loss is not None)
        X = [self._vector(params) for params, _ in self._told]
        y = [worst if loss is None else loss for _, loss in self._told]
        lie = SKOPT_LIES[self.settings["strategy"]](y)
        pending = [self._vector(params) for params in self.pending]
        optimizer = self._new_optimizer(self._believer(X, y))
        optimizer.tell(X + pending, y + [lie] * len(pending))
        proposals = []
        for i in range(n):
            x = optimizer.ask()
            proposals.append(dict(zip(self.space.names, x)))
            if i < n - 1:
                optimizer.tell(x, lie)
        return proposals

    def _believer(self, X: list[list[Any]], y: list[float]) -> Any:
        """A GP whose kernel hyperparameters are fitted once, on the real results only, then kept
        fixed while the lies are added (as in Ginsbourger et al.'s constant liar): lies then only
        move the posterior, each costs one Cholesky factorisation instead of a marginal-likelihood
        optimisation (~250 of them), and they cannot distort the length scales."""
        from sklearn.base import clone
        from sklearn.exceptions import ConvergenceWarning
        from skopt.learning import GaussianProcessRegressor
        from skopt.learning.gaussian_process.kernels import WhiteKernel  # skopt's own: sklearn's does not add up

        probe = self._new_optimizer()  # skopt's own GP and input transformation for this space
        with warnings.catch_warnings():
            # Length scales at their bounds are normal here (irrelevant dimensions); skopt hides it too.
            warnings.simplefilter("ignore", ConvergenceWarning)
            gp = clone(probe.base_estimator_).fit(probe.space.transform(X), y)
        if not isinstance(gp.kernel_.k2, WhiteKernel):
            raise RuntimeError(f"unexpected skopt GP kernel {gp.kernel_}: expected signal + white noise")
        kernel = gp.kernel_.k1 + WhiteKernel(noise_level=gp.noise_, noise_level_bounds="fixed")
        return GaussianProcessRegressor(kernel=kernel, optimizer=None, normalize_y=True, noise="gaussian")

    def _learn(self, results: list[Result]) -> None:
        self._told.extend(results)

    def _vector(self, params: Params) -> list[Any]:
        return [params[name] for name in self.space.names]


# -- settings ---------------------------------------------------------------------

def _cbo_settings(space: SearchSpace) -> dict[str, Any]:
    user = space.optimizer
    defaults = dict(CBO_DEFAULTS)
    if user.get("surrogate_model") == "GP":
        # DeepHyper's GP cannot give the disentangled uncertainty the "...d" variants need.
        defaults.update(acq_func="UCB", multi_point_strategy="qUCB")
    settings = {k: {**v, **user[k]} if isinstance(v, dict) and isinstance(user.get(k), dict) else user.get(k, v)
                for k, v in defaults.items()}
    settings.update({k: v for k, v in user.items() if k not in settings})
    if settings.get("surrogate_model") == "GP":
        for key in ("acq_func", "multi_point_strategy"):
            value = str(settings.get(key, ""))
            if value.endswith("d"):
                raise ConfigError(
                    f"{space.origin}: optimizer.{key}: '{value}' cannot be used with surrogate_model GP "
                    f"(DeepHyper's GP has no disentangled uncertainty: TypeError 'disentangled_std'); "
                    f"use '{value[:-1]}' or a tree surrogate such as ET")
    return settings


def _check_keys(space: SearchSpace, allowed: list[str]) -> None:
    for key in space.optimizer:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            known = f"known: {', '.join(allowed)}" if allowed else "it takes none"
            hint = f"did you mean '{close[0]}'?" if close else known
            raise ConfigError(f"{space.origin}: optimizer.{key}: not a setting of backend {space.backend} ({hint})")


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("deephyper", "scikit-optimize", "scikit-learn"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found
