"""Did each stage of a finished run do its job? One JSON object on stdout.

    python -m goalrank_jax.diagnose --workdir=runs/goalrank [--split=test] [--max_examples=N]
    python -m goalrank_jax.diagnose --workdir=runs/compare --run=goalrank [--comparison_seed=S]

Restores the reward model and the generator of a finished ``goalrank_jax.main`` run (the states
the run evaluated: the selected ones under ``select_metric``), or of one GoalRank run of a
``goalrank_jax.comparison`` workdir (``--run``: ``goalrank``, an ablation such as
``goalrank_K16``, ``supervised_ar``; ``--comparison_seed``: which seed, default the first), and
measures, on ``--split``:

* ``rm_reward``: the frozen reward model's mean list reward of uniformly random lists, of the
  generator's greedy list, of the generator's sampled lists (``--num_samples`` per request) and
  of the evaluator's own greedy list (for a pointwise evaluator, the exact argmax of its reward);
* ``gro_progress`` = (greedy - random) / (evaluator greedy - random): the share of the gap from
  random lists to the evaluator's best list that the generator's greedy list closes (1 = it
  found the evaluator's best lists); ``gro_progress_sampled`` the same for sampled lists;
* ``policy_entropy``: the mean per-step entropy (nats) of the policy along its sampled lists,
  beside ``uniform_entropy``, that of a uniform choice among the remaining candidates;
* ``N@L_greedy`` and ``N@L_first_step_sort``: N@L on logged labels of the autoregressive greedy
  list and of the sort of the generator's first-step scores;
* ``true_reward_greedy`` and ``true_reward_first_step_sort`` (synthetic data only, else
  ``null``): the true user model's exact expected reward of the same two lists, which counts
  the list-wise terms that N@L on fixed logged labels cannot see;
* ``greedy_minus_first_step_sort``: the per-request differences greedy - first-step sort of N@L
  and (synthetic data) of the true reward: ``mean``, ``stderr`` and ``requests``;
* ``step_auc_along_greedy``: do the later decoding steps rank the candidates still left as well
  as the first step did? Along the greedy list, per step t the mean AUC (labels) of the step-t
  logits among the candidates not yet chosen (``step``) and of the first-step logits among the
  same candidates (``first_step_scores``); ``later_minus_first``: the difference over every
  (request, step >= 2) with ``mean``, ``stderr`` and ``requests`` (pairs counted);
* ``rm_validation_auc``: the reward model's per-request candidate AUC on the validation split;
* ``rm_true_spearman`` (synthetic data only): the mean within-request Spearman correlation of
  the reward model's candidate scores with the true relevance logits (``null`` on real data);
* ``rm_list_effects`` (list-aware reward model on synthetic data only, else ``null``): does the
  model's click logit of an item respond to the item shown above it as the true user model's
  logit does? Over every ordered pair (a, c) of distinct candidates of a request, the logit of
  c at position 2 below a, centred over a for each c, is compared with the true model's term
  (``-redundancy_penalty`` when a shares c's category, ``+complement_bonus`` when a has c's
  partner category), centred the same way: ``slope`` is the least-squares slope of the model's
  centred logits on the true ones (1 = the true effect size, 0 = no response), ``same_category``
  and ``partner_category`` the mean centred logit of the pairs of each kind beside
  ``true_same_category`` and ``true_partner_category``, the same means of the true term
  (on the first ``--list_effect_requests`` requests: N^2 lists each).

The command (``__main__``) prints the object as JSON; exit code 2 when the workdir holds no
finished run. Importing the package defines no flags.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from goalrank_jax import configs, losses, metrics, policies, run, sampling, sharding, stages
from goalrank_jax.checkpointing import CheckpointError
from goalrank_jax.data import pipeline
from goalrank_jax.env import true_model as synthetic


def _read_config(workdir: str) -> dict:
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise CheckpointError(f"{path} does not exist: {workdir} holds no goalrank_jax run.")
    with open(path) as f:
        return json.load(f)


def load_config(workdir: str) -> configs.ExperimentConfig:
    values = _read_config(workdir)
    if "compare" in values:
        raise ValueError(
            f"{workdir} is a comparison workdir: name one of its GoalRank runs (diagnose --run)."
        )
    return configs.from_config_dict(values, jax.device_count())


@dataclasses.dataclass(frozen=True)
class RunLayout:
    """Where a GoalRank run's stages live: its config (seed and GRO settings as it trained), the
    directories of its reward model and generator stages and the generator stage's name."""

    config: configs.ExperimentConfig
    reward_dir: str
    generator_dir: str
    generator_stage: str


