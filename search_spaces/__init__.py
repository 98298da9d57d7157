"""Declarative search spaces: a YAML file of hyperparameters, checked against the trial schema.

A space names each hyperparameter after the trial.yaml field it sets
(`hidden_dim` -> `model.hidden_dim`, `learning_rate` -> `training.learning_rate`)
and gives either `choices` (categorical, strings only) or an inclusive range
`{low, high}` with an optional log-uniform prior, and optionally `when: {PARENT:
[VALUES]}`: the parameter applies only where the categorical PARENT takes one of
VALUES (parameter.py says what it is elsewhere). Every range end and every
choice is validated against `TrialConfig` at load time (a conditional one with
its parent set to make it active), so a space can never propose a trial that
the trainer would reject. This package is imported by the
manager: it must stay free of torch (and of DeepHyper, which is slow to import).
"""
from __future__ import annotations

import dataclasses
import difflib
import random
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from trainer.contract import packaged, typed
from trainer.contract.trialconfig import ModelConfig, TrainingConfig, TrialConfig
from trainer.contract.typed import ConfigError

from search_spaces.parameter import Parameter
from search_spaces.spacefile import FidelitySpec, ParameterSpec, SpaceFile

PACKAGED = Path(__file__).resolve().parent
DEFAULT = "table_iv"
BACKENDS = ("cbo", "skopt-gp", "random")
Params = dict[str, Any]
__all__ = ["FidelitySpec", "Parameter", "Params", "SearchSpace", "load_space", "parse_space"]


# -- the loaded space -------------------------------------------------------------

@dataclass(frozen=True)
class SearchSpace:
    origin: str
    backend: str
    parameters: tuple[Parameter, ...]
    optimizer: dict[str, Any] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)
    initial_points: tuple[Params, ...] = ()
    fidelity: FidelitySpec = field(default_factory=FidelitySpec)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.parameters]

    def __len__(self) -> int:
        return len(self.parameters)

    def sample(self, rng: random.Random) -> Params:
        drawn = {p.name: p.sample(rng) for p in self.parameters}
        return {p.name: drawn[p.name] if p.active(drawn) else p.inactive_value for p in self.parameters}

    def check_params(self, params: Params) -> Params:
        """`params` in this space's order with plain python values; ConfigError naming the offending key."""
        if not isinstance(params, dict):
            raise ConfigError(f"{self.origin}: expected a mapping of hyperparameters, got {params!r}")
        extra = sorted(set(params) - set(self.names))
        if extra:
            raise ConfigError(f"{self.origin}: parameters.{extra[0]}: not a parameter of this space "
                              f"(it has {', '.join(self.names)})")
        out = {}
        # Parents are unconditional: check them first, then whether each conditional one applies.
        for p in sorted(self.parameters, key=lambda p: p.parent is not None):
            active = p.active(out)
            if p.name not in params:
                if not active:  # an inactive parameter may be left out
                    out[p.name] = p.inactive_value
                    continue
                raise ConfigError(f"{self.origin}: parameters.{p.name}: missing from {params!r}")
            try:
                value = p.canonical(params[p.name])
            except ValueError as err:
                raise ConfigError(f"{self.origin}: parameters.{p.name}: {err}") from None
            out[p.name] = value if active else p.inactive_value
        return {name: out[name] for name in self.names}

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
                "initial_points": [dict(p) for p in self.initial_points],
                "fidelity": typed.to_dict(self.fidelity)}


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
        parameters.append(_with_condition(parameter, item, spec, origin, key))
    by_name = {p.name: p for p in parameters}
    for p in parameters:
        key = f"parameters.{p.name}"
        # A conditional parameter is probed where it applies (its parent at an activating value),
        # and its fixed inactive value where it does not.
        probes = [({} if p.parent is None else {by_name[p.parent].path: p.when[0]}, end, value)
                  for end, value in _probe_values(p)]
        if p.parent is not None:
            parent = by_name[p.parent]
            probes += [({parent.path: c}, "when", p.inactive_value) for c in parent.choices if c not in p.when][:1]
        for context, end, value in probes:
            trial = typed.to_dict(base)
            _set_paths(trial, {**context, p.path: value}, origin)
            typed.build(TrialConfig, trial, origin=f"{origin}: {key}.{end}")
    space = SearchSpace(origin=origin, backend=spec.backend, parameters=tuple(parameters),
                        optimizer=dict(spec.optimizer), fixed=dict(spec.fixed), fidelity=spec.fidelity)
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


def _with_condition(parameter: Parameter, item: ParameterSpec, spec: SpaceFile, origin: str, key: str) -> Parameter:
    """`parameter` with its `when:` condition, checked: one categorical, unconditional parent, its choices."""
    if item.when is None:
        return parameter
    if len(item.when) != 1:
        raise ConfigError(f"{origin}: {key}.when: name exactly one parent parameter, got {len(item.when)}")
    ((parent, values),) = item.when.items()
    parent_spec = spec.parameters.get(parent)
    if parent_spec is None or parent == parameter.name:
        raise ConfigError(f"{origin}: {key}.when.{parent}: not another parameter of this space "
                          f"(it has {', '.join(n for n in spec.parameters if n != parameter.name)})")
    if parent_spec.choices is None:
        raise ConfigError(f"{origin}: {key}.when.{parent}: a condition needs a parameter with choices")
    if parent_spec.when is not None:
        raise ConfigError(f"{origin}: {key}.when.{parent}: '{parent}' is itself conditional; "
                          "conditions may only name unconditional parameters")
    values = [values] if isinstance(values, str) else values
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{origin}: {key}.when.{parent}: expected a list of its choices, got {values!r}")
    for i, value in enumerate(values):
        if value not in parent_spec.choices:
            raise ConfigError(f"{origin}: {key}.when.{parent}[{i}]: {value!r} is not one of "
                              f"{', '.join(map(str, parent_spec.choices))}")
    return dataclasses.replace(parameter, parent=parent, when=tuple(dict.fromkeys(values)))


def _probe_values(parameter: Parameter) -> list[tuple[str, Any]]:
    """Values whose acceptance by the trial schema proves the whole dimension valid (bounds are monotone)."""
    if parameter.kind == "choice":
        return [(f"choices[{i}]", c) for i, c in enumerate(parameter.choices)]
    return [("low", parameter.low), ("high", parameter.high)]


def _set_paths(data: dict[str, Any], values: dict[str, Any], where: str) -> None:
    """Write dotted-path values into a nested mapping (typed.build validates the result)."""
    for dotted, value in values.items():
        typed.set_dotted(data, dotted, value, where)
