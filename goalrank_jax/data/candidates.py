"""Stage-1 candidates: each request's top-scoring items under a trained retriever.

Axis names used in shape annotations:
    R: ranking requests (or (user, positive item) pairs, where stated).
    E: excluded items per request.
    M: candidates returned per request.
    U: users.
    I: items.
    d: embedding dimension.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from goalrank_jax.data.retriever import RetrieverParams
from goalrank_jax.data.value_checks import as_int_vector, check_int, check_range

Array = jax.Array


@functools.partial(jax.jit, static_argnames=("num_candidates",))
def _top_candidates(
    user_emb: Array,
    item_emb: Array,
    item_bias: Array,
    users: Array,
    exclude: Array,
    num_candidates: int,
) -> Array:
    """Top-M items per request of one chunk, with excluded items masked to -inf.

    Args:
        user_emb: [U, d]; item_emb: [I, d]; item_bias: [I].
        users: [C] int user ids of the chunk's requests.
        exclude: [C, E] int item ids to exclude, -1 for padding.
        num_candidates: M.

    Returns:
        [C, M] int32 item ids, best first.
    """
    scores = user_emb[users] @ item_emb.T + item_bias[None, :]
    num_items = item_emb.shape[0]
    cols = jnp.where(exclude >= 0, exclude, num_items)
    rows = jnp.broadcast_to(jnp.arange(users.shape[0])[:, None], cols.shape)
    scores = scores.at[rows, cols].set(-jnp.inf, mode="drop")
    _, top = jax.lax.top_k(scores, num_candidates)
    return top.astype(jnp.int32)


def _num_distinct_excluded(exclude: np.ndarray) -> np.ndarray:
    """[R, E] ids padded with -1 -> [R] number of distinct non-padding ids per row."""
    if exclude.shape[1] == 0:
        return np.zeros((exclude.shape[0],), np.int64)
    ordered = np.sort(exclude, axis=1)
    first = np.ones(ordered.shape, bool)
    first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    return np.sum(first & (ordered >= 0), axis=1)


def _check_exclude(exclude: np.ndarray, num_requests: int) -> np.ndarray:
    """Checks the shape and dtype of retrieve's [R, E] excluded ids; returns them as int64."""
    exclude = np.asarray(exclude)
    if exclude.ndim != 2:
        raise ValueError(f"exclude must be 2-D [R, E], got shape {exclude.shape}")
    if exclude.shape[0] != num_requests:
        raise ValueError(
            f"exclude has {exclude.shape[0]} rows but users has {num_requests} requests"
        )
    if exclude.size and not np.issubdtype(exclude.dtype, np.integer):
        raise ValueError(f"exclude must have an integer dtype, got {exclude.dtype}")
    return exclude.astype(np.int64)


