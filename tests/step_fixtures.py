"""Tiny random requests and models shared by the train-step tests."""

import numpy as np

from goalrank_jax import configs
from goalrank_jax.models import make_generator, make_reward_model

NUM_USERS, NUM_ITEMS = 30, 120


def random_batch(batch_size=8, num_candidates=10, list_len=3, history_len=6, seed=0):
    rng = np.random.default_rng(seed)
    cand_items = np.stack(
        [rng.choice(NUM_ITEMS, num_candidates, replace=False) for _ in range(batch_size)]
    ).astype(np.int32)
    cand_items[0, -2:] = -1  # two padded candidates in the first request
    logged_pos = np.full((batch_size, num_candidates), -1, np.int32)
    for b in range(batch_size):
        logged_pos[b, rng.choice(num_candidates - 2, list_len, replace=False)] = np.arange(list_len)
    labels = ((logged_pos >= 0) & (rng.random((batch_size, num_candidates)) < 0.5)).astype(
        np.float32
    )
    history = rng.integers(-1, NUM_ITEMS, (batch_size, history_len)).astype(np.int32)
    return {
        "user_id": rng.integers(0, NUM_USERS, batch_size).astype(np.int32),
        "history_items": history,
        "history_labels": rng.integers(0, 2, (batch_size, history_len)).astype(np.int32),
        "history_mask": history >= 0,
        "cand_items": cand_items,
        "cand_mask": cand_items >= 0,
        "cand_labels": labels,
        "cand_logged_pos": logged_pos,
        "cand_retriever_score": rng.normal(size=(batch_size, num_candidates)).astype(np.float32),
        "example_mask": np.ones(batch_size, bool),
    }


def tiny_models(dropout=0.1):
    model = configs.ModelConfig(embed_dim=8, num_layers=1, num_heads=2, ff_dim=8, dropout=dropout)
    return (
        make_generator(model, NUM_USERS, NUM_ITEMS),
        make_reward_model("pointwise", model, NUM_USERS, NUM_ITEMS),
    )
