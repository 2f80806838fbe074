"""Sampling, greedy decoding and list log-probabilities of autoregressive list policies.

A policy is given by ``step_logits(chosen) -> logits``: ``chosen`` is a [B, M..., N] multi-hot
of the candidates already placed in the list (M... any extra axes) and ``logits`` the [B, M..., N]
unnormalised scores of the next item. The functions here mask candidates that are invalid
(``cand_mask`` False) or already chosen, so a list never repeats an item and never contains
padding. Lists are int32 candidate indices of shape [..., L], position 0 first.

A policy whose next-item logits depend on the order of the prefix (the fast generator's decoder
with its key/value cache) is a :data:`DecodeStep` with a carried state; :func:`decode` runs both
kinds, a stateless policy through :func:`stateless`.

    log pi(l | u) = sum_t log softmax(masked logits_t)[l_t]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

StepLogits = Callable[[jnp.ndarray], jnp.ndarray]
# A policy with a decoding state (e.g. a key/value cache): (carry, prev_item [B], chosen [B, N],
# t) -> (logits [B, N], carry). prev_item is the item placed at step t-1 (0 at t=0).
DecodeStep = Callable[[Any, jnp.ndarray, jnp.ndarray, jnp.ndarray], tuple[jnp.ndarray, Any]]

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


def stateless(step_logits: StepLogits) -> DecodeStep:
    """A :data:`DecodeStep` for a policy whose logits depend only on the chosen set."""

    def decode_step(carry, prev_item, chosen, t):
        del prev_item, t
        return step_logits(chosen), carry

    return decode_step


def decode(
    decode_step: DecodeStep,
    carry: Any,
    cand_mask: jnp.ndarray,
    list_len: int,
    key: jax.Array | None = None,
    temperature: float = 1.0,
    unroll: int | bool = 1,
) -> jnp.ndarray:
    """One list per request, a ``lax.scan`` over the L steps: sampled without replacement from
    softmax(logits / temperature) when ``key`` is given, greedy argmax otherwise.

    Args:
      decode_step: the policy (see :data:`DecodeStep`), called with chosen [B, N].
      carry: its initial decoding state (None for a stateless policy).
      cand_mask: [B, N] bool; each row needs at least L valid candidates.
      list_len: L (static).
      key: typed PRNG key, split into one key per step; None = greedy.
      temperature: logits are divided by it before sampling.
      unroll: ``lax.scan`` unrolling (True = a straight-line program, whose XLA cost analysis
        counts every step; a rolled loop's body is counted once).

    Returns:
      [B, L] int32 candidate indices.
    """
    chosen0 = jnp.zeros(cand_mask.shape, dtype=jnp.float32)
    prev0 = jnp.zeros(cand_mask.shape[:-1], dtype=jnp.int32)
    step_keys = None if key is None else jax.random.split(key, list_len)

    def step(state, xs):
        carry, chosen, prev = state
        t, step_key = xs
        logits, carry = decode_step(carry, prev, chosen, t)
        if step_key is None:
            item = jnp.argmax(mask_logits(logits, cand_mask, chosen), axis=-1)
        else:
            logits = mask_logits(logits / temperature, cand_mask, chosen)
            item = jax.random.categorical(step_key, logits, axis=-1)
        item = item.astype(jnp.int32)
        chosen = chosen + jax.nn.one_hot(item, cand_mask.shape[-1], dtype=chosen.dtype)
        return (carry, chosen, item), item

    xs = (jnp.arange(list_len, dtype=jnp.int32), step_keys)
    _, items = jax.lax.scan(step, (carry, chosen0, prev0), xs, unroll=unroll)
    return items.T


def sample_group_decoder(
    decode_step: DecodeStep,
    carry: Any,
    cand_mask: jnp.ndarray,
    list_len: int,
    key: jax.Array,
    group_size: int,
    temperature: float = 1.0,
    unroll: int | bool = 1,
) -> jnp.ndarray:
    """K independent lists per request, vmapped over K keys (the per-request context closed
    over by ``decode_step`` is shared by the K samples). Returns [B, K, L] int32."""
    keys = jax.random.split(key, group_size)
    lists = jax.vmap(
        lambda k: decode(decode_step, carry, cand_mask, list_len, k, temperature, unroll)
    )(keys)
    return jnp.swapaxes(lists, 0, 1)


def sample_list(
    step_logits: StepLogits,
    cand_mask: jnp.ndarray,
    list_len: int,
    key: jax.Array,
    temperature: float = 1.0,
) -> jnp.ndarray:
    """Samples one list per request without replacement from a stateless policy: [B, L]."""
    return decode(stateless(step_logits), None, cand_mask, list_len, key, temperature)


def sample_group(
    step_logits: StepLogits,
    cand_mask: jnp.ndarray,
    list_len: int,
    key: jax.Array,
    group_size: int,
    temperature: float = 1.0,
) -> jnp.ndarray:
    """K independent lists per request from a stateless policy. Returns [B, K, L] int32."""
    return sample_group_decoder(
        stateless(step_logits), None, cand_mask, list_len, key, group_size, temperature
    )


def greedy_list(step_logits: StepLogits, cand_mask: jnp.ndarray, list_len: int) -> jnp.ndarray:
    """Argmax decoding of a stateless policy: [B, L] int32."""
    return decode(stateless(step_logits), None, cand_mask, list_len)


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


def step_entropy(masked_logits: jnp.ndarray) -> jnp.ndarray:
    """masked_logits [..., N] (from :func:`mask_logits`) -> [...] entropy (nats) of each step's
    choice among the candidates left; masked candidates carry no probability."""
    log_probs = jax.nn.log_softmax(masked_logits, axis=-1)
    return -(jnp.exp(log_probs) * log_probs).sum(-1)


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
