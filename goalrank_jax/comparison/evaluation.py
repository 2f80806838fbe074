"""Evaluation of every method of one comparison seed on one split.

Every method turns a batch into one list per request (plus candidate scores for AUC where the
method has them); the lists of all methods are scored by the same metrics
(:func:`goalrank_jax.evaluate.list_metric_sums`): H/N/M/F1@L and AUC against the logged labels,
the exact true reward and oracle fraction on synthetic data, the held-out simulator's reward on
real data.

Rows:

* generator-only: ``dnn``, ``prm`` (top-L sort of their scores), ``supervised_ar`` and the
  GoalRank runs (greedy decoding), ``nar`` (the NAR generator's greedy list, for reference);
* G-E: ``pier_ge`` (the DNN's sort plus M - 1 Plackett-Luce samples of its scores; the reward
  model picks the best) and ``nar4rec_ge`` (the NAR generator's greedy list plus M - 1 samples;
  the reward model picks);
* MG-E: ``mge@k``: the first k generators of :func:`mge_pool` each propose one list, the reward
  model picks; ``mge_no_rm@k``: the same pool without the reward model's own greedy list;
* references: ``reward_model_greedy`` (the evaluator's argmax list), ``retriever``, ``logged``,
  ``random``, and on synthetic data ``true_relevance_sort`` and ``oracle``.

Besides those metrics, ``rm_reward`` is the frozen reward model's estimate of each row's lists.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable

import jax
import jax.numpy as jnp

from goalrank_jax import evaluate as evaluate_lib
from goalrank_jax import policies, sampling, sharding

# MG-E generators that each give one fixed list per request, in pool order.
DETERMINISTIC_GENERATORS = (
    "prm_sort",
    "dnn_sort",
    "nar_greedy",
    "supervised_ar_greedy",
    "retriever",
    "reward_model_greedy",
)
# Sampled generators: (source, temperature), cycled through after the fixed ones.
SAMPLED_GENERATORS = tuple(
    (source, temperature)
    for temperature in (1.0, 0.5, 2.0)
    for source in ("supervised_ar", "dnn", "prm", "nar")
)
EVALUATOR_ARGMAX = "reward_model_greedy"


@dataclasses.dataclass(frozen=True)
class PoolEntry:
    name: str  # e.g. "prm_sort" or "dnn@T0.5#2"
    source: str
    temperature: float = 0.0  # 0 = a fixed list
    replica: int = 0


def mge_pool(size: int) -> list[PoolEntry]:
    """The first ``size`` heterogeneous generators of MG-E: the fixed lists of
    DETERMINISTIC_GENERATORS, then samplers cycling over SAMPLED_GENERATORS (architectures x
    temperatures), each replica with its own key."""
    pool = [PoolEntry(name, name) for name in DETERMINISTIC_GENERATORS[:size]]
    i = 0
    while len(pool) < size:
        source, temperature = SAMPLED_GENERATORS[i % len(SAMPLED_GENERATORS)]
        replica = i // len(SAMPLED_GENERATORS)
        pool.append(PoolEntry(f"{source}@T{temperature:g}#{replica}", source, temperature, replica))
        i += 1
    return pool


def nar_decode_step(position_logits: jnp.ndarray) -> sampling.DecodeStep:
    """Decoding of the NAR generator: step t reads its fixed logits [B, N] of position t."""

    def decode_step(carry, prev_item, chosen, t):
        del prev_item, chosen
        return jax.lax.dynamic_index_in_dim(position_logits, t, axis=1, keepdims=False), carry

    return decode_step


def _select(proposals: jnp.ndarray, rewards: jnp.ndarray) -> jnp.ndarray:
    """proposals [B, M, L], rewards [B, M] -> the best proposal [B, L] of each request."""
    best = jnp.argmax(rewards, axis=-1)
    return jnp.take_along_axis(proposals, best[:, None, None], axis=1)[:, 0]


class SeedEvaluation:
    """Compiled list functions of one seed's models; ``__call__`` evaluates a split.

    Every compiled function takes the parameters as an argument (``self.params``: reward model,
    scorers, NAR generator, supervised generator), never as baked-in constants.
    """

    def __init__(
        self, models, comparison, list_len, has_true_model, true_params, mesh, simulator=None
    ):
        self.models = models
        self.comparison = comparison
        self.list_len = list_len
        self.has_true_model = has_true_model
        self.mesh = mesh
        self.methods = set(comparison.methods)
        self.params = {
            "reward": models.reward_params,
            "scorers": {name: params for name, (_, params) in models.scorers.items()},
            "nar": None if models.nar is None else models.nar[1],
            "ar": models.generators["supervised_ar"][1]
            if "supervised_ar" in models.generators
            else None,
        }

        def metric_sums(lists, scores, batch, reward_params, simulator_params):
            sums = evaluate_lib.list_metric_sums(
                lists,
                scores,
                batch,
                has_true_model=has_true_model,
                true_params=true_params,
                simulator=simulator,
                simulator_params=simulator_params,
            )
            # The evaluator's own estimate: how much it believes a list is worth (it is biased
            # upwards for lists selected by it, the more so the more lists it picks from).
            weight = batch["example_mask"].astype(jnp.float32)
            estimate = models.evaluator.list_rewards(reward_params, batch, lists)
            sums["rm_reward"] = ((estimate * weight).sum(), weight.sum())
            return sums

        self._metric_fn = jax.jit(metric_sums)
        self._references = jax.jit(self._reference_lists)
        self._greedy = {}
        for policy, _ in models.generators.values():
            if policy.plackett_luce not in self._greedy:
                self._greedy[policy.plackett_luce] = jax.jit(policy.greedy)
        self._scorer_sort = {
            name: jax.jit(functools.partial(self._sort, scorer))
            for name, (scorer, _) in models.scorers.items()
        }
        self._ge = jax.jit(self._ge_lists)
        self._mge = jax.jit(self._mge_lists) if "mge" in self.methods else None

    # --- list functions (traced) -------------------------------------------------------------

    def _sort(self, scorer, params, batch):
        scores = scorer.candidate_scores(params, batch)
        return policies.top_by(scores, batch["cand_mask"], self.list_len), scores

    def _reference_lists(self, params, batch):
        evaluator = self.models.evaluator
        mask = batch["cand_mask"]
        out = {
            "reward_model_greedy": (
                evaluator.greedy(params["reward"], batch, self.list_len),
                evaluator.candidate_scores(params["reward"], batch),
            ),
            "retriever": (
                policies.top_by(batch["cand_retriever_score"], mask, self.list_len),
                batch["cand_retriever_score"],
            ),
            "logged": (policies.logged_list(batch, self.list_len), None),
            "random": (
                policies.uniform_lists(
                    mask, self.list_len, jax.random.key(evaluate_lib.RANDOM_POLICY_SEED), 1
                )[:, 0],
                None,
            ),
        }
        if self.has_true_model:
            logits = batch["cand_true_logit"]
            out["true_relevance_sort"] = (policies.top_by(logits, mask, self.list_len), logits)
            out["oracle"] = (batch["oracle_list"], None)
        return out

    def _scores(self, params, name, batch):
        scorer, _ = self.models.scorers[name]
        return scorer.candidate_scores(params["scorers"][name], batch)

    def _nar_step(self, params, batch) -> sampling.DecodeStep:
        module, _ = self.models.nar
        return nar_decode_step(module.apply(params["nar"], batch))

    def _ge_lists(self, params, batch, key):
        """{"pier_ge" / "nar4rec_ge" / "nar": [B, L]} (those the methods need)."""
        evaluator = self.models.evaluator
        mask = batch["cand_mask"]
        m = self.comparison.num_proposals
        out = {}
        pier_key, nar_key = jax.random.split(key)
        if "pier_ge" in self.methods:
            scores = self._scores(params, "dnn", batch)
            proposals = policies.top_by(scores, mask, self.list_len)[:, None]
            if m > 1:
                samples = sampling.gumbel_top_k(scores, mask, self.list_len, pier_key, m - 1)
                proposals = jnp.concatenate([proposals, samples], axis=1)
            rewards = evaluator.list_rewards(params["reward"], batch, proposals)
            out["pier_ge"] = _select(proposals, rewards)
        if self.models.nar is not None:
            step = self._nar_step(params, batch)
            greedy = sampling.decode(step, None, mask, self.list_len)
            out["nar"] = greedy
            if "nar4rec_ge" in self.methods:
                proposals = greedy[:, None]
                if m > 1:
                    samples = sampling.sample_group_decoder(
                        step, None, mask, self.list_len, nar_key, m - 1
                    )
                    proposals = jnp.concatenate([proposals, samples], axis=1)
                rewards = evaluator.list_rewards(params["reward"], batch, proposals)
                out["nar4rec_ge"] = _select(proposals, rewards)
        return out

    def _pool_lists(self, params, batch, key):
        """[B, P, L] the lists of the MG-E pool (P = max k + 1) and the pool entries."""
        pool = mge_pool(max(self.comparison.mge_ks) + 1)
        mask = batch["cand_mask"]
        ar_policy, _ = self.models.generators["supervised_ar"]
        fixed = {}

        def fixed_list(source):
            if source in fixed:
                return fixed[source]
            if source in ("prm_sort", "dnn_sort"):
                lists = policies.top_by(
                    self._scores(params, source[:3], batch), mask, self.list_len
                )
            elif source == "nar_greedy":
                lists = sampling.decode(self._nar_step(params, batch), None, mask, self.list_len)
            elif source == "supervised_ar_greedy":
                lists = ar_policy.greedy(params["ar"], batch)
            elif source == "retriever":
                lists = policies.top_by(batch["cand_retriever_score"], mask, self.list_len)
            elif source == EVALUATOR_ARGMAX:
                lists = self.models.evaluator.greedy(params["reward"], batch, self.list_len)
            else:
                raise ValueError(f"Unknown MG-E generator {source!r}")
            fixed[source] = lists
            return lists

        # Sampled generators: one call per (source, temperature) draws all its replicas.
        counts: dict[tuple[str, float], int] = {}
        for entry in pool:
            if entry.temperature:
                group = (entry.source, entry.temperature)
                counts[group] = counts.get(group, 0) + 1
        sampled = {}
        for i, ((source, temperature), count) in enumerate(sorted(counts.items())):
            k = jax.random.fold_in(key, i)
            if source == "supervised_ar":
                lists = ar_policy.sample(params["ar"], batch, k, count, temperature)
            elif source in ("dnn", "prm"):
                scores = self._scores(params, source, batch) / temperature
                lists = sampling.gumbel_top_k(scores, mask, self.list_len, k, count)
            else:
                lists = sampling.sample_group_decoder(
                    self._nar_step(params, batch), None, mask, self.list_len, k, count, temperature
                )
            sampled[(source, temperature)] = lists
        columns = [
            sampled[(e.source, e.temperature)][:, e.replica]
            if e.temperature
            else fixed_list(e.source)
            for e in pool
        ]
        return jnp.stack(columns, axis=1), pool

    def _mge_lists(self, params, batch, key):
        """{"mge@k": [B, L], "mge_no_rm@k": [B, L]} for every k of ``mge_ks``."""
        lists, pool = self._pool_lists(params, batch, key)
        rewards = self.models.evaluator.list_rewards(params["reward"], batch, lists)
        with_rm = list(range(len(pool) - 1))
        without_rm = [i for i, e in enumerate(pool) if e.source != EVALUATOR_ARGMAX][: len(with_rm)]
        out = {}
        for k in self.comparison.mge_ks:
            for name, order in (("mge", with_rm), ("mge_no_rm", without_rm)):
                index = jnp.asarray(order[:k])
                out[f"{name}@{k}"] = _select(lists[:, index], rewards[:, index])
        return out

    # --- evaluation loop -----------------------------------------------------------------------

    def batch_lists(self, batch, key) -> dict[str, tuple[jnp.ndarray, jnp.ndarray | None]]:
        """{row name: (lists [B, L], scores [B, N] or None)} of every method on a batch."""
        rows = dict(self._references(self.params, batch))
        for name, sort in self._scorer_sort.items():
            rows[name] = sort(self.params["scorers"][name], batch)
        for name, (policy, params) in self.models.generators.items():
            rows[name] = (self._greedy[policy.plackett_luce](params, batch), None)
        ge_key, mge_key = jax.random.split(key)
        for name, lists in self._ge(self.params, batch, ge_key).items():
            rows[name] = (lists, None)
        if self._mge is not None:
            for name, lists in self._mge(self.params, batch, mge_key).items():
                rows[name] = (lists, None)
        return rows

    def __call__(
        self, batches: Iterable[dict], key, simulator_params=None
    ) -> dict[str, dict[str, float]]:
        """{row: {metric: mean}} over every example of the batches."""
        totals: dict[str, dict[str, list[float]]] = {}
        oracle = [0.0, 0.0]
        for index, batch in enumerate(batches):
            if not self.has_true_model:
                batch = {
                    k: v for k, v in batch.items() if not k.startswith(("oracle", "cand_true"))
                }
            placed = sharding.put_batch(batch, self.mesh)
            rows = self.batch_lists(placed, jax.random.fold_in(key, index))
            for name, (lists, scores) in rows.items():
                sums = self._metric_fn(
                    lists, scores, placed, self.params["reward"], simulator_params
                )
                for metric, (total, count) in jax.device_get(sums).items():
                    acc = totals.setdefault(name, {}).setdefault(metric, [0.0, 0.0])
                    acc[0] += float(total)
                    acc[1] += float(count)
            if self.has_true_model:
                weight = batch["example_mask"].astype(float)
                oracle[0] += float((batch["oracle_reward"] * weight).sum())
                oracle[1] += float(weight.sum())
        results = {
            name: {m: (s / c if c else float("nan")) for m, (s, c) in metrics.items()}
            for name, metrics in totals.items()
        }
        if self.has_true_model:
            oracle_mean = oracle[0] / oracle[1]
            for metrics in results.values():
                metrics["oracle_fraction"] = metrics["true_reward"] / oracle_mean
        return results
