"""Reference rewards of the default synthetic environment, printed as JSON.

Builds the default world, simulates its logs and, for a random sample of logged requests, builds
a candidate set of N items: the L logged items plus N - L others, shuffled. The others are the
world's own impression (the first N - L items its retrieval drew and its ranker did not show)
when the world logs one (``impression_size`` >= N), else the N - L best items the user has not
been shown yet under a noisy relevance score. On these candidate sets it scores, under the true
model, uniformly random lists, the logged list, the true-relevance sort, the greedy list and the
beam-search oracle, and prints the logged positive rate.

Usage: python benchmarks/env_report.py [--num_requests 2000] [--num_candidates 50]
"""

import argparse
import dataclasses
import json
import time

import jax.numpy as jnp
import numpy as np

from goalrank_jax.env import oracle as oracle_lib
from goalrank_jax.env import synthetic, true_model


def build_candidates(
    world: synthetic.World,
    cfg: synthetic.EnvConfig,
    logs: dict[str, np.ndarray],
    rows: np.ndarray,
    num_candidates: int,
    retriever_temperature: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate sets of sampled logged requests (the impression when the logs hold one).

    Args:
        world: the generated world.
        cfg: its configuration.
        logs: the output of synthetic.simulate_logs.
        rows: [B] indices of the sampled requests into the logs.
        num_candidates: N >= L.
        retriever_temperature: temperature of the noisy relevance score of the extra candidates.
        rng: host random generator.

    Returns:
        cand_items: [B, N] int32 shuffled candidate item ids.
        logged_pos: [B, L] int32 position in N of each logged item, in logged order.
    """
    list_len = cfg.list_len
    user = logs["user"][rows]
    request_index = logs["request_index"][rows]
    history = logs["items"].reshape(cfg.num_users, cfg.requests_per_user, list_len)[user]
    in_past = np.arange(cfg.requests_per_user)[None, :] <= request_index[:, None]
    seen = np.zeros((rows.size, cfg.num_items), dtype=bool)
    batch_index = np.broadcast_to(np.arange(rows.size)[:, None, None], history.shape)
    seen[batch_index[in_past], history[in_past]] = True
    all_items = np.broadcast_to(np.arange(cfg.num_items), (rows.size, cfg.num_items))
    rel = synthetic.relevance_logits(world, cfg, user, all_items)
    score = rel / retriever_temperature + rng.gumbel(size=rel.shape)
    score[seen] = -np.inf
    num_extra = num_candidates - list_len
    if logs["unshown"].shape[1] >= num_extra:
        # The world's own impression: the items its retrieval drew and its ranker did not show.
        extra = logs["unshown"][rows, :num_extra]
    else:
        extra = np.argpartition(-score, num_extra - 1, axis=1)[:, :num_extra]
    cand_items = np.concatenate([logs["items"][rows], extra], axis=1)
    order = np.argsort(rng.random(cand_items.shape), axis=1)
    cand_items = np.take_along_axis(cand_items, order, axis=1).astype(np.int32)
    logged_pos = np.argsort(order, axis=1)[:, :list_len].astype(np.int32)
    return cand_items, logged_pos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_requests", type=int, default=2000)
    parser.add_argument("--num_candidates", type=int, default=50)
    parser.add_argument("--beam_width", type=int, default=oracle_lib.DEFAULT_BEAM_WIDTH)
    parser.add_argument("--retriever_temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    start = time.perf_counter()
    cfg = synthetic.EnvConfig(seed=args.seed)
    world = synthetic.make_world(cfg)
    logs = synthetic.simulate_logs(world, cfg)
    simulate_s = time.perf_counter() - start

    rng = np.random.default_rng([args.seed, 2])
    total = logs["user"].size
    rows = np.sort(rng.choice(total, size=min(args.num_requests, total), replace=False))
    cand_items, logged_pos = build_candidates(
        world, cfg, logs, rows, args.num_candidates, args.retriever_temperature, rng
    )
    user = logs["user"][rows]
    cand_rel = jnp.asarray(synthetic.relevance_logits(world, cfg, user, cand_items))
    cand_cat = jnp.asarray(world.item_category[cand_items])
    cand_partner = jnp.asarray(world.category_partner[world.item_category[cand_items]])
    cand_mask = jnp.ones(cand_items.shape, bool)
    params = cfg.true_model

    def reward(lists: np.ndarray) -> float:
        values = true_model.list_reward_from_candidates(
            cand_rel, cand_cat, cand_partner, jnp.asarray(lists), params
        )
        return float(jnp.mean(values))

    sort_lists = oracle_lib.relevance_sort_lists(cand_rel, cand_mask, cfg.list_len)
    _, greedy_rewards = oracle_lib.greedy_true(
        cand_rel, cand_cat, cand_partner, cand_mask, cfg.list_len, params
    )
    _, beam_rewards = oracle_lib.oracle_beam_search(
        cand_rel, cand_cat, cand_partner, cand_mask, cfg.list_len, args.beam_width, params
    )
    oracle = float(jnp.mean(beam_rewards))
    random_lists = np.argsort(rng.random(cand_items.shape), axis=1)[:, : cfg.list_len]
    rewards = {
        "random": reward(random_lists),
        "logged": reward(logged_pos),
        "relevance_sort": reward(np.asarray(sort_lists)),
        "greedy_true_model": float(jnp.mean(greedy_rewards)),
        "beam_oracle": oracle,
    }
    report = {
        "env_config": dataclasses.asdict(cfg),
        "num_logged_requests": int(total),
        "num_scored_requests": int(rows.size),
        "num_candidates": args.num_candidates,
        "beam_width": args.beam_width,
        "mean_expected_reward": rewards,
        "fraction_of_oracle": {name: value / oracle for name, value in rewards.items()},
        "logged_positive_rate": float(logs["labels"].mean()),
        "logged_mean_clicks_per_list": float(logs["labels"].sum(axis=1).mean()),
        "simulate_wall_s": simulate_s,
        "total_wall_s": time.perf_counter() - start,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
