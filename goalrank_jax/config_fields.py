"""Field checks and the mapping -> dataclass builder shared by the config modules
(``goalrank_jax.configs``, ``goalrank_jax.comparison.config``)."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any


def positive(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not value > 0:
            raise ValueError(f"{type(obj).__name__}.{name} must be > 0, got {value!r}")


def non_negative(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not value >= 0:
            raise ValueError(f"{type(obj).__name__}.{name} must be >= 0, got {value!r}")


def one_of(obj: Any, name: str, allowed: tuple[str, ...]) -> None:
    value = getattr(obj, name)
    if value not in allowed:
        raise ValueError(f"{type(obj).__name__}.{name} must be one of {allowed}, got {value!r}")


def build_dataclass(cls: type, values: Mapping[str, Any], path: str) -> Any:
    """Builds dataclass ``cls`` from a nested mapping, recursing into dataclass fields.

    Raises ValueError on an unknown field, a non-mapping value for a dataclass field or a
    scalar of the wrong type; ``path`` (e.g. "compare.") prefixes field names in messages.
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"Unknown config field(s) {', '.join(path + k for k in unknown)}.")
    kwargs = {}
    for key, value in values.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, Mapping):
                raise ValueError(f"Config field {path}{key} must be a group of fields.")
            kwargs[key] = build_dataclass(hint, value, f"{path}{key}.")
        elif typing.get_origin(hint) is tuple:
            kwargs[key] = split_commas(value)
        else:
            kwargs[key] = coerce(value, hint, path + key)
    return cls(**kwargs)


def split_commas(value: Any) -> tuple:
    """A tuple field's value as a tuple, each string element split at commas and stripped, empty
    parts dropped: a flag ``--config.compare.methods=prm,mge`` arrives as ``("prm,mge",)`` and
    ``--config.compare.ablations=`` as ``("",)``; they become ``("prm", "mge")`` and ``()``."""
    if isinstance(value, str):
        value = (value,)
    parts = []
    for element in value:
        if isinstance(element, str):
            parts += [p.strip() for p in element.split(",") if p.strip()]
        else:
            parts.append(element)
    return tuple(parts)


def coerce(value: Any, hint: Any, name: str) -> Any:
    if isinstance(hint, types.UnionType):
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and not isinstance(value, hint):
        raise ValueError(f"Config field {name} must be {hint.__name__}, got {value!r}.")
    if hint is int and isinstance(value, bool):
        raise ValueError(f"Config field {name} must be int, got {value!r}.")
    return value
