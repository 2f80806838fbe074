"""The two list generators: the paper-faithful prefix-conditioned one and the fast variant.

:class:`PrefixGenerator` (paper-faithful): at output step t every candidate's input is
re-conditioned on the bag (sum) of the projected items already chosen, the N candidates are
re-encoded by a transformer, and a linear head gives one logit per candidate. The decoding state
is the multi-hot set of chosen candidates; its order does not enter the logits. Cost: one full
encoder pass per step, so K x L passes per request when a group of K lists is sampled.

:class:`FastGenerator`: the N candidates are encoded once per request (shared by the K samples),
then a small causal decoder over the chosen prefix, with cross-attention to the encoded
candidates and a key/value cache when sampling, points at the next item. Cost per sampled list:
L decoder steps of O((L + N) D) attention plus the pointer, instead of L full encoder passes.

Both implement :class:`goalrank_jax.models.interface.Generator` (``encode``, ``init_carry``,
``decode_step``, ``list_logits``, ``__call__``, with their shapes), the methods
:class:`goalrank_jax.policies.GeneratorPolicy` calls, and are registered as the variants
"prefix" and "fast" of :mod:`goalrank_jax.models.registry`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from goalrank_jax import sampling
from goalrank_jax.models.layers import AffinityHead, Backbone
from goalrank_jax.models.registry import register_generator


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


# The preset rules: a size preset's depth for each variant. The prefix rule sets decoder_layers
# too (unused by the prefix generator), so a preset gives the same ModelConfig as it always did.
@register_generator(
    "prefix",
    preset_rule=lambda p: {"num_layers": p.prefix_layers, "decoder_layers": p.fast_decoder_layers},
)
class PrefixGenerator(Backbone):
    """Autoregressive list generator conditioned on the set of already chosen items.

    Attributes: those of :class:`Backbone`.
    """

    def setup(self):
        self.request_encoder = self.make_request_encoder()
        self.chosen_proj = nn.Dense(self.embed_dim, dtype=self.dtype, name="chosen_proj")
        self.chosen_norm = nn.LayerNorm(dtype=self.dtype, name="chosen_norm")
        self.encoder = self.make_encoder()
        self.head = AffinityHead(self.bilinear_head, dtype=self.dtype)

    def encode(self, batch: dict, deterministic: bool = True) -> GeneratorContext:
        del deterministic  # The per-request part has no dropout.
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
        # One flat batch axis for the encoder: XLA's CPU attention kernels are much slower
        # with several leading batch axes (same values either way).
        flat = (-1,) + inputs.shape[-2:]
        hidden = self.encoder(inputs.reshape(flat), mask.reshape(flat[:-1]), deterministic)
        hidden = hidden.reshape(inputs.shape)
        return self.head(hidden, context.user, context.items, context.item_bias)

    def init_carry(self, context: GeneratorContext, list_len: int):
        del context, list_len
        return None  # The chosen set, tracked by the decoder, is the whole state.

    def decode_step(self, context, carry, prev_item, chosen, t, deterministic: bool = True):
        del prev_item, t
        return self.step_logits(context, chosen, deterministic), carry

    def list_logits(self, batch: dict, lists: jnp.ndarray, deterministic: bool = True):
        """Teacher-forced logits [B, M..., L, N]: step t conditioned on lists[..., :t]."""
        context = self.encode(batch)
        chosen = sampling.prefix_multi_hot(lists, batch["cand_mask"].shape[-1])
        return self.step_logits(context, chosen, deterministic)

    def __call__(self, batch: dict, deterministic: bool = True) -> jnp.ndarray:
        """First-step logits [B, N] (empty prefix); used for init and the supervised loss."""
        context = self.encode(batch)
        return self.step_logits(context, jnp.zeros_like(batch["cand_mask"]), deterministic)


# ---------------------------------------------------------------------------------------------
# The fast variant.


def gather_rows(values: jnp.ndarray, index: jnp.ndarray) -> jnp.ndarray:
    """values [B, N, D], index [B, M...] int -> [B, M..., D] (values[b, index[b, ...]])."""
    flat = index.reshape(index.shape[0], -1)
    rows = jnp.take_along_axis(values, flat[..., None], axis=1)
    return rows.reshape(index.shape + values.shape[-1:])


def sinusoidal_positions(positions: jnp.ndarray, dim: int) -> jnp.ndarray:
    """Fixed sinusoidal encodings [..., dim] of integer positions (no table size to fix)."""
    half = dim // 2
    freqs = np.exp(-np.log(10000.0) * np.arange(half) / max(half, 1)).astype(np.float32)
    angles = positions.astype(jnp.float32)[..., None] * freqs
    enc = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
    return jnp.pad(enc, [(0, 0)] * (enc.ndim - 1) + [(0, dim - 2 * half)])


def _attend(q, k, v, mask):
    """q [..., Q, H, Dh], k / v [..., S, H, Dh], mask broadcastable to [..., H, Q, S]."""
    logits = jnp.einsum("...qhd,...shd->...hqs", q, k) / np.sqrt(q.shape[-1]).astype(q.dtype)
    logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    return jnp.einsum("...hqs,...shd->...qhd", weights, v)


class FastContext(NamedTuple):
    """Per-request context of the fast generator, shared by every step and sample.

    memory: [B, N, D] encoded candidates; memory_kv: per decoder layer, the cross-attention
    (keys, values) [B, N, H, Dh]; pointer_keys: [B, N, D]; base_logits: [B, N] the affinity head
    on the encoded candidates; start: [B, D] the first decoder token; cand_mask: [B, N].
    """

    memory: jnp.ndarray
    memory_kv: tuple
    pointer_keys: jnp.ndarray
    base_logits: jnp.ndarray
    start: jnp.ndarray
    cand_mask: jnp.ndarray


class DecoderLayer(nn.Module):
    """Pre-LN decoder layer: causal self-attention over the list prefix, cross-attention over
    the encoded candidates, feed-forward. Runs over all L positions at once (:meth:`full`) or
    one position with a key/value cache (:meth:`step`); both give the same outputs."""

    width: int
    num_heads: int
    ff_dim: int
    dropout: float = 0.0
    dtype: Any = jnp.float32

    def setup(self):
        heads, head_dim, dtype = self.num_heads, self.width // self.num_heads, self.dtype
        self.self_norm = nn.LayerNorm(dtype=dtype)
        self.self_qkv = nn.DenseGeneral((3, heads, head_dim), dtype=dtype)
        self.self_out = nn.DenseGeneral(self.width, axis=(-2, -1), dtype=dtype)
        self.cross_norm = nn.LayerNorm(dtype=dtype)
        self.cross_q = nn.DenseGeneral((heads, head_dim), dtype=dtype)
        self.cross_kv = nn.DenseGeneral((2, heads, head_dim), dtype=dtype)
        self.cross_out = nn.DenseGeneral(self.width, axis=(-2, -1), dtype=dtype)
        self.ff_norm = nn.LayerNorm(dtype=dtype)
        self.ff_in = nn.Dense(self.ff_dim, dtype=dtype)
        self.ff_out = nn.Dense(self.width, dtype=dtype)
        self.drop = nn.Dropout(self.dropout)

    def memory_kv(self, memory):
        """[B, N, D] -> (keys, values) [B, N, H, Dh] for the cross-attention."""
        kv = self.cross_kv(memory)
        return kv[..., 0, :, :], kv[..., 1, :, :]

    def _cross_and_ff(self, x, memory_kv, cand_mask, deterministic):
        """x [B, M..., Q, D] -> [B, M..., Q, D] (cross-attention + feed-forward)."""
        keys, values = memory_kv
        q = self.cross_q(self.cross_norm(x))
        flat = q.reshape((q.shape[0], -1) + q.shape[-2:])  # one request's queries together
        out = _attend(flat, keys, values, cand_mask[:, None, None, :]).reshape(q.shape)
        x = x + self.drop(self.cross_out(out), deterministic=deterministic)
        h = self.ff_out(nn.gelu(self.ff_in(self.ff_norm(x))))
        return x + self.drop(h, deterministic=deterministic)

    def full(self, x, memory_kv, cand_mask, deterministic: bool = True):
        """x [B, M..., L, D]: every position attends to itself and earlier positions."""
        qkv = self.self_qkv(self.self_norm(x))
        q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]
        length = x.shape[-2]
        causal = jnp.tril(jnp.ones((length, length), dtype=bool))
        out = self.self_out(_attend(q, k, v, causal))
        x = x + self.drop(out, deterministic=deterministic)
        return self._cross_and_ff(x, memory_kv, cand_mask, deterministic)

    def step(self, x, cache, t, memory_kv, cand_mask, deterministic: bool = True):
        """x [B, M..., D] the token at position t; cache (keys, values) [B, M..., L, H, Dh].

        Returns (output [B, M..., D], the cache with position t written)."""
        qkv = self.self_qkv(self.self_norm(x))
        q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]
        cache_k, cache_v = cache
        axis = cache_k.ndim - 3
        cache_k = jax.lax.dynamic_update_index_in_dim(cache_k, k.astype(cache_k.dtype), t, axis)
        cache_v = jax.lax.dynamic_update_index_in_dim(cache_v, v.astype(cache_v.dtype), t, axis)
        visible = jnp.arange(cache_k.shape[axis]) <= t
        out = _attend(q[..., None, :, :], cache_k, cache_v, visible)[..., 0, :, :]
        x = x + self.drop(self.self_out(out), deterministic=deterministic)
        x = self._cross_and_ff(x[..., None, :], memory_kv, cand_mask, deterministic)[..., 0, :]
        return x, (cache_k, cache_v)


@register_generator(
    "fast",
    fields=("decoder_layers",),
    preset_rule=lambda p: {"num_layers": p.fast_layers, "decoder_layers": p.fast_decoder_layers},
)
class FastGenerator(Backbone):
    """Encode the candidates once, then decode the list with a small pointer decoder.

    Attributes are those of :class:`Backbone` plus ``decoder_layers`` (the decoder's depth);
    ``num_layers`` is the depth of the candidate encoder, run once per request.
    """

    decoder_layers: int = 1

    def setup(self):
        dtype = self.dtype
        self.request_encoder = self.make_request_encoder()
        self.encoder = self.make_encoder()
        self.head = AffinityHead(self.bilinear_head, dtype=dtype)
        self.start_proj = nn.Dense(self.embed_dim, dtype=dtype)
        self.layers = [
            DecoderLayer(self.embed_dim, self.num_heads, self.ff_dim, self.dropout, dtype=dtype)
            for _ in range(self.decoder_layers)
        ]
        self.out_norm = nn.LayerNorm(dtype=dtype)
        self.pointer_query = nn.Dense(self.embed_dim, dtype=dtype)
        self.pointer_key = nn.Dense(self.embed_dim, dtype=dtype)

    def encode(self, batch: dict, deterministic: bool = True) -> FastContext:
        user, inputs, items, bias = self.request_encoder(batch)
        cand_mask = batch["cand_mask"]
        memory = self.encoder(inputs, cand_mask, deterministic)
        return FastContext(
            memory=memory,
            memory_kv=tuple(layer.memory_kv(memory) for layer in self.layers),
            pointer_keys=self.pointer_key(memory),
            base_logits=self.head(memory, user, items, bias),
            start=self.start_proj(user),
            cand_mask=cand_mask,
        )

    def _pointer(self, context: FastContext, hidden: jnp.ndarray) -> jnp.ndarray:
        """hidden [B, M..., D] -> logits [B, M..., N]."""
        query = self.pointer_query(self.out_norm(hidden))
        flat = query.reshape(query.shape[0], -1, query.shape[-1])
        scores = jnp.einsum("bmd,bnd->bmn", flat, context.pointer_keys) / np.sqrt(
            self.embed_dim
        ).astype(flat.dtype)
        scores = scores.reshape(query.shape[:-1] + scores.shape[-1:]).astype(jnp.float32)
        extra = scores.ndim - 2
        base = context.base_logits.reshape(
            context.base_logits.shape[:1] + (1,) * extra + context.base_logits.shape[1:]
        )
        return scores + base

    def _tokens(self, context: FastContext, prev_items: jnp.ndarray, positions: jnp.ndarray):
        """Decoder inputs: the start token at position 0, else the encoded previous item."""
        items = gather_rows(context.memory, prev_items)
        start = context.start.reshape(
            context.start.shape[:1] + (1,) * (prev_items.ndim - 1) + context.start.shape[1:]
        )
        tokens = jnp.where((positions == 0)[..., None], start, items)
        return tokens + sinusoidal_positions(positions, self.embed_dim)

    def init_carry(self, context: FastContext, list_len: int):
        """Zero key/value caches [B, L, H, Dh] per decoder layer."""
        batch_size = context.memory.shape[0]
        head_dim = self.embed_dim // self.num_heads
        shape = (batch_size, list_len, self.num_heads, head_dim)
        zeros = jnp.zeros(shape, context.memory.dtype)
        return tuple((zeros, zeros) for _ in self.layers)

    def decode_step(self, context, carry, prev_item, chosen, t, deterministic: bool = True):
        del chosen  # The decoder sees the ordered prefix through its cache.
        positions = jnp.broadcast_to(t, prev_item.shape)
        x = self._tokens(context, prev_item, positions)
        caches = []
        for layer, cache, memory_kv in zip(self.layers, carry, context.memory_kv, strict=True):
            x, cache = layer.step(x, cache, t, memory_kv, context.cand_mask, deterministic)
            caches.append(cache)
        return self._pointer(context, x), tuple(caches)

    def list_logits(self, batch: dict, lists: jnp.ndarray, deterministic: bool = True):
        """Teacher-forced logits [B, M..., L, N] of lists [B, M..., L] in one pass."""
        context = self.encode(batch, deterministic)
        length = lists.shape[-1]
        prev = jnp.concatenate([jnp.zeros_like(lists[..., :1]), lists[..., :-1]], axis=-1)
        positions = jnp.broadcast_to(jnp.arange(length), lists.shape)
        x = self._tokens(context, prev, positions)
        for layer, memory_kv in zip(self.layers, context.memory_kv, strict=True):
            x = layer.full(x, memory_kv, context.cand_mask, deterministic)
        return self._pointer(context, x)

    def __call__(self, batch: dict, deterministic: bool = True) -> jnp.ndarray:
        """First-step logits [B, N] (the start token only)."""
        context = self.encode(batch, deterministic)
        start = context.start[:, None, :] + sinusoidal_positions(
            jnp.zeros((1,), jnp.int32), self.embed_dim
        )
        x = start
        for layer, memory_kv in zip(self.layers, context.memory_kv, strict=True):
            x = layer.full(x, memory_kv, context.cand_mask, deterministic)
        return self._pointer(context, x[:, 0])
