"""Tests of the stage-1 matrix-factorisation retriever."""

import numpy as np
import pytest

from goalrank_jax.data.candidates import recall_of_positives, retrieve
from goalrank_jax.data.retriever import RetrieverConfig, RetrieverParams, train_retriever

NUM_USERS = 400
NUM_ITEMS = 300
TRUE_RANK = 4
OBSERVED_FRACTION = 0.5
TOP_M = 10


def _random_params(seed: int, num_users: int, num_items: int, dim: int) -> RetrieverParams:
    rng = np.random.default_rng(seed)
    return RetrieverParams(
        user_emb=rng.normal(size=(num_users, dim)).astype(np.float32),
        item_emb=rng.normal(size=(num_items, dim)).astype(np.float32),
        item_bias=rng.normal(size=(num_items,)).astype(np.float32),
    )


def _numpy_top(params: RetrieverParams, users, exclude, m: int) -> np.ndarray:
    """Reference: float64 scores, excluded items set to -inf, stable descending argsort."""
    scores = params.user_emb[users].astype(np.float64) @ params.item_emb.T.astype(np.float64)
    scores += params.item_bias[None, :]
    for row, ids in enumerate(exclude):
        scores[row, ids[ids >= 0]] = -np.inf
    return np.argsort(-scores, axis=1, kind="stable")[:, :m]


@pytest.fixture(scope="module")
def planted():
    """Planted rank-4 problem: a user's positives are the top 10% of items by true score.

    Half of each user's items are observed with their labels (the history); the positives among
    the other half are held out.
    """
    rng = np.random.default_rng(123)
    true_u = rng.normal(size=(NUM_USERS, TRUE_RANK))
    true_i = rng.normal(size=(NUM_ITEMS, TRUE_RANK))
    true_scores = true_u @ true_i.T
    threshold = np.quantile(true_scores, 0.9, axis=1, keepdims=True)
    positive = true_scores > threshold
    observed = rng.random((NUM_USERS, NUM_ITEMS)) < OBSERVED_FRACTION
    obs_users, obs_items = np.nonzero(observed)
    labels = positive[obs_users, obs_items].astype(np.int64)
    held_users, held_items = np.nonzero(positive & ~observed)
    width = int(observed.sum(axis=1).max())
    history = np.full((NUM_USERS, width), -1, np.int64)
    for user in range(NUM_USERS):
        seen = np.flatnonzero(observed[user])
        history[user, : seen.size] = seen
    return {
        "obs": (obs_users, obs_items, labels),
        "held": (held_users, held_items),
        "history": history,
        "observed": observed,
    }


def test_planted_recall_far_above_random(planted):
    obs_users, obs_items, labels = planted["obs"]
    cfg = RetrieverConfig(embed_dim=16, learning_rate=0.02, batch_size=2048, num_epochs=10)
    lines = []
    params = train_retriever(
        obs_users, obs_items, labels, NUM_USERS, NUM_ITEMS, cfg, log_fn=lines.append
    )
    assert len(lines) == cfg.num_epochs
    assert all("loss" in line and "eta" in line for line in lines)

    held_users, held_items = planted["held"]
    recall = recall_of_positives(
        params, held_users, held_items, planted["history"][held_users], TOP_M
    )
    # Random top-M among the unobserved items hits a held-out positive with probability
    # M / (I - |history|), about 10 / 150 here; demand more than five times that.
    available = NUM_ITEMS - planted["observed"][held_users].sum(axis=1)
    random_recall = float(np.mean(TOP_M / available))
    assert recall > 5.0 * random_recall, (recall, random_recall)

    untrained = _random_params(0, NUM_USERS, NUM_ITEMS, 16)
    untrained_recall = recall_of_positives(
        untrained, held_users, held_items, planted["history"][held_users], TOP_M
    )
    assert untrained_recall < 2.0 * random_recall


def test_retrieve_matches_numpy_argsort_and_excludes():
    params = _random_params(1, num_users=20, num_items=50, dim=8)
    rng = np.random.default_rng(2)
    users = rng.integers(0, 20, size=33)
    exclude = rng.integers(-1, 50, size=(33, 12))
    exclude[:, :3] = -1
    exclude[:, 5] = exclude[:, 4]
    top = retrieve(params, users, exclude, num_candidates=7)

    assert top.shape == (33, 7)
    assert top.dtype == np.int32
    np.testing.assert_array_equal(top, _numpy_top(params, users, exclude, 7))
    for row in range(33):
        assert len(set(top[row].tolist())) == 7
        assert not set(top[row].tolist()) & set(exclude[row].tolist())


def test_padding_minus_one_does_not_exclude_last_item():
    params = _random_params(3, num_users=4, num_items=10, dim=4)
    bias = params.item_bias.copy()
    bias[-1] = 1e3
    params = RetrieverParams(params.user_emb, params.item_emb, bias)
    exclude = np.full((4, 5), -1)
    top = retrieve(params, np.arange(4), exclude, num_candidates=3)
    np.testing.assert_array_equal(top[:, 0], np.full(4, 9))


