"""One dimension of a search space, and when it applies.

A conditional parameter (`when: {mpnn_type: [MACE]}` in the file) is *active* only when
its parent, a categorical parameter, takes one of the listed values. An inactive
parameter still has a value in every configuration, a fixed one: the low end of its
range, or its first choice. That is also what DeepHyper's CBO reports for inactive
parameters, so all three backends agree, every configuration is a complete and valid
trial.yaml, and two configurations that differ only in inactive values are the same
configuration (never proposed twice).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Parameter:
    """One dimension: `kind` is "choice", "int" or "float" (the type of the trial field it sets)."""

    name: str
    path: str
    kind: Literal["choice", "int", "float"]
    choices: tuple[str, ...] = ()
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    parent: str | None = None          # the categorical parameter this one depends on
    when: tuple[str, ...] = ()         # the parent's values for which this one is active

    def active(self, params: dict[str, Any]) -> bool:
        return self.parent is None or params.get(self.parent) in self.when

    @property
    def inactive_value(self) -> Any:
        """The value an inactive parameter is fixed at: the low end, or the first choice."""
        if self.kind == "choice":
            return self.choices[0]
        return int(self.low) if self.kind == "int" else float(self.low)

    def sample(self, rng: random.Random) -> Any:
        if self.kind == "choice":
            return rng.choice(self.choices)
        if self.kind == "int":
            if self.log:  # log-uniform over the integers low..high (each bin [k, k+1) by its log width)
                value = math.exp(rng.uniform(math.log(self.low), math.log(self.high + 1)))
                return min(int(value), int(self.high))
            return rng.randint(int(self.low), int(self.high))
        if self.log:
            return math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        return rng.uniform(self.low, self.high)

    def canonical(self, value: Any) -> Any:
        """`value` as a plain python value of this dimension; ValueError if it lies outside."""
        value = getattr(value, "item", lambda: value)()  # numpy scalars from the backends
        if self.kind == "choice":
            if value not in self.choices:
                raise ValueError(f"{value!r} is not one of {', '.join(self.choices)}")
            return str(value)
        if isinstance(value, str):
            # YAML 1.1 reads 1.0e30 (no sign in the exponent) as a string; take what a person means.
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"expected a number, got {value!r}")
        if self.kind == "int":
            if value != int(value):
                raise ValueError(f"expected an integer, got {value!r}")
            value = int(value)
        else:
            value = float(value)
        if not self.low <= value <= self.high:
            raise ValueError(f"{value!r} is outside the range [{number(self.low)}, {number(self.high)}]")
        return value

    def to_spec(self) -> dict[str, Any]:
        if self.kind == "choice":
            spec: dict[str, Any] = {"choices": list(self.choices)}
        else:
            spec = {"low": number(self.low), "high": number(self.high)}
            if self.log:
                spec["prior"] = "log-uniform"
        if self.parent is not None:
            spec["when"] = {self.parent: list(self.when)}
        return {**spec, "path": self.path}


def number(x: float) -> int | float:
    return int(x) if float(x).is_integer() and abs(x) < 2**53 else x
