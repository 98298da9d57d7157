"""Declarative search spaces: a YAML file of hyperparameters, checked against the trial schema.

A space names each hyperparameter after the trial.yaml field it sets
(`hidden_dim` -> `model.hidden_dim`, `learning_rate` -> `training.learning_rate`)
and gives either `choices` (categorical, strings only) or an inclusive range
`{low, high}` with an optional log-uniform prior. Every range end and every
choice is validated against `TrialConfig` at load time, so a space can never
propose a trial that the trainer would reject. This package is imported by the
manager: it must stay free of torch (and of DeepHyper, which is slow to import).
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import random
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from trainer.contract import packaged, typed
from trainer.contract.trialconfig import ModelConfig, TrainingConfig, TrialConfig
from trainer.contract.typed import ConfigError

from search_spaces.spacefile import ParameterSpec, SpaceFile

PACKAGED = Path(__file__).resolve().parent
DEFAULT = "table_iv"
BACKENDS = ("cbo", "skopt-gp", "random")
Params = dict[str, Any]


# -- the loaded space -------------------------------------------------------------

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
            raise ValueError(f"{value!r} is outside the range [{_number(self.low)}, {_number(self.high)}]")
        return value

    def to_spec(self) -> dict[str, Any]:
        if self.kind == "choice":
            spec: dict[str, Any] = {"choices": list(self.choices)}
        else:
            spec = {"low": _number(self.low), "high": _number(self.high)}
            if self.log:
                spec["prior"] = "log-uniform"
        return {**spec, "path": self.path}


@dataclass(frozen=True)
class SearchSpace:
    origin: str
    backend: str
    parameters: tuple[Parameter, ...]
    optimizer: dict[str, Any] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)
    initial_points: tuple[Params, ...] = ()

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.parameters]

    def __len__(self) -> int:
        return len(self.parameters)

    def sample(self, rng: random.Random) -> Params:
        return {p.name: p.sample(rng) for p in self.parameters}

    def check_params(self, params: Params) -> Params:
        """`params` in this space's order with plain python values; ConfigError naming the offending key."""
        if not isinstance(params, dict):
            raise ConfigError(f"{self.origin}: expected a mapping of hyperparameters, got {params!r}")
        extra = sorted(set(params) - set(self.names))
        if extra:
            raise ConfigError(f"{self.origin}: parameters.{extra[0]}: not a parameter of this space "
                              f"(it has {', '.join(self.names)})")
        out = {}
        for p in self.parameters:
            if p.name not in params:
                raise ConfigError(f"{self.origin}: parameters.{p.name}: missing from {params!r}")
            try:
                out[p.name] = p.canonical(params[p.name])
            except ValueError as err:
                raise ConfigError(f"{self.origin}: parameters.{p.name}: {err}") from None
        return out

    def apply(self, params: Params, base: TrialConfig) -> TrialConfig:
        """`base` with the fixed overrides and `params` written in, validated by the trial schema."""
        params = self.check_params(params)
        data = typed.to_dict(base)
        _set_paths(data, self.fixed, f"{self.origin}: fixed")
        _set_paths(data, {p.path: params[p.name] for p in self.parameters}, self.origin)
        return typed.build(TrialConfig, data, origin=f"{self.origin} (trial {params})")

    def to_mapping(self) -> dict[str, Any]:
        """The space as the YAML mapping it came from (explicit paths); `parse_space` reads it back."""
        return {"backend": self.backend,
                "parameters": {p.name: p.to_spec() for p in self.parameters},
                "optimizer": typed.to_dict(self.optimizer), "fixed": typed.to_dict(self.fixed),
                "initial_points": [dict(p) for p in self.initial_points]}


# -- loading ------------------------------------------------------------------

def load_space(path: str | Path | None = None) -> SearchSpace:
    """Read a search space: a YAML path, a packaged name ("table_iv", "small"), or None for Table IV."""
    candidate = packaged.packaged_or_path(DEFAULT if path is None else path, PACKAGED, "search space")
    return parse_space(typed.read_yaml(candidate), origin=str(candidate))


