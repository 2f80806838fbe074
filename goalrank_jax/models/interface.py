"""The interface every generator variant implements (:class:`Generator`).

A generator is a Flax Linen module; :class:`goalrank_jax.policies.GeneratorPolicy` calls the
methods below through ``module.apply(params, ..., method=NAME)`` (``__call__`` through
``module.init`` / ``module.apply``) and never looks inside the context or the carry, so a new
variant only has to implement them. Register it with
:func:`goalrank_jax.models.registry.register_generator`.

Shapes: B = requests in the batch, K = lists sampled per request (a group), L = list length,
N = candidates per request, H = history length, D = hidden width. ``M...`` are any number of
extra axes that share a request's context (e.g. the K group members).

The request batch (a dict) holds ``user_id`` [B] int32, ``history_items`` / ``history_labels``
[B, H] int32, ``history_mask`` [B, H] bool, ``cand_items`` [B, N] int32 and ``cand_mask`` [B, N]
bool (False = padding). Lists are int32 candidate indices (into ``cand_items``), position 0
first. Logits are unmasked: the caller (:mod:`goalrank_jax.sampling`) masks invalid and already
chosen candidates.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax

# The methods of :class:`Generator`, checked by ``register_generator``.
GENERATOR_METHODS = ("encode", "init_carry", "decode_step", "list_logits", "__call__")


class Generator(Protocol):
    """An autoregressive list generator: scores of the next candidate given a list prefix."""

    num_users: int  # User vocabulary (the serving export records it).
    num_items: int  # Item vocabulary.

    def encode(self, batch: dict, deterministic: bool = True) -> Any:
        """The per-request context, computed once and shared by every step and every sample.

        Args:
          batch: the request batch (module docstring), leading axis B.
          deterministic: disable dropout.

        Returns:
          A pytree of arrays with leading axis B (e.g. encoded candidates [B, N, D] and
          ``cand_mask`` [B, N]); only this generator's ``init_carry`` and ``decode_step`` read
          it.
        """
        ...

    def init_carry(self, context: Any, list_len: int) -> Any:
        """The decoding state before step 0 of a list of length ``list_len`` (L, static).

        Returns:
          A pytree with leading axis B (e.g. a key/value cache [B, L, heads, D / heads] per
          decoder layer), or None for a generator that needs none (its state is the chosen
          set, tracked by the caller).
        """
        ...

    def decode_step(
        self,
        context: Any,
        carry: Any,
        prev_item: jax.Array,
        chosen: jax.Array,
        t: jax.Array,
        deterministic: bool = True,
    ) -> tuple[jax.Array, Any]:
        """One decoding step (inside a ``lax.scan`` over the L steps).

        Args:
          context: from :meth:`encode`.
          carry: from :meth:`init_carry` or the previous step.
          prev_item: [B] int32, the candidate placed at step t - 1 (0 at t = 0).
          chosen: [B, N] float multi-hot of the candidates placed at steps 0 .. t - 1.
          t: scalar int32, the position being filled (0 .. L - 1).
          deterministic: disable dropout.

        Returns:
          (logits [B, N] of the candidate at position t, the carry for step t + 1). The K
          samples of a group are vmapped over this call, sharing ``context``.
        """
        ...

    def list_logits(self, batch: dict, lists: jax.Array, deterministic: bool = True) -> jax.Array:
        """Teacher-forced logits of every step of given lists, in one differentiable pass.

        Args:
          batch: the request batch, leading axis B.
          lists: [B, M..., L] int32 (e.g. [B, K, L], a group of K lists per request).
          deterministic: disable dropout (training passes False with a "dropout" rng).

        Returns:
          [B, M..., L, N]: step t conditioned on ``lists[..., :t]``; equal to what
          :meth:`decode_step` gives along the same lists.
        """
        ...

    def __call__(self, batch: dict, deterministic: bool = True) -> jax.Array:
        """First-step logits [B, N] (empty prefix): used by ``init``, the supervised loss and
        the Plackett-Luce policy over the first-step scores."""
        ...
