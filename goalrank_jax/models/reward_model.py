"""Reward models (evaluators) trained on logged feedback, frozen while the generator trains.

* :class:`PointwiseRewardModel` (PRM-style): transformer over the candidates with the user
  state, one logit per candidate = log-odds of positive feedback. List reward
  ``r(u, l) = sum_t sigmoid(s(l_t)) / log2(t + 1)`` with positions t = 1..L.
* :class:`ListAwareRewardModel`: transformer over the L items of a list with position
  embeddings, one click logit per position; trained on the logged lists' feedback. List reward
  ``r(u, l) = sum_t sigmoid(s_t(l)) / log2(t + 1)``. With ``pairwise_above`` each position's
  logit also adds ``sum_{s < t} <A x_s, B x_t> / sqrt(D)`` over the items above it (x = item
  vectors): a term that sums over the items above, where softmax attention averages them.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from goalrank_jax.models.layers import AffinityHead, Backbone


def position_discounts(list_len: int, dtype=jnp.float32) -> jnp.ndarray:
    """[L] DCG discounts 1 / log2(t + 1) for positions t = 1..L."""
    return 1.0 / jnp.log2(jnp.arange(2, list_len + 2, dtype=dtype))


def gather_candidates(values: jnp.ndarray, lists: jnp.ndarray) -> jnp.ndarray:
    """values [B, N, ...], lists [B, M..., L] -> [B, M..., L, ...] (per-request gather)."""
    flat = lists.reshape(lists.shape[0], -1)
    picked = jnp.take_along_axis(
        values, flat.reshape(flat.shape + (1,) * (values.ndim - 2)), axis=1
    )
    return picked.reshape(lists.shape + values.shape[2:])


def dcg_list_reward(scores: jnp.ndarray, lists: jnp.ndarray) -> jnp.ndarray:
    """Pointwise list reward. scores [B, N] logits, lists [B, M..., L] -> [B, M...]."""
    probs = jax.nn.sigmoid(gather_candidates(scores, lists))
    return (probs * position_discounts(lists.shape[-1], probs.dtype)).sum(-1)


class PointwiseRewardModel(Backbone):
    """PRM-style scorer: a transformer over the N candidates, one logit per candidate."""

    @nn.compact
    def __call__(self, batch: dict, deterministic: bool = True) -> jnp.ndarray:
        """Candidate logits [B, N]."""
        user, inputs, items, bias = self.make_request_encoder()(batch)
        hidden = self.make_encoder()(inputs, batch["cand_mask"], deterministic)
        head = AffinityHead(self.bilinear_head, dtype=self.dtype, name="head")
        return head(hidden, user, items, bias)


class ListAwareRewardModel(Backbone):
    """Per-position click logits of lists of at most ``max_list_len`` items (prefixes allowed).

    Attributes: those of :class:`Backbone` (``causal`` unused: the list attention is causal)
    plus ``max_list_len`` and ``pairwise_above`` (add the bilinear interaction of each item
    with every item above it to its logit).
    """

    max_list_len: int = 6
    pairwise_above: bool = False

    def __call__(self, batch: dict, lists: jnp.ndarray, deterministic: bool = True) -> jnp.ndarray:
        """Per-position click logits [B, M..., L] of lists [B, M..., L] (candidate indices).

        Attention over the list is causal: the logit at position t depends on the items at
        positions <= t only, as the feedback to an item depends on what was shown above it.
        """
        list_len = lists.shape[-1]
        if list_len > self.max_list_len:
            raise ValueError(f"lists of length {list_len} > max_list_len={self.max_list_len}")
        above = jnp.tril(jnp.ones((list_len, list_len), dtype=bool), k=-1)
        return self._logits(batch, lists, jnp.arange(list_len), above, deterministic)

    def appended_logits(
        self, batch: dict, prefix: jnp.ndarray, deterministic: bool = True
    ) -> jnp.ndarray:
        """[B, N]: for every candidate c, the logit at position t of the list ``prefix + [c]``
        (prefix [B, t], t < max_list_len), in one pass over t + N positions.

        The prefix is laid out once, followed by the N candidates, all at position t; each
        candidate attends to the prefix and to itself only and its pairwise term (with
        ``pairwise_above``) sums over the prefix, so its logit is the last logit of its own
        list of t + 1 items (the prefix's hidden states do not depend on what follows them).
        Evaluating the N lists of t + 1 items instead costs N (t + 1) positions.
        """
        prefix_len = prefix.shape[-1]
        if prefix_len >= self.max_list_len:
            raise ValueError(
                f"a prefix of length {prefix_len} leaves no position below it "
                f"(max_list_len={self.max_list_len})"
            )
        batch_size, num_candidates = batch["cand_mask"].shape
        if prefix.ndim != 2 or prefix.shape[0] != batch_size:
            raise ValueError(f"prefix has shape {prefix.shape}; expected [{batch_size}, t]")
        candidates = jnp.broadcast_to(
            jnp.arange(num_candidates, dtype=prefix.dtype), (batch_size, num_candidates)
        )
        sequence = jnp.concatenate([prefix, candidates], axis=-1)
        positions = jnp.concatenate(
            [jnp.arange(prefix_len), jnp.full((num_candidates,), prefix_len)]
        )
        size = prefix_len + num_candidates
        rows = jnp.arange(size)[:, None]
        cols = jnp.arange(size)[None, :]
        above = (cols < prefix_len) & (cols < rows)  # the prefix's items above each position
        logits = self._logits(batch, sequence, positions, above, deterministic)
        return logits[..., prefix_len:]

    @nn.compact
    def _logits(self, batch, sequence, positions, above, deterministic):
        """Logits [B, M..., S] of the items ``sequence`` [B, M..., S] at ``positions`` [S],
        where ``above`` [S, S] says which positions are above which (each position attends to
        those and to itself)."""
        user, inputs, items, bias = self.make_request_encoder()(batch)
        x = gather_candidates(inputs, sequence)
        position_embed = nn.Embed(
            self.max_list_len, self.embed_dim, dtype=self.dtype, name="position_embed"
        )
        x = x + position_embed(positions)
        mask = jnp.ones(x.shape[:-1], dtype=bool)
        allowed = above | jnp.eye(above.shape[0], dtype=bool)
        hidden = self.make_encoder(causal=False)(x, mask, deterministic, allowed)
        logits = nn.Dense(1, dtype=self.dtype, name="head")(hidden)[..., 0].astype(jnp.float32)
        affinity = bias
        if self.bilinear_head:
            query = nn.Dense(self.embed_dim, dtype=self.dtype, name="user_query")(user)
            scores = jnp.einsum("bd,bnd->bn", query, items).astype(jnp.float32)
            affinity = affinity + scores / jnp.sqrt(self.embed_dim)
        logits = logits + gather_candidates(affinity, sequence)
        if self.pairwise_above:
            logits = logits + self._pairwise_above(gather_candidates(items, sequence), above)
        return logits

    def _pairwise_above(self, vectors: jnp.ndarray, above: jnp.ndarray) -> jnp.ndarray:
        """[..., S, D] item vectors -> [..., S]: position t's sum over the positions s above it
        (``above[t, s]``) of ``<A x_s, B x_t> / sqrt(D)``. Softmax attention averages over the
        items above; this sums, so k items of one kind above move the logit k times as far (a
        count)."""
        vectors = nn.LayerNorm(dtype=self.dtype, name="pair_norm")(vectors)
        target = nn.Dense(self.embed_dim, dtype=self.dtype, name="pair_target")(vectors)
        above_vectors = nn.Dense(self.embed_dim, dtype=self.dtype, name="pair_above")(vectors)
        pair = jnp.einsum("...td,...sd->...ts", target, above_vectors).astype(jnp.float32)
        return jnp.where(above, pair, 0.0).sum(-1) / jnp.sqrt(self.embed_dim)


def list_aware_reward(logits: jnp.ndarray) -> jnp.ndarray:
    """Per-position click logits [..., L] -> list reward [...]."""
    probs = jax.nn.sigmoid(logits)
    return (probs * position_discounts(logits.shape[-1], probs.dtype)).sum(-1)
