"""Ranking policies as pure functions of (params, batch[, key]).

Bundles a generator or reward-model module with the decoding rules of :mod:`sampling`, so the
train step, the evaluation and the baselines all speak the same interface:

* :class:`GeneratorPolicy`: an autoregressive generator of either variant (on-policy sampling,
  greedy decoding, teacher-forced log-probabilities) or, with ``plackett_luce=True``, the
  Plackett-Luce policy over the generator's first-step scores (Gumbel-top-k sampling, sort
  decoding, PL log-probabilities).
* :class:`Evaluator`: the frozen reward model: list rewards, candidate scores and greedy lists.
* :func:`auxiliary_lists`: the reference policies' lists of the mixed group construction.

The fixed reference lists (logged list, retriever's top-L, uniform random lists, ...) live in
:mod:`reference_policies`; ``logged_list``, ``top_by`` and ``uniform_lists`` are re-exported here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from goalrank_jax import reference_policies, sampling
from goalrank_jax.models import reward_model as rm
from goalrank_jax.reference_policies import logged_list as logged_list
from goalrank_jax.reference_policies import top_by as top_by
from goalrank_jax.reference_policies import uniform_lists as uniform_lists


@dataclasses.dataclass(frozen=True)
class GeneratorPolicy:
    module: nn.Module
    list_len: int
    plackett_luce: bool = False
    unroll: int | bool = 1  # lax.scan unrolling of the L decoding steps (True = full).

    def _decoder(self, params, batch):
        """(decode_step, initial carry) of the generator on this batch (no dropout)."""
        context = self.module.apply(params, batch, method="encode")
        carry = self.module.apply(params, context, self.list_len, method="init_carry")

        def decode_step(carry, prev_item, chosen, t):
            return self.module.apply(
                params, context, carry, prev_item, chosen, t, method="decode_step"
            )

        return decode_step, carry

    def first_step_logits(self, params, batch, deterministic=True, rngs=None):
        """[B, N] logits of the first position (the scores of the PL policy)."""
        return self.module.apply(params, batch, deterministic, rngs=rngs)

    def sample(self, params, batch, key, group_size: int, temperature: float = 1.0):
        """[B, K, L] lists sampled from the policy (no dropout)."""
        mask = batch["cand_mask"]
        if self.plackett_luce:
            scores = self.first_step_logits(params, batch) / temperature
            return sampling.gumbel_top_k(scores, mask, self.list_len, key, group_size)
        decode_step, carry = self._decoder(params, batch)
        return sampling.sample_group_decoder(
            decode_step, carry, mask, self.list_len, key, group_size, temperature, self.unroll
        )

    def greedy(self, params, batch):
        """[B, L] greedy list."""
        mask = batch["cand_mask"]
        if self.plackett_luce:
            scores = sampling.mask_logits(
                self.first_step_logits(params, batch), mask, jnp.zeros_like(mask)
            )
            return jax.lax.top_k(scores, self.list_len)[1].astype(jnp.int32)
        decode_step, carry = self._decoder(params, batch)
        return sampling.decode(decode_step, carry, mask, self.list_len, unroll=self.unroll)

    def step_logits(self, params, batch, lists, dropout_key=None):
        """Unmasked teacher-forced logits [B, M..., L, N] of lists [B, M..., L] (step t
        conditioned on lists[..., :t]) in one differentiable pass (dropout with
        ``dropout_key``). The Plackett-Luce policy's step logits are its first-step scores at
        every step (the prefix enters only through the mask)."""
        deterministic = dropout_key is None
        rngs = None if deterministic else {"dropout": dropout_key}
        if self.plackett_luce:
            scores = self.first_step_logits(params, batch, deterministic, rngs)
            extra = lists.ndim - 1
            scores = scores.reshape(scores.shape[:1] + (1,) * extra + scores.shape[1:])
            return jnp.broadcast_to(scores, lists.shape + scores.shape[-1:])
        return self.module.apply(
            params, batch, lists, deterministic, method="list_logits", rngs=rngs
        )

    def log_prob_and_first_logits(self, params, batch, lists, dropout_key=None):
        """(log pi(lists) [B, M...], first-step logits [B, N]) in one differentiable pass: the
        first-step logits are step 0 of the first list (its prefix is empty)."""
        logits = self.step_logits(params, batch, lists, dropout_key)
        first = logits.reshape((logits.shape[0], -1) + logits.shape[-1:])[:, 0]
        return self.log_prob_of(logits, batch, lists), first

    @staticmethod
    def masked(logits, batch, lists):
        """Step logits [B, M..., L, N] with invalid and already chosen candidates masked."""
        chosen = sampling.prefix_multi_hot(lists, batch["cand_mask"].shape[-1])
        return sampling.mask_logits(logits, batch["cand_mask"], chosen)

    def log_prob_of(self, logits, batch, lists):
        """log pi(lists) [B, M...] from their step logits (:meth:`step_logits`)."""
        return sampling.log_prob_from_logits(self.masked(logits, batch, lists), lists)


def candidate_lists(cand_mask: jnp.ndarray) -> jnp.ndarray:
    """[B, N, 1]: every candidate as a list of one (the list-aware model's candidate scores)."""
    batch_size, num_candidates = cand_mask.shape
    return jnp.broadcast_to(
        jnp.arange(num_candidates, dtype=jnp.int32)[None, :, None], (batch_size, num_candidates, 1)
    )


@dataclasses.dataclass(frozen=True)
class Evaluator:
    """A frozen reward model seen as a list evaluator."""

    module: nn.Module
    kind: str

    def init(self, key, batch, list_len: int):
        """Fresh parameters (the list-aware model is initialised on the logged lists)."""
        if self.kind == "pointwise":
            return self.module.init(key, batch)
        return self.module.init(key, batch, logged_list(batch, list_len))

    def list_rewards(self, params, batch, lists) -> jnp.ndarray:
        """lists [B, M..., L] -> estimated rewards [B, M...]."""
        if self.kind == "pointwise":
            return rm.dcg_list_reward(self.module.apply(params, batch), lists)
        return rm.list_aware_reward(self.module.apply(params, batch, lists))

    def candidate_scores(self, params, batch) -> jnp.ndarray:
        """[B, N] per-candidate scores (for list-aware: the logit of the candidate shown first)."""
        if self.kind == "pointwise":
            return self.module.apply(params, batch)
        return self.module.apply(params, batch, candidate_lists(batch["cand_mask"]))[..., 0]

    def greedy(self, params, batch, list_len: int) -> jnp.ndarray:
        """[B, L] list built position by position, maximising the estimated reward.

        For the pointwise model this is the top-L sort of its scores. For the list-aware model
        step t scores every candidate appended to the chosen prefix of t items
        (``appended_logits``: the prefix once, then the N candidates, each seeing the prefix and
        itself, t + N positions in one pass; the logit is the last one of the list of t + 1
        items, since the model's attention is causal). The L steps are unrolled, since each has
        its own prefix length.
        """
        mask = batch["cand_mask"]
        if self.kind == "pointwise":
            scores = sampling.mask_logits(
                self.module.apply(params, batch), mask, jnp.zeros_like(mask)
            )
            return jax.lax.top_k(scores, list_len)[1].astype(jnp.int32)
        batch_size, num_candidates = mask.shape
        prefix = jnp.zeros((batch_size, 0), jnp.int32)
        chosen = jnp.zeros((batch_size, num_candidates))
        for _ in range(list_len):
            logits = self.module.apply(params, batch, prefix, method="appended_logits")
            item = jnp.argmax(sampling.mask_logits(logits, mask, chosen), -1).astype(jnp.int32)
            prefix = jnp.concatenate([prefix, item[:, None]], axis=-1)
            chosen = chosen + jax.nn.one_hot(item, num_candidates)
        return prefix


def auxiliary_lists(
    names: tuple[str, ...], batch, evaluator: Evaluator, reward_params: Any, list_len: int, key
) -> jnp.ndarray:
    """[B, len(names), L] the auxiliary policies' lists used by the mixed group construction
    (names of :data:`reference_policies.AUXILIARY_NAMES`)."""
    return reference_policies.auxiliary_lists(names, batch, evaluator, reward_params, list_len, key)
