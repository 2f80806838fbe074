"""Why do (or don't) the synthetic world's logs teach a reward model? Prints one JSON object.

    python benchmarks/world_causes.py [--set data.env.latent_dim=8 --set data.candidates=impression]

Builds the world, its logs and the ranking requests of ``experiments/goalrank.py`` (with the
``--set`` overrides of ``DataConfig`` fields; no oracle, no model) and measures, with the true
model in hand, each candidate cause of a reward model that cannot learn true relevance:

* ``labels``: how much of the logged feedback relevance explains. Per-request AUC of the logged
  labels ranked by the items' true relevance logit, by their position alone (earlier = higher),
  and by their true click probability (the Bayes ceiling of any model that sees the list);
  ``click_prob_relevance_share``: the variance of the true click probability of logged items
  explained by their relevance logit alone (squared Pearson correlation).
* ``sources``: logged vs other candidates: the mean true logit of each, the share of the
  true-relevance top-L of every request that was logged, and within-request spreads.
* ``exhaustion``: the mean true logit of the logged items of each fifth of a user's timeline and
  of the test split's candidates against the train split's.
* ``volume``: shown and positive counts per item and positives per user (train split).
* ``learnable``: within-request Spearman with the true logit of two scores that need no model:
  the stage-1 retriever's score (a matrix factorisation of the train positives) and a hand-made
  feature (the user's positively labelled history items of the candidate's category).

All figures are on the requests the pipeline builds (``--split``, default test), so they speak for
what a reward model trained on these logs is evaluated on.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time

import numpy as np
from scipy import stats

from goalrank_jax import configs
from goalrank_jax.data import requests as requests_lib
from goalrank_jax.data import synthetic_builder
from goalrank_jax.env import synthetic, true_model

EXPERIMENT = os.path.join(os.path.dirname(__file__), "..", "experiments", "goalrank.py")


def data_config(overrides: list[str]) -> configs.DataConfig:
    """The DataConfig of experiments/goalrank.py with ``field=value`` overrides (data.* paths)."""
    spec = importlib.util.spec_from_file_location("goalrank_experiment", EXPERIMENT)
    experiment = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(experiment)
    cfg = experiment.get_config("")
    for item in overrides:
        path, _, value = item.partition("=")
        if not path.startswith("data."):
            raise SystemExit(f"--set takes data.* fields, got {path!r}")
        node = cfg
        *parents, leaf = path.split(".")
        for name in parents:
            node = node[name]
        current = node[leaf]
        node[leaf] = type(current)(value) if not isinstance(current, bool) else value == "true"
    return configs.from_config_dict(cfg.to_dict()).data


def per_request_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean over rows with both classes of the ROC-AUC of ``scores`` [R, M] vs ``labels``."""
    values = []
    for s, y in zip(scores, labels, strict=True):
        pos, neg = s[y > 0], s[y == 0]
        if len(pos) and len(neg):
            greater = (pos[:, None] > neg[None, :]).mean()
            ties = (pos[:, None] == neg[None, :]).mean()
            values.append(greater + 0.5 * ties)
    return float(np.mean(values))


def mean_spearman(scores: np.ndarray, truth: np.ndarray) -> float:
    values = [stats.spearmanr(s, t).statistic for s, t in zip(scores, truth, strict=True)]
    return float(np.nanmean(values))


def label_measures(world, env, logs) -> dict:
    rel = logs["rel_logit"]
    items = logs["items"]
    category = world.item_category[items]
    partner = world.category_partner[category]
    prob = np.asarray(true_model.click_probabilities(rel, category, partner, env.true_model))
    position_score = -np.broadcast_to(np.arange(rel.shape[1]), rel.shape).astype(np.float32)
    labels = logs["labels"]
    return {
        "positive_rate": float(labels.mean()),
        "label_auc_by_relevance": per_request_auc(rel, labels),
        "label_auc_by_position": per_request_auc(position_score, labels),
        "label_auc_by_true_click_prob": per_request_auc(prob, labels),
        "click_prob_relevance_share": float(np.corrcoef(rel.ravel(), prob.ravel())[0, 1] ** 2),
        "same_category_above_per_item": float(
            np.mean(
                [
                    (category[:, t : t + 1] == category[:, :t]).sum(1).mean()
                    for t in range(category.shape[1])
                ]
            )
        ),
    }


