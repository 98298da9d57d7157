"""Typed configuration: YAML mapped onto dataclasses, every mistake named by key and file.

A schema is a (frozen) dataclass. `build(Schema, mapping, origin)` checks every
key against the field types (int, float, bool, str, Literal, Optional, list,
dict, nested dataclasses), rejects unknown keys (suggesting the closest known
one), fills defaults, applies the bounds declared with `bounded(...)`, and
finally runs the dataclass's own `check()` for constraints that span several
fields. Any problem raises `ConfigError("FILE: key.path: problem")`.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from trainer.contract.errors import UserError

T = TypeVar("T")


class ConfigError(UserError):
    """A configuration file or mapping that does not fit its schema."""


class Invalid(ValueError):
    """Raised by a schema's `check()`: `Invalid("key", "problem")`."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"{key}: {problem}")
        self.key, self.problem = key, problem


def bounded(default: Any = dataclasses.MISSING, *, low: float | None = None,
            high: float | None = None, low_exclusive: bool = False, doc: str = "") -> Any:
    """A dataclass field with inclusive numeric bounds (or exclusive lower bound)."""
    meta = {"low": low, "high": high, "low_exclusive": low_exclusive, "doc": doc}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; unreadable, malformed or non-mapping files raise ConfigError."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read ({err.__class__.__name__}: {err})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, got {_kind(data)}")
    return data


def load(schema: type[T], path: str | Path) -> T:
    """Read and validate a YAML file against `schema`."""
    return build(schema, read_yaml(path), origin=str(path))


def build(schema: type[T], data: Any, origin: str = "<config>") -> T:
    """Validate a mapping against `schema` and return the dataclass instance."""
    try:
        return _build_dataclass(schema, data, "")
    except Invalid as err:
        raise ConfigError(f"{origin}: {err}") from None


