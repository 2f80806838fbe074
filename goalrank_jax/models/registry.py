"""The one registration point of the generator variants.

Everything that depends on the set of variants reads it from here: ``ModelConfig.variant``
validation (``configs.GENERATOR_VARIANTS``), :func:`goalrank_jax.models.make_generator`, the
size presets (:mod:`goalrank_jax.scaling.presets`) and the commands that list the variants.

A new variant is one file plus one line: a module in goalrank_jax/models/ with a Flax class that
implements :class:`goalrank_jax.models.interface.Generator`, decorated with
``@register_generator("name", fields=(...), preset_rule=...)`` (or registered with the call
``register_generator("name", Class, ...)``), and one import of that module in
goalrank_jax/models/__init__.py. The built-in variants are registered in
goalrank_jax/models/generator.py.

This module imports nothing heavy; the registrations themselves happen when
``goalrank_jax.models`` is imported (which importing this module always does first).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from goalrank_jax.models.interface import GENERATOR_METHODS

# A size preset (goalrank_jax/scaling/presets.py ``Preset``) -> the depth fields of
# ``ModelConfig`` (e.g. num_layers) it sets for the variant; the preset code adds the width
# (embed_dim, num_heads, ff_dim) shared by all variants.
PresetRule = Callable[[Any], Mapping[str, Any]]


@dataclasses.dataclass(frozen=True)
class GeneratorSpec:
    """A registered generator variant."""

    name: str  # The ``ModelConfig.variant`` value.
    cls: type  # The Flax module class (implements interface.Generator).
    # ModelConfig fields the class reads besides the shared backbone ones (embed_dim, num_layers,
    # num_heads, ff_dim, dropout, causal, use_user_id, bilinear_head, item_bias, dtype); each is
    # passed to the class as the keyword argument of the same name.
    fields: tuple[str, ...]
    preset_rule: PresetRule

    def preset_fields(self, preset: Any) -> dict[str, Any]:
        """The depth fields of ``ModelConfig`` that ``preset`` sets for this variant."""
        return dict(self.preset_rule(preset))


_GENERATORS: dict[str, GeneratorSpec] = {}


def _check(name: str, cls: type, fields: tuple[str, ...], preset_rule) -> None:
    from goalrank_jax import configs  # Here, not on import: configs reads the registry lazily.

    if not isinstance(name, str) or not name:
        raise ValueError(f"A generator variant needs a non-empty name, got {name!r}.")
    if name in _GENERATORS:
        raise ValueError(f"Generator variant {name!r} is already registered.")
    missing = [m for m in GENERATOR_METHODS if not any(m in vars(k) for k in cls.__mro__[:-1])]
    if missing:
        raise TypeError(
            f"Generator variant {name!r}: {cls.__name__} lacks {', '.join(missing)} of the "
            "generator interface (goalrank_jax/models/interface.py)."
        )
    known = {field.name for field in dataclasses.fields(configs.ModelConfig)}
    unknown = [f for f in fields if f not in known]
    if unknown:
        raise ValueError(
            f"Generator variant {name!r} reads {', '.join(unknown)}, which ModelConfig lacks."
        )
    if not callable(preset_rule):
        raise TypeError(f"Generator variant {name!r} needs a callable preset_rule.")


def register_generator(
    name: str,
    cls: type | None = None,
    *,
    fields: tuple[str, ...] = (),
    preset_rule: PresetRule,
):
    """Registers the generator class ``cls`` as variant ``name``; returns ``cls``.

    Without ``cls`` it returns a class decorator that registers the class it decorates.

    Args:
      name: the ``ModelConfig.variant`` value.
      cls: a Flax module class implementing interface.Generator, built by ``make_generator``
        with ``num_users``, ``num_items``, the shared backbone fields and ``fields``.
      fields: the other ModelConfig fields the class reads (same-named constructor keywords).
      preset_rule: size preset -> the depth fields it sets for this variant.

    Raises:
      ValueError: ``name`` is taken, or a field is not a ModelConfig field.
      TypeError: the class lacks a method of the interface, or ``preset_rule`` is no callable.
    """

    def register(cls: type) -> type:
        _check(name, cls, tuple(fields), preset_rule)
        _GENERATORS[name] = GeneratorSpec(name, cls, tuple(fields), preset_rule)
        return cls

    return register if cls is None else register(cls)


def unregister_generator(name: str) -> None:
    """Removes variant ``name`` (KeyError if it is not registered); for tests and forks."""
    del _GENERATORS[name]


def generator_variants() -> tuple[str, ...]:
    """The registered variant names, in registration order (built-ins first)."""
    return tuple(_GENERATORS)


def get_generator(name: str) -> GeneratorSpec:
    """The spec of variant ``name``; a ValueError lists the registered variants otherwise."""
    try:
        return _GENERATORS[name]
    except KeyError:
        raise ValueError(
            f"Unknown generator variant {name!r}; use one of {generator_variants()}."
        ) from None