def source_measures(feats, truth) -> dict:
    logged = feats["cand_logged_pos"] >= 0
    list_len = int(logged[0].sum())
    top = np.argsort(-truth, axis=1)[:, :list_len]
    return {
        "true_logit_logged": float(truth[logged].mean()),
        "true_logit_other": float(truth[~logged].mean()),
        "logged_share_of_true_top_L": float(np.take_along_axis(logged, top, 1).mean()),
        "within_request_std_all": float(truth.std(1).mean()),
        "within_request_std_logged": float(
            np.mean([t[m].std() for t, m in zip(truth, logged, strict=True)])
        ),
        "within_request_std_other": float(
            np.mean([t[~m].std() for t, m in zip(truth, logged, strict=True)])
        ),
    }


def exhaustion_measures(logs, env, by_split, truths) -> dict:
    per_user = logs["rel_logit"].reshape(env.num_users, env.requests_per_user, -1)
    fifths = np.array_split(np.arange(env.requests_per_user), 5)
    return {
        "logged_true_logit_by_fifth": [float(per_user[:, f].mean()) for f in fifths],
        "candidate_true_logit_train": float(truths["train"].mean()),
        "candidate_true_logit_test": float(truths["test"].mean()),
    }


def volume_measures(by_split) -> dict:
    train = by_split["train"]
    logged = train["cand_logged_pos"] >= 0
    shown = train["cand_items"][logged]
    positive = train["cand_items"][(train["cand_labels"] > 0)]
    shown_counts = np.bincount(shown)
    positive_counts = np.bincount(positive, minlength=len(shown_counts))
    users = train["user_id"]
    per_user = np.bincount(users, weights=train["cand_labels"].sum(1))
    return {
        "shown_per_item_median": float(np.median(shown_counts[shown_counts > 0])),
        "positives_per_item_median": float(np.median(positive_counts[shown_counts > 0])),
        "items_never_positive_share": float((positive_counts == 0).mean()),
        "positives_per_user_train_mean": float(per_user[np.unique(users)].mean()),
    }


def category_feature(world, feats) -> np.ndarray:
    """Per candidate: the user's positively labelled history items of its category."""
    hist = feats["history_items"]
    hist_pos = (hist >= 0) & (feats["history_labels"] > 0)
    hist_cat = np.where(hist_pos, world.item_category[np.maximum(hist, 0)], -1)
    cand_cat = world.item_category[feats["cand_items"]]
    return (hist_cat[:, None, :] == cand_cat[:, :, None]).sum(-1).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", action="append", default=[], help="data.FIELD=VALUE override")
    parser.add_argument("--split", default="test", choices=requests_lib.SPLITS)
    parser.add_argument("--max_requests", type=int, default=3000)
    args = parser.parse_args()

    start = time.time()
    cfg = data_config(args.set)
    env = cfg.env
    world = synthetic.make_world(env)
    logs = synthetic.simulate_logs(world, env)
    by_split, stats_ = requests_lib.build_requests_from_config(
        synthetic_builder.request_logs(logs), env.num_users, env.num_items, cfg, lambda _: None
    )
    truths = {
        name: synthetic.relevance_logits(world, env, f["user_id"], f["cand_items"])
        for name, f in by_split.items()
    }
    feats = {k: v[: args.max_requests] for k, v in by_split[args.split].items()}
    truth = truths[args.split][: args.max_requests]
    out = {
        "overrides": args.set,
        "split": args.split,
        "stats": stats_,
        "labels": label_measures(world, env, logs),
        "sources": source_measures(feats, truth),
        "exhaustion": exhaustion_measures(logs, env, by_split, truths),
        "volume": volume_measures(by_split),
        "learnable": {
            "retriever_score_spearman": mean_spearman(feats["cand_retriever_score"], truth),
            "category_feature_spearman": mean_spearman(category_feature(world, feats), truth),
        },
        "seconds": round(time.time() - start, 1),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
