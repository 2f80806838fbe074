"""Baseline rankers of the comparison (SPEC section 7), on the same request encoder.

* :class:`DNNScorer`: pointwise scorer. Each candidate is scored from the user state and its own
  item alone (a feed-forward network, no attention across candidates); the list is the top-L
  sort. Trained by BCE on the candidate labels.
* The PRM baseline is :class:`goalrank_jax.models.reward_model.PointwiseRewardModel` (a
  transformer over the candidates, one logit per candidate) trained with its own seed.
* :class:`NARGenerator` (NAR4Rec-style): non-autoregressive. One pass gives logits for every
  (position, candidate) pair, [B, L, N]; the positions do not condition on each other. A list
  is decoded position by position over those fixed logits, excluding items already placed
  (greedy or sampled), so many proposals cost one network pass.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from goalrank_jax.models.layers import AffinityHead, Backbone


class DNNScorer(Backbone):
    """Candidate logits [B, N] from MLP(user, item) (``num_layers`` hidden layers of ff_dim)."""

    @nn.compact
    def __call__(self, batch: dict, deterministic: bool = True) -> jnp.ndarray:
        user, inputs, items, bias = self.make_request_encoder()(batch)
        hidden = inputs
        for i in range(self.num_layers):
            hidden = nn.gelu(nn.Dense(self.ff_dim, dtype=self.dtype, name=f"hidden_{i}")(hidden))
            hidden = nn.Dropout(self.dropout)(hidden, deterministic=deterministic)
        hidden = nn.Dense(self.embed_dim, dtype=self.dtype, name="out")(hidden)
        return AffinityHead(self.bilinear_head, dtype=self.dtype, name="head")(
            hidden, user, items, bias
        )


class NARGenerator(Backbone):
    """Position-wise candidate logits [B, L, N] in one pass (NAR4Rec-style generator).

    ``h_n`` = transformer encoding of candidate n over the candidate set; the logit of candidate
    n at position t is ``head(h_n + p_t)`` with a learned position embedding ``p_t`` (plus the
    user-item affinity and item bias of :class:`AffinityHead`).

    Attributes: those of :class:`Backbone` plus ``max_list_len``.
    """

    max_list_len: int = 6

    @nn.compact
    def __call__(self, batch: dict, deterministic: bool = True) -> jnp.ndarray:
        user, inputs, items, bias = self.make_request_encoder()(batch)
        hidden = self.make_encoder()(inputs, batch["cand_mask"], deterministic)
        positions = nn.Embed(
            self.max_list_len, self.embed_dim, dtype=self.dtype, name="position_embed"
        )(jnp.arange(self.max_list_len))
        per_position = hidden[:, None, :, :] + positions[None, :, None, :]
        return AffinityHead(self.bilinear_head, dtype=self.dtype, name="head")(
            per_position, user, items, bias
        )


def nar_logged_list_loss(
    position_logits: jnp.ndarray,
    logged: jnp.ndarray,
    logged_labels: jnp.ndarray,
    cand_mask: jnp.ndarray,
) -> jnp.ndarray:
    """Likelihood / unlikelihood loss of the logged lists (the NAR4Rec training signal).

    For position t with logged item l_t and feedback y_t, p_t = softmax over valid candidates of
    position_logits[:, t]:

        loss_t = -y_t log p_t(l_t) - (1 - y_t) log(1 - p_t(l_t))

    (clicked items pulled up at the position they were shown, unclicked ones pushed down),
    averaged over positions and requests.

    Args:
      position_logits: [B, L, N] float.
      logged: [B, L] int candidate index shown at each position.
      logged_labels: [B, L] float feedback of each shown item.
      cand_mask: [B, N] bool.
    """
    masked = jnp.where(cand_mask[:, None, :], position_logits, -1e9)
    log_p = jnp.take_along_axis(
        jax.nn.log_softmax(masked, axis=-1), logged[..., None].astype(jnp.int32), axis=-1
    )[..., 0]
    log_not_p = jnp.log1p(-jnp.minimum(jnp.exp(log_p), 1.0 - 1e-6))
    per_position = -(logged_labels * log_p + (1.0 - logged_labels) * log_not_p)
    return per_position.mean()
