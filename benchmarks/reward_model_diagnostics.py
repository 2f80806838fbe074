"""How well a trained reward model knows the true relevance, on synthetic data; prints JSON.

    python benchmarks/reward_model_diagnostics.py --workdir=runs/goalrank [--max_examples 3000]

Restores the reward model a finished ``goalrank_jax.main`` run used (the state selected on
validation when the run selects) and compares, on the test split, its per-candidate scores with
the true relevance logits stored with every request:

* ``spearman_all`` / ``spearman_logged`` / ``spearman_not_logged``: mean per-request Spearman
  rank correlation between reward-model scores and true relevance, over all valid candidates,
  over the L logged ones, and over the N - L other candidates;
* ``spearman_components``: the same correlation with each term of the true relevance logit
  (``affinity`` = relevance_scale <u, v_i> / sqrt(d), ``category`` = category_weight
  log(C pref[u, c_i]), ``popularity``), and ``truth_components`` the correlation of the true
  logit itself with each term: which parts of relevance the model learned;
* ``score_gap`` and ``true_logit_gap``: mean score (and mean true logit) of logged minus
  non-logged candidates: how much the model prefers "was shown" over "is relevant";
* ``logged_share_*``: the share of the reward-model greedy list and of the true-relevance top-L
  that are logged items.
"""

import argparse
import contextlib
import json
import sys

import jax
import numpy as np

from goalrank_jax import diagnose, run, sharding, stages
from goalrank_jax.data import pipeline
from goalrank_jax.env import synthetic


def relevance_terms(world, env, users, items) -> dict[str, np.ndarray]:
    """The three varying terms of the true relevance logit of ``items`` [B, N] for ``users``."""
    affinity = np.einsum(
        "bd,bnd->bn", world.user_latent[users], world.item_latent[items]
    ) / np.sqrt(env.latent_dim)
    pref = world.user_category_pref[users[:, None], world.item_category[items]]
    return {
        "affinity": env.relevance_scale * affinity,
        "category": env.category_weight * np.log(env.num_categories * pref),
        "popularity": env.popularity_weight * world.item_popularity[items],
    }


def main() -> None:
    # Standard output carries the JSON alone (TFDS announces a dataset it prepares on stdout).
    with contextlib.redirect_stdout(sys.stderr):
        out = diagnostics()
    print(json.dumps(out, indent=2))


def diagnostics() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="A finished goalrank_jax.main run.")
    parser.add_argument("--max_examples", type=int, default=3000, help="Test requests used.")
    args = parser.parse_args()

    log = lambda message: print(message, file=sys.stderr)  # noqa: E731
    config = diagnose.load_config(args.workdir)
    dataset = run.prepare_data(config, args.workdir, log)
    if not dataset.has_true_model:
        raise SystemExit("reward_model_diagnostics needs a dataset with a true model (synthetic)")
    list_len = dataset.list_len
    mesh = sharding.mesh_from_config(config.mesh)
    with jax.set_mesh(mesh):
        context = run.stage_context(config, dataset, args.workdir, mesh, None, log)
        evaluator = run.reward_model_evaluator(
            config.reward_model.kind, config.reward_model.model, dataset
        )
        state = stages.restore(context, run.reward_model_stage(config, evaluator, context))
        params = sharding.put_replicated(state.params, mesh)
        scores_fn = jax.jit(evaluator.candidate_scores)
        greedy_fn = jax.jit(evaluator.greedy, static_argnums=2)
        rows = {k: [] for k in ("scores", "truth", "valid", "logged", "greedy", "user", "items")}
        for batch in pipeline.eval_batches(dataset.sources["test"], 500, args.max_examples):
            keep = batch["example_mask"]
            rows["scores"].append(np.asarray(scores_fn(params, batch))[keep])
            rows["greedy"].append(np.asarray(greedy_fn(params, batch, list_len))[keep])
            rows["truth"].append(batch["cand_true_logit"][keep])
            rows["valid"].append(batch["cand_mask"][keep])
            rows["logged"].append(batch["cand_logged_pos"][keep] >= 0)
            rows["user"].append(batch["user_id"][keep])
            rows["items"].append(batch["cand_items"][keep])
    s, t, valid, logged, greedy, users, items = (np.concatenate(rows[k]) for k in rows)
    terms = relevance_terms(synthetic.make_world(config.data.env), config.data.env, users, items)
    truth_top = np.argsort(-np.where(valid, t, -np.inf), axis=1)[:, :list_len]
    not_logged = valid & ~logged
    spearman = diagnose.rank_correlation
    out = {
        "workdir": args.workdir,
        "reward_model_kind": config.reward_model.kind,
        "reward_model_step": int(state.step),
        "requests": int(len(s)),
        "spearman_all": spearman(s, t, valid),
        "spearman_logged": spearman(s, t, logged),
        "spearman_not_logged": spearman(s, t, not_logged),
        "spearman_components": {k: spearman(s, v, valid) for k, v in terms.items()},
        "truth_components": {k: spearman(t, v, valid) for k, v in terms.items()},
        "score_gap": float(s[logged].mean() - s[not_logged].mean()),
        "true_logit_gap": float(t[logged].mean() - t[not_logged].mean()),
        "logged_share_reward_model_greedy": float(np.take_along_axis(logged, greedy, 1).mean()),
        "logged_share_true_relevance_top": float(np.take_along_axis(logged, truth_top, 1).mean()),
    }
    return out


if __name__ == "__main__":
    main()