def run_layout(workdir: str, run_name: str = "", comparison_seed: int = 0) -> RunLayout:
    """The layout of a ``goalrank_jax.main`` run (``run_name`` empty) or of GoalRank run
    ``run_name`` of seed ``comparison_seed`` (0 = the first) of a comparison workdir."""
    values = _read_config(workdir)
    if "compare" not in values:
        if run_name:
            raise ValueError(f"--run={run_name!r} names a comparison run; {workdir} is not one.")
        return RunLayout(load_config(workdir), workdir, workdir, run.GENERATOR_STAGE)
    from goalrank_jax.comparison import config as comparison_config
    from goalrank_jax.comparison import training

    # A comparison's config.json holds {"experiment": ..., "compare": ...}.
    values = {**values["experiment"], "compare": values["compare"]}
    experiment, comparison = comparison_config.from_config_dict(values, jax.device_count())
    # config.json holds the last invocation's seeds and ablations; a workdir that earlier
    # invocations filled (e.g. one seed's loss-form ablations, then another seed's group sizes)
    # holds more. Every run a comparison of this experiment can train is a candidate, and the
    # seed directories on disk are the seeds.
    sizes = set(comparison.group_sizes)
    if (match := re.fullmatch(r"goalrank_K(\d+)", run_name or "")) and int(match[1]) >= 2:
        sizes.add(int(match[1]))
    every_run = dataclasses.replace(
        comparison,
        ablations=comparison_config.ABLATIONS,
        group_sizes=tuple(sorted(sizes)),
        methods=tuple(dict.fromkeys(comparison.methods + comparison_config.OPTIONAL_METHODS)),
    )
    runs = {r.name: r for r in training.goalrank_runs(experiment, every_run)}
    # e.g. goalrank_K8 where K = 8 is the default: the comparison trained it as goalrank.
    run_name = training.same_run_aliases(experiment, every_run).get(run_name, run_name)
    if run_name not in runs:
        raise ValueError(
            f"{workdir} is a comparison: --run must name one of its GoalRank runs "
            f"{sorted(runs)} (or goalrank_K<k>), got {run_name!r}."
        )
    on_disk = sorted(
        int(m[1])
        for name in os.listdir(workdir)
        if (m := re.fullmatch(r"seed_(\d+)", name)) and os.path.isdir(os.path.join(workdir, name))
    )
    seed = comparison_seed or comparison.seeds[0]
    if seed not in on_disk:
        raise ValueError(f"--comparison_seed={seed} is not a seed of {workdir}: {on_disk}")
    if not os.path.isdir(os.path.join(workdir, f"seed_{seed}", run_name)):
        raise ValueError(
            f"GoalRank run {run_name!r} of seed {seed} was not trained in {workdir}: "
            f"no directory seed_{seed}/{run_name}; run the comparison with the ablation that "
            "trains it (--config.compare.ablations=...)."
        )
    # As comparison.compare and comparison.training build the run (dataset, seed, settings).
    experiment = comparison_config.with_data_dir(experiment, workdir)
    config = training.run_experiment(dataclasses.replace(experiment, seed=seed), runs[run_name])
    seed_dir = os.path.join(workdir, f"seed_{seed}")
    reward_dir = workdir if comparison.shared_reward_model else seed_dir
    return RunLayout(config, reward_dir, seed_dir, run_name)


def rank_correlation(scores: np.ndarray, truth: np.ndarray, keep: np.ndarray) -> float:
    """Mean over requests of the Spearman correlation of ``scores`` with ``truth`` among the
    ``keep`` candidates ([R, N] each; requests with fewer than 3 kept candidates are left out;
    ties get their mean rank)."""

    values = []
    for s, t, k in zip(scores, truth, keep, strict=True):
        if k.sum() < 3:
            continue
        rs, rt = stats.rankdata(s[k]), stats.rankdata(t[k])
        rs, rt = rs - rs.mean(), rt - rt.mean()
        denom = np.sqrt((rs**2).sum() * (rt**2).sum())
        if denom > 0:
            values.append(float((rs * rt).sum() / denom))
    return float(np.mean(values)) if values else float("nan")


