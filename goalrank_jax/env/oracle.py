"""Reference lists under the true user model: the oracle beam search, greedy and relevance sort.

Axis names in shapes: B batch, N candidates, L list length, W beam width.
"""

import functools

import jax
import jax.numpy as jnp

from goalrank_jax.env.true_model import TrueModelParams

DEFAULT_BEAM_WIDTH = 50
"""Beam width of the oracle used by the project; reports must state the width they used."""

_DEFAULT_PARAMS = TrueModelParams()


def _extend_beams(
    t: jax.Array,
    state: tuple[jax.Array, ...],
    rel: jax.Array,
    mask: jax.Array,
    same_category: jax.Array,
    completes: jax.Array,
    params: TrueModelParams,
) -> tuple[jax.Array, ...]:
    """One position of the oracle beam search: extends every beam and keeps the W best.

    Args:
        t: the 0-based position being filled.
        state: (scores [B, W], beam_lists [B, W, L], used [B, W, N], n_same [B, W, N],
            comp [B, W, N]) of the beams before position t.
        rel: [B, N] float32 true relevance logits of the candidates.
        mask: [B, N] bool, True for valid candidates.
        same_category: [B, N, N] bool, candidates k and j share a category.
        completes: [B, N, N] bool, candidate k placed above candidate j complements it.
        params: the true-model scalars.

    Returns:
        The state after position t, same shapes.
    """
    scores, beam_lists, used, n_same, comp = state
    batch, beam_width = scores.shape
    num_cands = rel.shape[1]
    exam = (t + 1.0) ** (-params.examination_power)
    logit = (
        rel[:, None, :]
        - params.redundancy_penalty * n_same
        + params.complement_bonus * comp.astype(jnp.float32)
    )
    valid = mask[:, None, :] & ~used & jnp.isfinite(scores)[:, :, None]
    extended = jnp.where(valid, scores[:, :, None] + exam * jax.nn.sigmoid(logit), -jnp.inf)
    top_scores, top_index = jax.lax.top_k(extended.reshape(batch, -1), beam_width)
    parent = top_index // num_cands
    item = (top_index % num_cands).astype(jnp.int32)

    def from_parent(values: jax.Array) -> jax.Array:
        return jnp.take_along_axis(values, parent[:, :, None], axis=1)

    def rows_of_item(pairwise: jax.Array) -> jax.Array:
        return jnp.take_along_axis(pairwise, item[:, :, None], axis=1)

    beam_lists = from_parent(beam_lists).at[:, :, t].set(item)
    used = from_parent(used) | jax.nn.one_hot(item, num_cands, dtype=bool)
    n_same = from_parent(n_same) + rows_of_item(same_category).astype(jnp.float32)
    comp = from_parent(comp) | rows_of_item(completes)
    return top_scores, beam_lists, used, n_same, comp


@functools.partial(jax.jit, static_argnames=("list_len", "beam_width", "params"))
def oracle_beam_search(
    cand_rel_logit: jax.Array,
    cand_category: jax.Array,
    cand_partner: jax.Array,
    cand_mask: jax.Array,
    list_len: int,
    beam_width: int = DEFAULT_BEAM_WIDTH,
    params: TrueModelParams = _DEFAULT_PARAMS,
) -> tuple[jax.Array, jax.Array]:
    """Beam search for the best list under the true model.

    At each position every beam is extended by every unused valid candidate; the incremental
    reward p_t of the new item depends only on the beam's prefix. The W best extensions are kept.
    Beams are distinct ordered prefixes: at the first position only one (empty) beam is live, and
    later extensions of distinct prefixes are distinct. Each row needs at least L valid candidates.

    Args:
        cand_rel_logit: [B, N] true relevance logits of the candidates.
        cand_category: [B, N] int candidate categories.
        cand_partner: [B, N] int partner category of each candidate's category.
        cand_mask: [B, N] bool, True for valid candidates.
        list_len: L, static.
        beam_width: W, static (the project's oracle uses DEFAULT_BEAM_WIDTH = 50).
        params: the true-model scalars, static.

    Returns:
        lists: [B, L] int32 indices into N of the best list found.
        rewards: [B] float32 its expected reward.
    """
    rel = jnp.asarray(cand_rel_logit, jnp.float32)
    category = jnp.asarray(cand_category)
    partner = jnp.asarray(cand_partner)
    mask = jnp.asarray(cand_mask, bool)
    batch, num_cands = rel.shape
    # same_category[b, k, j]: candidates k and j share a category.
    same_category = category[:, :, None] == category[:, None, :]
    # completes[b, k, j]: candidate k placed above candidate j complements it.
    completes = category[:, :, None] == partner[:, None, :]

    scores = jnp.full((batch, beam_width), -jnp.inf, jnp.float32).at[:, 0].set(0.0)
    beam_lists = jnp.zeros((batch, beam_width, list_len), jnp.int32)
    used = jnp.zeros((batch, beam_width, num_cands), bool)
    n_same = jnp.zeros((batch, beam_width, num_cands), jnp.float32)
    comp = jnp.zeros((batch, beam_width, num_cands), bool)

    def step(t, state):
        return _extend_beams(t, state, rel, mask, same_category, completes, params)

    scores, beam_lists, *_ = jax.lax.fori_loop(
        0, list_len, step, (scores, beam_lists, used, n_same, comp)
    )
    best = jnp.argmax(scores, axis=1)
    lists = jnp.take_along_axis(beam_lists, best[:, None, None], axis=1)[:, 0]
    rewards = jnp.take_along_axis(scores, best[:, None], axis=1)[:, 0]
    return lists, rewards


def greedy_true(
    cand_rel_logit: jax.Array,
    cand_category: jax.Array,
    cand_partner: jax.Array,
    cand_mask: jax.Array,
    list_len: int,
    params: TrueModelParams = _DEFAULT_PARAMS,
) -> tuple[jax.Array, jax.Array]:
    """Greedy list under the true model (beam search of width 1).

    Args:
        cand_rel_logit: [B, N] true relevance logits of the candidates.
        cand_category: [B, N] int candidate categories.
        cand_partner: [B, N] int partner category of each candidate's category.
        cand_mask: [B, N] bool, True for valid candidates.
        list_len: L.
        params: the true-model scalars.

    Returns:
        lists: [B, L] int32 indices into N; rewards: [B] float32 expected rewards.
    """
    return oracle_beam_search(
        cand_rel_logit, cand_category, cand_partner, cand_mask, list_len, 1, params
    )


@functools.partial(jax.jit, static_argnames=("list_len",))
def relevance_sort_lists(
    cand_rel_logit: jax.Array, cand_mask: jax.Array, list_len: int
) -> jax.Array:
    """Top-L valid candidates by true relevance logit, in decreasing order.

    Args:
        cand_rel_logit: [B, N] true relevance logits of the candidates.
        cand_mask: [B, N] bool, True for valid candidates.
        list_len: L, static.

    Returns:
        [B, L] int32 indices into N.
    """
    masked = jnp.where(cand_mask, jnp.asarray(cand_rel_logit, jnp.float32), -jnp.inf)
    return jax.lax.top_k(masked, list_len)[1].astype(jnp.int32)
