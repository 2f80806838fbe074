"""Tests of the embedded synthetic environment against plain-Python references."""

import dataclasses
import itertools
import math

import numpy as np
import pytest

from goalrank_jax.env import oracle, synthetic, true_model

PARAMS = synthetic.TrueModelParams(
    examination_power=0.8, redundancy_penalty=1.3, complement_bonus=1.7
)

SMALL_CFG = synthetic.EnvConfig(
    seed=3,
    num_users=60,
    num_items=300,
    num_categories=6,
    latent_dim=4,
    requests_per_user=20,
    list_len=5,
)


def reference_click_probs(rel, cat, partner, params):
    """Click probabilities of one list, computed position by position."""
    probs = []
    for t in range(len(rel)):
        n_same = sum(1 for s in range(t) if cat[s] == cat[t])
        comp = 1.0 if any(cat[s] == partner[t] for s in range(t)) else 0.0
        logit = rel[t] - params.redundancy_penalty * n_same + params.complement_bonus * comp
        exam = (1.0 / (t + 1)) ** params.examination_power
        probs.append(exam / (1.0 + math.exp(-logit)))
    return probs


def reference_reward(rel, cat, partner, order, params):
    """Expected reward of the list `order` (indices into the candidate arrays)."""
    picked = list(order)
    return sum(
        reference_click_probs(
            [rel[i] for i in picked], [cat[i] for i in picked], [partner[i] for i in picked], params
        )
    )


def random_candidates(rng, batch, num_cands, num_cats):
    rel = rng.normal(0.0, 1.5, size=(batch, num_cands)).astype(np.float32)
    cat = rng.integers(0, num_cats, size=(batch, num_cands)).astype(np.int32)
    partner_of = (np.arange(num_cats) + 1) % num_cats
    return rel, cat, partner_of[cat].astype(np.int32)


def test_click_probabilities_match_python_loop():
    rng = np.random.default_rng(0)
    shape = (3, 4, 7)
    rel = rng.normal(size=shape).astype(np.float32)
    cat = rng.integers(0, 3, size=shape)
    partner = rng.integers(0, 3, size=shape)
    got = np.asarray(true_model.click_probabilities(rel, cat, partner, PARAMS))
    assert got.shape == shape
    for index in np.ndindex(shape[:-1]):
        want = reference_click_probs(rel[index], cat[index], partner[index], PARAMS)
        np.testing.assert_allclose(got[index], want, rtol=1e-5, atol=1e-6)
    reward = np.asarray(true_model.expected_list_reward(rel, cat, partner, PARAMS))
    np.testing.assert_allclose(reward, got.sum(axis=-1), rtol=1e-5)


def test_list_reward_from_candidates_with_extra_list_axes():
    rng = np.random.default_rng(1)
    batch, num_cands, groups, list_len = 3, 9, 4, 4
    rel, cat, partner = random_candidates(rng, batch, num_cands, 4)
    lists = np.stack(
        [
            np.stack([rng.permutation(num_cands)[:list_len] for _ in range(groups)])
            for _ in range(batch)
        ]
    )
    got = np.asarray(true_model.list_reward_from_candidates(rel, cat, partner, lists, PARAMS))
    assert got.shape == (batch, groups)
    for b, k in np.ndindex(batch, groups):
        want = reference_reward(rel[b], cat[b], partner[b], lists[b, k], PARAMS)
        np.testing.assert_allclose(got[b, k], want, rtol=1e-5)


def test_beam_search_matches_brute_force():
    rng = np.random.default_rng(2)
    batch, num_cands, list_len = 16, 7, 3
    rel, cat, partner = random_candidates(rng, batch, num_cands, 3)
    mask = np.ones((batch, num_cands), dtype=bool)
    mask[::2, 0] = False
    mask[1::4, 4] = False
    lists, rewards = oracle.oracle_beam_search(
        rel, cat, partner, mask, list_len, beam_width=64, params=PARAMS
    )
    greedy_lists, greedy_rewards = oracle.greedy_true(rel, cat, partner, mask, list_len, PARAMS)
    lists, rewards = np.asarray(lists), np.asarray(rewards)
    greedy_lists, greedy_rewards = np.asarray(greedy_lists), np.asarray(greedy_rewards)
    for b in range(batch):
        valid = np.flatnonzero(mask[b])
        best = max(
            reference_reward(rel[b], cat[b], partner[b], order, PARAMS)
            for order in itertools.permutations(valid, list_len)
        )
        for found, found_reward in ((lists[b], rewards[b]), (greedy_lists[b], greedy_rewards[b])):
            assert len(set(found.tolist())) == list_len
            assert mask[b, found].all()
            want = reference_reward(rel[b], cat[b], partner[b], found, PARAMS)
            np.testing.assert_allclose(found_reward, want, rtol=1e-5)
        np.testing.assert_allclose(rewards[b], best, rtol=1e-5)
        assert greedy_rewards[b] <= rewards[b] + 1e-6


