"""Building blocks shared by the generator and the reward models."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp


class TransformerBlock(nn.Module):
    """Pre-LayerNorm transformer block over a set (or sequence) axis.

    Attributes:
      num_heads: attention heads.
      ff_dim: hidden width of the feed-forward layer.
      dropout: dropout rate, applied when ``deterministic`` is False.
      causal: restrict each position to attend to itself and earlier positions.

    ``allowed`` ([S, S] bool, optional) restricts attention further: query position q attends to
    key position k only where ``allowed[q, k]`` (a layout other than a plain causal one, for
    example several candidates appended after one shared prefix, each seeing the prefix and
    itself only).
    """

    num_heads: int
    ff_dim: int
    dropout: float = 0.0
    causal: bool = False
    dtype: Any = jnp.float32  # Computation dtype (parameters stay float32).

    @nn.compact
    def __call__(
        self,
        x: jnp.ndarray,
        mask: jnp.ndarray,
        deterministic: bool,
        allowed: jnp.ndarray | None = None,
    ) -> jnp.ndarray:
        """x: [..., S, D]; mask: [..., S] bool (False = padding). Returns [..., S, D]."""
        width = x.shape[-1]
        attn_mask = nn.make_attention_mask(mask, mask)
        if self.causal:
            attn_mask = nn.combine_masks(attn_mask, nn.make_causal_mask(mask))
        if allowed is not None:
            if allowed.shape != attn_mask.shape[-2:]:
                raise ValueError(
                    f"allowed has shape {allowed.shape}; expected {attn_mask.shape[-2:]} "
                    "(query positions x key positions)"
                )
            pattern = allowed.reshape((1,) * (attn_mask.ndim - 2) + allowed.shape)
            attn_mask = nn.combine_masks(attn_mask, pattern)
        h = nn.LayerNorm(dtype=self.dtype)(x)
        h = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads,
            dropout_rate=self.dropout,
            deterministic=deterministic,
            dtype=self.dtype,
        )(h, h, mask=attn_mask)
        x = x + nn.Dropout(self.dropout)(h, deterministic=deterministic)
        h = nn.LayerNorm(dtype=self.dtype)(x)
        h = nn.Dense(self.ff_dim, dtype=self.dtype)(h)
        h = nn.gelu(h)
        h = nn.Dense(width, dtype=self.dtype)(h)
        return x + nn.Dropout(self.dropout)(h, deterministic=deterministic)


class TransformerEncoder(nn.Module):
    """A stack of :class:`TransformerBlock` followed by a final LayerNorm (``allowed``: see
    :class:`TransformerBlock`)."""

    num_layers: int
    num_heads: int
    ff_dim: int
    dropout: float = 0.0
    causal: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        x: jnp.ndarray,
        mask: jnp.ndarray,
        deterministic: bool,
        allowed: jnp.ndarray | None = None,
    ) -> jnp.ndarray:
        for _ in range(self.num_layers):
            x = TransformerBlock(
                self.num_heads, self.ff_dim, self.dropout, self.causal, dtype=self.dtype
            )(x, mask, deterministic, allowed)
        return nn.LayerNorm(dtype=self.dtype)(x)


class RequestEncoder(nn.Module):
    """Encodes a request: the user state U and the per-candidate inputs.

    ``candidate_inputs_i = MLP(LN(W_u U) + LN(W_i x_i)) + slot_i`` where ``x_i`` is the item
    embedding and ``slot_i`` a learned embedding of the candidate's index in the (shuffled)
    candidate order. The user state encodes the history: the masked mean of item embeddings plus
    a feedback-label embedding, and optionally a learned user-id embedding.

    With ``num_item_features`` V > 0 every item vector (history and candidates) also adds the
    sum of the embeddings of its side features (``history_item_features`` [B, H, F] and
    ``cand_item_features`` [B, N, F] of the batch, -1 = none).

    Attributes:
      num_users: size of the user-id vocabulary.
      num_items: size of the item vocabulary.
      embed_dim: D.
      use_user_id: add the user-id embedding to the user state.
      num_item_features: V, the item side-feature vocabulary (0 = item ids only).
    """

    num_users: int
    num_items: int
    embed_dim: int
    use_user_id: bool = True
    item_bias: bool = True
    num_item_features: int = 0
    dtype: Any = jnp.float32

    @staticmethod
    def item_vectors(batch: dict, field: str, item_embed, feature_embed) -> jnp.ndarray:
        """[B, M, D] vectors of the (-1 padded) items of ``batch[field]`` (history_items or
        cand_items): the item embedding plus, when ``feature_embed`` is given, the sum of the
        embeddings of the item's side features."""
        vectors = item_embed(jnp.maximum(batch[field], 0))
        if feature_embed is not None:
            features = batch[field.replace("_items", "_item_features")]
            valid = (features >= 0)[..., None].astype(vectors.dtype)
            vectors = vectors + (feature_embed(jnp.maximum(features, 0)) * valid).sum(-2)
        return vectors

    @nn.compact
    def __call__(self, batch: dict) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray, jnp.ndarray]:
        """Returns (user_state [B, D], candidate_inputs [B, N, D], item_vectors [B, N, D],
        item_bias [B, N]).

        The bilinear user-item term and the item bias are added by :class:`AffinityHead`; the
        bias is a learned per-item scalar (zeros when ``item_bias`` is False).
        """
        dim = self.embed_dim
        item_embed = nn.Embed(self.num_items, dim, dtype=self.dtype, name="item_embed")
        hist_mask = batch["history_mask"]
        hist_labels = jnp.where(hist_mask, batch["history_labels"], 0).astype(jnp.int32)
        feature_embed = None
        if self.num_item_features:
            feature_embed = nn.Embed(
                self.num_item_features, dim, dtype=self.dtype, name="feature_embed"
            )
        hist = self.item_vectors(batch, "history_items", item_embed, feature_embed) + nn.Embed(
            2, dim, dtype=self.dtype, name="label_embed"
        )(hist_labels)
        weights = hist_mask.astype(hist.dtype)[..., None]
        pooled = (hist * weights).sum(-2) / jnp.maximum(weights.sum(-2), 1.0)
        positive = weights * (hist_labels[..., None] > 0)
        pooled_pos = (hist * positive).sum(-2) / jnp.maximum(positive.sum(-2), 1.0)
        user_parts = [pooled, pooled_pos]
        if self.use_user_id:
            user_parts.append(
                nn.Embed(self.num_users, dim, dtype=self.dtype, name="user_embed")(batch["user_id"])
            )
        user = jnp.concatenate(user_parts, axis=-1)
        user = nn.Dense(dim, dtype=self.dtype, name="user_mlp_out")(
            nn.gelu(nn.Dense(dim, dtype=self.dtype, name="user_mlp_in")(user))
        )

        cand_mask = batch["cand_mask"]
        items = self.item_vectors(batch, "cand_items", item_embed, feature_embed)
        num_candidates = items.shape[-2]
        u = nn.LayerNorm(dtype=self.dtype, name="user_norm")(
            nn.Dense(dim, dtype=self.dtype, name="user_proj")(user)
        )
        x = nn.LayerNorm(dtype=self.dtype, name="item_norm")(
            nn.Dense(dim, dtype=self.dtype, name="item_proj")(items)
        )
        h = u[..., None, :] + x
        h = nn.Dense(dim, dtype=self.dtype, name="cand_mlp_out")(
            nn.gelu(nn.Dense(dim, dtype=self.dtype, name="cand_mlp_in")(h))
        )
        slots = nn.Embed(num_candidates, dim, dtype=self.dtype, name="slot_embed")(
            jnp.arange(num_candidates)
        )
        if self.item_bias:
            bias_embed = nn.Embed(
                self.num_items, 1, embedding_init=nn.initializers.zeros, name="item_bias"
            )
            bias = bias_embed(jnp.where(cand_mask, batch["cand_items"], 0))[..., 0].astype(
                jnp.float32
            )
        else:
            bias = jnp.zeros(cand_mask.shape, jnp.float32)
        return user, h + slots, items, bias