def to_dict(obj: Any) -> Any:
    """A schema instance as plain YAML-able data (the inverse of `build`)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(value) for value in obj]
    if isinstance(obj, dict):
        return {key: to_dict(value) for key, value in obj.items()}
    return obj


def replace_path(obj: T, dotted: str, value: Any) -> T:
    """A copy of `obj` with the field at `dotted` (e.g. "model.hidden_dim") replaced and re-validated."""
    data = to_dict(obj)
    set_dotted(data, dotted, value, where="<override>", create=False)
    return build(type(obj), data, origin="<override>")


def set_dotted(data: dict[str, Any], dotted: str, value: Any, where: str, create: bool = True) -> None:
    """Write `value` at the dotted key path (e.g. "training.batch_size") of a nested mapping.

    `create` makes missing sections; without it a missing or non-mapping section is an
    error. Either way `build` validates the result against its schema afterwards.
    """
    node = data
    *parents, last = str(dotted).split(".")
    for part in parents:
        child = node.setdefault(part, {}) if create else node.get(part)
        if not isinstance(child, dict):
            raise ConfigError(f"{where}: {dotted}: '{part}' is not a section with sub-keys")
        node = child
    node[last] = value


# -- internals ---------------------------------------------------------------

def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the string {value!r}"
    return f"{type(value).__name__} {value!r}"


def _join(prefix: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    return f"{prefix}.{key}" if prefix else str(key)


def _build_dataclass(schema: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise Invalid(where or "top level", f"expected a mapping, got {_kind(data)}")
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema) if f.init}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(fields)})"
            raise Invalid(_join(where, key), f"unknown key{hint}")
    values = {}
    for name, field in fields.items():
        key = _join(where, name)
        if name in data:
            value = _convert(hints[name], data[name], key)
            _check_bounds(field, value, key)
            values[name] = value
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise Invalid(key, "required key is missing")
    instance = schema(**values)
    check = getattr(instance, "check", None)
    if check is not None:
        try:
            check()
        except Invalid as err:
            raise Invalid(_join(where, err.key), err.problem) from None
    return instance


def _check_bounds(field: dataclasses.Field, value: Any, key: str) -> None:
    meta = field.metadata
    if not meta or value is None:
        return
    items = value if isinstance(value, list) else [value]
    low, high = meta.get("low"), meta.get("high")
    for item in items:
        if low is not None:
            if meta.get("low_exclusive") and not item > low:
                raise Invalid(key, f"must be greater than {low}, got {item}")
            if not meta.get("low_exclusive") and item < low:
                raise Invalid(key, f"must be at least {low}, got {item}")
        if high is not None and item > high:
            raise Invalid(key, f"must be at most {high}, got {item}")


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [arg for arg in args if arg is not type(None)]
        errors = []
        for option in options:
            try:
                return _convert(option, value, key)
            except Invalid as err:
                errors.append(err)
        if len(errors) == 1:  # e.g. an optional section: its own error, naming the key inside it
            raise errors[0]
        raise Invalid(key, " or ".join(err.problem for err in errors))
    if origin is Literal:
        if value in args and not (isinstance(value, bool) and not any(isinstance(a, bool) for a in args)):
            return value
        raise Invalid(key, f"must be one of {', '.join(map(str, args))}; got {_kind(value)}")
    if origin is list:
        if not isinstance(value, list):
            raise Invalid(key, f"expected a list, got {_kind(value)}")
        return [_convert(args[0], item, _join(key, i)) for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise Invalid(key, f"expected a mapping, got {_kind(value)}")
        return {_convert(args[0], k, key): _convert(args[1], v, _join(key, k)) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return _build_dataclass(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise Invalid(key, f"expected true or false, got {_kind(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise Invalid(key, f"expected an integer, got {_kind(value)}")
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads "1e-3" (no dot) as a string; accept what a person means.
            try:
                value = float(value)
            except ValueError:
                raise Invalid(key, f"expected a number, got {_kind(value)}") from None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise Invalid(key, f"expected a finite number, got {value}")
            return float(value)
        raise Invalid(key, f"expected a number, got {_kind(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise Invalid(key, f"expected a string, got {_kind(value)}")
    raise TypeError(f"schema type {tp!r} at {key} is not supported")  # a bug in a schema, not user input


def commented_yaml(obj: Any, indent: int = 0) -> str:
    """`obj` (a schema instance) as YAML with each field's `doc` and bounds as comments."""
    lines: list[str] = []
    pad = "  " * indent
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        note = _field_note(f, hints[f.name])
        if dataclasses.is_dataclass(value):
            lines.append(f"{pad}{f.name}:{note}")
            lines.append(commented_yaml(value, indent + 1))
        elif isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
            lines.append(f"{pad}{f.name}:{note}")
            for item in value:
                body = commented_yaml(item, indent + 2).splitlines()
                lines.append(f"{pad}  - {body[0].lstrip()}")
                lines.extend(body[1:])
        else:
            text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
            text = text.removesuffix("\n...").removesuffix("...").strip()
            lines.append(f"{pad}{f.name}: {text}{note}")
    return "\n".join(lines)


def _field_note(f: dataclasses.Field, tp: Any) -> str:
    parts = []
    doc = f.metadata.get("doc") if f.metadata else None
    if doc:
        parts.append(doc)
    choices = [a for a in typing.get_args(tp) if typing.get_origin(a) is Literal]
    if typing.get_origin(tp) is Literal:
        choices = [tp]
    for literal in choices:
        parts.append("one of " + " | ".join(map(str, typing.get_args(literal))))
    low, high = (f.metadata.get("low"), f.metadata.get("high")) if f.metadata else (None, None)
    if low is not None or high is not None:
        parts.append(f"range {'>' if f.metadata.get('low_exclusive') else ''}{low if low is not None else ''}"
                     f"..{high if high is not None else ''}")
    return f"  # {'; '.join(parts)}" if parts else ""