def test_retrieve_independent_of_chunk_size():
    params = _random_params(4, num_users=30, num_items=40, dim=6)
    rng = np.random.default_rng(5)
    users = rng.integers(0, 30, size=41)
    exclude = rng.integers(-1, 40, size=(41, 9))
    results = [retrieve(params, users, exclude, 10, chunk_size=c) for c in (1, 3, 7, 41, 1000)]
    for result in results[1:]:
        np.testing.assert_array_equal(result, results[0])
    no_exclusion = np.full((41, 1), -1)
    np.testing.assert_array_equal(
        retrieve(params, users, None, 40), _numpy_top(params, users, no_exclusion, 40)
    )


def test_all_remaining_items_can_be_requested():
    params = _random_params(6, num_users=2, num_items=6, dim=3)
    exclude = np.array([[0, 1, 1, -1], [5, -1, -1, -1]])
    top = retrieve(params, np.array([0, 1]), exclude, num_candidates=4)
    assert set(top[0].tolist()) == {2, 3, 4, 5}


def test_training_is_deterministic():
    rng = np.random.default_rng(7)
    users = rng.integers(0, 50, size=2000)
    items = rng.integers(0, 80, size=2000)
    labels = rng.integers(0, 2, size=2000)
    cfg = RetrieverConfig(embed_dim=8, batch_size=256, num_epochs=2, seed=11)
    first = train_retriever(users, items, labels, 50, 80, cfg, log_fn=None)
    second = train_retriever(users, items, labels, 50, 80, cfg, log_fn=None)
    other = train_retriever(
        users, items, labels, 50, 80, RetrieverConfig(**{**vars(cfg), "seed": 12}), log_fn=None
    )
    for name in ("user_emb", "item_emb", "item_bias"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    assert not np.array_equal(first.item_emb, other.item_emb)
    assert first.user_emb.shape == (50, 8)
    assert first.item_bias.shape == (80,)


def test_retrieve_rejects_bad_inputs():
    params = _random_params(8, num_users=5, num_items=10, dim=4)
    users = np.arange(3)
    exclude = np.full((3, 4), -1)
    exclude[1, :3] = [2, 4, 4]
    with pytest.raises(ValueError, match="num_candidates=9 exceeds the 8 items available"):
        retrieve(params, users, exclude, 9)
    with pytest.raises(ValueError, match="num_candidates=11 exceeds the number of items"):
        retrieve(params, users, None, 11)
    with pytest.raises(ValueError, match="exclude has 2 rows"):
        retrieve(params, users, exclude[:2], 3)
    with pytest.raises(ValueError, match="exclude out of range"):
        retrieve(params, users, np.full((3, 1), 10), 3)
    with pytest.raises(ValueError, match="exclude out of range"):
        retrieve(params, users, np.full((3, 1), -2), 3)
    with pytest.raises(ValueError, match="users out of range"):
        retrieve(params, np.array([0, 5, 1]), exclude, 3)
    with pytest.raises(ValueError, match="num_candidates"):
        retrieve(params, users, exclude, 0)
    with pytest.raises(ValueError, match="positive_items has length 2"):
        recall_of_positives(params, users, np.array([1, 2]), exclude, 3)


def test_train_rejects_bad_inputs():
    users = np.array([0, 1, 2])
    items = np.array([0, 1, 2])
    labels = np.array([1, 0, 1])
    cfg = RetrieverConfig(num_epochs=1)
    with pytest.raises(ValueError, match="same length"):
        train_retriever(users, items[:2], labels, 3, 3, cfg, log_fn=None)
    with pytest.raises(ValueError, match="items out of range"):
        train_retriever(users, np.array([0, 1, 3]), labels, 3, 3, cfg, log_fn=None)
    with pytest.raises(ValueError, match="users out of range"):
        train_retriever(np.array([0, -1, 2]), items, labels, 3, 3, cfg, log_fn=None)
    with pytest.raises(ValueError, match="labels must contain only 0 and 1"):
        train_retriever(users, items, np.array([1, 2, 0]), 3, 3, cfg, log_fn=None)
    with pytest.raises(ValueError, match="embed_dim"):
        train_retriever(users, items, labels, 3, 3, RetrieverConfig(embed_dim=0), log_fn=None)


@pytest.mark.parametrize(
    "field, value",
    [
        ("embed_dim", 0),
        ("learning_rate", 0.0),
        ("l2_reg", -1.0),
        ("init_scale", float("nan")),
        ("batch_size", 0),
        ("num_epochs", 0),
        ("negatives_per_positive", -1),
        ("seed", -3),
    ],
)
def test_config_validate_names_bad_field(field, value):
    with pytest.raises(ValueError, match=field):
        RetrieverConfig(**{field: value}).validate()
