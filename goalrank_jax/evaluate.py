"""Evaluation on both tracks (SPEC section 6).

Logged-label track: H@L, N@L, M@L, F1@L and AUC of each policy's list against the candidate
labels. Simulator track (synthetic data): the exact expected reward of each list under the true
user model, and its ratio to the mean reward of the beam-search oracle stored with each request
(``oracle_fraction`` = mean policy reward / mean oracle reward).

Policies: ``goalrank`` (greedy decoding of the generator) and the reference policies of
:mod:`goalrank_jax.reference_policies`: ``reward_model_greedy`` (greedy under the frozen
evaluator), ``logged`` (the logging policy's list), ``random`` (L distinct valid candidates drawn
uniformly, with a fixed key: the chance level of every metric), and on synthetic data
``true_relevance_sort`` (top-L by true relevance) and ``oracle``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from goalrank_jax import metrics as metrics_lib
from goalrank_jax import reference_policies, sharding
from goalrank_jax.data import pipeline
from goalrank_jax.env import synthetic

METRIC_ORDER = ("H", "N", "M", "F1")
# The reference policies of the evaluation (those the batch and the parameters allow).
REFERENCE_POLICIES = ("reward_model_greedy", "logged", "random", "true_relevance_sort", "oracle")


def strip_true_model(batch: dict) -> dict:
    """The batch without the true user model's fields (``oracle*``, ``cand_true*``)."""
    return {k: v for k, v in batch.items() if not k.startswith(("oracle", "cand_true"))}


def weighted_sum(values, batch):
    """(sum, count) of per-request ``values`` [B] over the valid requests of the batch."""
    weight = batch["example_mask"].astype(jnp.float32)
    return (values * weight).sum(), weight.sum()


def accumulate(totals: dict[str, list[float]], sums: dict) -> None:
    """Adds fetched {metric: (sum, count)} to running totals {metric: [sum, count]}."""
    for key, (total, count) in sums.items():
        acc = totals.setdefault(key, [0.0, 0.0])
        acc[0] += float(total)
        acc[1] += float(count)


def means(totals: dict[str, list[float]]) -> dict[str, float]:
    """{metric: sum / count} (NaN where nothing was counted)."""
    return {k: (s / c if c else float("nan")) for k, (s, c) in totals.items()}


def policy_lists(
    generator_params, reward_params, batch, *, policy, evaluator, list_len, has_true_model
):
    """{policy name: (lists [B, L], AUC scores [B, N] or None)}: ``goalrank`` (when there are
    generator parameters) and the :data:`REFERENCE_POLICIES` the inputs allow."""
    out = {}
    if generator_params is not None:
        out["goalrank"] = (policy.greedy(generator_params, batch), None)
    names = reference_policies.available(
        REFERENCE_POLICIES,
        has_reward_model=reward_params is not None,
        has_true_model=has_true_model,
    )
    key = reference_policies.evaluation_key()
    out.update(
        reference_policies.reference_rows(names, batch, evaluator, reward_params, key, list_len)
    )
    return out


def list_metric_sums(
    lists,
    scores,
    batch,
    *,
    has_true_model,
    true_params,
    simulator=None,
    simulator_params=None,
    evaluator=None,
    reward_params=None,
):
    """(sum, count) of every metric of one policy's lists [B, L] on a batch.

    ``scores`` [B, N] feed the AUC (None: 1/t for the item at position t, 0 elsewhere). Adds
    ``true_reward`` (synthetic data: exact expected reward under the true user model),
    ``sim_reward`` (when a held-out simulator is given) and ``rm_reward`` (when the frozen
    evaluator and its parameters are given: its own estimate of the lists' reward, biased
    upwards for lists selected by it).
    """
    if scores is None:
        scores = metrics_lib.list_to_scores(lists, batch["cand_mask"].shape[-1])
    sums = dict(
        metrics_lib.ranking_metric_sums(
            lists, batch["cand_labels"], batch["cand_mask"], batch["example_mask"], scores
        )
    )
    if has_true_model:
        reward = synthetic.list_reward_from_candidates(
            batch["cand_true_logit"],
            batch["cand_category"],
            batch["cand_partner"],
            lists,
            true_params,
        )
        sums["true_reward"] = weighted_sum(reward, batch)
    if simulator_params is not None:
        sums["sim_reward"] = weighted_sum(
            simulator.list_rewards(simulator_params, batch, lists), batch
        )
    if evaluator is not None and reward_params is not None:
        sums["rm_reward"] = weighted_sum(evaluator.list_rewards(reward_params, batch, lists), batch)
    return sums