def test_beam_search_never_repeats_or_uses_masked_candidates():
    rng = np.random.default_rng(3)
    batch, num_cands, list_len = 32, 20, 6
    rel, cat, partner = random_candidates(rng, batch, num_cands, 3)
    mask = rng.random((batch, num_cands)) < 0.6
    mask[:, :list_len] = True
    sorted_lists = np.asarray(oracle.relevance_sort_lists(rel, mask, list_len))
    for width in (1, 5, 50):
        lists, rewards = oracle.oracle_beam_search(
            rel, cat, partner, mask, list_len, beam_width=width, params=PARAMS
        )
        lists = np.asarray(lists)
        for b in range(batch):
            assert len(set(lists[b].tolist())) == list_len
            assert mask[b, lists[b]].all()
        recomputed = true_model.list_reward_from_candidates(rel, cat, partner, lists, PARAMS)
        np.testing.assert_allclose(rewards, recomputed, rtol=1e-5)
    sort_rewards = true_model.list_reward_from_candidates(rel, cat, partner, sorted_lists, PARAMS)
    assert np.all(np.asarray(sort_rewards) <= np.asarray(rewards) + 1e-5)


def test_relevance_sort_lists_is_masked_top_l():
    rel = np.array([[0.5, 2.0, -1.0, 3.0, 1.0]], dtype=np.float32)
    mask = np.array([[True, True, True, False, True]])
    got = np.asarray(oracle.relevance_sort_lists(rel, mask, 3))
    np.testing.assert_array_equal(got, [[1, 4, 0]])


def test_make_world_is_deterministic_and_partners_differ():
    first = synthetic.make_world(SMALL_CFG)
    second = synthetic.make_world(SMALL_CFG)
    other = synthetic.make_world(dataclasses.replace(SMALL_CFG, seed=SMALL_CFG.seed + 1))
    for field in dataclasses.fields(synthetic.World):
        np.testing.assert_array_equal(getattr(first, field.name), getattr(second, field.name))
    assert not np.array_equal(first.item_latent, other.item_latent)
    num_cats = SMALL_CFG.num_categories
    assert first.category_partner.shape == (num_cats,)
    assert np.all(first.category_partner != np.arange(num_cats))
    assert sorted(first.category_partner.tolist()) == list(range(num_cats))
    assert first.item_category.min() >= 0 and first.item_category.max() < num_cats
    np.testing.assert_allclose(first.user_category_pref.sum(axis=1), 1.0, rtol=1e-5)
    assert abs(first.item_popularity.mean()) < 1e-4
    assert abs(first.item_popularity.std() - 1.0) < 1e-3


def test_simulate_logs_shapes_history_labels_and_determinism():
    cfg = SMALL_CFG
    world = synthetic.make_world(cfg)
    logs = synthetic.simulate_logs(world, cfg)
    num_rows = cfg.num_users * cfg.requests_per_user
    assert logs["user"].shape == (num_rows,) and logs["user"].dtype == np.int32
    assert logs["request_index"].shape == (num_rows,)
    assert logs["items"].shape == (num_rows, cfg.list_len) and logs["items"].dtype == np.int32
    assert logs["labels"].shape == (num_rows, cfg.list_len) and logs["labels"].dtype == np.int8
    assert logs["rel_logit"].shape == (num_rows, cfg.list_len)
    assert logs["rel_logit"].dtype == np.float32
    assert set(np.unique(logs["labels"]).tolist()) <= {0, 1}
    for user in range(cfg.num_users):
        rows = np.flatnonzero(logs["user"] == user)
        np.testing.assert_array_equal(logs["request_index"][rows], np.arange(rows.size))
        history = logs["items"][rows].ravel()
        assert np.unique(history).size == history.size
    want_rel = synthetic.relevance_logits(world, cfg, logs["user"], logs["items"])
    np.testing.assert_allclose(logs["rel_logit"], want_rel, rtol=1e-6)

    category = world.item_category[logs["items"]]
    probs = np.asarray(
        true_model.click_probabilities(
            logs["rel_logit"], category, world.category_partner[category], cfg.true_model
        ),
        dtype=np.float64,
    )
    # Labels are independent Bernoulli(p) draws: their sum has standard deviation
    # sqrt(sum p (1 - p)); a 5-sigma band fails by chance with probability < 1e-6.
    sigma = np.sqrt(np.sum(probs * (1.0 - probs)))
    assert abs(logs["labels"].sum() - probs.sum()) < 5.0 * sigma

    again = synthetic.simulate_logs(world, cfg)
    for key, value in logs.items():
        np.testing.assert_array_equal(value, again[key])


