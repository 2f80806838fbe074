"""Reward models: causality and prefixes of the list-aware model, its appended-candidate logits
against each candidate's own list, its greedy decoding against a plain Python loop, the DCG list
reward against numpy, and the item bias."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from step_fixtures import NUM_ITEMS, NUM_USERS, random_batch

from goalrank_jax import configs, policies
from goalrank_jax import train_step as ts
from goalrank_jax.models import layers, make_reward_model
from goalrank_jax.models import reward_model as rm

LIST_LEN = 3
MODEL = configs.ModelConfig(embed_dim=8, num_layers=1, num_heads=2, ff_dim=8, dropout=0.0)


@pytest.fixture(scope="module", params=[False, True], ids=["attention", "pairwise_above"])
def list_aware(request):
    model = dataclasses.replace(MODEL, pairwise_above=request.param)
    module = make_reward_model("list_aware", model, NUM_USERS, NUM_ITEMS, LIST_LEN)
    batch = random_batch(batch_size=4, num_candidates=7, list_len=LIST_LEN, seed=5)
    params = jax.jit(module.init)(jax.random.key(0), batch, policies.logged_list(batch, LIST_LEN))
    # Perturb every parameter so that no head starts at an exact symmetric value.
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    leaves = [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    return module, jax.tree.unflatten(tree, leaves), batch


def test_list_aware_requires_list_len():
    with pytest.raises(ValueError, match="list_len"):
        make_reward_model("list_aware", MODEL, NUM_USERS, NUM_ITEMS)


def test_list_aware_is_causal_and_accepts_prefixes(list_aware):
    module, params, batch = list_aware
    lists = jnp.asarray([[0, 1, 2], [3, 4, 5], [6, 2, 1], [5, 0, 3]], jnp.int32)
    full = np.asarray(module.apply(params, batch, lists))
    changed = lists.at[:, 2].set(jnp.asarray([4, 0, 0, 1]))
    other = np.asarray(module.apply(params, batch, changed))
    np.testing.assert_allclose(other[:, :2], full[:, :2], rtol=1e-5, atol=1e-6)
    assert np.abs(other[:, 2] - full[:, 2]).max() > 1e-4  # the last position does change
    prefix = np.asarray(module.apply(params, batch, lists[:, :2]))
    np.testing.assert_allclose(prefix, full[:, :2], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="max_list_len"):
        module.apply(params, batch, jnp.zeros((4, LIST_LEN + 1), jnp.int32))


def test_pairwise_above_sums_one_term_per_item_above(list_aware):
    """The pairwise term (logits minus those with the pair projections zeroed) is 0 at the top
    and, lower down, the sum of the terms each item above would add alone."""
    module, params, batch = list_aware
    if not module.pairwise_above:
        pytest.skip("attention-only model")
    zeroed = jax.tree_util.tree_map_with_path(
        lambda path, x: jnp.zeros_like(x) if "pair_target" in jax.tree_util.keystr(path) else x,
        params,
    )

    def term(lists):
        lists = jnp.asarray(lists, jnp.int32)
        return np.asarray(module.apply(params, batch, lists) - module.apply(zeroed, batch, lists))

    triples = [[0, 1, 2], [3, 4, 5], [6, 2, 1], [5, 0, 3]]
    full = term(triples)
    np.testing.assert_allclose(full[:, 0], 0.0, atol=1e-5)
    first_pair = term([[a, b] for a, b, _ in triples])[:, 1]
    np.testing.assert_allclose(full[:, 1], first_pair, rtol=1e-4, atol=1e-5)
    alone = (
        term([[a, c] for a, _, c in triples])[:, 1] + term([[b, c] for _, b, c in triples])[:, 1]
    )
    np.testing.assert_allclose(full[:, 2], alone, rtol=1e-4, atol=1e-5)
    assert np.abs(full[:, 1:]).max() > 1e-3  # the term is not trivially zero


def test_list_aware_greedy_matches_python_loop(list_aware):
    module, params, batch = list_aware
    evaluator = policies.Evaluator(module, "list_aware")
    lists = np.asarray(jax.jit(evaluator.greedy, static_argnums=2)(params, batch, LIST_LEN))
    mask = np.asarray(batch["cand_mask"])
    apply = jax.jit(module.apply)  # one compilation per prefix length
    for b in range(lists.shape[0]):
        single = jax.tree.map(lambda x, b=b: x[b : b + 1], batch)
        prefix: list[int] = []
        for _ in range(LIST_LEN):
            best, best_logit = None, -np.inf
            for c in range(mask.shape[1]):
                if not mask[b, c] or c in prefix:
                    continue
                trial = jnp.asarray([prefix + [c]], jnp.int32)
                logit = float(apply(params, single, trial)[0, -1])
                if logit > best_logit:
                    best, best_logit = c, logit
            prefix.append(best)
        np.testing.assert_array_equal(lists[b], prefix)
        assert len(set(prefix)) == LIST_LEN and mask[b, prefix].all()


def test_appended_logits_are_the_last_logits_of_each_candidates_own_list(list_aware):
    """For every prefix length t < L, each candidate's appended logit is the logit at position t
    of the list prefix + [candidate], evaluated on its own."""
    module, params, batch = list_aware
    num_candidates = batch["cand_mask"].shape[1]
    full = jnp.asarray([[0, 1, 2], [3, 4, 5], [6, 2, 1], [5, 0, 3]], jnp.int32)
    for t in range(LIST_LEN):
        prefix = full[:, :t]
        appended = np.asarray(module.apply(params, batch, prefix, method="appended_logits"))
        assert appended.shape == (4, num_candidates)
        for c in range(num_candidates):
            own = jnp.concatenate([prefix, jnp.full((4, 1), c, jnp.int32)], axis=-1)
            expected = np.asarray(module.apply(params, batch, own))[:, t]
            np.testing.assert_allclose(appended[:, c], expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="no position below it"):
        module.apply(params, batch, full, method="appended_logits")
    with pytest.raises(ValueError, match="expected"):
        module.apply(params, batch, full[:2, :1], method="appended_logits")


def test_attention_pattern_of_the_wrong_shape_is_refused():
    block = layers.TransformerBlock(num_heads=2, ff_dim=8)
    x, mask = jnp.zeros((2, 4, 8)), jnp.ones((2, 4), bool)
    with pytest.raises(ValueError, match=r"allowed has shape \(3, 3\); expected \(4, 4\)"):
        block.init(jax.random.key(0), x, mask, True, jnp.ones((3, 3), bool))


def test_list_aware_candidate_scores_are_first_position_logits(list_aware):
    module, params, batch = list_aware
    scores = np.asarray(policies.Evaluator(module, "list_aware").candidate_scores(params, batch))
    for c in range(scores.shape[1]):
        lists = jnp.full((scores.shape[0], 1), c, jnp.int32)
        np.testing.assert_allclose(
            scores[:, c], np.asarray(module.apply(params, batch, lists))[:, 0], rtol=1e-5
        )


@pytest.mark.parametrize("candidate_weight", [0.0, 0.5])
def test_list_aware_loss_adds_the_candidates_bce(list_aware, candidate_weight):
    """Dropout off: the step's loss is the BCE of the logged positions plus candidate_weight x
    the BCE of every valid candidate's first-position logit, both recomputed in numpy."""
    module, params, batch = list_aware
    evaluator = policies.Evaluator(module, "list_aware")
    optimizer = optax.sgd(0.0)
    state = ts.create_state(params, optimizer)
    _, metrics = ts.reward_model_train_step(
        state,
        batch,
        jax.random.key(2),
        evaluator=evaluator,
        optimizer=optimizer,
        list_len=LIST_LEN,
        candidate_weight=candidate_weight,
    )

    def bce(logits, labels):
        return np.logaddexp(0.0, logits) - labels * logits

    labels = np.asarray(batch["cand_labels"], np.float64)
    logged = np.asarray(policies.logged_list(batch, LIST_LEN))
    position_logits = np.asarray(module.apply(params, batch, jnp.asarray(logged)), np.float64)
    expected = bce(position_logits, np.take_along_axis(labels, logged, 1)).mean()
    # The candidates' first-position logits (checked against single-item lists above).
    first = np.asarray(evaluator.candidate_scores(params, batch), np.float64)
    mask = np.asarray(batch["cand_mask"])
    per_request = [bce(first[b], labels[b])[mask[b]].mean() for b in range(mask.shape[0])]
    expected += candidate_weight * np.mean(per_request)
    np.testing.assert_allclose(float(metrics["loss"]), expected, rtol=1e-5)


