"""The sampled candidate sources: data.candidates = random | popular."""

import dataclasses

import numpy as np
import pytest

from goalrank_jax import configs
from goalrank_jax.data import requests as requests_lib
from goalrank_jax.data.candidates import sample_unseen
from goalrank_jax.data.retriever import RetrieverConfig


def test_sample_unseen_draws_distinct_allowed_items():
    exclude = np.array([[0, 1, -1], [5, 5, 2], [-1, -1, -1]])
    out = sample_unseen(np.ones(8), exclude, 4, seed=0)
    assert out.shape == (3, 4) and out.dtype == np.int32
    for row, banned in zip(out, exclude, strict=True):
        assert len(set(row.tolist())) == 4
        assert not set(row.tolist()) & set(banned[banned >= 0].tolist())
    np.testing.assert_array_equal(out, sample_unseen(np.ones(8), exclude, 4, seed=0))
    # The draw does not depend on how many requests are drawn per block.
    np.testing.assert_array_equal(out, sample_unseen(np.ones(8), exclude, 4, seed=0, chunk_size=1))
    # Zero-weight items are never drawn; a block size of one request gives distinct draws too.
    weights = np.array([0.0, 1, 1, 1, 0, 1, 1, 0])
    drawn = sample_unseen(weights, np.full((50, 1), -1), 5, seed=1, chunk_size=7)
    assert set(np.unique(drawn).tolist()) == {1, 2, 3, 5, 6}


def test_sample_unseen_first_draw_follows_the_weights():
    # The first item of a Plackett-Luce draw has probability w_i / sum(w) among allowed items.
    weights = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    exclude = np.tile(np.array([[4]]), (40000, 1))  # item 4 is never allowed
    first = sample_unseen(weights, exclude, 2, seed=3)[:, 0]
    freq = np.bincount(first, minlength=5) / len(first)
    expected = np.array([1, 2, 3, 4, 0]) / 10.0
    # Standard error of each frequency <= sqrt(0.25 / 40000) = 0.0025; allow 4 of them.
    np.testing.assert_allclose(freq, expected, atol=0.01)


def test_sample_unseen_rejects_bad_inputs():
    with pytest.raises(ValueError, match="weights"):
        sample_unseen(np.array([1.0, -1.0]), np.zeros((1, 0), int), 1, seed=0)
    with pytest.raises(ValueError, match="exclude"):
        sample_unseen(np.ones(4), np.zeros(3, int), 1, seed=0)
    with pytest.raises(ValueError, match="positive weight left to request 1"):
        sample_unseen(np.array([1.0, 1, 1, 0]), np.array([[-1], [0]]), 3, seed=0)


def _logs():
    rng = np.random.default_rng(0)
    users, rows = 6, 4
    items = np.stack([rng.choice(30, 4, replace=False) for _ in range(users * rows)])
    return requests_lib.Logs(
        user=np.repeat(np.arange(users), rows).astype(np.int32),
        items=items.astype(np.int32),
        labels=(rng.random((users * rows, 4)) < 0.5).astype(np.int8),
        order=np.tile(np.arange(rows), users).astype(np.int64),
    )


@pytest.mark.parametrize("source", ["random", "popular"])
def test_sampled_candidates_are_items_the_user_never_interacted_with(source):
    logs = _logs()
    args = (logs, 6, 60, 14, 4, 0.25, 0.25, RetrieverConfig(num_epochs=1), 0, lambda _: None)
    by_split, _ = requests_lib.build_requests(*args, candidates=source)
    again, _ = requests_lib.build_requests(*args, candidates=source)
    for split, feats in by_split.items():
        np.testing.assert_array_equal(feats["cand_items"], again[split]["cand_items"])
        for row in range(len(feats["user_id"])):
            user = feats["user_id"][row]
            timeline = set(logs.items[logs.user == user].reshape(-1).tolist())
            others = feats["cand_items"][row][feats["cand_logged_pos"][row] < 0]
            assert len(others) == 10 and len(set(others.tolist())) == 10
            assert not set(others.tolist()) & timeline
            assert np.all(feats["cand_labels"][row][feats["cand_logged_pos"][row] < 0] == 0)


def test_popular_candidates_favour_items_with_train_positives():
    # Items 0..29 appear in the logs, every logged item a positive; 30..199 never appear, so
    # their weight is 1 against 1 + (train positives), about 2.6, for a logged item: about 15
    # logged items are left to each user, so popular draws take a logged item with probability
    # about 15 * 2.6 / (15 * 2.6 + 170) = 0.19 and random draws 15 / 185 = 0.08.
    logs = dataclasses.replace(_logs(), labels=np.ones((24, 4), np.int8))
    args = (logs, 6, 200, 14, 4, 0.25, 0.25, RetrieverConfig(num_epochs=1), 0, lambda _: None)
    share = {}
    for source in ("random", "popular"):
        by_split, _ = requests_lib.build_requests(*args, candidates=source)
        others = np.concatenate(
            [f["cand_items"][f["cand_logged_pos"] < 0] for f in by_split.values()]
        )
        share[source] = float(np.mean(others < 30))
    assert share["popular"] > 1.5 * share["random"]


def test_config_accepts_the_sampled_sources():
    for source in ("random", "popular"):
        configs.DataConfig(dataset="ml100k", manual_dir="x", candidates=source).validate()
    with pytest.raises(ValueError, match="candidates"):
        configs.DataConfig(dataset="ml100k", manual_dir="x", candidates="top").validate()
