"""Reference policies: fixed rules that give one list per request, under one set of names.

The same names are the evaluation's rows (``results.json`` keys ``<split>/<name>/<metric>``, the
reference rows of the comparison report) and the policies the mixed group construction puts into
every group (``gro.auxiliary``). :data:`REGISTRY` maps each name to a :class:`ReferencePolicy`
that builds the [B, L] lists of a batch from (batch, evaluator, reward params, key, L):

* ``reward_model_greedy``: the frozen evaluator's greedy list (AUC scores: its candidate scores);
* ``retriever``: top-L by the retriever's score (AUC scores: that score);
* ``logged``: the logged list in its shown order;
* ``random``: L distinct valid candidates drawn uniformly with the given key;
* ``true_relevance_sort`` (synthetic data only): top-L by the true relevance logit (AUC scores:
  that logit);
* ``oracle`` (synthetic data only): the beam-search oracle list stored with each request.

The last two read the true user model's fields of a synthetic batch, so they are evaluation
references only: ``gro.auxiliary`` takes the names of :data:`AUXILIARY_NAMES`.

Keys: the evaluation draws ``random`` with the one fixed key of :func:`evaluation_key` (candidates
are shuffled per request, so one key gives independent lists); the mixed construction folds the
slot index into its step key (:func:`auxiliary_lists`). Only ``random`` reads its key.

This module needs nothing but jax and :mod:`sampling` (``configs`` imports it for the names).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp

from goalrank_jax import sampling

if TYPE_CHECKING:
    from goalrank_jax.policies import Evaluator

# Seed of the fixed key the evaluation draws the ``random`` lists with.
RANDOM_POLICY_SEED = 20260
# The batch fields the true-model references read (present on synthetic data only).
TRUE_MODEL_FIELDS = ("cand_true_logit", "oracle_list")


def logged_list(batch, list_len: int) -> jnp.ndarray:
    """[B, L] the logged list in its shown order (from ``cand_logged_pos``)."""
    positions = batch["cand_logged_pos"]
    onehot = positions[:, None, :] == jnp.arange(list_len)[None, :, None]
    return jnp.argmax(onehot, axis=-1).astype(jnp.int32)


def top_by(scores, cand_mask, list_len: int) -> jnp.ndarray:
    """[B, L] top-L valid candidates by a score [B, N]."""
    masked = sampling.mask_logits(scores, cand_mask, jnp.zeros_like(cand_mask))
    return jax.lax.top_k(masked, list_len)[1].astype(jnp.int32)


def uniform_lists(cand_mask, list_len: int, key, count: int) -> jnp.ndarray:
    """[B, count, L] uniformly random lists of distinct valid candidates."""
    return sampling.gumbel_top_k(
        jnp.zeros(cand_mask.shape, jnp.float32), cand_mask, list_len, key, count
    )


# (batch, evaluator, reward_params, key, list_len) -> lists [B, L]
ListFn = Callable[[dict, "Evaluator", Any, jax.Array, int], jnp.ndarray]
# (batch, evaluator, reward_params) -> AUC scores [B, N]
ScoreFn = Callable[[dict, "Evaluator", Any], jnp.ndarray]


@dataclasses.dataclass(frozen=True)
class ReferencePolicy:
    """One reference policy. ``scores`` None: AUC from the list itself (1/t at position t)."""

    label: str  # Its row label in the comparison report.
    lists: ListFn
    scores: ScoreFn | None = None
    needs_reward_model: bool = False
    needs_true_model: bool = False


REGISTRY: dict[str, ReferencePolicy] = {
    "reward_model_greedy": ReferencePolicy(
        label="reward model's own greedy list",
        lists=lambda batch, evaluator, params, key, list_len: evaluator.greedy(
            params, batch, list_len
        ),
        scores=lambda batch, evaluator, params: evaluator.candidate_scores(params, batch),
        needs_reward_model=True,
    ),
    "retriever": ReferencePolicy(
        label="retriever order",
        lists=lambda batch, evaluator, params, key, list_len: top_by(
            batch["cand_retriever_score"], batch["cand_mask"], list_len
        ),
        scores=lambda batch, evaluator, params: batch["cand_retriever_score"],
    ),
    "logged": ReferencePolicy(
        label="logged list",
        lists=lambda batch, evaluator, params, key, list_len: logged_list(batch, list_len),
    ),
    "random": ReferencePolicy(
        label="random list",
        lists=lambda batch, evaluator, params, key, list_len: uniform_lists(
            batch["cand_mask"], list_len, key, 1
        )[:, 0],
    ),
    "true_relevance_sort": ReferencePolicy(
        label="sort by true relevance",
        lists=lambda batch, evaluator, params, key, list_len: top_by(
            batch["cand_true_logit"], batch["cand_mask"], list_len
        ),
        scores=lambda batch, evaluator, params: batch["cand_true_logit"],
        needs_true_model=True,
    ),
    "oracle": ReferencePolicy(
        label="oracle (beam search, true model)",
        lists=lambda batch, evaluator, params, key, list_len: batch["oracle_list"],
        needs_true_model=True,
    ),
}
NAMES = tuple(REGISTRY)
# The names ``gro.auxiliary`` accepts: every reference that needs no true-model field.
AUXILIARY_NAMES = tuple(name for name, p in REGISTRY.items() if not p.needs_true_model)


# Names ``gro.auxiliary`` took before the registry (named in the error, not accepted).
RENAMED = {"reward_greedy": "reward_model_greedy", "uniform": "random"}


def auxiliary_hint(name: str) -> str:
    """Why ``name`` is not an auxiliary policy, for the config error ("" when unknown)."""
    if name in RENAMED:
        return f" ({name!r} is now called {RENAMED[name]!r})"
    if name in REGISTRY and REGISTRY[name].needs_true_model:
        return f" ({name!r} reads the true user model: an evaluation reference only)"
    return ""


def lookup(name: str) -> ReferencePolicy:
    if name not in REGISTRY:
        raise ValueError(f"Unknown reference policy {name!r}; known: {NAMES}")
    return REGISTRY[name]


def available(
    names: Sequence[str] = NAMES, *, has_reward_model: bool = True, has_true_model: bool = False
) -> tuple[str, ...]:
    """The names among ``names`` that can be built without the missing inputs."""
    return tuple(
        name
        for name in names
        if (has_reward_model or not lookup(name).needs_reward_model)
        and (has_true_model or not lookup(name).needs_true_model)
    )


def evaluation_key() -> jax.Array:
    """The fixed key the evaluation draws the ``random`` lists with."""
    return jax.random.key(RANDOM_POLICY_SEED)


def reference_lists(
    name: str, batch, evaluator: Evaluator | None, reward_params: Any, key, list_len: int
) -> jnp.ndarray:
    """[B, L] the lists of reference policy ``name`` on a batch."""
    policy = lookup(name)
    if policy.needs_true_model:
        missing = [f for f in TRUE_MODEL_FIELDS if f not in batch]
        if missing:
            raise ValueError(
                f"Reference policy {name!r} reads the true user model's fields {missing}, which "
                "only synthetic data has."
            )
    return policy.lists(batch, evaluator, reward_params, key, list_len)


def reference_rows(
    names: Sequence[str], batch, evaluator: Evaluator | None, reward_params: Any, key, list_len
) -> dict[str, tuple[jnp.ndarray, jnp.ndarray | None]]:
    """{name: (lists [B, L], AUC scores [B, N] or None)}, every list built with ``key``."""
    rows = {}
    for name in names:
        lists = reference_lists(name, batch, evaluator, reward_params, key, list_len)
        score_fn = REGISTRY[name].scores
        rows[name] = (
            lists,
            None if score_fn is None else score_fn(batch, evaluator, reward_params),
        )
    return rows


def auxiliary_lists(
    names: Sequence[str], batch, evaluator: Evaluator, reward_params: Any, list_len: int, key
) -> jnp.ndarray:
    """[B, len(names), L] the lists the mixed group construction puts first in every group;
    slot i builds its list with ``fold_in(key, i)``."""
    lists = []
    for i, name in enumerate(names):
        if name not in AUXILIARY_NAMES:
            raise ValueError(f"Unknown auxiliary policy {name!r}; allowed: {AUXILIARY_NAMES}")
        lists.append(
            reference_lists(
                name, batch, evaluator, reward_params, jax.random.fold_in(key, i), list_len
            )
        )
    return jnp.stack(lists, axis=1)
