"""The registry of reference policies: every entry gives valid lists, and its names are the
ones the evaluation reports and the only ones ``gro.auxiliary`` accepts."""

import jax
import numpy as np
import pytest

from goalrank_jax import configs, evaluate, policies, reference_policies
from goalrank_jax.comparison import report
from goalrank_jax.models import make_reward_model
from tests import step_fixtures

LIST_LEN = 3


def _synthetic_batch(seed=0):
    """A random batch with the true user model's fields of synthetic data."""
    batch = step_fixtures.random_batch(list_len=LIST_LEN, seed=seed)
    rng = np.random.default_rng(seed + 1)
    mask = batch["cand_mask"]
    logit = rng.normal(size=mask.shape).astype(np.float32)
    batch["cand_true_logit"] = logit
    batch["cand_category"] = rng.integers(0, 4, mask.shape).astype(np.int32)
    batch["cand_partner"] = (batch["cand_category"] + 1) % 4
    oracle = np.argsort(-np.where(mask, logit, -np.inf), axis=1)[:, :LIST_LEN]
    batch["oracle_list"] = oracle.astype(np.int32)
    batch["oracle_reward"] = rng.random(mask.shape[0]).astype(np.float32)
    return batch


def _evaluator(kind):
    model = configs.ModelConfig(embed_dim=8, num_layers=1, num_heads=2, ff_dim=8, dropout=0.0)
    module = make_reward_model(
        kind, model, step_fixtures.NUM_USERS, step_fixtures.NUM_ITEMS, LIST_LEN
    )
    evaluator = policies.Evaluator(module, kind)
    return evaluator, evaluator.init(jax.random.key(0), _synthetic_batch(), LIST_LEN)


def _assert_valid(lists, mask, name):
    lists, mask = np.asarray(lists), np.asarray(mask)
    assert lists.shape == (mask.shape[0], LIST_LEN), name
    assert np.issubdtype(lists.dtype, np.integer), name
    for b in range(lists.shape[0]):
        assert len(set(lists[b].tolist())) == LIST_LEN, (name, b, lists[b])
        assert mask[b, lists[b]].all(), (name, b, lists[b])


@pytest.mark.parametrize("kind", ["pointwise", "list_aware"])
def test_every_reference_policy_gives_distinct_valid_lists(kind):
    evaluator, params = _evaluator(kind)
    batch = _synthetic_batch(seed=3)
    key = reference_policies.evaluation_key()
    rows = jax.jit(
        lambda p, b: reference_policies.reference_rows(
            reference_policies.NAMES, b, evaluator, p, key, LIST_LEN
        )
    )(params, batch)
    assert set(rows) == set(reference_policies.NAMES)  # (jit returns dicts key-sorted)
    for name, (lists, scores) in rows.items():
        _assert_valid(lists, batch["cand_mask"], name)
        if scores is not None:
            assert np.asarray(scores).shape == batch["cand_mask"].shape, name
    np.testing.assert_array_equal(rows["oracle"][0], batch["oracle_list"])
    shown_at = np.take_along_axis(batch["cand_logged_pos"], np.asarray(rows["logged"][0]), 1)
    np.testing.assert_array_equal(shown_at, np.broadcast_to(np.arange(LIST_LEN), shown_at.shape))


def test_the_random_policy_reads_its_key_and_nothing_else_does():
    evaluator, params = _evaluator("pointwise")
    batch = _synthetic_batch()
    for name in reference_policies.NAMES:
        first, second = (
            np.asarray(
                reference_policies.reference_lists(
                    name, batch, evaluator, params, jax.random.key(seed), LIST_LEN
                )
            )
            for seed in (1, 2)
        )
        assert np.array_equal(first, second) == (name != "random"), name


def test_true_model_references_need_the_true_model_fields():
    evaluator, params = _evaluator("pointwise")
    batch = evaluate.strip_true_model(_synthetic_batch())
    names = reference_policies.available(has_true_model=False)
    assert names == ("reward_model_greedy", "retriever", "logged", "random")
    assert reference_policies.available(has_reward_model=False, has_true_model=True) == (
        "retriever",
        "logged",
        "random",
        "true_relevance_sort",
        "oracle",
    )
    for name in ("true_relevance_sort", "oracle"):
        with pytest.raises(ValueError, match="true user model"):
            reference_policies.reference_lists(name, batch, evaluator, params, None, LIST_LEN)
    with pytest.raises(ValueError, match="Unknown reference policy"):
        reference_policies.reference_lists("uniform", batch, evaluator, params, None, LIST_LEN)


def test_mixed_construction_lists_come_from_the_registry_with_one_key_per_slot():
    evaluator, params = _evaluator("pointwise")
    batch = _synthetic_batch()
    key = jax.random.key(5)
    names = ("random", "logged", "random", "reward_model_greedy", "retriever")
    lists = np.asarray(policies.auxiliary_lists(names, batch, evaluator, params, LIST_LEN, key))
    assert lists.shape == (batch["cand_mask"].shape[0], len(names), LIST_LEN)
    for i, name in enumerate(names):
        _assert_valid(lists[:, i], batch["cand_mask"], name)
        expected = reference_policies.reference_lists(
            name, batch, evaluator, params, jax.random.fold_in(key, i), LIST_LEN
        )
        np.testing.assert_array_equal(lists[:, i], expected)
    assert not np.array_equal(lists[:, 0], lists[:, 2])  # two random slots, two keys
    with pytest.raises(ValueError, match="Unknown auxiliary policy 'oracle'"):
        policies.auxiliary_lists(("oracle",), batch, evaluator, params, LIST_LEN, key)


def test_gro_auxiliary_accepts_exactly_the_registry_names_without_true_model_fields():
    expected = {n for n, p in reference_policies.REGISTRY.items() if not p.needs_true_model}
    assert set(configs.AUXILIARY_POLICIES) == expected == set(reference_policies.AUXILIARY_NAMES)
    assert set(configs.GROConfig().auxiliary) <= expected
    for name in reference_policies.AUXILIARY_NAMES:
        configs.GROConfig(group_construction="mixed", auxiliary=(name,)).validate()
    for name, hint in (
        ("reward_greedy", "now called 'reward_model_greedy'"),
        ("uniform", "now called 'random'"),
        ("oracle", "evaluation reference only"),
        ("true_relevance_sort", "evaluation reference only"),
        ("beam", "allowed"),
    ):
        with pytest.raises(ValueError, match=hint):
            configs.GROConfig(auxiliary=("logged", name)).validate()


def test_evaluation_and_report_use_the_registry_names():
    assert set(evaluate.REFERENCE_POLICIES) <= set(reference_policies.NAMES)
    assert report.REFERENCES == reference_policies.NAMES
    for name, policy in reference_policies.REGISTRY.items():
        assert report.LABELS[name] == policy.label
