"""List-wise ranking metrics as pure, jittable JAX functions.

Axis names used in the shapes below: B batch (requests), N candidates per request, L list length.
The cutoff k of every top-k metric equals L, the length of the ranked list.

For a request with binary relevance rel(c) = labels[c] * cand_mask[c] over its candidates, let
P = sum_c rel(c) be its number of positives, ranked_t (t = 1..L) the candidate at position t and
hits = sum_t rel(ranked_t). The metrics are

    H@k  = hits / P
    N@k  = DCG / IDCG,  DCG = sum_{t=1..k} rel(ranked_t) / log2(t + 1),
                        IDCG = sum_{t=1..min(P, k)} 1 / log2(t + 1)
    M@k  = 1 / min(P, k) * sum_{t=1..k} Prec@t * rel(ranked_t),  Prec@t = (hits in first t) / t
    F1@k = 2 p r / (p + r),  p = hits / k,  r = H@k  (0 when hits = 0)
    AUC  = mean over (positive i, negative j) pairs of 1[s_i > s_j] + 1/2 * 1[s_i = s_j]

H, N, M and F1 are defined for requests with P >= 1; AUC for requests with at least one positive
and at least one negative valid candidate. Batch-level results are returned as (sum, count) pairs
over eligible, unpadded requests so that a host can accumulate across batches and divide once.
"""

from collections.abc import Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

MetricSums = dict[str, tuple[jax.Array, jax.Array]]


def list_to_scores(ranked: jax.Array, num_candidates: int) -> jax.Array:
    """Turns ranked lists into candidate scores for AUC.

    The candidate at position t (t = 1..L) gets score 1/t; candidates not in the list get 0.

    Args:
        ranked: int [B, L] candidate indices, position 0 first, distinct within a row.
        num_candidates: N, the number of candidates per request.

    Returns:
        float32 [B, N] scores.
    """
    batch, length = ranked.shape
    position_scores = 1.0 / jnp.arange(1, length + 1, dtype=jnp.float32)
    rows = jnp.arange(batch)[:, None]
    scores = jnp.zeros((batch, num_candidates), jnp.float32)
    return scores.at[rows, ranked].set(jnp.broadcast_to(position_scores, (batch, length)))


