"""Tests of goalrank_jax.losses against plain numpy and hand-computed closed forms."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from goalrank_jax import losses

EPS = 1e-6  # The documented epsilon of the group standard deviation.


def np_advantages(rewards):
    rewards = np.asarray(rewards, np.float64)
    mean = rewards.mean(-1, keepdims=True)
    std = rewards.std(-1, ddof=1, keepdims=True)
    return (rewards - mean) / (std + EPS)


def np_softmax(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# ----------------------------------------------------------------------------------------------
# 1-2. Advantages and reference targets.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(4, 6), (3, 2), (2, 3, 5)])
def test_group_advantages_match_numpy(shape):
    rewards = np.random.default_rng(0).normal(size=shape).astype(np.float32) * 3.0 + 1.0
    got = np.asarray(losses.group_advantages(jnp.asarray(rewards)))
    assert got.shape == shape
    np.testing.assert_allclose(got, np_advantages(rewards), rtol=1e-5, atol=1e-5)
    # z-scores: zero mean and unit (ddof=1) std per group, up to eps.
    np.testing.assert_allclose(got.mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(got.std(-1, ddof=1), 1.0, atol=1e-4)


def test_group_advantages_custom_eps():
    rewards = np.array([[0.0, 1.0, 3.0]], np.float32)
    got = np.asarray(losses.group_advantages(jnp.asarray(rewards), eps=0.5))
    centred = rewards - rewards.mean()
    std = math.sqrt((centred**2).sum() / 2.0)
    np.testing.assert_allclose(got, centred / (std + 0.5), rtol=1e-6)


@pytest.mark.parametrize("tau_ref", [0.5, 1.0, 2.0])
def test_group_relative_targets_match_numpy(tau_ref):
    rewards = np.random.default_rng(1).random((5, 7)).astype(np.float32)
    got = np.asarray(losses.group_relative_targets(jnp.asarray(rewards), tau_ref))
    assert got.shape == (5, 7)
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-6)
    assert np.all(got > 0.0)
    expected = np_softmax(np_advantages(rewards) / tau_ref)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # Higher reward -> higher target weight (same ordering within each group).
    for b in range(5):
        np.testing.assert_array_equal(np.argsort(got[b]), np.argsort(rewards[b]))


def test_lower_tau_concentrates_targets():
    rewards = jnp.asarray(np.random.default_rng(2).random((3, 6)), jnp.float32)
    sharp = np.asarray(losses.group_relative_targets(rewards, 0.5)).max(-1)
    flat = np.asarray(losses.group_relative_targets(rewards, 2.0)).max(-1)
    assert np.all(sharp > flat)


# ----------------------------------------------------------------------------------------------
# 3. Degenerate groups and the K = 2 closed form.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value,group_size", [(0.0, 5), (1.0, 4), (0.5, 8), (-2.0, 2), (3.0, 16)])
def test_equal_rewards_give_zero_advantage_and_uniform_targets(value, group_size):
    # Values whose group mean is exact in float32.
    rewards = jnp.full((3, group_size), value, jnp.float32)
    adv = np.asarray(losses.group_advantages(rewards))
    np.testing.assert_array_equal(adv, 0.0)
    targets = losses.group_relative_targets(rewards)
    np.testing.assert_array_equal(np.asarray(targets), np.float32(1.0 / group_size))
    log_probs = jnp.asarray(
        np.random.default_rng(3).normal(size=(3, group_size)) - 5.0, jnp.float32
    )
    for form in ("log_prob", "prob"):
        loss, grad = jax.value_and_grad(losses.gro_loss)(log_probs, targets, loss_form=form)
        assert np.isfinite(float(loss))
        assert np.all(np.isfinite(np.asarray(grad)))
    grad_r = jax.grad(lambda r: losses.gro_loss(log_probs, losses.group_relative_targets(r)))(
        rewards
    )
    assert np.all(np.isfinite(np.asarray(grad_r)))


# Float32 rounding of the group mean leaves a ~1 ulp residual; equal rewards must still give A = 0.
@pytest.mark.parametrize("value,group_size", [(0.1, 3), (0.7, 16), (1000.1, 5)])
def test_equal_inexact_rewards_give_zero_advantage(value, group_size):
    rewards = jnp.full((1, group_size), value, jnp.float32)
    adv = np.asarray(losses.group_advantages(rewards))
    np.testing.assert_allclose(adv, 0.0, atol=1e-3)


def test_two_list_group_closed_form():
    rewards = jnp.asarray([[0.0, 1.0], [1.0, 0.0]], jnp.float32)
    # mean 1/2, centred +-1/2, unbiased variance (1/4 + 1/4) / 1 = 1/2, std = 1/sqrt(2).
    a = 0.5 / (1.0 / math.sqrt(2.0) + 1e-6)  # = 1/sqrt(2) up to eps: 0.7071058...
    assert abs(a - 0.7071058) < 1e-6
    adv = np.asarray(losses.group_advantages(rewards))
    np.testing.assert_allclose(adv, [[-a, a], [a, -a]], rtol=1e-6)
    for tau in (0.5, 1.0, 2.0):
        high = 1.0 / (1.0 + math.exp(-2.0 * a / tau))  # softmax of (-a, a) / tau
        targets = np.asarray(losses.group_relative_targets(rewards, tau))
        np.testing.assert_allclose(targets, [[1 - high, high], [high, 1 - high]], rtol=1e-6)
    # tau = 1: exp(2a) = 4.113242..., high = exp(2a) / (1 + exp(2a)) = 0.804429...
    targets = np.asarray(losses.group_relative_targets(rewards, 1.0))
    np.testing.assert_allclose(targets[0], [0.195571, 0.804429], atol=2e-6)


# ----------------------------------------------------------------------------------------------
# 4-5. The GRO loss.
# ----------------------------------------------------------------------------------------------


def random_log_probs_and_targets(seed, batch=4, group=5):
    rng = np.random.default_rng(seed)
    log_probs = (rng.normal(size=(batch, group)) - 3.0).astype(np.float32)
    logits = rng.normal(size=(batch, group))
    targets = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32)
    return log_probs, targets


def test_gro_loss_closed_form():
    log_probs, targets = random_log_probs_and_targets(4)
    batch, group = log_probs.shape
    expected_log = (
        -sum(targets[b, k] * float(log_probs[b, k]) for b in range(batch) for k in range(group))
        / batch
    )
    expected_prob = (
        -sum(
            targets[b, k] * math.exp(float(log_probs[b, k]))
            for b in range(batch)
            for k in range(group)
        )
        / batch
    )
    got_default = losses.gro_loss(jnp.asarray(log_probs), jnp.asarray(targets))
    got_log = losses.gro_loss(jnp.asarray(log_probs), jnp.asarray(targets), loss_form="log_prob")
    got_prob = losses.gro_loss(jnp.asarray(log_probs), jnp.asarray(targets), loss_form="prob")
    np.testing.assert_allclose(float(got_default), expected_log, rtol=1e-6)
    np.testing.assert_allclose(float(got_log), expected_log, rtol=1e-6)
    np.testing.assert_allclose(float(got_prob), expected_prob, rtol=1e-5)


def test_gro_loss_weights_zero_out_padded_requests():
    log_probs, targets = random_log_probs_and_targets(5)
    weights = np.array([1.0, 0.0, 1.0, 0.0], np.float32)
    per_request = -(targets.astype(np.float64) * log_probs).sum(-1)
    expected = (per_request[0] + per_request[2]) / 2.0
    got = losses.gro_loss(jnp.asarray(log_probs), jnp.asarray(targets), jnp.asarray(weights))
    np.testing.assert_allclose(float(got), expected, rtol=1e-6)
    # Huge values in padded requests do not change the loss.
    corrupted = log_probs.copy()
    corrupted[[1, 3]] = -1e6
    got_corrupted = losses.gro_loss(
        jnp.asarray(corrupted), jnp.asarray(targets), jnp.asarray(weights)
    )
    np.testing.assert_allclose(float(got_corrupted), expected, rtol=1e-6)
    # Boolean weights behave like 0/1, and all-zero weights give 0, not NaN.
    got_bool = losses.gro_loss(jnp.asarray(log_probs), jnp.asarray(targets), weights > 0)
    np.testing.assert_allclose(float(got_bool), expected, rtol=1e-6)
    got_none = losses.gro_loss(jnp.asarray(log_probs), jnp.asarray(targets), np.zeros(4))
    assert float(got_none) == 0.0
    # Non-uniform weights: weighted mean.
    weights = np.array([0.5, 2.0, 1.0, 0.5], np.float32)
    got = losses.gro_loss(jnp.asarray(log_probs), jnp.asarray(targets), jnp.asarray(weights))
    np.testing.assert_allclose(float(got), (per_request * weights).sum() / 4.0, rtol=1e-6)


def test_gro_loss_unknown_form_raises():
    log_probs, targets = random_log_probs_and_targets(6)
    with pytest.raises(ValueError, match="loss_form"):
        losses.gro_loss(jnp.asarray(log_probs), jnp.asarray(targets), loss_form="logprob")


def test_gro_loss_gradients_closed_form():
    log_probs, targets = random_log_probs_and_targets(7)
    batch = log_probs.shape[0]
    grad = jax.grad(losses.gro_loss)(jnp.asarray(log_probs), jnp.asarray(targets))
    np.testing.assert_allclose(np.asarray(grad), -targets / batch, rtol=1e-6)
    grad_prob = jax.grad(lambda x: losses.gro_loss(x, jnp.asarray(targets), loss_form="prob"))(
        jnp.asarray(log_probs)
    )
    np.testing.assert_allclose(
        np.asarray(grad_prob), -targets * np.exp(log_probs) / batch, rtol=1e-5
    )
    # With weights: d/dlogp = -w_b t_bk / sum(w).
    weights = np.array([1.0, 0.0, 3.0, 0.0], np.float32)
    grad_w = jax.grad(lambda x: losses.gro_loss(x, jnp.asarray(targets), jnp.asarray(weights)))(
        jnp.asarray(log_probs)
    )
    np.testing.assert_allclose(
        np.asarray(grad_w), -weights[:, None] * targets / weights.sum(), rtol=1e-6
    )


def test_no_gradient_flows_into_rewards():
    rng = np.random.default_rng(8)
    rewards = jnp.asarray(rng.random((3, 6)), jnp.float32)
    log_probs = jnp.asarray(rng.normal(size=(3, 6)) - 4.0, jnp.float32)

    def loss(r, lp, form):
        return losses.gro_loss(lp, losses.group_relative_targets(r, 0.7), loss_form=form)

    for form in ("log_prob", "prob"):
        grad_r, grad_lp = jax.grad(loss, argnums=(0, 1))(rewards, log_probs, form)
        np.testing.assert_array_equal(np.asarray(grad_r), 0.0)
        assert np.abs(np.asarray(grad_lp)).max() > 0.0


# ----------------------------------------------------------------------------------------------
# 6. Supervised BCE.
# ----------------------------------------------------------------------------------------------


def np_bce(logit, label):
    """-[y log sigmoid(x) + (1 - y) log(1 - sigmoid(x))] in float64."""
    p = 1.0 / (1.0 + math.exp(-logit))
    return -(label * math.log(p) + (1.0 - label) * math.log(1.0 - p))


def test_supervised_bce_matches_formula():
    rng = np.random.default_rng(9)
    logits = (rng.normal(size=(4, 6)) * 2.0).astype(np.float32)
    labels = (rng.random((4, 6)) < 0.4).astype(np.int32)
    mask = np.ones((4, 6), bool)
    mask[1, [0, 5]] = False
    mask[3, 2:] = False
    per_request = []
    for b in range(4):
        valid = [n for n in range(6) if mask[b, n]]
        per_request.append(
            sum(np_bce(float(logits[b, n]), labels[b, n]) for n in valid) / len(valid)
        )
    got = losses.supervised_bce(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(mask))
    np.testing.assert_allclose(float(got), np.mean(per_request), rtol=1e-5)
    # Masked candidates are ignored: changing their logits or labels changes nothing.
    logits2, labels2 = logits.copy(), labels.copy()
    logits2[~mask] = 50.0
    labels2[~mask] = 1 - labels2[~mask]
    got2 = losses.supervised_bce(jnp.asarray(logits2), jnp.asarray(labels2), jnp.asarray(mask))
    np.testing.assert_allclose(float(got2), float(got), rtol=1e-6)
    # Request weights.
    weights = np.array([1.0, 0.0, 2.0, 1.0], np.float32)
    got_w = losses.supervised_bce(
        jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(mask), jnp.asarray(weights)
    )
    expected_w = (np.array(per_request) * weights).sum() / weights.sum()
    np.testing.assert_allclose(float(got_w), expected_w, rtol=1e-5)


def test_supervised_bce_fully_masked_row_is_finite():
    rng = np.random.default_rng(10)
    logits = jnp.asarray(rng.normal(size=(2, 4)), jnp.float32)
    labels = jnp.asarray([[1, 0, 0, 1], [1, 1, 0, 0]], jnp.float32)
    mask = jnp.asarray([[True, True, False, True], [False] * 4])
    value, grad = jax.value_and_grad(losses.supervised_bce)(logits, labels, mask)
    row0 = sum(np_bce(float(logits[0, n]), float(labels[0, n])) for n in (0, 1, 3)) / 3.0
    # The fully masked row contributes 0 and still counts in the mean over requests.
    np.testing.assert_allclose(float(value), row0 / 2.0, rtol=1e-5)
    grad = np.asarray(grad)
    assert np.all(np.isfinite(grad))
    np.testing.assert_array_equal(grad[1], 0.0)
    assert grad[0, 2] == 0.0
    # d/dx BCE = sigmoid(x) - y, averaged over 3 valid candidates and 2 requests.
    sig = 1.0 / (1.0 + np.exp(-np.asarray(logits[0], np.float64)))
    expected = (sig - np.asarray(labels[0])) / 6.0
    np.testing.assert_allclose(grad[0, [0, 1, 3]], expected[[0, 1, 3]], rtol=1e-5)


def test_supervised_bce_extreme_logits_finite():
    logits = jnp.asarray([[80.0, -80.0, 0.0]], jnp.float32)
    labels = jnp.asarray([[0.0, 1.0, 1.0]], jnp.float32)
    mask = jnp.ones((1, 3), bool)
    value = float(losses.supervised_bce(logits, labels, mask))
    # BCE(80, 0) = BCE(-80, 1) = 80 + log(1 + e^-80) ~ 80; BCE(0, 1) = log 2.
    np.testing.assert_allclose(value, (80.0 + 80.0 + math.log(2.0)) / 3.0, rtol=1e-6)


def test_centred_gro_weights_vanish_for_equal_rewards_and_sum_to_zero():
    rewards = np.array([[0.3, 0.3, 0.3, 0.3], [0.1, 0.5, 0.2, 0.9]], np.float32)
    plain = np.asarray(losses.gro_weights(jnp.asarray(rewards)))
    centred = np.asarray(losses.gro_weights(jnp.asarray(rewards), centre=True))
    # Independent pi_ref: softmax of the z-scores (ddof=1) of the second group.
    r = rewards[1].astype(np.float64)
    z = (r - r.mean()) / (r.std(ddof=1) + 1e-6)
    expected = np.exp(z) / np.exp(z).sum()
    np.testing.assert_allclose(plain[1], expected, rtol=1e-5)
    np.testing.assert_allclose(plain[0], 0.25, rtol=1e-6)
    np.testing.assert_allclose(centred[0], 0.0, atol=1e-7)
    np.testing.assert_allclose(centred[1], expected - 0.25, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(centred.sum(-1), 0.0, atol=1e-6)