@dataclasses.dataclass(frozen=True)
class ListMetrics:
    """:func:`list_metric_sums` with its fixed settings bound: call with
    (lists, scores, batch, simulator_params)."""

    has_true_model: bool
    true_params: Any
    simulator: Any = None
    evaluator: Any = None

    def __call__(self, lists, scores, batch, simulator_params=None, reward_params=None) -> dict:
        return list_metric_sums(
            lists,
            scores,
            batch,
            has_true_model=self.has_true_model,
            true_params=self.true_params,
            simulator=self.simulator,
            simulator_params=simulator_params,
            evaluator=self.evaluator,
            reward_params=reward_params,
        )


def eval_step(
    generator_params,
    reward_params,
    simulator_params,
    batch,
    *,
    policy,
    evaluator,
    simulator,
    list_len,
    has_true_model,
    true_params,
):
    """Per-batch (sum, count) of every metric of every policy."""
    metric_sums = ListMetrics(has_true_model, true_params, simulator, evaluator)
    rows = policy_lists(
        generator_params,
        reward_params,
        batch,
        policy=policy,
        evaluator=evaluator,
        list_len=list_len,
        has_true_model=has_true_model,
    )
    sums = {}
    for name, (lists, scores) in rows.items():
        for key, value in metric_sums(
            lists, scores, batch, simulator_params, reward_params
        ).items():
            sums[f"{name}/{key}"] = value
    if has_true_model:
        sums["oracle_reward"] = weighted_sum(batch["oracle_reward"], batch)
    return sums


class Evaluation:
    """Compiled evaluation of a split; call with the parameters to evaluate."""

    def __init__(
        self,
        policy,
        evaluator,
        list_len: int,
        has_true_model: bool,
        true_params,
        mesh,
        simulator=None,
    ):
        self.mesh = mesh
        self.has_true_model = has_true_model
        step = functools.partial(
            eval_step,
            policy=policy,
            evaluator=evaluator,
            simulator=simulator,
            list_len=list_len,
            has_true_model=has_true_model,
            true_params=true_params,
        )
        repl = sharding.replicated(mesh)
        self._step = jax.jit(
            step,
            in_shardings=(repl, repl, repl, sharding.batch_sharding(mesh)),
            out_shardings=repl,
        )

    def __call__(
        self, generator_params, reward_params, batches: Iterable[dict], simulator_params=None
    ) -> dict:
        """Mean metrics of every policy; ``simulator_params`` adds ``<policy>/sim_reward``."""
        totals: dict[str, list[float]] = {}
        for batch in batches:
            if not self.has_true_model:
                batch = strip_true_model(batch)
            placed = sharding.put_batch(batch, self.mesh)
            out = self._step(generator_params, reward_params, simulator_params, placed)
            accumulate(totals, jax.device_get(out))
        results = means(totals)
        results.update(gro_progress(results))
        if self.has_true_model:
            oracle = results.pop("oracle_reward")
            for key in [k for k in results if k.endswith("/true_reward")]:
                results[key.replace("true_reward", "oracle_fraction")] = results[key] / oracle
        return results


