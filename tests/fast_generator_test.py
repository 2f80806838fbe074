"""The fast generator: its cached step-by-step decoder against its one-pass teacher-forced
logits, its policy interface (sampling, greedy, log-probabilities) and its train step.

Expected values are computed independently of the path under test: the sampled and greedy
lists are re-scored by the teacher-forced pass, and the log-probabilities by a numpy loop over
the steps of the decode path.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from goalrank_jax import configs, policies, sampling
from goalrank_jax import train_step as ts
from goalrank_jax.models import FastGenerator, make_generator
from tests import step_fixtures

LIST_LEN = 3


def _generator(decoder_layers=2, dropout=0.0):
    model = configs.ModelConfig(
        embed_dim=8,
        num_layers=1,
        num_heads=2,
        ff_dim=16,
        dropout=dropout,
        variant="fast",
        decoder_layers=decoder_layers,
    )
    return make_generator(model, step_fixtures.NUM_USERS, step_fixtures.NUM_ITEMS)


@pytest.fixture(scope="module")
def setup():
    generator = _generator()
    batch = step_fixtures.random_batch(list_len=LIST_LEN)
    params = generator.init(jax.random.key(0), batch)
    return generator, params, batch


def _decode_logits(generator, params, batch, lists):
    """Logits [B, L, N] of each step of ``lists`` [B, L] from the cached decode path."""
    context = generator.apply(params, batch, method="encode")
    carry = generator.apply(params, context, LIST_LEN, method="init_carry")
    chosen = jnp.zeros(batch["cand_mask"].shape)
    prev = jnp.zeros(lists.shape[:1], jnp.int32)
    out = []
    for t in range(lists.shape[-1]):
        logits, carry = generator.apply(
            params, context, carry, prev, chosen, jnp.int32(t), method="decode_step"
        )
        out.append(logits)
        prev = lists[:, t]
        chosen = chosen + jax.nn.one_hot(prev, chosen.shape[-1])
    return jnp.stack(out, axis=1)


def test_make_generator_builds_the_fast_variant():
    assert isinstance(_generator(), FastGenerator)


def test_cached_decode_equals_teacher_forced_pass(setup):
    generator, params, batch = setup
    policy = policies.GeneratorPolicy(generator, LIST_LEN)
    lists = policy.sample(params, batch, jax.random.key(1), 5)  # [B, 5, L]
    forced = generator.apply(params, batch, lists, method="list_logits")  # [B, 5, L, N]
    for m in range(lists.shape[1]):
        stepped = _decode_logits(generator, params, batch, lists[:, m])
        np.testing.assert_allclose(stepped, forced[:, m], rtol=1e-5, atol=1e-5)
    first = generator.apply(params, batch)
    np.testing.assert_allclose(first, forced[:, 0, 0], rtol=1e-5, atol=1e-5)


def test_logits_depend_on_prefix_order(setup):
    generator, params, batch = setup
    lists = jnp.array([[0, 1, 2], [1, 0, 2]], jnp.int32)[None].repeat(8, axis=0)
    forced = np.asarray(generator.apply(params, batch, lists, method="list_logits"))
    # Same chosen set {0, 1} before step 2, different order: the decoder sees the order.
    assert np.abs(forced[:, 0, 2] - forced[:, 1, 2]).max() > 1e-4


def test_log_prob_matches_numpy_loop_over_decode_steps(setup):
    generator, params, batch = setup
    policy = policies.GeneratorPolicy(generator, LIST_LEN)
    lists = policy.sample(params, batch, jax.random.key(2), 4)
    log_prob, first = policy.log_prob_and_first_logits(params, batch, lists)
    mask = np.asarray(batch["cand_mask"])
    expected = np.zeros(lists.shape[:2])
    for m in range(lists.shape[1]):
        stepped = np.asarray(_decode_logits(generator, params, batch, lists[:, m]), np.float64)
        for b in range(lists.shape[0]):
            used = set()
            for t in range(LIST_LEN):
                allowed = mask[b].copy()
                allowed[list(used)] = False
                row = stepped[b, t][allowed]
                log_z = np.log(np.exp(row - row.max()).sum()) + row.max()
                item = int(lists[b, m, t])
                expected[b, m] += stepped[b, t, item] - log_z
                used.add(item)
    np.testing.assert_allclose(log_prob, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(first, generator.apply(params, batch), rtol=1e-5, atol=1e-5)


def test_samples_valid_and_greedy_is_stepwise_argmax(setup):
    generator, params, batch = setup
    policy = policies.GeneratorPolicy(generator, LIST_LEN)
    lists = np.asarray(policy.sample(params, batch, jax.random.key(3), 64))
    mask = np.asarray(batch["cand_mask"])
    for b in range(lists.shape[0]):
        for row in lists[b]:
            assert len(set(row.tolist())) == LIST_LEN
            assert mask[b, row].all()
    greedy = np.asarray(policy.greedy(params, batch))
    forced = np.asarray(generator.apply(params, batch, greedy[:, None], method="list_logits"))
    for b in range(greedy.shape[0]):
        for t in range(LIST_LEN):
            allowed = mask[b].copy()
            allowed[greedy[b, :t]] = False
            assert greedy[b, t] == np.argmax(np.where(allowed, forced[b, 0, t], -np.inf))


def test_sample_frequencies_follow_the_policy(setup):
    """Empirical frequency of the most likely first item against its teacher-forced
    probability (many samples, one request)."""
    generator, params, batch = setup
    policy = policies.GeneratorPolicy(generator, LIST_LEN)
    lists = np.asarray(policy.sample(params, batch, jax.random.key(4), 4000))
    first_logits = np.asarray(generator.apply(params, batch), np.float64)[1]
    first_logits = np.where(np.asarray(batch["cand_mask"])[1], first_logits, -np.inf)
    probs = np.exp(first_logits - first_logits.max())
    probs /= probs.sum()
    counts = np.bincount(lists[1, :, 0], minlength=probs.size) / lists.shape[1]
    assert np.abs(counts - probs).max() < 0.03


def test_fast_train_step_learns_and_skips_nothing():
    generator = _generator(decoder_layers=1, dropout=0.1)
    _, reward = step_fixtures.tiny_models()
    batch = step_fixtures.random_batch(list_len=LIST_LEN)
    key = jax.random.key(5)
    evaluator = policies.Evaluator(reward, "pointwise")
    optimizer = ts.make_optimizer(configs.OptimConfig(learning_rate=1e-2))
    state = ts.create_state(
        generator.init(key, batch), optimizer, evaluator.init(key, batch, LIST_LEN)
    )
    gro = configs.GROConfig(group_size=4, reward_weight=1.0, supervised_weight=1.0)
    step = jax.jit(
        functools.partial(
            ts.goalrank_train_step,
            policy=policies.GeneratorPolicy(generator, LIST_LEN),
            evaluator=evaluator,
            optimizer=optimizer,
            gro=gro,
        )
    )
    losses = []
    for _ in range(30):
        state, metrics = step(state, batch, key)
        losses.append(float(metrics["sup_loss"]))
        assert float(metrics["skipped"]) == 0.0
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.7 * losses[0]


def test_unknown_variant_is_rejected():
    with pytest.raises(ValueError, match="variant"):
        configs.ModelConfig(variant="bogus").validate()
    bad = dataclasses.replace(configs.ModelConfig(), variant="bogus")
    with pytest.raises(ValueError, match="Unknown generator variant"):
        make_generator(bad, 3, 3)


def test_decode_of_a_stateless_policy_is_stepwise_argmax():
    scores = jnp.array([[0.1, 2.0, -1.0, 0.5]])
    mask = jnp.ones((1, 4), bool)
    got = sampling.decode(sampling.stateless(lambda chosen: scores + 0 * chosen), None, mask, 3)
    np.testing.assert_array_equal(got, [[1, 3, 0]])
