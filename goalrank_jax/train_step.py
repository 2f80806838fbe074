"""The train state and the pure train steps (GoalRank generator and reward model).

``goalrank_train_step`` is the whole GoalRank update as one function of
``(state, batch, base_key)``: group sampling (vmapped over K keys), frozen rewards, the
group-relative reference policy, the loss, gradients, the optax update and the skip of updates
with non-finite gradients. :func:`compile_step` jits it with the state donated and shardings
given at the call site.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from goalrank_jax import configs, losses, policies, sampling
from goalrank_jax.models import reward_model as rm


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """step: int32 scalar; params / opt_state: trained pytrees; reward_params: frozen evaluator
    parameters (None while the reward model itself is trained)."""

    step: jax.Array
    params: Any
    opt_state: Any
    reward_params: Any = None


def make_optimizer(optim) -> optax.GradientTransformation:
    """Global-norm clipping + AdamW with optional step decay of the learning rate."""
    if optim.decay_every:
        schedule = optax.exponential_decay(
            optim.learning_rate, optim.decay_every, optim.decay_factor, staircase=True
        )
    else:
        schedule = optim.learning_rate
    return optax.chain(
        optax.clip_by_global_norm(optim.clip_norm),
        optax.adamw(
            schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps, weight_decay=optim.weight_decay
        ),
    )


def create_state(params, optimizer, reward_params=None) -> TrainState:
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=optimizer.init(params),
        reward_params=reward_params,
    )


def apply_gradients(state: TrainState, grads, optimizer) -> tuple[TrainState, dict]:
    """Optax update, skipped (params and optimizer state unchanged) if any gradient is
    non-finite. The step counter always advances so the data and key streams stay aligned."""
    finite = jnp.all(
        jnp.array([jnp.all(jnp.isfinite(g)) for g in jax.tree_util.tree_leaves(grads)])
    )
    safe_grads = jax.tree_util.tree_map(lambda g: jnp.where(finite, g, 0.0), grads)
    updates, new_opt_state = optimizer.update(safe_grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    keep = functools.partial(jax.tree_util.tree_map, lambda new, old: jnp.where(finite, new, old))
    new_state = dataclasses.replace(
        state,
        step=state.step + 1,
        params=keep(new_params, state.params),
        opt_state=keep(new_opt_state, state.opt_state),
    )
    metrics = {
        "grad_norm": optax.tree.norm(safe_grads),
        "skipped": 1.0 - finite.astype(jnp.float32),
    }
    return new_state, metrics


# The supervised forms computed along the group's own sampled lists.
GROUP_FORMS = {
    "group_step_bce": losses.group_step_bce,
    "group_step_softmax": losses.group_step_softmax,
}


def supervised_auxiliary_slots(gro: configs.GROConfig) -> tuple[int, ...]:
    """The auxiliary slots of a mixed group that the group forms of L_sup supervise."""
    if gro.supervise_auxiliary == "label_free":
        return tuple(i for i, name in enumerate(gro.auxiliary) if name != "logged")
    return ()


def teacher_list(supervised_form: str, batch: dict, list_len: int) -> jnp.ndarray:
    """[B, L] the list L_sup teacher-forces: the logged list in shown order, for "logged_nll"
    with its positives moved first (each group keeping the shown order)."""
    logged = policies.logged_list(batch, list_len)
    if supervised_form == "logged_nll":
        return losses.positives_first(logged, batch["cand_labels"], batch["cand_mask"])
    return logged


def policy_terms(
    supervised_form: str,
    policy: policies.GeneratorPolicy,
    params,
    batch: dict,
    lists,
    dropout_key=None,
    sampled_from: int = 0,
    auxiliary_supervised: tuple[int, ...] = (),
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """(log pi(lists) [B, K], L_sup, mean per-step entropy of the policy along the lists) from
    one differentiable teacher-forced pass.

    "first_step_bce": BCE of the first-step logits (step 0 of the first list, whose prefix is
    empty; :func:`losses.supervised_bce`). "every_step_bce" / "logged_nll":
    :func:`losses.every_step_bce` / :func:`losses.logged_nll` of the step logits along
    :func:`teacher_list`, scored as list K+1 of the group's pass (same dropout key, the candidate
    encoding shared): (K+1)/K of the group pass's cost instead of a second pass.
    "group_step_bce": :func:`losses.group_step_bce` of the group pass's own step logits along
    the sampled lists ``lists[:, sampled_from:]`` (no extra list; a mixed group's auxiliary
    lists come first and are left out: the logged one was chosen with the labels).
    "group_step_softmax": :func:`losses.group_step_softmax` along the same lists. The group
    forms also supervise the auxiliary slots ``auxiliary_supervised`` (indices < sampled_from).
    """
    labels, mask = batch["cand_labels"], batch["cand_mask"]
    if supervised_form not in configs.SUPERVISED_FORMS:
        raise ValueError(f"Unknown supervised_form {supervised_form!r}.")
    teacher = None
    scored = lists
    if supervised_form in ("every_step_bce", "logged_nll"):
        teacher = teacher_list(supervised_form, batch, policy.list_len)
        scored = jnp.concatenate([lists, teacher[:, None, :]], axis=1)
    logits = policy.step_logits(params, batch, scored, dropout_key)
    group_logits = logits[:, : lists.shape[1]]
    masked = policy.masked(group_logits, batch, lists)
    log_probs = sampling.log_prob_from_logits(masked, lists)
    entropy = sampling.step_entropy(masked).mean()
    if supervised_form in GROUP_FORMS:
        keep = np.array(
            list(auxiliary_supervised) + list(range(sampled_from, lists.shape[1])), np.int32
        )
        sup_loss = GROUP_FORMS[supervised_form](group_logits[:, keep], lists[:, keep], labels, mask)
    elif teacher is None:
        sup_loss = losses.supervised_bce(logits[:, 0, 0], labels, mask)
    else:
        loss = losses.every_step_bce if supervised_form == "every_step_bce" else losses.logged_nll
        sup_loss = loss(logits[:, -1], teacher, labels, mask)
    return log_probs, sup_loss, entropy


def goalrank_train_step(
    state: TrainState,
    batch: dict,
    base_key: jax.Array,
    *,
    policy: policies.GeneratorPolicy,
    evaluator: policies.Evaluator,
    optimizer: optax.GradientTransformation,
    gro,
) -> tuple[TrainState, dict]:
    """One GoalRank update. Shapes: batch of B requests, N candidates, groups of K lists of L.

    1. K lists per request: sampled from the current policy (no gradient), or for the mixed
       construction the auxiliary lists first and sampled lists in the remaining slots.
    2. r [B, K] from the frozen evaluator; pi_ref = softmax(z-score(r) / tau_ref) (minus 1/K
       with ``gro.centre_weights``).
    3. loss = w_R * L_GRO(log pi_theta(lists), pi_ref) + w_G * L_sup - w_H * H, L_sup by
       ``gro.supervised_form`` and H the mean per-step entropy of the policy along the group's
       lists (see :func:`policy_terms`; w_H = ``gro.entropy_weight``, 0 by default).
    """
    key = jax.random.fold_in(base_key, state.step)
    sample_key, dropout_key, aux_key = jax.random.split(key, 3)
    frozen_params = jax.lax.stop_gradient(state.params)
    num_auxiliary = 0  # the group's first slots hold the auxiliary lists, the rest are sampled
    if gro.group_construction == "mixed":
        aux = policies.auxiliary_lists(
            gro.auxiliary, batch, evaluator, state.reward_params, policy.list_len, aux_key
        )
        sampled = policy.sample(
            frozen_params,
            batch,
            sample_key,
            gro.group_size - aux.shape[1],
            gro.sample_temperature,
        )
        lists = jnp.concatenate([aux, sampled], axis=1)
        num_auxiliary = aux.shape[1]
    else:
        lists = policy.sample(
            frozen_params, batch, sample_key, gro.group_size, gro.sample_temperature
        )
    lists = jax.lax.stop_gradient(lists)
    rewards = jax.lax.stop_gradient(evaluator.list_rewards(state.reward_params, batch, lists))
    weights = losses.gro_weights(rewards, gro.tau_ref, gro.centre_weights)

    def loss_fn(params):
        log_probs, sup_loss, entropy = policy_terms(
            gro.supervised_form,
            policy,
            params,
            batch,
            lists,
            dropout_key,
            sampled_from=num_auxiliary,
            auxiliary_supervised=supervised_auxiliary_slots(gro) if num_auxiliary else (),
        )
        gro_loss = losses.gro_loss(log_probs, weights, loss_form=gro.loss_form)
        total = (
            gro.reward_weight * gro_loss
            + gro.supervised_weight * sup_loss
            - gro.entropy_weight * entropy
        )
        return total, {
            "gro_loss": gro_loss,
            "sup_loss": sup_loss,
            "sample_log_prob": log_probs.mean(),
            "policy_entropy": entropy,
        }

    (loss, aux_metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state, update_metrics = apply_gradients(state, grads, optimizer)
    metrics = {
        "loss": loss,
        **aux_metrics,
        **update_metrics,
        "group_reward_mean": rewards.mean(),
        "group_reward_std": rewards.std(-1, ddof=1).mean(),
        "ref_max_weight": weights.max(-1).mean(),
    }
    return state, metrics


def reward_model_train_step(
    state: TrainState,
    batch: dict,
    base_key: jax.Array,
    *,
    evaluator: policies.Evaluator,
    optimizer: optax.GradientTransformation,
    list_len: int,
    candidate_weight: float = 0.0,
) -> tuple[TrainState, dict]:
    """One BCE update of the reward model on logged feedback.

    Pointwise: every valid candidate against its label (non-logged candidates are label 0).
    List-aware: each position of the logged list against its feedback, plus
    ``candidate_weight`` x the pointwise BCE of every candidate's first-position logit
    (:meth:`policies.Evaluator.candidate_scores`) against its label.
    """
    dropout_key = jax.random.fold_in(base_key, state.step)
    rngs = {"dropout": dropout_key}
    module = evaluator.module

    def loss_fn(params):
        if evaluator.kind == "pointwise":
            logits = module.apply(params, batch, False, rngs=rngs)
            return losses.supervised_bce(logits, batch["cand_labels"], batch["cand_mask"])
        logged = policies.logged_list(batch, list_len)
        logits = module.apply(params, batch, logged, False, rngs=rngs)
        labels = rm.gather_candidates(batch["cand_labels"], logged)
        loss = optax.sigmoid_binary_cross_entropy(logits, labels).mean()
        if candidate_weight:
            alone = policies.candidate_lists(batch["cand_mask"])
            first = module.apply(
                params, batch, alone, False, rngs={"dropout": jax.random.fold_in(dropout_key, 1)}
            )[..., 0]
            loss = loss + candidate_weight * losses.supervised_bce(
                first, batch["cand_labels"], batch["cand_mask"]
            )
        return loss

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    state, update_metrics = apply_gradients(state, grads, optimizer)
    return state, {"loss": loss, **update_metrics}


def compile_step(step_fn, state_sharding, batch_sharding, replicated):
    """jit with the state donated: (state, batch, key) -> (state, metrics)."""
    return jax.jit(
        step_fn,
        in_shardings=(state_sharding, batch_sharding, replicated),
        out_shardings=(state_sharding, replicated),
        donate_argnums=(0,),
    )