class ListsValidation:
    """Logged-label metrics (H@L, N@L, M@L, F1@L, AUC) of one ranker on a split: compiled once,
    call with the ranker's parameters for ``{metric: mean}``. ``lists_fn(params, batch)`` gives
    its lists [B, L]; ``scores_fn(params, batch)`` its candidate scores [B, N] for the AUC (None:
    the list's own 1/t scores). With ``reward_model = (evaluator, reward_params)`` it adds
    ``rm_reward``, that frozen evaluator's estimate of the lists' reward. Used for model
    selection on the validation split."""

    def __init__(
        self,
        lists_fn,
        dataset,
        eval_config,
        mesh,
        scores_fn=None,
        split="validation",
        reward_model=None,
    ):
        evaluator, self._reward_params = reward_model or (None, None)

        def sums(params, reward_params, batch):
            scores = None if scores_fn is None else scores_fn(params, batch)
            lists = lists_fn(params, batch)
            return list_metric_sums(
                lists,
                scores,
                batch,
                has_true_model=False,
                true_params=None,
                evaluator=evaluator,
                reward_params=reward_params,
            )

        repl = sharding.replicated(mesh)
        self._sums = jax.jit(
            sums, in_shardings=(repl, repl, sharding.batch_sharding(mesh)), out_shardings=repl
        )
        if self._reward_params is not None:
            self._reward_params = sharding.put_replicated(self._reward_params, mesh)
        self.source = dataset.sources[split]
        self.eval_config = eval_config
        self.mesh = mesh

    def __call__(self, params) -> dict[str, float]:
        # Compiled for replicated parameters: gather FSDP-split ones.
        params = sharding.put_replicated(params, self.mesh)
        totals: dict[str, list[float]] = {}
        batches = pipeline.eval_batches(
            self.source, self.eval_config.batch_size, self.eval_config.max_examples
        )
        for batch in batches:
            placed = sharding.put_batch(strip_true_model(batch), self.mesh)
            accumulate(totals, jax.device_get(self._sums(params, self._reward_params, placed)))
        return means(totals)


def gro_progress(results: dict[str, float], policy: str = "goalrank") -> dict[str, float]:
    """``{policy}/gro_progress`` = (rm_reward of the policy's lists - of random lists) /
    (rm_reward of the evaluator's greedy list - of random lists): the share of the gap from
    random lists to the evaluator's best list (for a pointwise evaluator, its exact argmax) that
    the policy closes, by the evaluator's own estimate. Empty when a term is missing."""
    keys = [f"{name}/rm_reward" for name in (policy, "random", "reward_model_greedy")]
    if not all(k in results for k in keys):
        return {}
    mine, random, best = (results[k] for k in keys)
    gap = best - random
    return {f"{policy}/gro_progress": (mine - random) / gap if gap else float("nan")}


class LoggedClickAUC:
    """Pooled ROC-AUC of a list-aware model's per-position logits of the logged lists against
    their labels (every valid request, every position); compiled once, call with parameters."""

    def __init__(self, evaluator, list_len: int):
        def logits_and_labels(params, batch):
            logged = reference_policies.logged_list(batch, list_len)
            logits = evaluator.module.apply(params, batch, logged)
            return logits, jnp.take_along_axis(batch["cand_labels"], logged, axis=1)

        self._logits_and_labels = jax.jit(logits_and_labels)

    def __call__(self, params, batches: Iterable[dict]) -> float:
        from sklearn.metrics import roc_auc_score

        scores, labels = [], []
        for batch in batches:
            logits, label = jax.device_get(self._logits_and_labels(params, batch))
            keep = np.asarray(batch["example_mask"])
            scores.append(logits[keep].reshape(-1))
            labels.append(label[keep].reshape(-1))
        labels = np.concatenate(labels)
        if labels.min() == labels.max():
            return float("nan")
        return float(roc_auc_score(labels, np.concatenate(scores)))


def results_table(results: dict[str, float], split: str, list_len: int) -> str:
    """Markdown table: one row per policy, one column per metric."""
    prefix = f"{split}/"
    names = []
    for key in results:
        if key.startswith(prefix) and key.count("/") == 2:
            name = key.split("/")[1]
            if name not in names:
                names.append(name)
    columns = [f"{m}@{list_len}" for m in METRIC_ORDER] + [
        "AUC",
        "true_reward",
        "oracle_fraction",
        "sim_reward",
    ]
    columns = [c for c in columns if any(f"{prefix}{n}/{c}" in results for n in names)]
    lines = ["| policy | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name in names:
        cells = [results.get(f"{prefix}{name}/{c}", float("nan")) for c in columns]
        lines.append(
            f"| {name} | " + " | ".join("n/a" if np.isnan(v) else f"{v:.4f}" for v in cells) + " |"
        )
    return "\n".join(lines)
