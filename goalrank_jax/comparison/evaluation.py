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
* references: every policy of :mod:`goalrank_jax.reference_policies`: ``reward_model_greedy``
  (the evaluator's argmax list), ``retriever``, ``logged``, ``random``, and on synthetic data
  ``true_relevance_sort`` and ``oracle``.

:class:`SeedLists` holds the traced list functions, :class:`SeedEvaluation` compiles them and
runs the evaluation loop.

Besides those metrics, ``rm_reward`` is the frozen reward model's estimate of each row's lists.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable

import jax
import jax.numpy as jnp

from goalrank_jax import evaluate as evaluate_lib
from goalrank_jax import reference_policies, sampling, sharding

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


def select_best(proposals: jnp.ndarray, rewards: jnp.ndarray) -> jnp.ndarray:
    """proposals [B, M, L], rewards [B, M] -> the best proposal [B, L] of each request."""
    best = jnp.argmax(rewards, axis=-1)
    return jnp.take_along_axis(proposals, best[:, None, None], axis=1)[:, 0]


def sampled_groups(pool: list[PoolEntry]) -> list[tuple[tuple[str, float], int]]:
    """[((source, temperature), replicas)] of the pool's sampled generators, sorted: one call
    per group draws all its replicas, group i with ``fold_in(key, i)``."""
    counts: dict[tuple[str, float], int] = {}
    for entry in pool:
        if entry.temperature:
            group = (entry.source, entry.temperature)
            counts[group] = counts.get(group, 0) + 1
    return sorted(counts.items())


class SeedLists:
    """The list functions (traced) of one seed's models. Every one takes the parameters as an
    argument (``params``: reward model, scorers, NAR generator, supervised generator)."""

    def __init__(self, models, comparison, list_len: int, has_true_model: bool):
        self.models = models
        self.comparison = comparison
        self.list_len = list_len
        self.methods = set(comparison.methods)
        self.reference_names = reference_policies.available(has_true_model=has_true_model)

    def sort(self, scorer, params, batch):
        """(top-L lists [B, L], scores [B, N]) of a scorer."""
        scores = scorer.candidate_scores(params, batch)
        return reference_policies.top_by(scores, batch["cand_mask"], self.list_len), scores

    def references(self, params, batch):
        """{name: (lists, AUC scores or None)} of every reference policy the data allows."""
        return reference_policies.reference_rows(
            self.reference_names,
            batch,
            self.models.evaluator,
            params["reward"],
            reference_policies.evaluation_key(),
            self.list_len,
        )

    def scores(self, params, name, batch):
        scorer, _ = self.models.scorers[name]
        return scorer.candidate_scores(params["scorers"][name], batch)

    def nar_step(self, params, batch) -> sampling.DecodeStep:
        module, _ = self.models.nar
        return nar_decode_step(module.apply(params["nar"], batch))

    def evaluator_pick(self, params, batch, first, sample) -> jnp.ndarray:
        """G-E: ``first`` [B, L] plus ``sample(m - 1)`` [B, m - 1, L] proposals, the reward
        model picks the best of each request."""
        proposals = first[:, None]
        m = self.comparison.num_proposals
        if m > 1:
            proposals = jnp.concatenate([proposals, sample(m - 1)], axis=1)
        rewards = self.models.evaluator.list_rewards(params["reward"], batch, proposals)
        return select_best(proposals, rewards)

    def ge(self, params, batch, key):
        """{"pier_ge" / "nar4rec_ge" / "nar": [B, L]} (those the methods need)."""
        mask = batch["cand_mask"]
        out = {}
        pier_key, nar_key = jax.random.split(key)
        if "pier_ge" in self.methods:
            scores = self.scores(params, "dnn", batch)
            out["pier_ge"] = self.evaluator_pick(
                params,
                batch,
                reference_policies.top_by(scores, mask, self.list_len),
                lambda n: sampling.gumbel_top_k(scores, mask, self.list_len, pier_key, n),
            )
        if self.models.nar is not None:
            step = self.nar_step(params, batch)
            greedy = sampling.decode(step, None, mask, self.list_len)
            out["nar"] = greedy
            if "nar4rec_ge" in self.methods:
                out["nar4rec_ge"] = self.evaluator_pick(
                    params,
                    batch,
                    greedy,
                    lambda n: sampling.sample_group_decoder(
                        step, None, mask, self.list_len, nar_key, n
                    ),
                )
        return out

    def fixed_list(self, params, batch, source: str) -> jnp.ndarray:
        """[B, L] the list of one of DETERMINISTIC_GENERATORS."""
        mask = batch["cand_mask"]
        if source in ("prm_sort", "dnn_sort"):
            scores = self.scores(params, source[:3], batch)
            return reference_policies.top_by(scores, mask, self.list_len)
        if source == "nar_greedy":
            return sampling.decode(self.nar_step(params, batch), None, mask, self.list_len)
        if source == "supervised_ar_greedy":
            ar_policy, _ = self.models.generators["supervised_ar"]
            return ar_policy.greedy(params["ar"], batch)
        if source in ("retriever", EVALUATOR_ARGMAX):  # fixed lists: they read no key
            return reference_policies.reference_lists(
                source, batch, self.models.evaluator, params["reward"], None, self.list_len
            )
        raise ValueError(f"Unknown MG-E generator {source!r}")

    def sampled_lists(self, params, batch, source, temperature, key, count) -> jnp.ndarray:
        """[B, count, L] lists of one sampled generator at one temperature."""
        mask = batch["cand_mask"]
        if source == "supervised_ar":
            ar_policy, _ = self.models.generators["supervised_ar"]
            return ar_policy.sample(params["ar"], batch, key, count, temperature)
        if source in ("dnn", "prm"):
            scores = self.scores(params, source, batch) / temperature
            return sampling.gumbel_top_k(scores, mask, self.list_len, key, count)
        return sampling.sample_group_decoder(
            self.nar_step(params, batch), None, mask, self.list_len, key, count, temperature
        )

    def pool_lists(self, params, batch, key):
        """[B, P, L] the lists of the MG-E pool (P = max k + 1) and the pool entries."""
        pool = mge_pool(max(self.comparison.mge_ks) + 1)
        sampled = {
            group: self.sampled_lists(params, batch, *group, jax.random.fold_in(key, i), count)
            for i, (group, count) in enumerate(sampled_groups(pool))
        }
        fixed = {}
        columns = []
        for e in pool:
            if e.temperature:
                columns.append(sampled[(e.source, e.temperature)][:, e.replica])
                continue
            if e.source not in fixed:
                fixed[e.source] = self.fixed_list(params, batch, e.source)
            columns.append(fixed[e.source])
        return jnp.stack(columns, axis=1), pool

    def mge(self, params, batch, key):
        """{"mge@k": [B, L], "mge_no_rm@k": [B, L]} for every k of ``mge_ks``."""
        lists, pool = self.pool_lists(params, batch, key)
        rewards = self.models.evaluator.list_rewards(params["reward"], batch, lists)
        with_rm = list(range(len(pool) - 1))
        without_rm = [i for i, e in enumerate(pool) if e.source != EVALUATOR_ARGMAX][: len(with_rm)]
        out = {}
        for k in self.comparison.mge_ks:
            for name, order in (("mge", with_rm), ("mge_no_rm", without_rm)):
                index = jnp.asarray(order[:k])
                out[f"{name}@{k}"] = select_best(lists[:, index], rewards[:, index])
        return out


def seed_params(models) -> dict:
    """The parameters the list functions of :class:`SeedLists` take."""
    return {
        "reward": models.reward_params,
        "scorers": {name: params for name, (_, params) in models.scorers.items()},
        "nar": None if models.nar is None else models.nar[1],
        "ar": models.generators["supervised_ar"][1]
        if "supervised_ar" in models.generators
        else None,
    }


def _decoder_key(policy) -> tuple:
    return policy.plackett_luce, type(policy.module)


class SeedEvaluation:
    """Compiled list functions of one seed's models; ``__call__`` evaluates a split.

    Every compiled function takes the parameters as an argument (``self.params``: reward model,
    scorers, NAR generator, supervised generator), never as baked-in constants.
    """

    def __init__(
        self, models, comparison, list_len, has_true_model, true_params, mesh, simulator=None
    ):
        self.models = models
        self.has_true_model = has_true_model
        self.mesh = mesh
        self.params = seed_params(models)
        lists = SeedLists(models, comparison, list_len, has_true_model)
        # rm_reward, the evaluator's own estimate, is biased upwards for lists selected by it,
        # the more so the more lists it picks from.
        list_metrics = evaluate_lib.ListMetrics(
            has_true_model, true_params, simulator, models.evaluator
        )

        def metric_sums(lists, scores, batch, reward_params, simulator_params):
            return list_metrics(lists, scores, batch, simulator_params, reward_params)

        self._metric_fn = jax.jit(metric_sums)
        self._references = jax.jit(lists.references)
        # One compiled greedy decoder per (policy form, generator variant): the GoalRank runs of
        # a seed share it, the prefix generator's row has its own.
        self._greedy = {}
        for policy, _ in models.generators.values():
            if _decoder_key(policy) not in self._greedy:
                self._greedy[_decoder_key(policy)] = jax.jit(policy.greedy)
        self._scorer_sort = {
            name: jax.jit(functools.partial(lists.sort, scorer))
            for name, (scorer, _) in models.scorers.items()
        }
        self._ge = jax.jit(lists.ge)
        self._mge = jax.jit(lists.mge) if "mge" in lists.methods else None

    def batch_lists(
        self, batch, key, only_mge: bool = False
    ) -> dict[str, tuple[jnp.ndarray, jnp.ndarray | None]]:
        """{row name: (lists [B, L], scores [B, N] or None)} of every method on a batch (with
        ``only_mge``, of the ``mge@k`` rows only, drawn with the same key as in a full call)."""
        ge_key, mge_key = jax.random.split(key)
        if only_mge:
            lists = self._mge(self.params, batch, mge_key)
            return {name: (v, None) for name, v in lists.items() if name.startswith("mge@")}
        rows = dict(self._references(self.params, batch))
        for name, sort in self._scorer_sort.items():
            rows[name] = sort(self.params["scorers"][name], batch)
        for name, (policy, params) in self.models.generators.items():
            rows[name] = (self._greedy[_decoder_key(policy)](params, batch), None)
        for name, lists in self._ge(self.params, batch, ge_key).items():
            rows[name] = (lists, None)
        if self._mge is not None:
            for name, lists in self._mge(self.params, batch, mge_key).items():
                rows[name] = (lists, None)
        return rows

    def __call__(
        self, batches: Iterable[dict], key, simulator_params=None, only_mge: bool = False
    ) -> dict[str, dict[str, float]]:
        """{row: {metric: mean}} over every example of the batches; with ``only_mge``, of the
        ``mge@k`` rows only (MG-E's choice of k on the validation split)."""
        if only_mge and self._mge is None:
            raise ValueError("only_mge needs 'mge' among compare.methods")
        totals: dict[str, dict[str, list[float]]] = {}
        oracle = [0.0, 0.0]
        for index, batch in enumerate(batches):
            if not self.has_true_model:
                batch = evaluate_lib.strip_true_model(batch)
            placed = sharding.put_batch(batch, self.mesh)
            rows = self.batch_lists(placed, jax.random.fold_in(key, index), only_mge)
            for name, (lists, scores) in rows.items():
                sums = self._metric_fn(
                    lists, scores, placed, self.params["reward"], simulator_params
                )
                evaluate_lib.accumulate(totals.setdefault(name, {}), jax.device_get(sums))
            if self.has_true_model:
                weight = batch["example_mask"].astype(float)
                oracle[0] += float((batch["oracle_reward"] * weight).sum())
                oracle[1] += float(weight.sum())
        results = {name: evaluate_lib.means(metrics) for name, metrics in totals.items()}
        if self.has_true_model:
            oracle_mean = oracle[0] / oracle[1]
            for metrics in results.values():
                metrics["oracle_fraction"] = metrics["true_reward"] / oracle_mean
        return results
