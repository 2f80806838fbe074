"""How well a trained reward model knows the true relevance, on synthetic data; prints JSON.

    python benchmarks/reward_model_diagnostics.py --workdir=runs/goalrank [--max_examples 3000]

Loads ``<workdir>/config.json`` and the reward model's latest checkpoint and, on the test split,
compares its per-candidate scores with the true relevance logits stored with every request:

* ``spearman_all`` / ``spearman_logged`` / ``spearman_not_logged``: mean per-request Spearman
  rank correlation between reward-model scores and true relevance, over all valid candidates,
  over the L logged ones, and over the N - L retriever candidates;
* ``score_gap`` and ``true_logit_gap``: mean score (and mean true logit) of logged minus
  non-logged candidates: how much the model prefers "was shown" over "is relevant";
* ``logged_share_*``: the share of the reward-model greedy list and of the true-relevance top-L
  that are logged items.
"""

import argparse
import json
import os

import jax
import numpy as np
from scipy import stats

from goalrank_jax import checkpointing, configs, policies
from goalrank_jax import train_step as ts
from goalrank_jax.data import pipeline
from goalrank_jax.models import make_reward_model


def mean_spearman(scores: np.ndarray, truth: np.ndarray, keep: np.ndarray) -> float:
    values = []
    for s, t, k in zip(scores, truth, keep, strict=True):
        if k.sum() >= 3:
            rho = stats.spearmanr(s[k], t[k]).statistic
            if np.isfinite(rho):
                values.append(rho)
    return float(np.mean(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="A finished (or resumable) run.")
    parser.add_argument("--max_examples", type=int, default=3000, help="Test requests used.")
    args = parser.parse_args()

    with open(os.path.join(args.workdir, "config.json")) as f:
        config = configs.from_config_dict(json.load(f))
    data_dir = config.data.data_dir or os.path.join(args.workdir, "tfds")
    dataset = pipeline.load_dataset(config.data, data_dir, log_fn=lambda _: None)
    if not dataset.has_true_model:
        raise SystemExit("reward_model_diagnostics needs a dataset with a true model (synthetic)")
    list_len = dataset.list_len
    module = make_reward_model(
        config.reward_model.kind,
        config.reward_model.model,
        dataset.num_users,
        dataset.num_items,
        list_len,
    )
    evaluator = policies.Evaluator(module, config.reward_model.kind)
    batches = list(pipeline.eval_batches(dataset.sources["test"], 500, args.max_examples))
    params = evaluator.init(jax.random.key(0), batches[0], list_len)
    state = ts.create_state(params, ts.make_optimizer(config.reward_model.train.optim))
    ckpt = checkpointing.Checkpointer(os.path.join(args.workdir, "reward_model", "checkpoints"))
    step = ckpt.latest_step()
    if step is None:
        raise SystemExit(f"no reward-model checkpoint under {args.workdir}")
    state, _ = ckpt.restore(step, checkpointing.abstract_like(state))
    ckpt.close()

    scores_fn = jax.jit(evaluator.candidate_scores)
    greedy_fn = jax.jit(evaluator.greedy, static_argnums=2)
    rows = {k: [] for k in ("scores", "truth", "valid", "logged", "greedy")}
    for batch in batches:
        keep = batch["example_mask"]
        rows["scores"].append(np.asarray(scores_fn(state.params, batch))[keep])
        rows["greedy"].append(np.asarray(greedy_fn(state.params, batch, list_len))[keep])
        rows["truth"].append(batch["cand_true_logit"][keep])
        rows["valid"].append(batch["cand_mask"][keep])
        rows["logged"].append(batch["cand_logged_pos"][keep] >= 0)
    s, t, valid, logged, greedy = (np.concatenate(rows[k]) for k in rows)
    truth_top = np.argsort(-np.where(valid, t, -np.inf), axis=1)[:, :list_len]
    not_logged = valid & ~logged
    out = {
        "workdir": args.workdir,
        "reward_model_kind": config.reward_model.kind,
        "checkpoint_step": int(step),
        "requests": int(len(s)),
        "spearman_all": mean_spearman(s, t, valid),
        "spearman_logged": mean_spearman(s, t, logged),
        "spearman_not_logged": mean_spearman(s, t, not_logged),
        "score_gap": float(s[logged].mean() - s[not_logged].mean()),
        "true_logit_gap": float(t[logged].mean() - t[not_logged].mean()),
        "logged_share_reward_model_greedy": float(np.take_along_axis(logged, greedy, 1).mean()),
        "logged_share_true_relevance_top": float(np.take_along_axis(logged, truth_top, 1).mean()),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
