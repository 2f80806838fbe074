"""The paper-faithful prefix-conditioned generator.

At output step t every candidate's input is re-conditioned on the bag (sum) of the projected
items already chosen, the N candidates are re-encoded by a transformer, and a linear head gives
one logit per candidate. The decoding state is therefore the multi-hot set of chosen
candidates; its order does not enter the logits. Cost: one full encoder pass per step, so
K x L passes per request when a group of K lists is sampled.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax.numpy as jnp

from goalrank_jax.models.layers import AffinityHead, RequestEncoder, TransformerEncoder


class GeneratorContext(NamedTuple):
    """Per-request quantities computed once and shared by every step and every sample.

    candidate_inputs: [B, N, D]; chosen_proj: [B, N, D] projection of each candidate used in the
    chosen-items bag; cand_mask: [B, N] bool.
    """

    candidate_inputs: jnp.ndarray
    chosen_proj: jnp.ndarray
    cand_mask: jnp.ndarray
    user: jnp.ndarray
    items: jnp.ndarray
    item_bias: jnp.ndarray


class PrefixGenerator(nn.Module):
    """Autoregressive list generator conditioned on the set of already chosen items."""

    num_users: int
    num_items: int
    embed_dim: int = 64
    num_layers: int = 2
    num_heads: int = 2
    ff_dim: int = 128
    dropout: float = 0.1
    causal: bool = False
    use_user_id: bool = True
    bilinear_head: bool = True
    item_bias: bool = True

    def setup(self):
        self.request_encoder = RequestEncoder(
            self.num_users, self.num_items, self.embed_dim, self.use_user_id, self.item_bias
        )
        self.chosen_proj = nn.Dense(self.embed_dim, name="chosen_proj")
        self.chosen_norm = nn.LayerNorm(name="chosen_norm")
        self.encoder = TransformerEncoder(
            self.num_layers, self.num_heads, self.ff_dim, self.dropout, self.causal
        )
        self.head = AffinityHead(self.bilinear_head)

    def encode(self, batch: dict) -> GeneratorContext:
        user, candidate_inputs, items, bias = self.request_encoder(batch)
        return GeneratorContext(
            candidate_inputs, self.chosen_proj(items), batch["cand_mask"], user, items, bias
        )

    def step_logits(
        self, context: GeneratorContext, chosen: jnp.ndarray, deterministic: bool = True
    ) -> jnp.ndarray:
        """Logits of the next item given the chosen set.

        Args:
          context: from :meth:`encode`, arrays with leading batch axis B.
          chosen: [B, M..., N] multi-hot (float or bool) of the chosen prefix; M... are any
            number of extra axes (group members, steps) sharing the request's context.
          deterministic: disable dropout.

        Returns:
          [B, M..., N] unmasked logits; the caller masks chosen and invalid candidates.
        """
        extra = chosen.ndim - 2
        chosen = chosen.astype(context.chosen_proj.dtype)
        bag = jnp.einsum("b...n,bnd->b...d", chosen, context.chosen_proj)
        expand = (slice(None),) + (None,) * extra
        inputs = context.candidate_inputs[expand] + self.chosen_norm(bag)[..., None, :]
        mask = jnp.broadcast_to(context.cand_mask[expand], inputs.shape[:-1])
        hidden = self.encoder(inputs, mask, deterministic)
        return self.head(hidden, context.user, context.items, context.item_bias)

    def __call__(self, batch: dict, deterministic: bool = True) -> jnp.ndarray:
        """First-step logits [B, N] (empty prefix); used for init and the supervised loss."""
        context = self.encode(batch)
        return self.step_logits(context, jnp.zeros_like(batch["cand_mask"]), deterministic)