def _step_entropy(policy, params, batch, lists):
    """Mean per-step entropy of ``policy`` along ``lists`` [B, K, L] and that of a uniform
    choice among the remaining valid candidates: two [B] arrays."""
    masked = policy.masked(policy.step_logits(params, batch, lists), batch, lists)
    entropy = sampling.step_entropy(masked).mean((1, 2))
    chosen = sampling.prefix_multi_hot(lists, batch["cand_mask"].shape[-1])
    remaining = (batch["cand_mask"][:, None, None, :] & (chosen == 0)).sum(-1)
    uniform = jnp.log(jnp.maximum(remaining, 1)).mean((1, 2))
    return entropy, uniform


def remaining_auc(scores: jnp.ndarray, labels: jnp.ndarray, remaining: jnp.ndarray) -> jnp.ndarray:
    """Per-step AUC of ``scores`` [B, L, N] against ``labels`` [B, N] among the ``remaining``
    [B, L, N] candidates: the share of (positive, negative) pairs the scores order correctly,
    ties counting one half; [B, L], NaN where a step has no positive or no negative left."""
    positive = remaining & (labels[:, None, :] > 0)
    negative = remaining & (labels[:, None, :] <= 0)
    above = scores[..., :, None] - scores[..., None, :]  # [B, L, N(pos), N(neg)]
    wins = jnp.where(above > 0, 1.0, jnp.where(above == 0, 0.5, 0.0))
    pairs = positive[..., :, None] & negative[..., None, :]
    count = pairs.sum((-2, -1))
    auc = jnp.where(pairs, wins, 0.0).sum((-2, -1)) / jnp.maximum(count, 1)
    return jnp.where(count > 0, auc, jnp.nan)


def step_auc_along_greedy(policy, params, batch, greedy, first):
    """How well each decoding step ranks the candidates still left along the greedy list
    ``greedy`` [B, L]: (AUC of the step-t logits, AUC of the first-step logits ``first`` [B, N]
    on the same candidates), each [B, L] (:func:`remaining_auc`). Later steps that rank the
    remaining candidates worse than the first step did make the greedy list fall below the
    first-step sort."""
    steps = policy.step_logits(params, batch, greedy[:, None])[:, 0]  # [B, L, N]
    remaining = losses.available_candidates(greedy, batch["cand_mask"])
    first = jnp.broadcast_to(first[:, None, :], steps.shape)
    labels = batch["cand_labels"]
    return remaining_auc(steps, labels, remaining), remaining_auc(first, labels, remaining)


def batch_measures(
    gen_params, rm_params, batch, key, *, policy, evaluator, list_len, samples, true_params=None
):
    """Per-request measures of one batch: dict name -> [B]. With ``true_params`` (synthetic data)
    also the true user model's expected reward of the greedy list and of the first-step sort."""
    mask = batch["cand_mask"]
    k_random, k_sample = jax.random.split(key)
    random_lists = policies.uniform_lists(mask, list_len, k_random, samples)
    greedy = policy.greedy(gen_params, batch)
    sampled = policy.sample(gen_params, batch, k_sample, samples)
    best = evaluator.greedy(rm_params, batch, list_len)
    first = policy.first_step_logits(gen_params, batch)
    first_sort = jax.lax.top_k(sampling.mask_logits(first, mask, jnp.zeros_like(mask)), list_len)
    entropy, uniform = _step_entropy(policy, gen_params, batch, sampled)
    step_auc, first_auc = step_auc_along_greedy(policy, gen_params, batch, greedy, first)
    labels = batch["cand_labels"]
    values_greedy, eligible = metrics.per_request_metrics(greedy, labels, mask)
    values_sort, _ = metrics.per_request_metrics(first_sort[1].astype(jnp.int32), labels, mask)
    ndcg = f"N@{list_len}"

    def reward(lists):
        return evaluator.list_rewards(rm_params, batch, lists).mean(-1)

    out = {}
    if true_params is not None:
        for name, lists in (("greedy", greedy), ("first_step_sort", first_sort[1])):
            out[f"true_reward_{name}"] = synthetic.list_reward_from_candidates(
                batch["cand_true_logit"],
                batch["cand_category"],
                batch["cand_partner"],
                lists.astype(jnp.int32),
                true_params,
            )
    return out | {
        "random": reward(random_lists),
        "generator_greedy": reward(greedy[:, None]),
        "generator_samples": reward(sampled),
        "evaluator_greedy": reward(best[:, None]),
        "policy_entropy": entropy,
        "uniform_entropy": uniform,
        "step_auc": step_auc,
        "first_step_auc": first_auc,
        f"{ndcg}_greedy": jnp.where(eligible[ndcg], values_greedy[ndcg], jnp.nan),
        f"{ndcg}_first_step_sort": jnp.where(eligible[ndcg], values_sort[ndcg], jnp.nan),
    }