def test_default_logging_policy_prefers_relevant_items():
    cfg = SMALL_CFG
    world = synthetic.make_world(cfg)
    logs = synthetic.simulate_logs(world, cfg)
    first = logs["request_index"] == 0
    all_items = np.broadcast_to(np.arange(cfg.num_items), (cfg.num_users, cfg.num_items))
    rel_all = synthetic.relevance_logits(world, cfg, np.arange(cfg.num_users), all_items)
    assert logs["rel_logit"][first].mean() > rel_all.mean() + 0.5


def test_impression_logs_show_the_rankers_choice_from_the_retrieved_items():
    cfg = dataclasses.replace(SMALL_CFG, impression_size=12, retrieval_temperature=3.0)
    world = synthetic.make_world(cfg)
    logs = synthetic.simulate_logs(world, cfg)
    num_rows = cfg.num_users * cfg.requests_per_user
    assert logs["unshown"].shape == (num_rows, 12 - cfg.list_len)
    pool = np.concatenate([logs["items"], logs["unshown"]], axis=1)
    # The M retrieved items of a request are distinct and none was shown to the user before.
    assert all(np.unique(row).size == row.size for row in pool)
    for user in range(cfg.num_users):
        rows = np.flatnonzero(logs["user"] == user)
        for j, row in enumerate(rows):
            earlier = logs["items"][rows[:j]].ravel()
            assert not np.isin(pool[row], earlier).any()
    # The ranker shows the relevant ones: shown items beat the unshown ones of their request.
    unshown_rel = synthetic.relevance_logits(world, cfg, logs["user"], logs["unshown"])
    assert logs["rel_logit"].mean() > unshown_rel.mean() + 0.5
    again = synthetic.simulate_logs(world, cfg)
    np.testing.assert_array_equal(logs["unshown"], again["unshown"])


def test_no_impression_keeps_the_logs_of_the_ranker_over_every_unseen_item():
    """impression_size=0 draws exactly what the logging policy always drew: its top L unseen
    items by relevance / T + Gumbel, with one Gumbel draw per (user, item) per request."""
    cfg = dataclasses.replace(SMALL_CFG, num_users=5, requests_per_user=3, impression_size=0)
    world = synthetic.make_world(cfg)
    logs = synthetic.simulate_logs(world, cfg)
    assert logs["unshown"].shape == (15, 0)
    rng = np.random.default_rng([cfg.seed, 1])
    all_items = np.broadcast_to(np.arange(cfg.num_items), (cfg.num_users, cfg.num_items))
    rel = synthetic.relevance_logits(world, cfg, np.arange(cfg.num_users), all_items)
    seen = np.zeros(rel.shape, bool)
    for request in range(cfg.requests_per_user):
        score = rel / cfg.logging_temperature + rng.gumbel(size=rel.shape).astype(np.float32)
        for user in range(cfg.num_users):
            ranked = [i for i in np.argsort(-score[user], kind="stable") if not seen[user, i]]
            want = ranked[: cfg.list_len]
            got = logs["items"][user * cfg.requests_per_user + request]
            np.testing.assert_array_equal(got, want)
            seen[user, want] = True


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"impression_size": 3}, "impression_size"),
        ({"impression_size": 5000}, "impression_size"),
        ({"retrieval_temperature": 0.0}, "retrieval_temperature"),
        ({"num_users": 0}, "num_users"),
        ({"num_items": -5}, "num_items"),
        ({"num_categories": 1}, "num_categories"),
        ({"latent_dim": 0}, "latent_dim"),
        ({"list_len": 0}, "list_len"),
        ({"num_items": 4, "list_len": 6, "requests_per_user": 1}, "list_len"),
        ({"requests_per_user": 1000}, "requests_per_user"),
        ({"logging_temperature": 0.0}, "logging_temperature"),
        ({"category_preference_concentration": -1.0}, "category_preference_concentration"),
        ({"category_pref_smoothing": 0.0}, "category_pref_smoothing"),
        ({"base_logit": float("nan")}, "base_logit"),
        (
            {"true_model": synthetic.TrueModelParams(examination_power=-1.0)},
            "examination_power",
        ),
        (
            {"true_model": synthetic.TrueModelParams(redundancy_penalty=float("inf"))},
            "redundancy_penalty",
        ),
    ],
)
def test_validate_names_the_bad_field(changes, field):
    cfg = dataclasses.replace(synthetic.EnvConfig(), **changes)
    with pytest.raises(ValueError, match=field):
        cfg.validate()


def test_default_config_is_valid():
    synthetic.EnvConfig().validate()
    assert oracle.DEFAULT_BEAM_WIDTH == 50
