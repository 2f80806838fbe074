"""The group-relative objective of GoalRank and the supervised term.

Per request with a group of K lists and frozen rewards r_1..r_K:

    A_k      = (r_k - mean(r)) / (std(r, ddof=1) + eps)
    pi_ref_k = softmax_k(A_k / tau_ref)
    L_GRO    = - sum_k pi_ref_k * log pi_theta(l_k | u)            (loss_form="log_prob")
    L_GRO    = - sum_k pi_ref_k * pi_theta(l_k | u)                (loss_form="prob", ablation)

The reference policy is a constant (no gradient flows into the rewards).

The supervised term L_sup on the logged labels y [B, N] comes in three forms
(``GROConfig.supervised_form``): :func:`supervised_bce` of the first-step logits (steps 2..L
unsupervised, kept for ablation), :func:`every_step_bce` along the teacher-forced logged list,
:func:`logged_nll` of the logged positives in their shown order, and :func:`group_step_bce`,
every_step_bce along the group's sampled lists.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from goalrank_jax import sampling

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


def gro_weights(rewards: jnp.ndarray, tau_ref: float = 1.0, centre: bool = False) -> jnp.ndarray:
    """rewards [..., K] -> weights [..., K] of the group's log-likelihoods in L_GRO: pi_ref, or
    with ``centre`` pi_ref - 1/K (zero for a group of equal rewards; sums to zero)."""
    targets = group_relative_targets(rewards, tau_ref)
    return targets - 1.0 / targets.shape[-1] if centre else targets


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


def available_candidates(lists: jnp.ndarray, cand_mask: jnp.ndarray) -> jnp.ndarray:
    """lists [B, L], cand_mask [B, N] -> [B, L, N] bool: row t marks the valid candidates not
    among lists[:, :t] (those that step t of a list decoded along ``lists`` may still pick)."""
    chosen = sampling.prefix_multi_hot(lists, cand_mask.shape[-1])
    return jnp.logical_and(cand_mask[:, None, :], chosen == 0)


def step_log_probs(step_logits: jnp.ndarray, lists: jnp.ndarray, cand_mask: jnp.ndarray):
    """[B, L, N] log-softmax of each step's logits over the candidates that step may pick
    (valid, not among lists[:, :t]); the others get ``sampling.mask_logits``' large negative."""
    chosen = sampling.prefix_multi_hot(lists, cand_mask.shape[-1])
    return jax.nn.log_softmax(sampling.mask_logits(step_logits, cand_mask, chosen), -1)