def _gather(fn, batches) -> dict[str, np.ndarray]:
    """Runs ``fn(batch) -> {name: [B]}`` over ``batches``; concatenates the unpadded rows."""
    rows: dict[str, list] = {}
    for batch in batches:
        keep = np.asarray(batch["example_mask"])
        for name, value in jax.device_get(fn(batch)).items():
            rows.setdefault(name, []).append(np.asarray(value)[keep])
    return {name: np.concatenate(parts) for name, parts in rows.items()}


def paired_difference(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Mean of the per-request difference a - b over the requests where both are defined, and
    its standard error (sample std with ddof=1 over sqrt(n)): is a list above the other by more
    than the noise of the split?"""
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    diff = diff[np.isfinite(diff)]
    if diff.size < 2:
        return {"mean": float("nan"), "stderr": float("nan"), "requests": int(diff.size)}
    stderr = diff.std(ddof=1) / np.sqrt(diff.size)
    return {"mean": float(diff.mean()), "stderr": float(stderr), "requests": int(diff.size)}


def _step_auc_summary(step_auc: np.ndarray, first_auc: np.ndarray) -> dict:
    """Per step t (1-based) the mean AUC of the step-t logits and of the first-step logits among
    the candidates left along the greedy list, and the paired difference over steps 2..L."""
    later = (step_auc[:, 1:] - first_auc[:, 1:]).reshape(-1)
    return {
        "step": [float(v) for v in np.nanmean(step_auc, axis=0)],
        "first_step_scores": [float(v) for v in np.nanmean(first_auc, axis=0)],
        "later_minus_first": paired_difference(later, np.zeros_like(later)),
    }


def _progress(rewards: dict[str, float], name: str) -> float:
    gap = rewards["evaluator_greedy"] - rewards["random"]
    return float((rewards[name] - rewards["random"]) / gap) if gap else float("nan")


def reward_model_measures(config, dataset, evaluator, rm_params, max_examples, split) -> dict:
    """Validation AUC of the reward model's candidate scores; on synthetic data the mean
    within-request Spearman correlation with the true relevance logits on ``split``."""
    scores_fn = jax.jit(evaluator.candidate_scores)

    def validation(batch):
        scores = scores_fn(rm_params, batch)
        values, eligible = metrics.per_request_metrics(
            jnp.zeros((scores.shape[0], dataset.list_len), jnp.int32),
            batch["cand_labels"],
            batch["cand_mask"],
            scores,
        )
        return {"auc": jnp.where(eligible["AUC"], values["AUC"], jnp.nan)}

    batches = pipeline.eval_batches(
        dataset.sources["validation"], config.eval.batch_size, max_examples
    )
    out = {"rm_validation_auc": float(np.nanmean(_gather(validation, batches)["auc"]))}
    out["rm_true_spearman"] = None
    if dataset.has_true_model:
        rows = _gather(
            lambda b: {
                "scores": scores_fn(rm_params, b),
                "truth": b["cand_true_logit"],
                "valid": b["cand_mask"],
            },
            pipeline.eval_batches(dataset.sources[split], config.eval.batch_size, max_examples),
        )
        out["rm_true_spearman"] = rank_correlation(rows["scores"], rows["truth"], rows["valid"])
    return out


def _pair_lists(num_candidates: int) -> jnp.ndarray:
    """[N * N, 2] every ordered pair (a, c) of candidate indices (a above c), row a * N + c."""
    index = jnp.arange(num_candidates, dtype=jnp.int32)
    return jnp.stack(jnp.meshgrid(index, index, indexing="ij"), -1).reshape(-1, 2)


def pair_effects(evaluator, rm_params, batch, true_params) -> dict[str, jnp.ndarray]:
    """Per request sums of the list-aware model's response to the item above (the
    ``rm_list_effects`` of the module docstring): dict name -> [B]."""
    mask = batch["cand_mask"]
    batch_size, num_candidates = mask.shape
    pairs = jnp.broadcast_to(_pair_lists(num_candidates), (batch_size, num_candidates**2, 2))
    logits = evaluator.module.apply(rm_params, batch, pairs)[..., 1]
    model = logits.reshape(batch_size, num_candidates, num_candidates)  # [B, a, c]
    category, partner = batch["cand_category"], batch["cand_partner"]
    same = category[:, :, None] == category[:, None, :]
    completes = category[:, :, None] == partner[:, None, :]
    truth = (
        -true_params.redundancy_penalty * same + true_params.complement_bonus * completes
    ).astype(jnp.float32)
    off_diagonal = ~jnp.eye(num_candidates, dtype=bool)
    valid = mask[:, :, None] & mask[:, None, :] & off_diagonal

    def centred(values):
        count = jnp.maximum(valid.sum(1, keepdims=True), 1)
        mean = jnp.where(valid, values, 0.0).sum(1, keepdims=True) / count
        return jnp.where(valid, values - mean, 0.0)

    model, truth = centred(model), centred(truth)
    same = same & valid
    completes = completes & valid & ~same
    return {
        "cross": (model * truth).sum((1, 2)),
        "truth_sq": (truth * truth).sum((1, 2)),
        "same_sum": jnp.where(same, model, 0.0).sum((1, 2)),
        "same_true_sum": jnp.where(same, truth, 0.0).sum((1, 2)),
        "same_count": same.sum((1, 2)),
        "partner_sum": jnp.where(completes, model, 0.0).sum((1, 2)),
        "partner_true_sum": jnp.where(completes, truth, 0.0).sum((1, 2)),
        "partner_count": completes.sum((1, 2)),
    }


def list_effect_measures(config, dataset, evaluator, rm_params, max_examples, split) -> dict:
    """``rm_list_effects`` of the module docstring, from :func:`pair_effects` summed over the
    first ``max_examples`` requests of ``split`` (0 = all)."""
    true_params = config.data.env.true_model
    effects = jax.jit(lambda p, b: pair_effects(evaluator, p, b, true_params))
    # N^2 lists per request: smaller batches than the evaluation's.
    batch_size = max(1, min(config.eval.batch_size, 16))
    rows = _gather(
        lambda b: effects(rm_params, b),
        pipeline.eval_batches(dataset.sources[split], batch_size, max_examples),
    )
    return effect_ratios({name: float(np.sum(value)) for name, value in rows.items()})


def effect_ratios(total: dict[str, float]) -> dict:
    """The ``rm_list_effects`` figures from the :func:`pair_effects` sums over requests."""

    def ratio(num, den):
        return total[num] / total[den] if total[den] else float("nan")

    return {
        "slope": ratio("cross", "truth_sq"),
        "same_category": ratio("same_sum", "same_count"),
        "true_same_category": ratio("same_true_sum", "same_count"),
        "partner_category": ratio("partner_sum", "partner_count"),
        "true_partner_category": ratio("partner_true_sum", "partner_count"),
        "pairs_same_category": int(total["same_count"]),
        "pairs_partner_category": int(total["partner_count"]),
    }


def diagnose(
    workdir: str,
    split="test",
    max_examples=0,
    num_samples=0,
    seed=0,
    log_fn=None,
    list_effect_requests=500,
    run_name="",
    comparison_seed=0,
):
    """The measures of the module docstring for the finished run in ``workdir`` (or its
    comparison run ``run_name`` of seed ``comparison_seed``)."""
    log_fn = log_fn or (lambda message: print(message, file=sys.stderr, flush=True))
    layout = run_layout(workdir, run_name, comparison_seed)
    config = layout.config
    dataset = run.prepare_data(config, workdir, log_fn)
    mesh = sharding.mesh_from_config(config.mesh)
    max_examples = max_examples or config.eval.max_examples
    samples = num_samples or config.gro.group_size
    with jax.set_mesh(mesh):
        reward_context, context = (
            run.stage_context(config, dataset, d, mesh, None, log_fn)
            for d in (layout.reward_dir, layout.generator_dir)
        )
        evaluator = run.reward_model_evaluator(
            config.reward_model.kind, config.reward_model.model, dataset
        )
        policy = run.generator_policy(config, dataset)
        rm_state = stages.restore(
            reward_context, run.reward_model_stage(config, evaluator, reward_context)
        )
        gen_stage = run.generator_stage(
            config, policy, evaluator, context, rm_state.params, name=layout.generator_stage
        )
        gen_state = stages.restore(context, gen_stage)
        gen_params, rm_params = sharding.put_replicated(
            (gen_state.params, gen_state.reward_params), mesh
        )
        measure = jax.jit(
            lambda g, r, b, k: batch_measures(
                g,
                r,
                b,
                k,
                policy=policy,
                evaluator=evaluator,
                list_len=dataset.list_len,
                samples=samples,
                true_params=config.data.env.true_model if dataset.has_true_model else None,
            )
        )
        key = jax.random.key(seed)
        counter = iter(range(1 << 30))
        rows = _gather(
            lambda b: measure(gen_params, rm_params, b, jax.random.fold_in(key, next(counter))),
            pipeline.eval_batches(dataset.sources[split], config.eval.batch_size, max_examples),
        )
        rm = reward_model_measures(config, dataset, evaluator, rm_params, max_examples, split)
        rm["rm_list_effects"] = None
        if evaluator.kind == "list_aware" and dataset.has_true_model:
            rm["rm_list_effects"] = list_effect_measures(
                config, dataset, evaluator, rm_params, list_effect_requests or max_examples, split
            )
    rewards = {
        name: float(np.mean(rows[name]))
        for name in ("random", "generator_greedy", "generator_samples", "evaluator_greedy")
    }
    ndcg = f"N@{dataset.list_len}"
    return {
        "workdir": workdir,
        "run": f"{run_name} (seed {config.seed})" if run_name else "",
        "split": split,
        "requests": int(len(rows["random"])),
        "dataset": config.data.dataset,
        "reward_model_kind": config.reward_model.kind,
        "generator": f"{config.generator.variant} D={config.generator.embed_dim}",
        "group_construction": config.gro.group_construction,
        "num_samples": samples,
        "rm_reward": rewards,
        "gro_progress": _progress(rewards, "generator_greedy"),
        "gro_progress_sampled": _progress(rewards, "generator_samples"),
        "policy_entropy": float(np.mean(rows["policy_entropy"])),
        "uniform_entropy": float(np.mean(rows["uniform_entropy"])),
        f"{ndcg}_greedy": float(np.nanmean(rows[f"{ndcg}_greedy"])),
        f"{ndcg}_first_step_sort": float(np.nanmean(rows[f"{ndcg}_first_step_sort"])),
        **{
            name: (float(np.mean(rows[name])) if name in rows else None)
            for name in ("true_reward_greedy", "true_reward_first_step_sort")
        },
        "greedy_minus_first_step_sort": {
            ndcg: paired_difference(rows[f"{ndcg}_greedy"], rows[f"{ndcg}_first_step_sort"]),
            "true_reward": (
                paired_difference(rows["true_reward_greedy"], rows["true_reward_first_step_sort"])
                if "true_reward_greedy" in rows
                else None
            ),
        },
        "step_auc_along_greedy": _step_auc_summary(rows["step_auc"], rows["first_step_auc"]),
        **rm,
        "stage_steps": {
            "reward_model": int(rm_state.step),
            "generator": int(gen_state.step),
        },
    }
