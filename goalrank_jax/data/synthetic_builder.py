"""TFDS builder (array_record) of the embedded synthetic environment.

Preparing the dataset generates the world and the logged lists of the logging policy, builds the
ranking requests (histories, time splits, stage-1 retriever candidates; see
:mod:`goalrank_jax.data.requests`), and stores with every request the true-model fields of its
candidates and the beam-search oracle list, so that any list can be scored exactly at
evaluation time from the example alone. The builder config name is derived from a hash of the
data config, so different settings never share files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable

import numpy as np

from goalrank_jax.data import requests as requests_lib
from goalrank_jax.data import tfds_requests
from goalrank_jax.env import oracle, synthetic

ORACLE_CHUNK = 2048


def config_fingerprint(data_config) -> str:
    """Short hash of everything that determines the dataset's content."""
    content = dataclasses.asdict(data_config)
    content.pop("data_dir", None)
    content.pop("item_features", None)  # What the models see, not what is stored.
    digest = hashlib.sha1(json.dumps(content, sort_keys=True).encode()).hexdigest()[:10]
    return f"n{data_config.num_candidates}_l{data_config.list_len}_{digest}"


def _oracle(cand_logit, cand_cat, cand_partner, list_len, width, params):
    lists, rewards = [], []
    for start in range(0, len(cand_logit), ORACLE_CHUNK):
        part = slice(start, start + ORACLE_CHUNK)
        chunk_lists, chunk_rewards = oracle.oracle_beam_search(
            cand_logit[part],
            cand_cat[part],
            cand_partner[part],
            np.ones(cand_logit[part].shape, bool),
            list_len,
            width,
            params,
        )
        lists.append(np.asarray(chunk_lists))
        rewards.append(np.asarray(chunk_rewards))
    return np.concatenate(lists).astype(np.int32), np.concatenate(rewards).astype(np.float32)


def request_logs(logs: dict[str, np.ndarray]) -> requests_lib.Logs:
    """The output of :func:`synthetic.simulate_logs` as the chronological logs that
    :mod:`goalrank_jax.data.requests` turns into ranking requests."""
    return requests_lib.Logs(
        user=logs["user"],
        items=logs["items"],
        labels=logs["labels"],
        order=logs["request_index"].astype(np.int64),
        unshown=logs["unshown"],
    )


def generate_synthetic_requests(data_config, log_fn: Callable[[str], None] = print):
    """Returns ({split: features}, stats) of the synthetic environment."""
    env = data_config.env
    start = time.time()
    world = synthetic.make_world(env)
    logs = synthetic.simulate_logs(world, env)
    log_fn(
        f"[data] simulated {len(logs['user'])} logged requests of {env.num_users} users in "
        f"{time.time() - start:.1f}s"
    )
    by_split, stats = requests_lib.build_requests_from_config(
        request_logs(logs),
        env.num_users,
        env.num_items,
        data_config,
        log_fn,
    )
    start = time.time()
    for split, feats in by_split.items():
        items = feats["cand_items"]
        logit = synthetic.relevance_logits(world, env, feats["user_id"], items)
        category = world.item_category[items].astype(np.int32)
        partner = world.category_partner[category].astype(np.int32)
        oracle_list, oracle_reward = _oracle(
            logit,
            category,
            partner,
            data_config.list_len,
            data_config.oracle_beam_width,
            env.true_model,
        )
        feats.update(
            cand_true_logit=logit,
            cand_category=category,
            cand_partner=partner,
            oracle_list=oracle_list,
            oracle_reward=oracle_reward,
        )
        log_fn(
            f"[data] {split}: {len(items)} requests, oracle (beam {data_config.oracle_beam_width})"
            f" mean reward {oracle_reward.mean():.4f}"
        )
    log_fn(f"[data] oracle beam search took {time.time() - start:.1f}s")
    stats["oracle_beam_width"] = data_config.oracle_beam_width
    return by_split, stats


def world_categories(env) -> np.ndarray:
    """[I] the category of every item of the world of ``env``."""
    return synthetic.make_world(env).item_category


class GoalrankSynthetic(tfds_requests.RequestsBuilder):
    """Ranking requests of the embedded synthetic environment with its true user model."""

    HAS_TRUE_MODEL = True

    def generate(self):
        cfg = self.builder_config.data_config
        by_split, stats = generate_synthetic_requests(cfg, self.builder_config.log_fn)
        metadata = dict(
            num_users=cfg.env.num_users,
            num_items=cfg.env.num_items,
            stats=stats,
            # The item side feature of the world: its category (models see it only with
            # DataConfig.item_features).
            item_features=[[int(c)] for c in world_categories(cfg.env)],
            item_feature_names=[f"category_{c}" for c in range(cfg.env.num_categories)],
            data_config=json.loads(json.dumps(dataclasses.asdict(cfg))),
        )
        return by_split, metadata


def prepare(data_config, data_dir: str, log_fn: Callable[[str], None] = print):
    """Prepares (once) and returns the builder of the synthetic dataset."""
    config = tfds_requests.RequestsConfig(config_fingerprint(data_config), data_config, log_fn)
    return tfds_requests.prepare(
        GoalrankSynthetic(config=config, data_dir=data_dir, file_format="array_record")
    )
