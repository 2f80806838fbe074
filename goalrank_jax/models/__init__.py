"""Flax Linen models: the two generator variants and the reward models."""

import jax.numpy as jnp

from goalrank_jax.configs import GENERATOR_VARIANTS
from goalrank_jax.models.generator import (
    FastContext,
    FastGenerator,
    GeneratorContext,
    PrefixGenerator,
)
from goalrank_jax.models.reward_model import ListAwareRewardModel, PointwiseRewardModel


def _kwargs(model_config) -> dict:
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


def make_generator(model_config, num_users: int, num_items: int):
    """The generator of ``model_config.variant``: "prefix" (paper-faithful) or "fast"."""
    common = dict(
        num_users=num_users,
        num_items=num_items,
        causal=model_config.causal,
        **_kwargs(model_config),
    )
    if model_config.variant == "prefix":
        return PrefixGenerator(**common)
    if model_config.variant == "fast":
        return FastGenerator(decoder_layers=model_config.decoder_layers, **common)
    raise ValueError(
        f"Unknown generator variant {model_config.variant!r}; use one of {GENERATOR_VARIANTS}."
    )


def make_reward_model(
    kind: str, model_config, num_users: int, num_items: int, list_len: int | None = None
):
    """The reward model of ``kind``; ``list_len`` (L) sizes the list-aware position table."""
    if kind == "pointwise":
        return PointwiseRewardModel(
            num_users=num_users,
            num_items=num_items,
            causal=model_config.causal,
            **_kwargs(model_config),
        )
    if kind == "list_aware":
        if list_len is None:
            raise ValueError("make_reward_model('list_aware', ...) needs list_len")
        return ListAwareRewardModel(
            num_users=num_users,
            num_items=num_items,
            max_list_len=list_len,
            causal=True,
            **_kwargs(model_config),
        )
    raise ValueError(f"Unknown reward model kind {kind!r}; use 'pointwise' or 'list_aware'.")


__all__ = [
    "FastContext",
    "FastGenerator",
    "GENERATOR_VARIANTS",
    "GeneratorContext",
    "ListAwareRewardModel",
    "PointwiseRewardModel",
    "PrefixGenerator",
    "make_generator",
    "make_reward_model",
]