def test_dcg_list_reward_matches_numpy():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(3, 6)).astype(np.float32)
    lists = np.stack([rng.permutation(6)[:4] for _ in range(3)]).astype(np.int32)
    got = np.asarray(rm.dcg_list_reward(jnp.asarray(scores), jnp.asarray(lists)))
    want = [
        sum(1 / (1 + np.exp(-scores[b, i])) / np.log2(t + 2) for t, i in enumerate(lists[b]))
        for b in range(3)
    ]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # Every ordering of the same items: the DCG reward is highest for the descending sort.
    items = lists[0]
    best = max(
        itertools.permutations(items),
        key=lambda p: float(rm.dcg_list_reward(jnp.asarray(scores[:1]), jnp.asarray([p]))[0]),
    )
    np.testing.assert_array_equal(best, items[np.argsort(-scores[0, items])])


def test_item_bias_shifts_the_candidate_logit():
    module = make_reward_model("pointwise", MODEL, NUM_USERS, NUM_ITEMS)
    batch = random_batch(batch_size=2, num_candidates=6, list_len=LIST_LEN, seed=2)
    params = module.init(jax.random.key(0), batch)
    item = int(batch["cand_items"][1, 3])
    shifted = jax.tree_util.tree_map_with_path(
        lambda path, x: x.at[item, 0].add(1.5) if "item_bias" in jax.tree_util.keystr(path) else x,
        params,
    )
    delta = np.asarray(module.apply(shifted, batch) - module.apply(params, batch))
    expected = 1.5 * (np.asarray(batch["cand_items"]) == item)
    np.testing.assert_allclose(delta, expected, atol=1e-5)