def retrieve(
    params: RetrieverParams,
    users: np.ndarray,
    exclude: np.ndarray | None,
    num_candidates: int,
    chunk_size: int = 1024,
) -> np.ndarray:
    """Returns each request's top-M items by score, excluding the given items.

    Requests are scored in chunks of ``chunk_size`` (the last chunk padded), so at most a
    [chunk_size, I] score matrix exists at a time and the jitted kernel compiles once.

    Args:
        params: trained retriever parameters.
        users: [R] int user id of each request.
        exclude: [R, E] int item ids never to return (history and logged list), padded with -1;
            duplicates are allowed. None means nothing is excluded.
        num_candidates: M, items to return per request.
        chunk_size: requests scored per jitted call.

    Returns:
        [R, M] int32 distinct item ids per request, in decreasing score order.

    Raises:
        ValueError: on malformed inputs, or if M exceeds the number of items left to some request
            after exclusion.
    """
    users = as_int_vector("users", users)
    check_int("num_candidates", num_candidates, minimum=1)
    check_int("chunk_size", chunk_size, minimum=1)
    num_requests = users.shape[0]
    if exclude is None:
        exclude = np.full((num_requests, 0), -1, np.int64)
    exclude = _check_exclude(exclude, num_requests)
    check_range("users", users, 0, params.num_users)
    check_range("exclude", exclude, -1, params.num_items)
    if num_candidates > params.num_items:
        raise ValueError(
            f"num_candidates={num_candidates} exceeds the number of items ({params.num_items})"
        )
    if num_requests == 0:
        return np.zeros((0, num_candidates), np.int32)
    available = params.num_items - _num_distinct_excluded(exclude)
    worst = int(np.argmin(available))
    if num_candidates > available[worst]:
        raise ValueError(
            f"num_candidates={num_candidates} exceeds the {available[worst]} items available to "
            f"request {worst} ({params.num_items} items minus "
            f"{params.num_items - available[worst]} excluded)"
        )

    chunk = min(chunk_size, num_requests)
    num_chunks = -(-num_requests // chunk)
    padded_users = np.zeros((num_chunks * chunk,), np.int32)
    padded_users[:num_requests] = users
    padded_exclude = np.full((num_chunks * chunk, exclude.shape[1]), -1, np.int32)
    padded_exclude[:num_requests] = exclude
    user_emb = jnp.asarray(params.user_emb)
    item_emb = jnp.asarray(params.item_emb)
    item_bias = jnp.asarray(params.item_bias)
    out = [
        _top_candidates(
            user_emb,
            item_emb,
            item_bias,
            padded_users[c * chunk : (c + 1) * chunk],
            padded_exclude[c * chunk : (c + 1) * chunk],
            num_candidates,
        )
        for c in range(num_chunks)
    ]
    return np.concatenate([np.asarray(o) for o in out])[:num_requests]


def recall_of_positives(
    params: RetrieverParams,
    users: np.ndarray,
    positive_items: np.ndarray,
    exclude: np.ndarray | None,
    num_candidates: int,
    chunk_size: int = 1024,
) -> float:
    """Fraction of (user, positive item) pairs whose item is in the user's retrieved top-M.

    Each pair is one request: ``retrieve(params, users, exclude, M)`` is called and pair ``k``
    counts as a hit if ``positive_items[k]`` is among request ``k``'s M candidates. The caller must
    not list the positive item in its own exclude row (an excluded item can never be a hit). A
    random retriever scores about M / (I - |exclude row|).

    Args:
        params: trained retriever parameters.
        users: [P] int user ids.
        positive_items: [P] int held-out positive item ids.
        exclude: [P, E] int item ids excluded per pair, -1 padded, or None.
        num_candidates: M.
        chunk_size: requests scored per jitted call.

    Returns:
        Recall in [0, 1] as a Python float.
    """
    users = as_int_vector("users", users)
    positive_items = as_int_vector("positive_items", positive_items)
    if positive_items.shape != users.shape:
        raise ValueError(
            f"positive_items has length {positive_items.shape[0]} but users has {users.shape[0]}"
        )
    if users.size == 0:
        raise ValueError("recall_of_positives needs at least one (user, item) pair")
    check_range("positive_items", positive_items, 0, params.num_items)
    top = retrieve(params, users, exclude, num_candidates, chunk_size)
    return float(np.mean(np.any(top == positive_items[:, None], axis=1)))


def sample_unseen(
    weights: np.ndarray,
    exclude: np.ndarray,
    num_candidates: int,
    seed: int,
    chunk_size: int = 4096,
) -> np.ndarray:
    """Draws M distinct items per request, without replacement, in proportion to ``weights``.

    The draw is Plackett-Luce sampling done as a Gumbel top-M of ``log(weights)`` (the first
    item is drawn with probability weight / total, the next from what is left, ...); excluded
    items are never drawn. Uniform weights give uniformly random unseen items.

    Args:
        weights: [I] non-negative item weights, at least one positive.
        exclude: [R, E] int item ids never to draw for each request, padded with -1.
        num_candidates: M.
        seed: numpy seed of the draw (the result is a function of it and the inputs).
        chunk_size: requests drawn per block (a [chunk_size, I] matrix at a time; fewer
            when that would exceed 2^24 entries).

    Returns:
        [R, M] int32 distinct item ids per request, in the order drawn.

    Raises:
        ValueError: on malformed inputs, or if some request has fewer than M items of positive
            weight left after exclusion.
    """
    weights = np.asarray(weights, np.float64)
    if weights.ndim != 1 or not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise ValueError("weights must be a 1-D array of finite non-negative item weights")
    num_items = weights.shape[0]
    check_int("num_candidates", num_candidates, minimum=1)
    check_int("chunk_size", chunk_size, minimum=1)
    exclude = np.asarray(exclude)
    exclude = _check_exclude(exclude, exclude.shape[0] if exclude.ndim else 0)
    check_range("exclude", exclude, -1, num_items)
    num_requests = exclude.shape[0]
    log_w = np.where(weights > 0, np.log(np.maximum(weights, 1e-300)), -np.inf)
    rng = np.random.default_rng(seed)
    out = np.zeros((num_requests, num_candidates), np.int32)
    rows_per_block = max(1, min(chunk_size, (1 << 24) // max(num_items, 1)))
    for lo in range(0, num_requests, rows_per_block):
        hi = min(lo + rows_per_block, num_requests)
        keys = log_w[None, :] + rng.gumbel(size=(hi - lo, num_items))
        banned = exclude[lo:hi]
        rows = np.broadcast_to(np.arange(hi - lo)[:, None], banned.shape)
        keep = banned >= 0
        keys[rows[keep], banned[keep]] = -np.inf
        available = np.sum(np.isfinite(keys), axis=1)
        if int(available.min()) < num_candidates:
            worst = lo + int(np.argmin(available))
            raise ValueError(
                f"num_candidates={num_candidates} exceeds the {int(available.min())} items of "
                f"positive weight left to request {worst} after excluding its items"
            )
        top = np.argpartition(-keys, num_candidates - 1, axis=1)[:, :num_candidates]
        order = np.argsort(-np.take_along_axis(keys, top, 1), axis=1, kind="stable")
        out[lo:hi] = np.take_along_axis(top, order, 1)
    return out