def _pairwise_auc(
    scores: jax.Array, positive: jax.Array, negative: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Mann-Whitney AUC per request by O(N^2) pairwise comparison.

    Args:
        scores: float [B, N] candidate scores.
        positive: bool [B, N] valid positive candidates.
        negative: bool [B, N] valid negative candidates.

    Returns:
        auc: float32 [B], 0 where the request has no (positive, negative) pair.
        eligible: bool [B], True where the request has at least one such pair.
    """
    diff = scores[:, :, None] - scores[:, None, :]
    wins = (diff > 0).astype(jnp.float32) + 0.5 * (diff == 0).astype(jnp.float32)
    pairs = (positive[:, :, None] & negative[:, None, :]).astype(jnp.float32)
    num_pairs = pairs.sum(axis=(1, 2))
    eligible = num_pairs > 0
    auc = (wins * pairs).sum(axis=(1, 2)) / jnp.maximum(num_pairs, 1.0)
    return jnp.where(eligible, auc, 0.0), eligible


def per_request_metrics(
    ranked: jax.Array,
    labels: jax.Array,
    cand_mask: jax.Array,
    scores: jax.Array | None = None,
) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """Per-request H@L, N@L, M@L, F1@L and AUC, with their eligibility masks.

    Args:
        ranked: int [B, L] candidate indices of the ranked list, position 0 first.
        labels: float or int [B, N] binary candidate labels.
        cand_mask: bool [B, N] True for real candidates, False for padding.
        scores: optional float [B, N] candidate scores for AUC; defaults to
            `list_to_scores(ranked, N)`.

    Returns:
        values: dict of float32 [B] metric values keyed f"H@{L}", f"N@{L}", f"M@{L}", f"F1@{L}"
            and "AUC"; 0 where the request is ineligible.
        eligible: dict of bool [B] masks with the same keys: P >= 1 for the list metrics, at least
            one valid positive and one valid negative for AUC.
    """
    length = ranked.shape[1]
    num_candidates = labels.shape[1]
    positive = (labels > 0) & cand_mask
    negative = cand_mask & ~positive
    relevance = positive.astype(jnp.float32)

    num_pos = relevance.sum(axis=1)
    has_pos = num_pos >= 1
    safe_pos = jnp.maximum(num_pos, 1.0)

    rel_list = jnp.take_along_axis(relevance, ranked, axis=1)
    positions = jnp.arange(1, length + 1, dtype=jnp.float32)
    discounts = 1.0 / jnp.log2(positions + 1.0)
    hits = rel_list.sum(axis=1)
    ideal_len = jnp.minimum(num_pos, float(length))

    hit_ratio = hits / safe_pos

    dcg = (rel_list * discounts).sum(axis=1)
    idcg = (discounts * (positions[None, :] <= ideal_len[:, None])).sum(axis=1)
    ndcg = dcg / jnp.where(has_pos, idcg, 1.0)

    precision_at = jnp.cumsum(rel_list, axis=1) / positions
    map_k = (precision_at * rel_list).sum(axis=1) / jnp.maximum(ideal_len, 1.0)

    precision = hits / length
    f1 = jnp.where(
        hits > 0, 2.0 * precision * hit_ratio / jnp.maximum(precision + hit_ratio, 1e-12), 0.0
    )

    if scores is None:
        scores = list_to_scores(ranked, num_candidates)
    auc, auc_eligible = _pairwise_auc(scores, positive, negative)

    list_values = {
        f"H@{length}": hit_ratio,
        f"N@{length}": ndcg,
        f"M@{length}": map_k,
        f"F1@{length}": f1,
    }
    values = {k: jnp.where(has_pos, v, 0.0) for k, v in list_values.items()}
    eligible = {k: has_pos for k in list_values}
    values["AUC"] = auc
    eligible["AUC"] = auc_eligible
    return values, eligible


def ranking_metric_sums(
    ranked: jax.Array,
    labels: jax.Array,
    cand_mask: jax.Array,
    example_mask: jax.Array,
    scores: jax.Array | None = None,
) -> MetricSums:
    """Batch sums and counts of the ranking metrics over eligible, unpadded requests.

    Args:
        ranked: int [B, L] candidate indices of the ranked list, position 0 first.
        labels: float or int [B, N] binary candidate labels.
        cand_mask: bool [B, N] True for real candidates.
        example_mask: bool [B] False for padded rows, which contribute nothing.
        scores: optional float [B, N] scores for AUC; defaults to `list_to_scores(ranked, N)`.

    Returns:
        dict keyed f"H@{L}", f"N@{L}", f"M@{L}", f"F1@{L}", "AUC", each a pair of float32 scalars
        (sum_b value_b * w_b, sum_b w_b) with w_b = eligible_b * example_mask_b.
    """
    values, eligible = per_request_metrics(ranked, labels, cand_mask, scores)
    sums = {}
    for name, value in values.items():
        weight = eligible[name] & example_mask
        sums[name] = (
            jnp.where(weight, value, 0.0).sum().astype(jnp.float32),
            weight.sum().astype(jnp.float32),
        )
    return sums


def reduce_metric_sums(
    sums: Mapping[str, tuple] | Iterable[Mapping[str, tuple]],
) -> dict[str, float]:
    """Host-side reduction of (sum, count) pairs to means.

    Args:
        sums: one dict of (sum, count) pairs, e.g. already accumulated, or an iterable of such
            dicts, one per batch, with the same keys.

    Returns:
        dict mapping each key to (total sum) / (total count), or nan where the count is 0.
    """
    batches = [sums] if isinstance(sums, Mapping) else list(sums)
    totals: dict[str, list[float]] = {}
    for batch in batches:
        for name, (total, count) in batch.items():
            acc = totals.setdefault(name, [0.0, 0.0])
            acc[0] += float(np.asarray(total))
            acc[1] += float(np.asarray(count))
    return {
        name: total / count if count > 0 else float("nan")
        for name, (total, count) in totals.items()
    }
