"""The schema of a search-space YAML file, as typed dataclasses (validated by trainer.contract.typed)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from trainer.contract.typed import Invalid, bounded


@dataclass(frozen=True)
class ParameterSpec:
    choices: list[Any] | None = field(default=None, metadata={"doc": "categorical values (strings)"})
    low: int | float | None = field(default=None, metadata={"doc": "inclusive lower end of a range"})
    high: int | float | None = field(default=None, metadata={"doc": "inclusive upper end of a range"})
    prior: Literal["uniform", "log-uniform"] = "uniform"
    path: str | None = field(default=None, metadata={"doc": "dotted trial.yaml key; default model.<name> or training.<name>"})
    when: dict[str, Any] | None = field(
        default=None, metadata={"doc": "{PARENT: [VALUES]}: active only where the categorical PARENT takes one of VALUES"})

    def check(self) -> None:
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise Invalid("choices", "give either choices or low/high, not both")
            if not self.choices:
                raise Invalid("choices", "at least one choice is needed")
            for i, choice in enumerate(self.choices):
                if not isinstance(choice, str):
                    # DeepHyper makes a list of numbers an *ordinal* hyperparameter, not a categorical.
                    raise Invalid(f"choices[{i}]", f"choices must be strings, got {choice!r}; "
                                  "for numbers use a range {low, high} (a list of numbers would be an ordinal)")
            if len(set(self.choices)) != len(self.choices):
                raise Invalid("choices", "choices must be distinct")
            if self.prior != "uniform":
                raise Invalid("prior", "a prior applies to ranges, not to choices")
            return
        if self.low is None or self.high is None:
            raise Invalid("low" if self.low is None else "high", "a range needs both low and high (or give choices)")
        if self.low > self.high:
            raise Invalid("low", f"low ({self.low}) is greater than high ({self.high})")
        if self.low == self.high:
            # Not taken as a constant: it would still count as a dimension (CBO's initial design is
            # 2 x dimensions + 1 trials) and ConfigSpace refuses an empty range; `fixed` says it plainly.
            raise Invalid("high", f"low and high are both {self.high}: a range of one value is not searched; "
                                  "put the value under fixed: (its trial.yaml key) instead")
        if self.prior == "log-uniform" and self.low <= 0:
            raise Invalid("low", f"a log-uniform range needs low > 0, got {self.low}")


@dataclass(frozen=True)
class FidelitySpec:
    """How long a trial trains: every trial its whole budget, or early discarding at rungs (ASHA)."""
    kind: Literal["constant", "asha", "learning_curve"] = field(
        default="constant", metadata={"doc": "constant: every trial trains its whole budget; asha: asynchronous "
                                             "successive halving (stop-or-continue at each rung); learning_curve: "
                                             "stop where the extrapolated curve cannot beat the best trial"})
    rungs: list[int] | None = field(
        default=None, metadata={"doc": "epochs at which a trial is judged; null: min_epochs x reduction_factor^k "
                                       "below the epoch budget (asha), every epoch from max(2, min_epochs) "
                                       "(learning_curve)"})
    reduction_factor: float = bounded(3.0, low=1.0, low_exclusive=True,
                                      doc="a trial continues past a rung when it is in the best 1/reduction_factor")
    min_epochs: int = bounded(1, low=1, doc="the first rung, when rungs are not listed")

    def check(self) -> None:
        if self.kind == "constant" and self.rungs is not None:
            raise Invalid("rungs", "rungs apply to kind: asha or learning_curve, not to a constant fidelity")
        if self.rungs is not None:
            if not self.rungs:
                raise Invalid("rungs", "give at least one rung, or leave rungs out")
            for i, rung in enumerate(self.rungs):
                if not isinstance(rung, int) or isinstance(rung, bool) or rung < 1:
                    raise Invalid(f"rungs[{i}]", f"a rung is a whole number of epochs (at least 1), got {rung!r}")
            if sorted(set(self.rungs)) != self.rungs:
                raise Invalid("rungs", f"rungs must be increasing and distinct, got {self.rungs}")

    def resolve(self, epochs: int) -> list[int]:
        """The rungs under an epoch budget: those listed, or the geometric ladder; [] for constant."""
        if self.kind == "constant":
            return []
        if self.rungs is not None:
            return list(self.rungs)
        if self.kind == "learning_curve":  # a curve through fewer than two points says nothing
            return list(range(max(2, self.min_epochs), epochs))
        rungs, rung = [], float(self.min_epochs)
        while round(rung) < epochs:
            if not rungs or round(rung) > rungs[-1]:
                rungs.append(round(rung))
            rung *= self.reduction_factor
        return rungs


@dataclass(frozen=True)
class SpaceFile:
    parameters: dict[str, ParameterSpec] = field(metadata={"doc": "hyperparameters to search"})
    backend: Literal["cbo", "skopt-gp", "random"] = "cbo"
    optimizer: dict[str, Any] = field(default_factory=dict, metadata={"doc": "backend settings (checked by the backend)"})
    fixed: dict[str, Any] = field(default_factory=dict, metadata={"doc": "dotted trial.yaml overrides for every trial"})
    initial_points: list[dict[str, Any]] = field(
        default_factory=list, metadata={"doc": "configurations evaluated before the optimiser proposes any"})
    fidelity: FidelitySpec = field(default_factory=FidelitySpec,
                                   metadata={"doc": "constant (every trial its whole budget) or asha rungs"})

    def check(self) -> None:
        if not self.parameters:
            raise Invalid("parameters", "at least one hyperparameter is needed")