def parse_space(mapping: Any, origin: str = "<search space>") -> SearchSpace:
    """Validate a mapping (the content of a space file) against the file schema and the trial schema."""
    spec = typed.build(SpaceFile, mapping, origin)
    # A stand-in trial: only the searched and fixed keys are probed; the data section is the manager's.
    base = typed.to_dict(typed.build(TrialConfig, {"data": {"sources": [{"path": "x.bp"}]}}))
    _set_paths(base, spec.fixed, f"{origin}: fixed")
    typed.build(TrialConfig, base, origin=f"{origin}: fixed")
    parameters, seen_paths = [], {}
    for name, item in spec.parameters.items():
        key = f"parameters.{name}"
        path = item.path or _default_path(name, origin, key)
        if path in seen_paths:
            raise ConfigError(f"{origin}: {key}: sets {path}, which parameter '{seen_paths[path]}' already sets")
        if path in spec.fixed:
            raise ConfigError(f"{origin}: {key}: sets {path}, which is also under fixed")
        seen_paths[path] = name
        kind = _field_kind(path, origin, f"{key}.path" if item.path else key)
        parameter = _make_parameter(name, path, kind, item, origin, key)
        for end, value in _probe_values(parameter):
            trial = typed.to_dict(base)
            _set_paths(trial, {path: value}, origin)
            typed.build(TrialConfig, trial, origin=f"{origin}: {key}.{end}")
        parameters.append(parameter)
    space = SearchSpace(origin=origin, backend=spec.backend, parameters=tuple(parameters),
                        optimizer=dict(spec.optimizer), fixed=dict(spec.fixed))
    initial = []
    for i, point in enumerate(spec.initial_points):
        try:
            initial.append(space.check_params(point))
        except ConfigError as err:
            problem = str(err).split(": ", 1)[-1]  # drop the origin, already named below
            key = f"initial_points[{i}]"
            problem = (f"{key}.{problem.removeprefix('parameters.')}" if problem.startswith("parameters.")
                       else f"{key}: {problem}")
            raise ConfigError(f"{origin}: {problem}") from None
    return dataclasses.replace(space, initial_points=tuple(initial))


# -- internals ---------------------------------------------------------------

_SECTIONS = {"model": ModelConfig, "training": TrainingConfig}


def _number(x: float) -> int | float:
    return int(x) if float(x).is_integer() and abs(x) < 2**53 else x


def _default_path(name: str, origin: str, key: str) -> str:
    for section, schema in _SECTIONS.items():
        if name in {f.name for f in dataclasses.fields(schema)}:
            return f"{section}.{name}"
    known = [f.name for schema in _SECTIONS.values() for f in dataclasses.fields(schema)]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean '{close[0]}'?" if close else "give an explicit `path:` to a trial.yaml key"
    raise ConfigError(f"{origin}: {key}: unknown parameter: not a field of model or training in trial.yaml ({hint})")


def _field_kind(path: str, origin: str, key: str) -> str:
    """The kind of search dimension the trial.yaml field at `path` can take."""
    schema: Any = TrialConfig
    parts = path.split(".")
    for depth, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else {}
        if part not in fields:
            raise ConfigError(f"{origin}: {key}: {path} is not a trial.yaml key ('{part}' is unknown)")
        schema = typing.get_type_hints(schema)[part]
        if depth < len(parts) - 1 and not dataclasses.is_dataclass(schema):
            raise ConfigError(f"{origin}: {key}: {path} is not a trial.yaml key ('{part}' has no sub-keys)")
    union = typing.get_origin(schema) in (typing.Union, types.UnionType)
    options = [t for t in typing.get_args(schema) if t is not type(None)] if union else [schema]
    if len(options) == 1:
        tp = options[0]
        if tp is int:
            return "int"
        if tp is float:
            return "float"
        if tp is str or (typing.get_origin(tp) is Literal and all(isinstance(a, str) for a in typing.get_args(tp))):
            return "choice"
    raise ConfigError(f"{origin}: {key}: {path} cannot be searched (only integer, number and text fields can)")


def _make_parameter(name: str, path: str, kind: str, item: ParameterSpec, origin: str, key: str) -> Parameter:
    if kind == "choice":
        if item.choices is None:
            raise ConfigError(f"{origin}: {key}: {path} takes text values: give choices, not a range")
        return Parameter(name, path, "choice", choices=tuple(item.choices))
    if item.choices is not None:
        raise ConfigError(f"{origin}: {key}.choices: {path} is numeric: give a range {{low, high}}, not choices "
                          "(a list of numbers would be an ordinal in DeepHyper)")
    if kind == "int":
        for end in ("low", "high"):
            value = getattr(item, end)
            if not float(value).is_integer():
                raise ConfigError(f"{origin}: {key}.{end}: {path} takes integers, got {value}")
    cast = int if kind == "int" else float
    return Parameter(name, path, kind, low=cast(item.low), high=cast(item.high), log=item.prior == "log-uniform")


def _probe_values(parameter: Parameter) -> list[tuple[str, Any]]:
    """Values whose acceptance by the trial schema proves the whole dimension valid (bounds are monotone)."""
    if parameter.kind == "choice":
        return [(f"choices[{i}]", c) for i, c in enumerate(parameter.choices)]
    return [("low", parameter.low), ("high", parameter.high)]


def _set_paths(data: dict[str, Any], values: dict[str, Any], where: str) -> None:
    """Write dotted-path values into a nested mapping (typed.build validates the result)."""
    for dotted, value in values.items():
        typed.set_dotted(data, dotted, value, where)
