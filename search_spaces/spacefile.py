"""The schema of a search-space YAML file, as typed dataclasses (validated by trainer.contract.typed)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from trainer.contract.typed import Invalid


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
class SpaceFile:
    parameters: dict[str, ParameterSpec] = field(metadata={"doc": "hyperparameters to search"})
    backend: Literal["cbo", "skopt-gp", "random"] = "cbo"
    optimizer: dict[str, Any] = field(default_factory=dict, metadata={"doc": "backend settings (checked by the backend)"})
    fixed: dict[str, Any] = field(default_factory=dict, metadata={"doc": "dotted trial.yaml overrides for every trial"})
    initial_points: list[dict[str, Any]] = field(
        default_factory=list, metadata={"doc": "configurations evaluated before the optimiser proposes any"})

    def check(self) -> None:
        if not self.parameters:
            raise Invalid("parameters", "at least one hyperparameter is needed")
