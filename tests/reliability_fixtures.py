"""Tiny valid ranking requests and a TFDS builder of given requests, shared by the
reliability tests (bad inputs, safety of inputs)."""

import numpy as np

from goalrank_jax import configs
from goalrank_jax.data import tfds_requests

N, L, H, USERS, ITEMS = 5, 2, 3, 4, 20


def valid_split(count, seed):
    """Features of ``count`` requests that satisfy every request check."""
    rng = np.random.default_rng(seed)
    cand = np.stack([rng.choice(ITEMS, N, replace=False) for _ in range(count)])
    logged = np.full((count, N), -1, np.int32)
    for row in range(count):
        logged[row, rng.choice(N, L, replace=False)] = np.arange(L)
    return {
        "user_id": rng.integers(0, USERS, count).astype(np.int32),
        "request_order": np.arange(count, dtype=np.int32),
        "history_items": rng.integers(-1, ITEMS, (count, H)).astype(np.int32),
        "history_labels": rng.integers(0, 2, (count, H)).astype(np.int8),
        "cand_items": cand.astype(np.int32),
        "cand_labels": ((logged >= 0) & (rng.random((count, N)) < 0.5)).astype(np.int8),
        "cand_logged_pos": logged,
        "cand_retriever_score": rng.normal(size=(count, N)).astype(np.float32),
    }


def valid_requests():
    return {"train": valid_split(6, 0), "validation": valid_split(3, 1), "test": valid_split(3, 2)}


class GivenRequests(tfds_requests.RequestsBuilder, skip_registration=True):
    """A builder whose requests are given (to test what preparation leaves on disk)."""

    REQUESTS = {}

    def generate(self):
        return self.REQUESTS, {"num_users": USERS, "num_items": ITEMS, "stats": {}}


def prepare_given(data_dir, by_split):
    GivenRequests.REQUESTS = by_split
    data = configs.DataConfig(num_candidates=N, list_len=L, history_len=H)
    config = tfds_requests.RequestsConfig("given", data, lambda _: None)
    builder = GivenRequests(config=config, data_dir=str(data_dir), file_format="array_record")
    return tfds_requests.prepare(builder)
