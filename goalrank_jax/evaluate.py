"""Evaluation on both tracks (SPEC section 6).

Logged-label track: H@L, N@L, M@L, F1@L and AUC of each policy's list against the candidate
labels. Simulator track (synthetic data): the exact expected reward of each list under the true
user model, and its ratio to the mean reward of the beam-search oracle stored with each request
(``oracle_fraction`` = mean policy reward / mean oracle reward).

Policies: ``goalrank`` (greedy decoding of the generator), ``reward_model_greedy`` (greedy under
the frozen evaluator), ``logged`` (the logging policy's list), ``random`` (L distinct valid
candidates drawn uniformly, with a fixed key: the chance level of every metric), and on synthetic
data ``true_relevance_sort`` (top-L by true relevance) and ``oracle``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np

from goalrank_jax import metrics as metrics_lib
from goalrank_jax import policies, sharding
from goalrank_jax.env import synthetic

METRIC_ORDER = ("H", "N", "M", "F1")


RANDOM_POLICY_SEED = 20260


def _policy_lists(
    generator_params, reward_params, batch, *, policy, evaluator, list_len, has_true_model
):
    """{policy name: (lists [B, L], AUC scores [B, N])}."""
    out = {}
    if generator_params is not None:
        lists = policy.greedy(generator_params, batch)
        out["goalrank"] = (lists, metrics_lib.list_to_scores(lists, batch["cand_mask"].shape[-1]))
    if reward_params is not None:
        out["reward_model_greedy"] = (
            evaluator.greedy(reward_params, batch, list_len),
            evaluator.candidate_scores(reward_params, batch),
        )
    logged = policies.logged_list(batch, list_len)
    out["logged"] = (logged, metrics_lib.list_to_scores(logged, batch["cand_mask"].shape[-1]))
    # Candidates are shuffled per request, so one fixed key gives independent random lists.
    chance_key = jax.random.key(RANDOM_POLICY_SEED)
    chance = policies.uniform_lists(batch["cand_mask"], list_len, chance_key, 1)[:, 0]
    out["random"] = (chance, metrics_lib.list_to_scores(chance, batch["cand_mask"].shape[-1]))
    if has_true_model:
        logits = batch["cand_true_logit"]
        out["true_relevance_sort"] = (policies.top_by(logits, batch["cand_mask"], list_len), logits)
        oracle = batch["oracle_list"]
        out["oracle"] = (oracle, metrics_lib.list_to_scores(oracle, logits.shape[-1]))
    return out


def list_metric_sums(
    lists, scores, batch, *, has_true_model, true_params, simulator=None, simulator_params=None
):
    """(sum, count) of every metric of one policy's lists [B, L] on a batch.

    ``scores`` [B, N] feed the AUC (None: 1/t for the item at position t, 0 elsewhere). Adds
    ``true_reward`` (synthetic data: exact expected reward under the true user model) and
    ``sim_reward`` (when a held-out simulator is given).
    """
    example_mask = batch["example_mask"]
    weight = example_mask.astype(jnp.float32)
    if scores is None:
        scores = metrics_lib.list_to_scores(lists, batch["cand_mask"].shape[-1])
    sums = dict(
        metrics_lib.ranking_metric_sums(
            lists, batch["cand_labels"], batch["cand_mask"], example_mask, scores
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
        sums["true_reward"] = ((reward * weight).sum(), weight.sum())
    if simulator_params is not None:
        reward = simulator.list_rewards(simulator_params, batch, lists)
        sums["sim_reward"] = ((reward * weight).sum(), weight.sum())
    return sums


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
    weight = batch["example_mask"].astype(jnp.float32)
    sums = {}
    for name, (lists, scores) in _policy_lists(
        generator_params,
        reward_params,
        batch,
        policy=policy,
        evaluator=evaluator,
        list_len=list_len,
        has_true_model=has_true_model,
    ).items():
        for key, value in list_metric_sums(
            lists,
            scores,
            batch,
            has_true_model=has_true_model,
            true_params=true_params,
            simulator=simulator,
            simulator_params=simulator_params,
        ).items():
            sums[f"{name}/{key}"] = value
    if has_true_model:
        sums["oracle_reward"] = ((batch["oracle_reward"] * weight).sum(), weight.sum())
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
                batch = {
                    k: v for k, v in batch.items() if not k.startswith(("oracle", "cand_true"))
                }
            out = jax.device_get(
                self._step(
                    generator_params,
                    reward_params,
                    simulator_params,
                    sharding.put_batch(batch, self.mesh),
                )
            )
            for key, (total, count) in out.items():
                acc = totals.setdefault(key, [0.0, 0.0])
                acc[0] += float(total)
                acc[1] += float(count)
        results = {k: (s / c if c else float("nan")) for k, (s, c) in totals.items()}
        if self.has_true_model:
            oracle = results.pop("oracle_reward")
            for key in [k for k in results if k.endswith("/true_reward")]:
                results[key.replace("true_reward", "oracle_fraction")] = results[key] / oracle
        return results


class LoggedClickAUC:
    """Pooled ROC-AUC of a list-aware model's per-position logits of the logged lists against
    their labels (every valid request, every position); compiled once, call with parameters."""

    def __init__(self, evaluator, list_len: int):
        def logits_and_labels(params, batch):
            logged = policies.logged_list(batch, list_len)
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
