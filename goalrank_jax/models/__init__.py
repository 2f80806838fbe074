"""Flax Linen models: the generator variants and the reward models.

The generator variants are those of :mod:`goalrank_jax.models.registry`; importing a module that
registers one (e.g. ``generator`` below) is what makes it a valid ``ModelConfig.variant``. A new
variant is one file plus its import here (see registry.py).
"""

import jax.numpy as jnp

from goalrank_jax.models.generator import (
    FastContext,
    FastGenerator,
    GeneratorContext,
    PrefixGenerator,
)
from goalrank_jax.models.interface import Generator
from goalrank_jax.models.registry import (
    GeneratorSpec,
    generator_variants,
    get_generator,
    register_generator,
    unregister_generator,
)
from goalrank_jax.models.reward_model import ListAwareRewardModel, PointwiseRewardModel


def model_kwargs(model_config) -> dict:
    """The backbone fields of ``model_config`` shared by every generator and reward model, as
    constructor keyword arguments (``causal`` is not among them: each builder sets it)."""
    return dict(
        embed_dim=model_config.embed_dim,
        num_layers=model_config.num_layers,
        num_heads=model_config.num_heads,
        ff_dim=model_config.ff_dim,
        dropout=model_config.dropout,
        use_user_id=model_config.use_user_id,
        bilinear_head=model_config.bilinear_head,
        item_bias=model_config.item_bias,
        dtype=jnp.dtype(model_config.dtype),
    )


def make_generator(model_config, num_users: int, num_items: int, num_item_features: int = 0):
    """The generator of ``model_config.variant`` (a registered variant: "prefix" is the
    paper-faithful one, "fast" the encode-once pointer decoder); ``num_item_features`` is the
    dataset's item side-feature vocabulary (0 = item ids only)."""
    spec = get_generator(model_config.variant)
    return spec.cls(
        num_users=num_users,
        num_items=num_items,
        num_item_features=num_item_features,
        causal=model_config.causal,
        **model_kwargs(model_config),
        **{name: getattr(model_config, name) for name in spec.fields},
    )


def make_reward_model(
    kind: str,
    model_config,
    num_users: int,
    num_items: int,
    list_len: int | None = None,
    num_item_features: int = 0,
):
    """The reward model of ``kind``; ``list_len`` (L) sizes the list-aware position table,
    ``num_item_features`` is the dataset's item side-feature vocabulary (0 = item ids only)."""
    if kind == "pointwise":
        return PointwiseRewardModel(
            num_users=num_users,
            num_items=num_items,
            num_item_features=num_item_features,
            causal=model_config.causal,
            **model_kwargs(model_config),
        )
    if kind == "list_aware":
        if list_len is None:
            raise ValueError("make_reward_model('list_aware', ...) needs list_len")
        return ListAwareRewardModel(
            num_users=num_users,
            num_items=num_items,
            num_item_features=num_item_features,
            max_list_len=list_len,
            pairwise_above=model_config.pairwise_above,
            causal=True,
            **model_kwargs(model_config),
        )
    raise ValueError(f"Unknown reward model kind {kind!r}; use 'pointwise' or 'list_aware'.")


def __getattr__(name: str):
    if name == "GENERATOR_VARIANTS":  # The registered variants, read when asked for.
        return generator_variants()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FastContext",
    "FastGenerator",
    "GENERATOR_VARIANTS",
    "Generator",
    "GeneratorContext",
    "GeneratorSpec",
    "ListAwareRewardModel",
    "PointwiseRewardModel",
    "PrefixGenerator",
    "generator_variants",
    "get_generator",
    "make_generator",
    "make_reward_model",
    "model_kwargs",
    "register_generator",
    "unregister_generator",
]