class AffinityHead(nn.Module):
    """Per-candidate logit = Dense(h_i) + b_i + <W_a U, x_i> / sqrt(D) (the last term optional).

    The bilinear user-item term gives the heads the matrix-factorisation inductive bias that an
    additive combination of user and item inputs lacks.
    """

    bilinear: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, hidden, user, items, item_bias):
        """hidden [B, M..., N, D], user [B, D], items [B, N, D], item_bias [B, N]
        -> float32 logits [B, M..., N]."""
        logits = nn.Dense(1, dtype=self.dtype, name="linear")(hidden)[..., 0]
        logits = logits.astype(jnp.float32)
        affinity = item_bias
        if self.bilinear:
            query = nn.Dense(items.shape[-1], dtype=self.dtype, name="user_query")(user)
            scores = jnp.einsum("bd,bnd->bn", query, items).astype(jnp.float32)
            affinity = affinity + scores / jnp.sqrt(items.shape[-1])
        extra = logits.ndim - affinity.ndim
        return logits + affinity.reshape(affinity.shape[:1] + (1,) * extra + affinity.shape[1:])


class Backbone(nn.Module):
    """The fields shared by the generators and the reward models (see ``ModelConfig``)."""

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
    num_item_features: int = 0  # V: item side-feature vocabulary of the dataset (0 = none).
    dtype: Any = jnp.float32  # Computation dtype (bfloat16 option); parameters stay float32.

    def make_request_encoder(self) -> RequestEncoder:
        return RequestEncoder(
            self.num_users,
            self.num_items,
            self.embed_dim,
            self.use_user_id,
            self.item_bias,
            self.num_item_features,
            dtype=self.dtype,
        )

    def make_encoder(self, causal: bool | None = None) -> TransformerEncoder:
        return TransformerEncoder(
            self.num_layers,
            self.num_heads,
            self.ff_dim,
            self.dropout,
            self.causal if causal is None else causal,
            dtype=self.dtype,
        )
