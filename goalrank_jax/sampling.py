"""Sampling, greedy decoding and list log-probabilities of autoregressive list policies.

A policy is given by ``step_logits(chosen) -> logits``: ``chosen`` is a [B, M..., N] multi-hot
of the candidates already placed in the list (M... any extra axes) and ``logits`` the [B, M..., N]
unnormalised scores of the next item. The functions here mask candidates that are invalid
(``cand_mask`` False) or already chosen, so a list never repeats an item and never contains
padding. Lists are int32 candidate indices of shape [..., L], position 0 first.

    log pi(l | u) = sum_t log softmax(masked logits_t)[l_t]
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

StepLogits = Callable[[jnp.ndarray], jnp.ndarray]

_NEG = -1e9


def mask_logits(logits: jnp.ndarray, cand_mask: jnp.ndarray, chosen: jnp.ndarray) -> jnp.ndarray:
    """Sets logits of invalid or already chosen candidates to a large negative number.

    logits, chosen: [B, M..., N]; cand_mask: [B, N]. A finite constant (not -inf) keeps
    gradients and log-softmax finite even for fully masked rows.
    """
    extra = logits.ndim - cand_mask.ndim
    valid = cand_mask.reshape(cand_mask.shape[:1] + (1,) * extra + cand_mask.shape[1:])
    allowed = jnp.logical_and(valid, jnp.logical_not(chosen.astype(bool)))
    return jnp.where(allowed, logits, _NEG)


def sample_list(
    step_logits: StepLogits,
    cand_mask: jnp.ndarray,
    list_len: int,
    key: jax.Array,
    temperature: float = 1.0,
) -> jnp.ndarray:
    """Samples one list per request without replacement: a ``lax.scan`` over the L steps.

    Args:
      step_logits: the policy (see module docstring), called with chosen [B, N].
      cand_mask: [B, N] bool; each row needs at least L valid candidates.
      list_len: L (static).
      key: typed PRNG key.
      temperature: logits are divided by it before sampling.

    Returns:
      [B, L] int32 candidate indices.
    """
    chosen0 = jnp.zeros(cand_mask.shape, dtype=jnp.float32)

    def step(chosen, step_key):
        logits = mask_logits(step_logits(chosen) / temperature, cand_mask, chosen)
        item = jax.random.categorical(step_key, logits, axis=-1).astype(jnp.int32)
        chosen = chosen + jax.nn.one_hot(item, cand_mask.shape[-1], dtype=chosen.dtype)
        return chosen, item

    _, items = jax.lax.scan(step, chosen0, jax.random.split(key, list_len))
    return items.T


def sample_group(
    step_logits: StepLogits,
    cand_mask: jnp.ndarray,
    list_len: int,
    key: jax.Array,
    group_size: int,
    temperature: float = 1.0,
) -> jnp.ndarray:
    """K independent lists per request, vmapped over K keys. Returns [B, K, L] int32."""
    keys = jax.random.split(key, group_size)
    lists = jax.vmap(lambda k: sample_list(step_logits, cand_mask, list_len, k, temperature))(keys)
    return jnp.swapaxes(lists, 0, 1)


def greedy_list(step_logits: StepLogits, cand_mask: jnp.ndarray, list_len: int) -> jnp.ndarray:
    """Argmax decoding: [B, L] int32."""
    chosen0 = jnp.zeros(cand_mask.shape, dtype=jnp.float32)

    def step(chosen, _):
        logits = mask_logits(step_logits(chosen), cand_mask, chosen)
        item = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        return chosen + jax.nn.one_hot(item, cand_mask.shape[-1], dtype=chosen.dtype), item

    _, items = jax.lax.scan(step, chosen0, None, length=list_len)
    return items.T


def prefix_multi_hot(lists: jnp.ndarray, num_candidates: int) -> jnp.ndarray:
    """lists [..., L] -> [..., L, N] where row t is the multi-hot of lists[..., :t]."""
    one_hot = jax.nn.one_hot(lists, num_candidates, dtype=jnp.float32)
    return jnp.cumsum(one_hot, axis=-2) - one_hot


def list_log_prob(
    step_logits: StepLogits, cand_mask: jnp.ndarray, lists: jnp.ndarray
) -> jnp.ndarray:
    """Teacher-forced log pi(l | u) of lists [B, M..., L]; all L steps in one batched call.

    Returns [B, M...].
    """
    chosen = prefix_multi_hot(lists, cand_mask.shape[-1])
    logits = mask_logits(step_logits(chosen), cand_mask, chosen)
    return log_prob_from_logits(logits, lists)


def log_prob_from_logits(masked_logits: jnp.ndarray, lists: jnp.ndarray) -> jnp.ndarray:
    """masked_logits [..., L, N] (step t conditioned on lists[..., :t]), lists [..., L] -> [...]."""
    log_probs = jax.nn.log_softmax(masked_logits, axis=-1)
    picked = jnp.take_along_axis(log_probs, lists[..., None], axis=-1)[..., 0]
    return picked.sum(-1)


def gumbel_top_k(
    scores: jnp.ndarray,
    cand_mask: jnp.ndarray,
    list_len: int,
    key: jax.Array,
    group_size: int,
) -> jnp.ndarray:
    """Plackett-Luce samples by the Gumbel-top-k trick: [B, K, L] int32.

    Perturbing scores [B, N] with i.i.d. Gumbel noise and taking the top L in order draws a list
    from the Plackett-Luce distribution with weights exp(scores) over the valid candidates.
    """
    noise = jax.random.gumbel(key, (scores.shape[0], group_size, scores.shape[1]), scores.dtype)
    perturbed = jnp.where(cand_mask[:, None, :], scores[:, None, :] + noise, _NEG)
    return jax.lax.top_k(perturbed, list_len)[1].astype(jnp.int32)


def plackett_luce_log_prob(
    scores: jnp.ndarray, cand_mask: jnp.ndarray, lists: jnp.ndarray
) -> jnp.ndarray:
    """log P_PL(l) = sum_t [s(l_t) - logsumexp of s over valid candidates not in l_<t].

    scores [B, N], lists [B, M..., L] -> [B, M...]. Equal to :func:`list_log_prob` of a policy
    whose step logits ignore the prefix.
    """
    extra = lists.ndim - 1
    expanded = scores.reshape(scores.shape[:1] + (1,) * extra + scores.shape[1:])
    chosen = prefix_multi_hot(lists, scores.shape[-1])
    logits = mask_logits(jnp.broadcast_to(expanded, chosen.shape), cand_mask, chosen)
    return log_prob_from_logits(logits, lists)
