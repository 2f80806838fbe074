"""Stage-1 matrix-factorisation retriever.

The ranking stage sees lists of ``N`` candidates per request, of which ``L`` are the logged list.
The remaining ``N - L`` candidates come from this retriever: a matrix-factorisation model trained
with a logistic loss on logged (user, item, label) interactions plus uniformly sampled negatives,
which then returns each user's top-scoring items, excluding items the user has already been shown.

Score of user ``u`` for item ``i``: ``<p_u, q_i> + b_i``.

Axis names used in shape annotations:
    E: interactions (or excluded items per request, where stated).
    U: users.
    I: items.
    d: embedding dimension.
    R: ranking requests.
    M: candidates returned per request.
    B: examples in a minibatch.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class RetrieverConfig:
    """Hyper-parameters of the matrix-factorisation retriever."""

    # Dimension d of the user and item embeddings.
    embed_dim: int = 32
    # Adam learning rate.
    learning_rate: float = 0.01
    # L2 penalty on the user and item embeddings gathered in each minibatch (per example).
    l2_reg: float = 1e-5
    # Standard deviation of the normal initialisation of the embeddings (biases start at zero).
    init_scale: float = 0.1
    # Number of (user, item, label) examples per optimisation step.
    batch_size: int = 4096
    # Number of passes over the observed interactions.
    num_epochs: int = 10
    # Uniformly sampled negative items (label 0) added per positive interaction, freshly per epoch.
    negatives_per_positive: int = 4
    # Seed of the parameter initialisation and of the numpy Generator for negatives and shuffling.
    seed: int = 0

    def validate(self) -> None:
        """Raises ValueError naming the first invalid field."""
        _check_int("embed_dim", self.embed_dim, minimum=1)
        _check_positive_float("learning_rate", self.learning_rate)
        if not (math.isfinite(self.l2_reg) and self.l2_reg >= 0.0):
            raise ValueError(f"l2_reg must be a finite number >= 0, got {self.l2_reg!r}")
        _check_positive_float("init_scale", self.init_scale)
        _check_int("batch_size", self.batch_size, minimum=1)
        _check_int("num_epochs", self.num_epochs, minimum=1)
        _check_int("negatives_per_positive", self.negatives_per_positive, minimum=0)
        _check_int("seed", self.seed, minimum=0)


@dataclasses.dataclass(frozen=True)
class RetrieverParams:
    """Trained retriever parameters as numpy arrays.

    Attributes:
        user_emb: [U, d] float32 user embeddings p_u.
        item_emb: [I, d] float32 item embeddings q_i.
        item_bias: [I] float32 item biases b_i.
    """

    user_emb: np.ndarray
    item_emb: np.ndarray
    item_bias: np.ndarray

    @property
    def num_users(self) -> int:
        return int(self.user_emb.shape[0])

    @property
    def num_items(self) -> int:
        return int(self.item_emb.shape[0])


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_positive_float(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _as_int_vector(name: str, values: np.ndarray) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must have an integer dtype, got {arr.dtype}")
    return arr.astype(np.int64)


def _check_range(name: str, values: np.ndarray, low: int, high: int) -> None:
    """Raises ValueError unless every entry lies in [low, high)."""
    if values.size and (values.min() < low or values.max() >= high):
        raise ValueError(
            f"{name} out of range: expected ids in [{low}, {high}), "
            f"got min {values.min()} and max {values.max()}"
        )


def _loss_fn(
    params: dict[str, Array],
    users: Array,
    items: Array,
    labels: Array,
    weights: Array,
    l2_reg: float,
) -> tuple[Array, Array]:
    """Weighted mean logistic loss plus L2 on the gathered embeddings.

    Args:
        params: {"user_emb": [U, d], "item_emb": [I, d], "item_bias": [I]}.
        users: [B] int user ids.
        items: [B] int item ids.
        labels: [B] float labels in {0, 1}.
        weights: [B] float, 1 for real examples and 0 for padding.
        l2_reg: L2 coefficient.

    Returns:
        (objective scalar, summed unregularised logistic loss over real examples scalar).
    """
    p = params["user_emb"][users]
    q = params["item_emb"][items]
    logits = jnp.sum(p * q, axis=-1) + params["item_bias"][items]
    bce = optax.sigmoid_binary_cross_entropy(logits, labels)
    l2 = jnp.sum(p * p, axis=-1) + jnp.sum(q * q, axis=-1)
    count = jnp.maximum(jnp.sum(weights), 1.0)
    objective = jnp.sum(weights * (bce + l2_reg * l2)) / count
    return objective, jnp.sum(weights * bce)


def _make_train_step(
    optimizer: optax.GradientTransformation, l2_reg: float
) -> Callable[..., tuple[dict[str, Array], optax.OptState, Array]]:
    """Builds the jitted update step.

    The returned function maps (params, opt_state, users [B], items [B], labels [B], weights [B])
    to (new params, new opt_state, summed logistic loss over the batch's real examples).
    """

    @jax.jit
    def train_step(params, opt_state, users, items, labels, weights):
        grads, bce_sum = jax.grad(_loss_fn, has_aux=True)(
            params, users, items, labels, weights, l2_reg
        )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, bce_sum

    return train_step


def _init_params(key: Array, num_users: int, num_items: int, cfg: RetrieverConfig):
    """Normal(0, init_scale) embeddings [U, d] and [I, d]; zero item biases [I]."""
    user_key, item_key = jax.random.split(key)
    return {
        "user_emb": cfg.init_scale * jax.random.normal(user_key, (num_users, cfg.embed_dim)),
        "item_emb": cfg.init_scale * jax.random.normal(item_key, (num_items, cfg.embed_dim)),
        "item_bias": jnp.zeros((num_items,), jnp.float32),
    }


def train_retriever(
    users: np.ndarray,
    items: np.ndarray,
    labels: np.ndarray,
    num_users: int,
    num_items: int,
    cfg: RetrieverConfig,
    log_fn: Callable[[str], None] | None = print,
) -> RetrieverParams:
    """Trains the matrix-factorisation retriever with a logistic loss.

    Every epoch, each positive interaction contributes ``cfg.negatives_per_positive`` extra
    examples (same user, uniformly random item, label 0); a sampled item may coincide with a true
    positive, which is the usual cheap approximation. Observed and sampled examples are shuffled
    together and visited in minibatches of ``cfg.batch_size`` (the last one zero-weight padded so
    the jitted step compiles once). All randomness derives from ``cfg.seed``, so training is
    deterministic.

    Args:
        users: [E] int user ids in [0, num_users).
        items: [E] int item ids in [0, num_items).
        labels: [E] labels in {0, 1}.
        num_users: U, number of users.
        num_items: I, number of items.
        cfg: hyper-parameters.
        log_fn: receives one progress line per epoch; None disables logging.

    Returns:
        Trained RetrieverParams with user_emb [U, d], item_emb [I, d], item_bias [I].
    """
    cfg.validate()
    _check_int("num_users", num_users, minimum=1)
    _check_int("num_items", num_items, minimum=1)
    users = _as_int_vector("users", users)
    items = _as_int_vector("items", items)
    labels_arr = np.asarray(labels)
    if labels_arr.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels_arr.shape}")
    if not (users.shape == items.shape == labels_arr.shape):
        raise ValueError(
            "users, items and labels must have the same length, got "
            f"{users.shape[0]}, {items.shape[0]} and {labels_arr.shape[0]}"
        )
    if users.size == 0:
        raise ValueError("users, items and labels must contain at least one interaction")
    if not np.all((labels_arr == 0) | (labels_arr == 1)):
        raise ValueError("labels must contain only 0 and 1")
    _check_range("users", users, 0, num_users)
    _check_range("items", items, 0, num_items)
    labels_f = labels_arr.astype(np.float32)

    rng = np.random.default_rng(cfg.seed)
    pos_users = users[labels_f == 1.0]
    num_neg = pos_users.size * cfg.negatives_per_positive
    num_examples = users.size + num_neg
    batch_size = min(cfg.batch_size, num_examples)
    num_steps = -(-num_examples // batch_size)
    padded = num_steps * batch_size
    weights = np.zeros((padded,), np.float32)
    weights[:num_examples] = 1.0
    weights = weights.reshape(num_steps, batch_size)
    all_labels = np.concatenate([labels_f, np.zeros((num_neg,), np.float32)])
    neg_users = np.repeat(pos_users, cfg.negatives_per_positive)

    optimizer = optax.adam(cfg.learning_rate)
    params = _init_params(jax.random.key(cfg.seed), num_users, num_items, cfg)
    opt_state = optimizer.init(params)
    train_step = _make_train_step(optimizer, cfg.l2_reg)

    def padded_batches(values: np.ndarray, perm: np.ndarray) -> np.ndarray:
        out = np.zeros((padded,), values.dtype)
        out[:num_examples] = values[perm]
        return out.reshape(num_steps, batch_size)

    start = time.perf_counter()
    for epoch in range(cfg.num_epochs):
        neg_items = rng.integers(0, num_items, size=num_neg)
        perm = rng.permutation(num_examples)
        ep_users = padded_batches(np.concatenate([users, neg_users]).astype(np.int32), perm)
        ep_items = padded_batches(np.concatenate([items, neg_items]).astype(np.int32), perm)
        ep_labels = padded_batches(all_labels, perm)
        loss_sums = []
        for step in range(num_steps):
            params, opt_state, bce_sum = train_step(
                params, opt_state, ep_users[step], ep_items[step], ep_labels[step], weights[step]
            )
            loss_sums.append(bce_sum)
        epoch_loss = float(jnp.sum(jnp.stack(loss_sums))) / num_examples
        if log_fn is not None:
            elapsed = time.perf_counter() - start
            eta = elapsed / (epoch + 1) * (cfg.num_epochs - epoch - 1)
            log_fn(
                f"retriever epoch {epoch + 1}/{cfg.num_epochs} loss {epoch_loss:.4f} "
                f"elapsed {elapsed:.1f}s eta {eta:.1f}s"
            )

    return RetrieverParams(
        user_emb=np.asarray(params["user_emb"], np.float32),
        item_emb=np.asarray(params["item_emb"], np.float32),
        item_bias=np.asarray(params["item_bias"], np.float32),
    )


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
    users = _as_int_vector("users", users)
    _check_int("num_candidates", num_candidates, minimum=1)
    _check_int("chunk_size", chunk_size, minimum=1)
    num_requests = users.shape[0]
    if exclude is None:
        exclude = np.full((num_requests, 0), -1, np.int64)
    exclude = np.asarray(exclude)
    if exclude.ndim != 2:
        raise ValueError(f"exclude must be 2-D [R, E], got shape {exclude.shape}")
    if exclude.shape[0] != num_requests:
        raise ValueError(
            f"exclude has {exclude.shape[0]} rows but users has {num_requests} requests"
        )
    if exclude.size and not np.issubdtype(exclude.dtype, np.integer):
        raise ValueError(f"exclude must have an integer dtype, got {exclude.dtype}")
    exclude = exclude.astype(np.int64)
    _check_range("users", users, 0, params.num_users)
    _check_range("exclude", exclude, -1, params.num_items)
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
    users = _as_int_vector("users", users)
    positive_items = _as_int_vector("positive_items", positive_items)
    if positive_items.shape != users.shape:
        raise ValueError(
            f"positive_items has length {positive_items.shape[0]} but users has {users.shape[0]}"
        )
    if users.size == 0:
        raise ValueError("recall_of_positives needs at least one (user, item) pair")
    _check_range("positive_items", positive_items, 0, params.num_items)
    top = retrieve(params, users, exclude, num_candidates, chunk_size)
    return float(np.mean(np.any(top == positive_items[:, None], axis=1)))