def every_step_bce(
    step_logits: jnp.ndarray,
    lists: jnp.ndarray,
    labels: jnp.ndarray,
    cand_mask: jnp.ndarray,
    weights: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """Pointwise BCE at every decoding step of a teacher-forced list (the logged list).

    With z_t [N] the step-t logits conditioned on lists[:t] and the available set
    A_t = {n : cand_mask_n and n not in lists[:t]}:

        l_t       = sum_{n in A_t} BCE(z_t[n], y_n) / max(|A_t|, 1)
        per_req   = (1 / L) sum_{t=0}^{L-1} l_t
        L_sup     = sum_b w_b per_req_b / max(sum_b w_b, 1)      (w = 1 when weights is None)

    Step 0 is :func:`supervised_bce` of the first-step logits; a step with no available
    candidate contributes 0 (and still counts in the 1 / L).

    Args:
      step_logits: [B, L, N] teacher-forced logits (step t conditioned on lists[:, :t]).
      lists: [B, L] int32 the teacher-forced list.
      labels: [B, N] candidate labels y in [0, 1].
      cand_mask: [B, N] bool, False for padded candidates (never enter the loss).
      weights: [B] request weights (e.g. 0 for padding); None = all ones.
    """
    available = available_candidates(lists, cand_mask)
    targets = jnp.broadcast_to(labels[:, None, :], step_logits.shape).astype(step_logits.dtype)
    per_cand = optax.sigmoid_binary_cross_entropy(step_logits, targets)
    per_cand = jnp.where(available, per_cand, 0.0)
    count = available.sum(-1).astype(step_logits.dtype)
    per_step = per_cand.sum(-1) / jnp.maximum(count, 1.0)
    return weighted_mean(per_step.mean(-1), weights)


def _mean_over_group(per_list_loss, step_logits, lists, labels, cand_mask, weights):
    """``per_list_loss`` (a teacher-forced loss of [B, L, N] logits along [B, L] lists) along each
    of the K lists of a group ([B, K, L, N], [B, K, L]), averaged over the K lists."""
    per_list = jax.vmap(per_list_loss, in_axes=(1, 1, None, None, None))(
        step_logits, lists, labels, cand_mask, weights
    )
    return per_list.mean()


def group_step_bce(
    step_logits: jnp.ndarray,
    lists: jnp.ndarray,
    labels: jnp.ndarray,
    cand_mask: jnp.ndarray,
    weights: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """:func:`every_step_bce` along each of the K sampled lists of a group, averaged over them:

        L_sup = (1 / K) sum_k every_step_bce(step_logits[:, k], lists[:, k], y, mask, w)

    (the train step passes the sampled lists only: a mixed group's auxiliary lists, the logged
    one among them, are left out).

    Along the logged list (``every_step_bce``), the prefix of step t is what the logging policy
    showed, and the labels below it carry its list-wise effects (an item below a same-category
    one is clicked less): the later steps learn those, and apply them to prefixes the logging
    policy never chose. The group's lists are chosen without the labels, so at every step the
    loss's minimiser is each remaining candidate's label rate given the request alone: the
    later steps then rank the remaining candidates as the first step ranks them all.

    Args:
      step_logits: [B, K, L, N] step logits along the group's lists.
      lists: [B, K, L] int32 the group's lists.
      labels, cand_mask, weights: as in :func:`every_step_bce`.
    """
    return _mean_over_group(every_step_bce, step_logits, lists, labels, cand_mask, weights)


def _positive_steps(lists, labels, cand_mask) -> jnp.ndarray:
    """[B, L] bool: the item at step t is a valid candidate with label > 0."""
    positive = jnp.logical_and(labels > 0, cand_mask)
    return jnp.take_along_axis(positive, lists, axis=-1)


def positives_first(lists: jnp.ndarray, labels: jnp.ndarray, cand_mask: jnp.ndarray):
    """lists [B, L] -> [B, L] the same items, the positives (valid, label > 0) first, then the
    others, each group in its original (shown) order."""
    order = jnp.argsort(~_positive_steps(lists, labels, cand_mask), axis=-1, stable=True)
    return jnp.take_along_axis(lists, order, axis=-1)


def every_step_softmax(
    step_logits: jnp.ndarray,
    lists: jnp.ndarray,
    labels: jnp.ndarray,
    cand_mask: jnp.ndarray,
    weights: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """Softmax cross-entropy towards the positives still available, at every step of a
    teacher-forced list: the step's choice, not each candidate's label, is what is trained.

    With z_t [N] the step-t logits conditioned on lists[:t], A_t the available candidates (as in
    :func:`every_step_bce`), P_t = {n in A_t : y_n > 0} and log p_t = log_softmax(z_t over A_t):

        l_t     = - sum_{n in P_t} log p_t[n] / |P_t|        (0 when P_t is empty)
        per_req = sum_t l_t / max(#{t : P_t non-empty}, 1)
        L_sup   = sum_b w_b [some P_t non-empty] per_req_b / max(sum_b w_b [...], 1)

    i.e. at every step the target distribution is uniform over the positives left, the
    minimiser puts the step's mass on them, and requests with no positive carry no loss.

    Args: as :func:`every_step_bce`.
    """
    log_probs = step_log_probs(step_logits, lists, cand_mask)
    positive = available_candidates(lists, cand_mask) & (labels[:, None, :] > 0)
    count = positive.sum(-1).astype(step_logits.dtype)
    per_step = -jnp.where(positive, log_probs, 0.0).sum(-1) / jnp.maximum(count, 1.0)
    steps = (count > 0).sum(-1).astype(step_logits.dtype)
    per_request = per_step.sum(-1) / jnp.maximum(steps, 1.0)
    has_positive = (steps > 0).astype(step_logits.dtype)
    request_weights = has_positive if weights is None else has_positive * weights
    return weighted_mean(per_request, request_weights)


def group_step_softmax(
    step_logits: jnp.ndarray,
    lists: jnp.ndarray,
    labels: jnp.ndarray,
    cand_mask: jnp.ndarray,
    weights: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """:func:`every_step_softmax` along each of the K sampled lists of a group, averaged over
    them (as :func:`group_step_bce` does with :func:`every_step_bce`).

    Args: as :func:`group_step_bce`.
    """
    return _mean_over_group(every_step_softmax, step_logits, lists, labels, cand_mask, weights)


def logged_nll(
    step_logits: jnp.ndarray,
    lists: jnp.ndarray,
    labels: jnp.ndarray,
    cand_mask: jnp.ndarray,
    weights: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """Negative log-likelihood of the positive items of a teacher-forced list.

    ``lists`` is the logged list reordered by :func:`positives_first`, so its P_b positive items
    come first in their shown order and the negatives after them. With z_t the step-t logits
    and p_t = log_softmax(mask_logits(z_t, cand_mask, lists[:t]))[lists_t]:

        per_req_b = - sum_{t : y_{lists_t} > 0} p_t / max(P_b, 1)
        L_sup     = sum_b w_b [P_b > 0] per_req_b / max(sum_b w_b [P_b > 0], 1)

    i.e. -log pi(positives in shown order | u) per positive; the negatives' steps carry no loss
    and requests without a positive are excluded from the mean (0 if no request has one).

    Args:
      step_logits: [B, L, N] teacher-forced logits (step t conditioned on lists[:, :t]).
      lists: [B, L] int32 the teacher-forced list (positives first).
      labels: [B, N] candidate labels; positive = label > 0 on a valid candidate.
      cand_mask: [B, N] bool, False for padded candidates (masked out of every softmax).
      weights: [B] request weights (e.g. 0 for padding); None = all ones.
    """
    log_probs = step_log_probs(step_logits, lists, cand_mask)
    picked = jnp.take_along_axis(log_probs, lists[..., None], axis=-1)[..., 0]
    positive = _positive_steps(lists, labels, cand_mask)
    num_positive = positive.sum(-1).astype(picked.dtype)
    per_request = -jnp.where(positive, picked, 0.0).sum(-1) / jnp.maximum(num_positive, 1.0)
    has_positive = (num_positive > 0).astype(picked.dtype)
    request_weights = has_positive if weights is None else has_positive * weights
    return weighted_mean(per_request, request_weights)


def weighted_mean(values: jnp.ndarray, weights: jnp.ndarray | None) -> jnp.ndarray:
    if weights is None:
        return values.mean()
    weights = weights.astype(values.dtype)
    return (values * weights).sum() / jnp.maximum(weights.sum(), 1.0)
