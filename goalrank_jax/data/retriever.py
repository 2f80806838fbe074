"""Stage-1 matrix-factorisation retriever: its configuration, parameters and training.

The ranking stage sees lists of ``N`` candidates per request, of which ``L`` are the logged list.
The remaining ``N - L`` candidates come from this retriever: a matrix-factorisation model trained
with a logistic loss on logged (user, item, label) interactions plus uniformly sampled negatives,
which then returns each user's top-scoring items, excluding items the user has already been shown
(goalrank_jax/data/candidates.py).

Score of user ``u`` for item ``i``: ``<p_u, q_i> + b_i``.

Axis names used in shape annotations:
    E: interactions.
    U: users.
    I: items.
    d: embedding dimension.
    B: examples in a minibatch.
    S: optimisation steps in an epoch.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from goalrank_jax.data.value_checks import (
    as_int_vector,
    check_int,
    check_positive_float,
    check_range,
)

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
        check_int("embed_dim", self.embed_dim, minimum=1)
        check_positive_float("learning_rate", self.learning_rate)
        if not (math.isfinite(self.l2_reg) and self.l2_reg >= 0.0):
            raise ValueError(f"l2_reg must be a finite number >= 0, got {self.l2_reg!r}")
        check_positive_float("init_scale", self.init_scale)
        check_int("batch_size", self.batch_size, minimum=1)
        check_int("num_epochs", self.num_epochs, minimum=1)
        check_int("negatives_per_positive", self.negatives_per_positive, minimum=0)
        check_int("seed", self.seed, minimum=0)


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


def _check_interactions(
    users: np.ndarray, items: np.ndarray, labels: np.ndarray, num_users: int, num_items: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validates the interactions of train_retriever.

    Returns:
        users [E] int64, items [E] int64 and labels [E] float32.
    """
    check_int("num_users", num_users, minimum=1)
    check_int("num_items", num_items, minimum=1)
    users = as_int_vector("users", users)
    items = as_int_vector("items", items)
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
    check_range("users", users, 0, num_users)
    check_range("items", items, 0, num_items)
    return users, items, labels_arr.astype(np.float32)


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


def _train_epoch(train_step, params, opt_state, ep_users, ep_items, ep_labels, weights):
    """One pass over the epoch's minibatches, each of the [S, B] arrays giving S steps.

    Returns:
        (params, opt_state, summed logistic loss over the epoch's real examples).
    """
    loss_sums = []
    for step in range(ep_users.shape[0]):
        params, opt_state, bce_sum = train_step(
            params, opt_state, ep_users[step], ep_items[step], ep_labels[step], weights[step]
        )
        loss_sums.append(bce_sum)
    return params, opt_state, jnp.sum(jnp.stack(loss_sums))


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
    users, items, labels_f = _check_interactions(users, items, labels, num_users, num_items)

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
        params, opt_state, loss_sum = _train_epoch(
            train_step, params, opt_state, ep_users, ep_items, ep_labels, weights
        )
        epoch_loss = float(loss_sum) / num_examples
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
