"""Flax Linen models: the prefix-conditioned generator and the reward models."""

from goalrank_jax.models.generator import GeneratorContext, PrefixGenerator
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
    )


def make_generator(model_config, num_users: int, num_items: int) -> PrefixGenerator:
    return PrefixGenerator(
        num_users=num_users,
        num_items=num_items,
        causal=model_config.causal,
        **_kwargs(model_config),
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
            num_users=num_users, num_items=num_items, max_list_len=list_len, **_kwargs(model_config)
        )
    raise ValueError(f"Unknown reward model kind {kind!r}; use 'pointwise' or 'list_aware'.")


__all__ = [
    "GeneratorContext",
    "ListAwareRewardModel",
    "PointwiseRewardModel",
    "PrefixGenerator",
    "make_generator",
    "make_reward_model",
]
