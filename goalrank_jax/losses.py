"""The group-relative objective of GoalRank and the supervised term.

Per request with a group of K lists and frozen rewards r_1..r_K:

    A_k      = (r_k - mean(r)) / (std(r, ddof=1) + eps)
    pi_ref_k = softmax_k(A_k / tau_ref)
    L_GRO    = - sum_k pi_ref_k * log pi_theta(l_k | u)            (loss_form="log_prob")
    L_GRO    = - sum_k pi_ref_k * pi_theta(l_k | u)                (loss_form="prob", ablation)

The reference policy is a constant (no gradient flows into the rewards).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

GROUP_STD_EPS = 1e-6


def group_advantages(rewards: jnp.ndarray, eps: float = GROUP_STD_EPS) -> jnp.ndarray:
    """rewards [..., K] -> z-normalised advantages [..., K] (unbiased std, ddof=1).

    A group whose rewards are all equal gets A = 0.
    """
    mean = rewards.mean(-1, keepdims=True)
    centred = rewards - mean
    var = (centred**2).sum(-1, keepdims=True) / (rewards.shape[-1] - 1)
    adv = centred / (jnp.sqrt(var) + eps)
    # Rounding of the float mean leaves a residual of about one ulp in `centred` when all rewards
    # are equal; with std ~ ulp that residual would become an advantage of order one. A group
    # without spread carries no preference, so its advantages are exactly zero.
    flat = rewards.max(-1, keepdims=True) == rewards.min(-1, keepdims=True)
    return jnp.where(flat, 0.0, adv)


def group_relative_targets(rewards: jnp.ndarray, tau_ref: float = 1.0) -> jnp.ndarray:
    """rewards [..., K] -> reference policy pi_ref [..., K] (sums to 1 over K), no gradient."""
    return jax.lax.stop_gradient(jax.nn.softmax(group_advantages(rewards) / tau_ref, axis=-1))


def gro_loss(
    log_probs: jnp.ndarray,
    targets: jnp.ndarray,
    weights: jnp.ndarray | None = None,
    loss_form: str = "log_prob",
) -> jnp.ndarray:
    """Mean over requests of the group cross-entropy.

    Args:
      log_probs: [B, K] log pi_theta of each list of the group.
      targets: [B, K] pi_ref.
      weights: [B] request weights (e.g. 0 for padding); None = all ones.
      loss_form: "log_prob" or "prob".
    """
    if loss_form == "log_prob":
        per_list = log_probs
    elif loss_form == "prob":
        per_list = jnp.exp(log_probs)
    else:
        raise ValueError(f"loss_form must be 'log_prob' or 'prob', got {loss_form!r}")
    per_request = -(targets * per_list).sum(-1)
    return weighted_mean(per_request, weights)


def supervised_bce(
    logits: jnp.ndarray,
    labels: jnp.ndarray,
    cand_mask: jnp.ndarray,
    weights: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """Pointwise BCE of candidate logits [B, N] vs labels [B, N], averaged over valid candidates
    of each request and then over requests."""
    per_cand = optax.sigmoid_binary_cross_entropy(logits, labels.astype(logits.dtype))
    mask = cand_mask.astype(logits.dtype)
    per_request = (per_cand * mask).sum(-1) / jnp.maximum(mask.sum(-1), 1.0)
    return weighted_mean(per_request, weights)


def weighted_mean(values: jnp.ndarray, weights: jnp.ndarray | None) -> jnp.ndarray:
    if weights is None:
        return values.mean()
    weights = weights.astype(values.dtype)
    return (values * weights).sum() / jnp.maximum(weights.sum(), 1.0)
