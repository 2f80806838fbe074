"""Pure GRO learns what it is taught: on a tiny problem (N=6, L=3) with a fixed pointwise
evaluator, training from a uniform policy with the project's sampler, reference policy and loss
puts most of the probability on the evaluator's best list, found here by enumerating all
P(6, 3) = 120 lists."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from goalrank_jax import losses, sampling

N, L, K = 6, 3, 8
# A fixed evaluator: pointwise logits per candidate, list reward sum_t sigmoid(s) / log2(t + 2).
SCORES = np.array([0.3, -1.0, 2.0, 0.9, -0.4, 1.4], np.float32)


def list_reward(lists: jnp.ndarray) -> jnp.ndarray:
    discounts = 1.0 / jnp.log2(jnp.arange(L) + 2.0)
    return (jax.nn.sigmoid(jnp.asarray(SCORES)[lists]) * discounts).sum(-1)


def step_logits(theta):
    """A tabular policy: logits theta[t] at step t = the number of items already chosen."""

    def logits(chosen):
        t = chosen.sum(-1).astype(jnp.int32)
        return theta[t]

    return logits


def train(centre: bool, steps: int, lr: float, tau_ref: float = 1.0):
    mask = jnp.ones((1, N), bool)
    optimizer = optax.adam(lr)
    theta = jnp.zeros((L, N))  # uniform start

    def update(carry, key):
        theta, opt_state = carry
        lists = sampling.sample_group(step_logits(theta), mask, L, key, K)  # [1, K, L]
        weights = losses.gro_weights(list_reward(lists), tau_ref, centre)

        def loss_fn(theta):
            log_probs = sampling.list_log_prob(step_logits(theta), mask, lists)
            return losses.gro_loss(log_probs, weights)

        grads = jax.grad(loss_fn)(theta)
        updates, opt_state = optimizer.update(grads, opt_state)
        return (optax.apply_updates(theta, updates), opt_state), None

    keys = jax.random.split(jax.random.key(0), steps)
    (theta, _), _ = jax.jit(lambda c, k: jax.lax.scan(update, c, k))(
        (theta, optimizer.init(theta)), keys
    )
    return theta


def best_list_probability(theta) -> tuple[float, tuple[int, ...]]:
    """(pi(best list), best list) with the best list found by brute-force enumeration."""
    every = np.array(list(itertools.permutations(range(N), L)), np.int32)  # [120, L]
    rewards = np.asarray(list_reward(jnp.asarray(every)))
    best = every[int(np.argmax(rewards))]
    log_probs = sampling.list_log_prob(
        step_logits(theta), jnp.ones((1, N), bool), jnp.asarray(every)[None]
    )[0]
    probs = np.exp(np.asarray(log_probs))
    assert abs(probs.sum() - 1.0) < 1e-4  # a distribution over all lists
    return float(probs[int(np.argmax(rewards))]), tuple(best)


@pytest.mark.parametrize("centre", [False, True], ids=["paper_weights", "centred_weights"])
def test_pure_gro_puts_its_mass_on_the_evaluator_best_list(centre):
    prob, best = best_list_probability(train(centre, steps=600, lr=0.05))
    assert best == (2, 5, 3)  # the sort of SCORES, as the enumeration confirms
    assert prob >= 0.9, prob


def test_uniform_start_is_far_from_the_optimum():
    prob, _ = best_list_probability(jnp.zeros((L, N)))
    np.testing.assert_allclose(prob, 1.0 / 120, rtol=1e-5)
