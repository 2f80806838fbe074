"""The true list-wise user model of the synthetic environment and its closed-form expected reward.

For the item at position t (0-based) of a list,

    p_t = exam_t * sigmoid(rel_t - redundancy_penalty * n_same_t + complement_bonus * comp_t),
    exam_t = (1 / (t + 1)) ** examination_power,

where n_same_t counts the items above t that share its category and comp_t is 1 when some item
above t has the *partner* category of t's category. The expected reward of a list is the expected
number of clicks, sum_t p_t. Because p_t depends only on the prefix and the item at t, the reward
is a sum of incremental terms, which the oracle beam search (goalrank_jax/env/oracle.py) exploits.

Axis names in shapes: B batch, N candidates, L list length.
"""

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class TrueModelParams:
    """Scalars of the true list-wise response model."""

    # eta: examination at 0-based position t is (1 / (t + 1)) ** eta.
    examination_power: float = 1.0
    # Logit penalty per item above with the same category.
    redundancy_penalty: float = 2.0
    # Logit bonus when some item above has the partner category of this item's category.
    complement_bonus: float = 2.0


def click_probabilities(
    rel_logit: jax.Array,
    category: jax.Array,
    partner: jax.Array,
    params: TrueModelParams,
) -> jax.Array:
    """Click probability of every position of lists under the true model.

    Args:
        rel_logit: [..., L] true relevance logits of the listed items, in list order.
        category: [..., L] int category of each listed item.
        partner: [..., L] int partner category of each listed item's category.
        params: the true-model scalars.

    Returns:
        [..., L] float32 click probabilities p_t.
    """
    rel_logit = jnp.asarray(rel_logit, jnp.float32)
    category = jnp.asarray(category)
    partner = jnp.asarray(partner)
    list_len = rel_logit.shape[-1]
    above = jnp.tril(jnp.ones((list_len, list_len), dtype=bool), k=-1)
    same = category[..., :, None] == category[..., None, :]
    completes = partner[..., :, None] == category[..., None, :]
    n_same = jnp.sum(same & above, axis=-1).astype(jnp.float32)
    comp = jnp.any(completes & above, axis=-1).astype(jnp.float32)
    positions = jnp.arange(list_len, dtype=jnp.float32)
    exam = (positions + 1.0) ** (-params.examination_power)
    logit = rel_logit - params.redundancy_penalty * n_same + params.complement_bonus * comp
    return exam * jax.nn.sigmoid(logit)


def expected_list_reward(
    rel_logit: jax.Array,
    category: jax.Array,
    partner: jax.Array,
    params: TrueModelParams,
) -> jax.Array:
    """Expected number of clicks of lists under the true model.

    Args:
        rel_logit: [..., L] true relevance logits of the listed items, in list order.
        category: [..., L] int category of each listed item.
        partner: [..., L] int partner category of each listed item's category.
        params: the true-model scalars.

    Returns:
        [...] float32 expected rewards sum_t p_t.
    """
    return jnp.sum(click_probabilities(rel_logit, category, partner, params), axis=-1)


def list_reward_from_candidates(
    cand_rel_logit: jax.Array,
    cand_category: jax.Array,
    cand_partner: jax.Array,
    lists: jax.Array,
    params: TrueModelParams,
) -> jax.Array:
    """Expected reward of lists given as indices into per-request candidate sets.

    Args:
        cand_rel_logit: [B, N] true relevance logits of the candidates.
        cand_category: [B, N] int candidate categories.
        cand_partner: [B, N] int partner category of each candidate's category.
        lists: [B, ..., L] int indices into the N candidates, any number of extra list axes.
        params: the true-model scalars.

    Returns:
        [B, ...] float32 expected rewards.
    """
    lists = jnp.asarray(lists)
    batch = lists.shape[0]
    flat = lists.reshape(batch, -1)

    def gather(values: jax.Array) -> jax.Array:
        return jnp.take_along_axis(jnp.asarray(values), flat, axis=1).reshape(lists.shape)

    return expected_list_reward(
        gather(cand_rel_logit), gather(cand_category), gather(cand_partner), params
    )
